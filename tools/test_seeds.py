"""Every chapter under other values of its SEED parameter, executed by papermill.

`make seeds` runs this file with pytest (pytest-xdist runs JOBS at a time). Each
chapter's cell tagged ``parameters`` defines ``SEED``; papermill injects ``SEED = <n>``
after it and executes the notebook in chapters/, with the pinned numerics the Makefile
exports. A chapter whose assertions hold only for its committed seed fails here. Every
cell runs even after one fails (``allow_errors``), so a failure lists every assertion
that broke, each with its cell's index in the committed notebook. The executed copies
go to ``--seeds-out`` for inspection.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import papermill
import pytest

INSERTED = {"injected-parameters", "papermill-error-cell-tag"}  # papermill's own cells


def unexpected_errors(executed: Path) -> list[str]:
    """The error outputs of cells not tagged ``raises-exception``, one line each with
    the cell's index in the source notebook; empty if every error was expected."""
    nb = nbformat.read(executed, as_version=4)
    inserted, errors = 0, []
    for i, cell in enumerate(nb.cells):
        tags = set(cell.metadata.get("tags", []))
        if tags & INSERTED:
            inserted += 1
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error" and "raises-exception" not in tags:
                first_line = cell.source.splitlines()[0] if cell.source else ""
                evalue = " ".join(out.get("evalue", "").split())[:300]
                errors.append(
                    f"cell {i - inserted} ({first_line[:60]!r}): "
                    f"{out.get('ename')}: {evalue}"
                )
    return errors


def test_chapter_holds_under_seed(chapter, seed, request):
    out_dir = Path(request.config.getoption("--seeds-out"))
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{Path(chapter).stem}-seed{seed}.ipynb"
    try:
        papermill.execute_notebook(
            chapter,
            str(out),
            parameters={"SEED": seed},
            cwd=str(Path(chapter).parent),
            kernel_name="python3",
            progress_bar=False,
            execution_timeout=600,
            allow_errors=True,
        )
    except papermill.PapermillExecutionError:
        pass  # papermill also reports cells tagged raises-exception; look below
    errors = unexpected_errors(out)
    if errors:
        pytest.fail(
            f"{chapter} with SEED = {seed}:\n" + "\n".join(errors), pytrace=False
        )
