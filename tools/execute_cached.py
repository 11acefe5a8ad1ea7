"""Fill the Jupyter Book execution cache with jupyter-cache's parallel executor.

`make book` runs this before `jupyter-book build`, whose execution mode ``cache`` then
finds every chapter already executed (a chapter whose code is unchanged is not run
again). Sphinx alone would execute the chapters one after the other; jupyter-cache's
``local-parallel`` executor runs them side by side, one per CPU core, each in its own
folder, as myst-nb would. A chapter that fails here is not cached: the build executes it
again and reports the failing cell as a build error. Prints each chapter's time.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from jupyter_cache import get_cache
from jupyter_cache.executors import load_executor
from toc import toc_notebooks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--toc", default="_toc.yml")
    ap.add_argument("--cache", default="_build/.jupyter_cache")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per cell")
    args = ap.parse_args(argv)

    cache = get_cache(args.cache)
    for path in toc_notebooks(Path(args.toc), Path(".").resolve()):
        cache.add_nb_to_project(str(path))
    logging.basicConfig(level=logging.WARNING, format="  %(message)s")
    executor = load_executor(
        "local-parallel", cache, logger=logging.getLogger("execute")
    )
    result = executor.run_and_cache(timeout=args.timeout)
    for record in cache.list_cache_records():
        seconds = record.data.get("execution_seconds")
        if seconds is not None:
            print(f"  {Path(record.uri).name}: executed in {seconds:.1f} s")
    for uri in result.excepted + result.errored:
        print(f"  FAILED {uri}: the build runs it again and reports the cell")
    return 0


if __name__ == "__main__":
    sys.exit(main())
