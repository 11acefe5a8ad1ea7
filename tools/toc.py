"""The book's pages in reading order, read from _toc.yml by sphinx-external-toc (the
parser Jupyter Book itself uses), so every tool agrees with the built site."""

from __future__ import annotations

from pathlib import Path

from sphinx_external_toc.parsing import parse_toc_yaml


def toc_documents(toc_file: str | Path) -> list[str]:
    """Every document name of the table of contents, root first, e.g.
    'chapters/01_deriving'."""
    return list(parse_toc_yaml(str(toc_file)))


def toc_notebooks(toc_file: str | Path, root: str | Path = ".") -> list[Path]:
    """The .ipynb files among the documents, as paths under ``root``."""
    root = Path(root)
    paths = (root / f"{doc}.ipynb" for doc in toc_documents(toc_file))
    return [p for p in paths if p.exists()]
