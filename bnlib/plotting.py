"""Shared figure style: one colour per method across the whole book.

``COLORS["bn"]`` means "with batch norm" in every chapter, ``COLORS["plain"]`` means
"without normalization", and so on. Call :func:`use_style` once per notebook.
"""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt

__all__ = [
    "slider",
    "markdown_table",
    "COLORS",
    "LABELS",
    "use_style",
    "color",
    "caption_axes",
    "scrubber",
    "figure_png",
    "live_figure",
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


def markdown_table(header, rows) -> str:
    """A Markdown table as a string (show it with ``IPython.display.Markdown``): it
    renders on the site, in JupyterLab and at a phone's width.

    Args:
        header: k column titles.
        rows: sequence of k-item rows; items are used with ``str``, so format numbers
            before passing them.
    """
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(
                f"markdown_table: row {row!r} has {len(row)} items, "
                f"expected {len(header)}"
            )
        lines.append("| " + " | ".join(map(str, row)) + " |")
    return "\n".join(lines)


def caption_axes(ax, xlabel, ylabel, title=None):
    """Label an axes in one call (units belong in the labels)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return ax


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


def figure_png(fig, scale=2):
    """The PNG bytes of ``fig`` at ``scale`` times its dpi (sharp on high-density
    screens, like the book's retina inline figures); closes ``fig``."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=scale * fig.dpi)
    plt.close(fig)
    return buf.getvalue()


def slider(
    description, value, lo, hi, step, integer=False, label="50px", width="225px"
):
    """An ipywidgets slider for :func:`live_figure` that redraws on release (not while
    dragged): a FloatSlider, or an IntSlider with ``integer=True``. ``label`` and
    ``width`` are CSS widths of the description and of the whole control."""
    import ipywidgets as widgets

    kind = widgets.IntSlider if integer else widgets.FloatSlider
    extra = {} if integer else {"readout_format": ".2f"}
    return kind(
        value=value,
        min=lo,
        max=hi,
        step=step,
        description=description,
        continuous_update=False,
        style={"description_width": label},
        layout=widgets.Layout(width=width),
        **extra,
    )


def live_figure(view, controls, rows=None):
    """Live ipywidgets controls above the figure that ``view`` draws (JupyterLab only;
    the static site shows a :func:`scrubber` instead).

    Args:
        view: ``view(**values)`` returns a Figure or ``(Figure, stats)``; it is called
            with every control's value, by name, now and whenever a control changes.
        controls: dict name -> ipywidgets control (slider, dropdown...).
        rows: lists of controls, one row each (default: all in one row).

    Returns:
        an ``ipywidgets.VBox``, with ``box.controls`` (the dict), ``box.image`` (the
        Image widget) and ``box.last_stats`` (the latest stats, or None): tests move a
        control and check the picture through them.

    The figure is shown in an Image widget at its logical width (its PNG has twice
    the pixels), and a change only replaces the Image's bytes. Capturing output
    instead (``with out:``, ``interactive_output``) races with notebook runners
    (nbclient, papermill), which may then wait for the cell until their timeout.
    """
    import ipywidgets as widgets

    box = widgets.VBox()

    def draw():
        drawn = view(**{name: c.value for name, c in controls.items()})
        fig, box.last_stats = drawn if isinstance(drawn, tuple) else (drawn, None)
        width = round(fig.get_size_inches()[0] * fig.dpi)
        return figure_png(fig), width

    png, width = draw()
    box.image = widgets.Image(
        value=png, format="png", layout={"width": f"{width}px", "max_width": "100%"}
    )

    def redraw(change=None):
        box.image.value = draw()[0]

    for control in controls.values():
        control.observe(redraw, names="value")
    rows = [list(controls.values())] if rows is None else rows
    box.children = [widgets.HBox(row) for row in rows] + [box.image]
    box.controls = controls
    return box
