"""Figures of the derivation chapter (chapter 1).

:func:`draw_bn_graph` (the computational graph of batch norm),
:func:`plot_gradient_geometry` (the backward pass as a regression residual),
:func:`plot_weight_scale_sweep` (scale invariance: larger weights get smaller updates;
the training loop itself is on the chapter's page), and :func:`markdown_table` for
tables in outputs.
"""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np

from .. import functional as F
from ..plotting import COLORS

__all__ = [
    "BN_GRAPH_NODES",
    "BN_GRAPH_EDGES",
    "markdown_table",
    "wrap_report",
    "draw_bn_graph",
    "plot_gradient_geometry",
    "plot_weight_scale_sweep",
]

#: Node name -> label drawn in the graph (inputs first, then the STAGED_NODES nodes).
BN_GRAPH_NODES = {
    "x": r"$x$",
    "gamma": r"$\gamma$",
    "beta": r"$\beta$",
    "mu": r"$\mu = \frac{1}{m}\sum_i x_i$",
    "xc": r"$x_c = x - \mu$",
    "sq": r"$s = x_c^2$",
    "var": r"$\sigma^2 = \frac{1}{m}\sum_i s_i$",
    "std": r"$\sigma_\epsilon = \sqrt{\sigma^2 + \epsilon}$",
    "inv_std": r"$r = 1 / \sigma_\epsilon$",
    "x_hat": r"$\hat{x} = x_c\, r$",
    "scaled": r"$z = \gamma\, \hat{x}$",
    "out": r"$y = z + \beta$",
}


#: Forward edges of the graph (parent, child); x and x_c each feed two nodes.
BN_GRAPH_EDGES = (
    ("x", "mu"),
    ("x", "xc"),
    ("mu", "xc"),
    ("xc", "sq"),
    ("sq", "var"),
    ("var", "std"),
    ("std", "inv_std"),
    ("xc", "x_hat"),
    ("inv_std", "x_hat"),
    ("x_hat", "scaled"),
    ("gamma", "scaled"),
    ("scaled", "out"),
    ("beta", "out"),
)


_POS = {
    "x": (0.0, 0.0),
    "mu": (1.0, 1.0),
    "xc": (2.1, 0.0),
    "sq": (3.2, 1.0),
    "var": (4.75, 1.0),
    "std": (6.6, 1.0),
    "inv_std": (8.3, 1.0),
    "x_hat": (8.9, 0.0),
    "scaled": (10.2, 0.0),
    "gamma": (10.2, -1.0),
    "out": (11.5, 0.0),
    "beta": (11.5, -1.0),
}


