"""Run every chapter with other values of its SEED parameter, through papermill.

`make seeds` calls this. Each chapter's cell tagged ``parameters`` defines ``SEED``;
papermill injects ``SEED = <n>`` after it and executes the notebook in chapters/, with
the pinned numerics the Makefile exports. A chapter whose assertions hold only for
its committed seed fails here. Every cell runs even after one fails (nbclient's
``allow_errors``), so one run reports every assertion that broke, not only the first.
The executed copies go to ``--out`` for inspection.

Exit status 1 if any run failed; each failure names the chapter, the seed and the cell.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from toc import toc_notebooks


def unexpected_errors(executed: Path) -> list[str]:
    """The error outputs of cells not tagged ``raises-exception``, one line each with
    the cell's index in the source notebook (papermill inserts the injected parameters
    and, on errors, marker cells); empty if every error was expected."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    offset, errors = 0, []  # cells papermill inserted before the current one
    for i, cell in enumerate(nb.cells):
        tags = cell.metadata.get("tags", [])
        if {"injected-parameters", "papermill-error-cell-tag"} & set(tags):
            offset += 1
            continue
        expected = "raises-exception" in tags
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error" and not expected:
                first_line = cell.source.splitlines()[0] if cell.source else ""
                evalue = " ".join(out.get("evalue", "").split())
                errors.append(
                    f"cell {i - offset} ({first_line[:60]!r}): "
                    f"{out.get('ename')}: {evalue[:300]}"
                )
    return errors


def run_one(
    path: str, seed: int, out_dir: str, timeout: int
) -> tuple[str, int, float, str]:
    """Execute one notebook with ``SEED = seed``; return
    (path, seed, seconds, errors), errors one line each ('' if none)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    out = Path(out_dir) / f"{Path(path).stem}-seed{seed}.ipynb"
    start = time.time()
    try:
        papermill.execute_notebook(
            path,
            str(out),
            parameters={"SEED": seed},
            cwd=str(Path(path).parent),
            kernel_name="python3",
            progress_bar=False,
            execution_timeout=timeout,
            log_output=False,
            report_mode=False,
            allow_errors=True,
        )
        error = "\n".join(unexpected_errors(out))
    except PapermillExecutionError:
        # papermill also reports errors of cells tagged raises-exception:
        # look for others
        error = "\n".join(unexpected_errors(out))
    except Exception as e:  # a kernel that died, a missing parameters cell, ...
        error = f"{type(e).__name__}: {e}"
    return path, seed, time.time() - start, error


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--toc", default="_toc.yml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="_build/seeds")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    ap.add_argument("notebooks", nargs="*", help="only these (default: every chapter)")
    args = ap.parse_args(argv)

    notebooks = [Path(p) for p in args.notebooks] or toc_notebooks(args.toc)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    jobs = [(str(p), s) for p in notebooks for s in args.seeds]
    print(
        f"make seeds: {len(notebooks)} chapter(s) x seeds {args.seeds}, "
        f"{args.jobs} at a time",
        flush=True,
    )
    start, failures = time.time(), []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_one, p, s, args.out, args.timeout) for p, s in jobs]
        for future in as_completed(futures):
            path, seed, seconds, error = future.result()
            status = "FAILED" if error else "ok"
            print(
                f"  {status:6} {path} SEED={seed} ({seconds:.0f} s)"
                + "".join(f"\n         {line[:300]}" for line in error.splitlines()),
                flush=True,
            )
            if error:
                failures.append((path, seed, error))
    print(
        f"make seeds: {len(jobs) - len(failures)} of {len(jobs)} runs passed "
        f"in {time.time() - start:.0f} s; executed copies in {args.out}/"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
