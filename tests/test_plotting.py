"""bnlib.plotting: the book's style and the static counterparts of widgets."""

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from bnlib import plotting  # noqa: E402


def test_scrubber_has_one_frame_per_value_and_a_slider():
    fig, ax = plt.subplots(figsize=(3, 2))
    x = np.linspace(0, 1, 20)
    (line,) = ax.plot(x, x)
    seen = []

    def draw(g):
        seen.append(g)
        line.set_ydata(g * x)

    html = plotting.scrubber(fig, draw, [0.5, 1.0, 2.0]).data
    assert 0.5 in seen and 2.0 in seen
    assert 'type="range"' in html
    assert len(re.findall(r"data:image/png;base64", html)) == 3
    assert not plt.fignum_exists(fig.number)  # closed: not drawn a second time


def test_figure_png_is_twice_the_figure_and_closes_it():
    import struct

    fig, ax = plt.subplots(figsize=(3.0, 2.0), dpi=100)
    ax.plot([0, 1], [1, 0])
    png = plotting.figure_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (600, 400)  # retina: 2 x 300 x 200
    assert not plt.fignum_exists(fig.number)


def test_live_figure_redraws_when_a_control_changes():
    import ipywidgets as widgets

    calls = []

    def view(a, b):
        calls.append((a, b))
        fig, ax = plt.subplots(figsize=(4.0, 2.0))
        ax.plot([0, 1], [a, b])
        return fig, {"sum": a + b}

    controls = {"a": widgets.FloatSlider(value=1.0), "b": widgets.IntSlider(value=2)}
    box = plotting.live_figure(view, controls)
    assert box.last_stats == {"sum": 3.0} and box.image.layout.width == "400px"
    png = box.image.value
    controls["b"].value = 5
    assert calls == [(1.0, 2), (1.0, 5)] and box.last_stats == {"sum": 6.0}
    assert box.image.value != png  # the picture was replaced
    assert box.children[-1] is box.image and len(box.children) == 2  # one row
    assert plt.get_fignums() == []  # every drawn figure was closed


def test_live_figure_accepts_a_view_that_returns_only_a_figure():
    import ipywidgets as widgets

    def view(v):
        return plt.subplots(figsize=(2.0, 2.0))[0]

    s = widgets.FloatSlider(value=0.0)
    box = plotting.live_figure(view, {"v": s}, rows=[[s], []])
    assert box.last_stats is None and len(box.children) == 3


def test_markdown_table():
    text = plotting.markdown_table(["a", "b"], [[1, "x"], ["2.50", "y"]])
    assert text.splitlines() == [
        "| a | b |",
        "| --- | --- |",
        "| 1 | x |",
        "| 2.50 | y |",
    ]
    with pytest.raises(ValueError, match="expected 2"):
        plotting.markdown_table(["a", "b"], [[1]])