def markdown_table(header, rows) -> str:
    """A Markdown table as a string (display it with ``IPython.display.Markdown``).

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


def wrap_report(text: str, width: int = 88) -> str:
    """A checker's report (``CheckResult.report``) with each line wrapped to ``width``
    columns; continuation lines are indented four spaces more than the line they
    continue."""
    out = []
    for line in text.splitlines():
        indent = " " * (len(line) - len(line.lstrip()))
        out.append(
            textwrap.fill(
                line,
                width,
                subsequent_indent=indent + "    ",
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return "\n".join(out)


def _brief(a) -> str:
    """A short, stable summary of an array: the value if scalar, else its 2-norm."""
    a = np.asarray(a, dtype=np.float64)
    if a.size == 1:
        return f"{a.item():.3g}"
    return f"{np.linalg.norm(a):.3g}"


def draw_bn_graph(values=None, grads=None, ax=None, figsize=(7.5, 3.2)):
    """Draw batch norm's forward computational graph, one box per operation.

    Nodes are the inputs ``x``, ``gamma``, ``beta`` and every node of
    :data:`bnlib.functional.STAGED_NODES`; arrows follow :data:`BN_GRAPH_EDGES`.

    Args:
        values: optional ``{node: array}`` of forward values, summarized next to each
            box (value if scalar, else 2-norm); ``gamma`` and ``beta`` may be included.
        grads: optional ``{node: array}`` of gradients dL/d(node) (e.g. the ``trace`` of
            :func:`bnlib.functional.batchnorm_backward_staged`, plus ``gamma`` and
            ``beta``), summarized the same way on the other side of each box. A line
            of text in the lower left says what the numbers are.
        ax: axes to draw into (a new figure of ``figsize`` inches if None).

    Returns:
        The matplotlib Figure. Node texts carry ``gid="node:<name>"``, arrows
        ``gid="edge:<parent>-><child>"`` and annotations ``gid="value:..."`` /
        ``"grad:..."``.
    """
    missing = {name for name, _ in F.STAGED_NODES} - set(BN_GRAPH_NODES)
    if missing:  # the graph must show every node the staged backward visits
        raise ValueError(f"draw_bn_graph: no label for staged nodes {sorted(missing)}")
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    fig = ax.figure
    ax.set_xlim(-0.4, 12.4)
    ax.set_ylim(-1.55, 1.55)
    ax.axis("off")
    boxes = {}
    for name, label in BN_GRAPH_NODES.items():
        is_input = name in ("x", "gamma", "beta")
        boxes[name] = ax.text(
            *_POS[name],
            label,
            ha="center",
            va="center",
            fontsize=10,
            gid=f"node:{name}",
            bbox=dict(
                boxstyle="round,pad=0.35",
                lw=1.0,
                fc="#f2f2f2" if is_input else "white",
                ec=COLORS["reference"] if is_input else COLORS["bn"],
            ),
        )
    for parent, child in BN_GRAPH_EDGES:
        ax.annotate(
            "",
            xy=_POS[child],
            xytext=_POS[parent],
            gid=f"edge:{parent}->{child}",
            arrowprops=dict(
                arrowstyle="-|>",
                color="0.35",
                lw=1.0,
                shrinkA=0,
                shrinkB=0,
                patchA=boxes[parent].get_bbox_patch(),
                patchB=boxes[child].get_bbox_patch(),
            ),
        )
    for kind, data, dy, color in (
        ("value", values, 0.36, COLORS["reference"]),
        ("grad", grads, -0.36, COLORS["plain"]),
    ):
        for name, arr in (data or {}).items():
            if name not in _POS:
                continue
            x0, y0 = _POS[name]
            if y0 < -0.5:  # gamma, beta: gradient below the box, value above it
                pos = (x0, y0 + (0.36 if kind == "value" else -0.36))
            else:  # upper row: gradients above the box; lower row: below it
                pos = (x0, y0 + (-dy if y0 > 0.5 else dy))
            ax.text(
                *pos,
                _brief(arr),
                ha="center",
                va="center",
                fontsize=9,
                color=color,
                gid=f"{kind}:{name}",
            )
    notes = [
        (data, kind, color)
        for data, kind, color in (
            (values, "grey: forward value", COLORS["reference"]),
            (grads, r"orange: gradient $\partial\ell/\partial v$", COLORS["plain"]),
        )
        if data
    ]
    for k, (_, text, color) in enumerate(notes):
        ax.text(
            -0.4,
            -0.9 - 0.3 * k,
            text + " (the value, or its norm over the batch)",
            fontsize=9,
            color=color,
            ha="left",
            va="center",
        )
    return fig


def plot_gradient_geometry(x_hat, dy, dx, gamma, inv_std, figsize=(7.5, 3.6)):
    """The BN backward for one feature as a regression residual.

    Left: the upstream gradient ``dy_i`` against ``x_hat_i`` with the least-squares line
    ``a + b x_hat`` (the part of dy that only shifts or scales the batch). Right:
    ``dx_i / (gamma * inv_std)`` against ``x_hat_i``: what is left, the residual, with
    no mean and no slope.

    Args:
        x_hat, dy, dx: shape (m,), one feature's column.
        gamma, inv_std: scalars of that feature.

    Returns:
        The Figure (two axes; the residual panel has one vertical segment per example).
    """
    x_hat, dy, dx = (np.asarray(v, np.float64).ravel() for v in (x_hat, dy, dx))
    slope, intercept = np.polyfit(x_hat, dy, 1)
    resid = dx / (gamma * inv_std)
    fig, (a0, a1) = plt.subplots(
        1, 2, figsize=figsize, sharey=True, layout="constrained"
    )
    grid = np.linspace(x_hat.min() - 0.3, x_hat.max() + 0.3, 2)
    a0.plot(
        grid,
        intercept + slope * grid,
        color=COLORS["reference"],
        label=r"shift + scale part $a + b\,\hat{x}$",
    )
    a0.vlines(
        x_hat, intercept + slope * x_hat, dy, color=COLORS["bn"], lw=1.2, alpha=0.6
    )
    a0.scatter(
        x_hat,
        dy,
        color="k",
        s=18,
        zorder=3,
        label=r"upstream $\partial \ell/\partial y_i$",
    )
    a0.set_title("what arrives: dy")
    a1.axhline(0.0, color=COLORS["reference"], lw=1.0, label="no shift, no slope")
    a1.vlines(x_hat, 0.0, resid, color=COLORS["bn"], lw=1.2, alpha=0.6, gid="residual")
    a1.scatter(
        x_hat,
        resid,
        color=COLORS["bn"],
        s=18,
        zorder=3,
        label=r"$\partial \ell/\partial x_i \,/\, (\gamma r)$",
    )
    a1.set_title(r"what passes to x: dx (rescaled)")
    for ax in (a0, a1):
        ax.set_xlabel(r"normalized input $\hat{x}_i$ (batch std units)")
        ax.legend(loc="upper left", fontsize=9)
    a0.set_ylabel("gradient (loss units per unit of y)")
    return fig


def plot_weight_scale_sweep(scales, loss, norm, first_step, figsize=(7.5, 6.0)):
    """Scale invariance in training, from runs started at ``W = a * W0``.

    Top left: training loss per step. Top right: the relative step ``lr |g| / |w|``
    of the first update against the scale a (log-log, with the 1/a^2 line). Bottom:
    growth of the mean row norm, ``|w_t| / |w_0| - 1``, on a log scale (it starts at 0,
    so step 0 is left out). One colour per scale, the same in every panel.

    Args:
        scales: (k,) positive scales a. loss, norm: (k, steps + 1) per run.
        first_step: (k,) relative step of the first update of each run.

    Returns:
        The Figure (three axes: loss, first step, norm growth).
    """
    scales, loss, norm = (np.asarray(v, np.float64) for v in (scales, loss, norm))
    first_step = np.asarray(first_step, np.float64)
    cols = plt.cm.viridis(np.linspace(0.0, 0.78, len(scales)))  # no pale yellow
    fig, axd = plt.subplot_mosaic(
        [["loss", "step"], ["norm", "norm"]], figsize=figsize, layout="constrained"
    )
    steps = np.arange(loss.shape[1])
    for a, c, run_loss, run_norm in zip(scales, cols, loss, norm):
        axd["loss"].plot(steps, run_loss, color=c, lw=1.8, label=f"a = {a:g}")
        axd["norm"].plot(
            steps[1:],
            run_norm[1:] / run_norm[0] - 1,
            color=c,
            lw=1.8,
            label=f"a = {a:g}",
        )
    ax = axd["loss"]
    ax.set_yscale("log")
    ax.set_xlabel("gradient step")
    ax.set_ylabel("training loss (MSE)")
    ax.legend(fontsize=9)
    ax.set_title("same network, different |W|")
    ax = axd["step"]
    ref = first_step[0] * (scales[0] / scales) ** 2
    ax.loglog(scales, ref, color=COLORS["reference"], ls="--", label=r"$\propto 1/a^2$")
    ax.scatter(scales, first_step, c=cols, s=40, zorder=3, label="measured")
    ax.set_xticks(scales, [f"{a:g}" for a in scales])
    ax.minorticks_off()
    ax.set_xlabel("weight scale a")
    ax.set_ylabel(r"relative step $\eta|g|/|w|$, step 1")
    ax.legend(fontsize=9)
    ax.set_title("larger weights move less")
    ax = axd["norm"]
    ax.set_yscale("log")
    ax.set_xlabel("gradient step")
    ax.set_ylabel(r"row-norm growth $|w_t|/|w_0| - 1$")
    ax.legend(fontsize=9, ncols=len(scales), loc="lower right")
    ax.set_title("row norms only grow, the small ones fastest")
    return fig
