"""bnlib.plotting: the book's style and the static counterparts of widgets."""

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

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


def test_small_multiples_hides_unused_panels():
    fig, axes = plotting.small_multiples(5, ncols=3)
    assert len(axes) == 5
    assert sum(ax.get_visible() for ax in fig.axes) == 5
    plt.close(fig)
