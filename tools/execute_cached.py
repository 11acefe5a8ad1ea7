"""Execute the book's notebooks two at a time into the Jupyter Book execution cache.

`make book` runs this before `jupyter-book build`. The build uses execution mode
``cache``: for each notebook it looks up ``_build/.jupyter_cache`` and executes the
notebook itself only when its code has no cached result. Sphinx reads pages one after
the other, so on a fresh clone the chapters would run one at a time; this script fills
the cache first with up to two notebooks running side by side, the way myst-nb would
(same cache, same executor, working directory = the notebook's folder, same timeout).

It only accelerates: a notebook that fails here is simply not cached, and the build then
executes it again and reports the failing cell as a build error (with -W, a failure).
Prints each notebook's execution time.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import nbformat
from toc import toc_notebooks


def _execute(path: str, timeout: int):
    from jupyter_cache.executors.utils import single_nb_execution

    nb = nbformat.read(path, as_version=4)
    result = single_nb_execution(
        nb,
        cwd=str(Path(path).parent.resolve()),
        timeout=timeout,
        allow_errors=False,
        meta_override=True,
    )
    err = (
        None if result.err is None else f"{result.err.__class__.__name__}: {result.err}"
    )
    return path, nb, result.time, err


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--toc", default="_toc.yml")
    ap.add_argument("--cache", default="_build/.jupyter_cache")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per cell")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument(
        "--root", default=".", help="the book's folder (toc paths are relative to it)"
    )
    args = ap.parse_args(argv)

    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    root = Path(args.root).resolve()
    cache = get_cache(args.cache)
    todo = []
    for path in toc_notebooks(Path(args.toc), root):
        nb = nbformat.read(path, as_version=4)
        try:
            record = cache.match_cache_notebook(nb)
        except KeyError:
            record = None
        if record is None:
            todo.append(path)
        else:
            seconds = record.data.get("execution_seconds")
            took = f"{seconds:.1f} s when cached" if seconds else "cached"
            print(f"  cached    {path.relative_to(root)} ({took})")
    if not todo:
        return 0
    print(f"Executing {len(todo)} notebook(s), {args.jobs} at a time ...", flush=True)
    start = time.time()
    failed = 0
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(_execute, str(p), args.timeout) for p in todo]
        for future in as_completed(futures):
            path, nb, seconds, err = future.result()
            rel = Path(path).relative_to(root)
            if err:
                failed += 1
                print(
                    f"  FAILED    {rel} after {seconds:.1f} s "
                    f"({err.splitlines()[0][:200]}); "
                    "the build will run it again and report the cell"
                )
                continue
            record = cache.add_nb_to_project(path)
            cache.cache_notebook_bundle(
                CacheBundleIn(nb, record.uri, data={"execution_seconds": seconds}),
                check_validity=False,
                overwrite=True,
            )
            print(f"  executed  {rel} in {seconds:.1f} s", flush=True)
    print(f"Executed in {time.time() - start:.1f} s wall time ({failed} failed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
