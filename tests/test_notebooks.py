"""The chapters' conventions (see the README, "Writing a chapter"), checked on the
notebook files themselves: fast, and without executing anything."""

import json
import re
from pathlib import Path

import pytest

CHAPTERS = sorted(
    (Path(__file__).resolve().parents[1] / "chapters").glob("[0-9]*.ipynb")
)
SOLUTION_START = re.compile(r"(```|:::)\{solution-start\}")
SOLUTION_END = re.compile(r"(```|:::)\{solution-end\}")
LIVE_WIDGET = re.compile(r"\binteract(ive)?\(|\bwidgets\.\w+\(|_widget\(")


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _source(cell):
    return "".join(cell["source"])


def _tags(cell):
    return set(cell.get("metadata", {}).get("tags", []))


def test_there_are_chapters():
    assert len(CHAPTERS) >= 5


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_opening_in_jupyterlab_changes_nothing(path):
    """JupyterLab writes the kernel's name and language into a notebook when its kernel
    starts, and marks it modified if they differ from the saved ones: the chapters name
    the kernel that tools/lab_setup.py installs. (language_info, which records the
    Python version, is matched by the server that tools/lab_setup.py configures.)"""
    meta = json.loads(path.read_text())["metadata"]
    assert meta.get("kernelspec") == {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    assert meta.get("language_info", {}).get("name") == "python"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_solution_code_starts_hidden_in_jupyterlab(path):
    """Code between {solution-start} and {solution-end} is collapsed on opening."""
    inside, shown = False, []
    for i, cell in enumerate(_cells(path)):
        if cell["cell_type"] == "markdown":
            inside = bool(SOLUTION_START.search(_source(cell))) or (
                inside and not SOLUTION_END.search(_source(cell))
            )
        elif inside:
            meta = cell["metadata"].get("jupyter", {})
            if not (meta.get("source_hidden") and meta.get("outputs_hidden")):
                shown.append(i)
    assert not shown, f"solution code cells shown on opening: {shown}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_live_widgets_are_hidden_on_the_site_and_have_a_static_counterpart(path):
    cells = _cells(path)
    live = [
        i
        for i, c in enumerate(cells)
        if c["cell_type"] == "code" and LIVE_WIDGET.search(_source(c))
    ]
    shown = [i for i in live if "remove-cell" not in _tags(cells[i])]
    assert not shown, f"live widget cells not tagged remove-cell: {shown}"
    if live:
        assert any(
            "scrubber(" in _source(c) for c in cells if c["cell_type"] == "code"
        ), "live widgets but no plotting.scrubber counterpart for the site"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_harness_settings_are_cell_tags_and_parameters(path):
    cells = [c for c in _cells(path) if c["cell_type"] == "code"]
    assert "check_pinned()" in _source(cells[0]), "first code cell: check_pinned()"
    params = [c for c in cells if "parameters" in _tags(c)]
    assert len(params) == 1 and re.search(r"^SEED = \d+", _source(params[0]), re.M)
    comments = [i for i, c in enumerate(cells) if "# NBVAL_" in _source(c)]
    assert not comments, f"use nbval's cell tags, not comments: code cells {comments}"


def _png_width(b64):
    """Pixel width of a base64-encoded PNG (from its IHDR header)."""
    import base64
    import struct

    return struct.unpack(">I", base64.b64decode(b64[:64])[16:20])[0]


def _figure_widths(cell):
    """Logical widths (px at the figures' 100 dpi) of the cell's PNG outputs:
    inline figures are retina PNGs (twice the logical size unless the metadata says);
    animation frames inside HTML are drawn at the logical size."""
    for out in cell.get("outputs", []):
        data = out.get("data", {})
        if "image/png" in data:
            meta = out.get("metadata", {}).get("image/png", {})
            b64 = "".join(data["image/png"]).replace("\n", "")
            yield meta.get("width", _png_width(b64) / 2)
        html = "".join(data.get("text/html", []))
        for b64 in re.findall(r"data:image/png;base64,([A-Za-z0-9+/]{64})", html):
            yield _png_width(b64)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_figures_fit_a_page_column(path):
    """No figure is wider than 7.5 in (the guide's limit; a phone scales it down to
    390 px, so wider figures mean unreadable labels). 3% slack for tight bounding
    boxes."""
    wide = {
        i: round(w)
        for i, c in enumerate(_cells(path))
        for w in _figure_widths(c)
        if w > 1.03 * 750
    }
    assert not wide, f"cells with figures wider than 7.5 in (px at 100 dpi): {wide}"


# Exercises whose answer is an argument or a derivation: nothing to compute, no check.
ARGUMENT_ONLY = {
    "ex-ch1-dgamma",
    "ex-ch2-bias",
    "ex-ch3-gap",
    "ex-ch3-freeze",
    "ex-ch4-argue",
    "ex-ch5-steps",
}
EXERCISE_LABEL = re.compile(r"```\{exercise\}[^\n]*\n:label: (\S+)")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_computed_exercise_checks_itself(path):
    """Each exercise with a computed answer states the exact call of its check, and is
    followed by a starter cell (hidden on the site) that holds a skeleton and makes
    that call; an argument-only exercise has neither."""
    cells = _cells(path)
    for i, cell in enumerate(cells):
        found = (
            EXERCISE_LABEL.search(_source(cell))
            if cell["cell_type"] == "markdown"
            else None
        )
        if not found:
            continue
        label, after = found.group(1), cells[i + 1]
        is_starter = "exercise-starter" in _tags(after)
        if label in ARGUMENT_ONLY:
            assert not is_starter, f"{label}: argument only, but has a starter"
            continue
        assert is_starter, f"{label}: no starter cell after the exercise"
        assert {"remove-cell"} <= _tags(after), f"{label}: starter shown on the site"
        calls = re.findall(r"(check_\w+)\(", _source(after))
        assert calls, f"{label}: the starter makes no check"
        for call in set(calls):
            assert call in _source(cell), f"{label}: the text does not name {call}"
