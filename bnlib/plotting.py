"""Shared figure style: one colour per method across the whole book.

``COLORS["bn"]`` means "with batch norm" in every chapter, ``COLORS["plain"]`` means
"without normalization", and so on. Call :func:`use_style` once per notebook.
"""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

__all__ = [
    "COLORS",
    "LABELS",
    "use_style",
    "color",
    "caption_axes",
    "plot_curves",
    "small_multiples",
    "scrubber",
]

#: One colour per method (colour-blind-safe Okabe-Ito palette).
COLORS = {
    "bn": "#0072B2",  # batch norm: blue
    "plain": "#D55E00",  # no normalization: vermillion
    "ln": "#009E73",  # layer norm: green
    "gn": "#CC79A7",  # group norm: purple-pink
    "in": "#E69F00",  # instance norm: orange
    "rms": "#56B4E9",  # RMSNorm: sky blue
    "noisy_bn": "#000000",  # batch norm with injected noise: black
    "renorm": "#F0E442",  # batch renormalization: yellow
    "reference": "#7F7F7F",  # exact / reference values: grey
}

LABELS = {
    "bn": "BatchNorm",
    "plain": "no normalization",
    "ln": "LayerNorm",
    "gn": "GroupNorm",
    "in": "InstanceNorm",
    "rms": "RMSNorm",
    "noisy_bn": "noisy BatchNorm",
    "renorm": "Batch Renorm",
    "reference": "reference",
}


def use_style():
    """Book-wide matplotlib defaults: readable sizes, light grid, no top/right spines,
    and deterministic SVG/PNG output (no timestamps or random ids).

    In a Jupyter kernel it also makes sure figures show inline, even when the
    environment sets ``MPLBACKEND`` to a non-interactive backend such as Agg, as
    double-resolution ("retina") PNGs."""
    _inline_in_kernel()
    mpl.rcParams.update(
        {
            "figure.figsize": (7.0, 3.6),
            "figure.dpi": 100,
            "savefig.dpi": 100,
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "legend.fontsize": 9,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "figure.constrained_layout.use": True,
            "svg.hashsalt": "bnlib",
            "path.simplify": True,
        }
    )


def _inline_in_kernel():
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if (
        shell is not None
        and type(shell).__name__ == "ZMQInteractiveShell"
        and "inline" not in mpl.get_backend()
    ):
        shell.enable_matplotlib("inline")
    if shell is not None and type(shell).__name__ == "ZMQInteractiveShell":
        # PNGs at twice the resolution, shown at their logical size (the width and
        # height go with the image), so labels stay sharp on phones and zoomed pages
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("retina")


def color(method: str) -> str:
    """The book's colour for a method key such as ``"bn"`` or ``"plain"``."""
    return COLORS[method]


def caption_axes(ax, xlabel, ylabel, title=None):
    """Label an axes in one call (units belong in the labels)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return ax


def plot_curves(ax, curves, xlabel, ylabel, title=None, logy=False):
    """Plot ``{method_key: (x, y)}`` with the book's colours and labels."""
    for key, (x, y) in curves.items():
        ax.plot(x, y, color=COLORS.get(key, None), label=LABELS.get(key, key))
    if logy:
        ax.set_yscale("log")
    ax.legend()
    return caption_axes(ax, xlabel, ylabel, title)


def small_multiples(n, ncols=2, panel_size=(3.75, 2.6), sharex=True, sharey=True):
    """A grid of ``n`` panels (the static counterpart of a widget sweep), two per row
    by default so that the figure fits a 7.5 in column.
    Returns ``(fig, axes)`` with ``axes`` flat and unused panels hidden."""
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
        sharex=sharex,
        sharey=sharey,
        squeeze=False,
    )
    axes = axes.ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def scrubber(fig, draw, values, interval=500):
    """A precomputed animation with a slider and play buttons: what the static site
    shows in place of a live widget, since it really responds when scrubbed.

    ``draw(value)`` redraws ``fig`` for one value of the parameter; it is called once
    per entry of ``values`` (keep them to a few dozen: every frame is an embedded PNG).
    Returns an ``IPython.display.HTML`` (matplotlib's ``to_jshtml``: self-contained,
    no network) and closes ``fig``. Its HTML carries a random element id, so tag the
    cell ``nbval-ignore-output``.
    """
    from IPython.display import HTML
    from matplotlib.animation import FuncAnimation

    anim = FuncAnimation(
        fig, draw, frames=list(values), interval=interval, repeat=False
    )
    html = anim.to_jshtml(default_mode="once")
    plt.close(fig)
    return HTML(html)
