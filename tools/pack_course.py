"""Pack the runnable course into one zip: what a reader needs for `make lab` and `make
test`.

    .venv/bin/python tools/pack_course.py --out _build/downloads/bn-course.zip [--check]

The book build calls :func:`pack` (from ``_ext/downloads.py``), so every built site
serves the zip of the notebooks it shows, as ``bn-course.zip`` next to its index page.
Contents, at the top level of the zip:

* ``chapters/*.ipynb`` (executed, with outputs), ``bnlib/`` and ``tests/``;
* ``requirements.txt``, ``pyproject.toml``, the ``Makefile``, and
  ``tools/lab_setup.py`` (which ``make lab`` runs);
* ``README.md``, written from ``tools/course_readme.md``.

Caches (``__pycache__``, ``.ipynb_checkpoints``, ...) stay out. Entries are sorted and
carry a fixed date, so the same sources give the same zip.

``--check`` unzips the result into an empty temporary folder and asks make, without
running anything (``make -n``), for the targets the course needs there: every file
they depend on must be in the zip.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT_FILES = [
    "requirements.txt",
    "pyproject.toml",
    "Makefile",
    "tools/lab_setup.py",
    "references.bib",  # JupyterLab shows citations author-year from it
]
TREES = ["bnlib", "tests"]
README = "tools/course_readme.md"
SKIP_PARTS = {
    "__pycache__",
    ".ipynb_checkpoints",
    ".pytest_cache",
    ".hypothesis",
    ".mypy_cache",
    ".ruff_cache",
}
SKIP_SUFFIXES = {".pyc", ".pyo", ".egg-info"}
# what a reader runs from the unzipped folder (see tools/course_readme.md)
NEEDED_TARGETS = ["install", "lab", "test"]
FIXED_DATE = (2026, 1, 1, 0, 0, 0)


def course_files(root: Path) -> list[tuple[Path, str]]:
    """(source path, name in the zip) for every file of the runnable course."""
    files: list[tuple[Path, str]] = []
    for nb in sorted((root / "chapters").glob("*.ipynb")):
        files.append((nb, f"chapters/{nb.name}"))
    for tree in TREES:
        for path in sorted((root / tree).rglob("*")):
            rel = path.relative_to(root)
            if (
                path.is_dir()
                or SKIP_PARTS & set(rel.parts)
                or path.suffix in SKIP_SUFFIXES
                or path.name.startswith(".")
            ):
                continue
            files.append((path, rel.as_posix()))
    for name in ROOT_FILES:
        files.append((root / name, name))
    files.append((root / README, "README.md"))
    missing = [str(src) for src, _ in files if not src.is_file()]
    if missing:
        raise FileNotFoundError(
            f"files of the course zip are missing: {', '.join(missing)}"
        )
    return files


def pack(root: str | Path, out: str | Path) -> Path:
    """Write the course zip to ``out`` (atomically) and return its path."""
    root, out = Path(root), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".zip.part")
    with zipfile.ZipFile(
        tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9
    ) as zf:
        for src, name in course_files(root):
            info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o644 & 0xFFFF) << 16
            zf.writestr(info, src.read_bytes())
    os.replace(tmp, out)
    return out


def check(zip_path: str | Path) -> list[str]:
    """Problems found when the targets in NEEDED_TARGETS are dry-run in an unzipped
    copy."""
    problems = []
    with tempfile.TemporaryDirectory(prefix="bn-course-") as tmp:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        for target in NEEDED_TARGETS:
            # make -n prints the commands without running them, but stops when a file a
            # target depends on is missing and has no rule
            run = subprocess.run(
                ["make", "-n", target],
                cwd=tmp,
                capture_output=True,
                text=True,
                env={**os.environ, "MAKEFLAGS": ""},
            )
            if run.returncode != 0:
                problems.append(
                    f"make -n {target}: {(run.stderr or run.stdout).strip()[-300:]}"
                )
    return problems


def main(argv=None) -> int:
    # the summary, a paragraph wrapped over two lines, as one line
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--root", default=".")
    ap.add_argument("--out", default="_build/downloads/bn-course.zip")
    ap.add_argument(
        "--check", action="store_true", help="dry-run make install/lab/test in a copy"
    )
    args = ap.parse_args(argv)
    out = pack(args.root, args.out)
    with zipfile.ZipFile(out) as zf:
        n = len(zf.namelist())
    print(f"{out}: {n} files, {out.stat().st_size / 1e6:.1f} MB")
    if args.check:
        problems = check(out)
        for p in problems:
            print(f"FAIL {p}")
        if problems:
            return 1
        print(f"ok   make -n {' / '.join(NEEDED_TARGETS)} in an unzipped copy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
