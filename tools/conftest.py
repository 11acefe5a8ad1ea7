"""Options of the seed runs (tools/test_seeds.py): which chapters, which seeds, where
the executed copies go. `make seeds` and `make seeds-wide` pass them."""

from __future__ import annotations

from pathlib import Path

from toc import toc_notebooks


def pytest_addoption(parser):
    group = parser.getgroup("seeds", "chapters under other values of SEED")
    group.addoption("--seeds", default="104729 2147483647", help="space-separated")
    group.addoption(
        "--chapters", default="", help="notebook paths (default: the toc's)"
    )
    group.addoption("--toc", default="_toc.yml")
    group.addoption("--seeds-out", default="_build/seeds")


def pytest_generate_tests(metafunc):
    if {"chapter", "seed"} <= set(metafunc.fixturenames):
        opt = metafunc.config.getoption
        chapters = [Path(p) for p in opt("--chapters").split()] or toc_notebooks(
            opt("--toc")
        )
        runs = [(str(p), int(s)) for p in chapters for s in opt("--seeds").split()]
        ids = [f"{Path(p).stem}-SEED{s}" for p, s in runs]
        metafunc.parametrize(("chapter", "seed"), runs, ids=ids)
