"""Figures and experiments of the derivation chapter (chapter 1).

:func:`draw_bn_graph` (the computational graph of batch norm),
:func:`plot_gradient_geometry` (the backward pass as a regression residual),
:func:`weight_scale_sweep` and :func:`plot_weight_scale_sweep` (scale invariance:
larger weights get smaller updates), and :func:`markdown_table` for tables in outputs.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .. import functional as F
from ..plotting import COLORS

__all__ = [
    "BN_GRAPH_NODES",
    "BN_GRAPH_EDGES",
    "markdown_table",
    "draw_bn_graph",
    "plot_gradient_geometry",
    "weight_scale_sweep",
    "plot_weight_scale_sweep",
]

#: Node name -> label drawn in the graph (inputs first, then the STAGED_NODES operations).
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
        header: k column titles. rows: sequence of k-item rows; items are used with ``str``,
            so format numbers before passing them.
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


def _brief(a) -> str:
    """A short, stable summary of an array: the value if scalar, else its 2-norm."""
    a = np.asarray(a, dtype=np.float64)
    if a.size == 1:
        return f"{a.item():.3g}"
    return rf"$\|\cdot\|$={np.linalg.norm(a):.3g}"


def draw_bn_graph(values=None, grads=None, ax=None, figsize=(8.0, 2.9)):
    """Draw batch norm's forward computational graph, one box per operation.

    Nodes are the inputs ``x``, ``gamma``, ``beta`` and every node of
    :data:`bnlib.functional.STAGED_NODES`; arrows follow :data:`BN_GRAPH_EDGES`.

    Args:
        values: optional ``{node: array}`` of forward values, summarized next to each box
            (value if scalar, else 2-norm).
        grads: optional ``{node: array}`` of gradients dL/d(node) (e.g. the ``trace`` of
            :func:`bnlib.functional.batchnorm_backward_staged`), summarized the same way on
            the other side of each box.
        ax: axes to draw into (a new figure of ``figsize`` inches if None).

    Returns:
        The matplotlib Figure. Node texts carry ``gid="node:<name>"``, arrows
        ``gid="edge:<parent>-><child>"`` and annotations ``gid="value:..."`` / ``"grad:..."``.
    """
    missing = {name for name, _ in F.STAGED_NODES} - set(BN_GRAPH_NODES)
    if missing:  # the graph must show every node the staged backward visits
        raise ValueError(f"draw_bn_graph: no label for staged nodes {sorted(missing)}")
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    fig = ax.figure
    ax.set_xlim(-0.4, 12.2)
    ax.set_ylim(-1.35, 1.5)
    ax.axis("off")
    boxes = {}
    for name, label in BN_GRAPH_NODES.items():
        is_input = name in ("x", "gamma", "beta")
        boxes[name] = ax.text(
            *_POS[name],
            label,
            ha="center",
            va="center",
            fontsize=11,
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
        ("value", values, 0.34, COLORS["reference"]),
        ("grad", grads, -0.34, COLORS["plain"]),
    ):
        for name, arr in (data or {}).items():
            if name not in _POS:
                continue
            prefix = "" if kind == "value" else r"$\partial \ell$: "
            # upper row: gradients above the box, values below (the arrows run underneath)
            off = -dy if _POS[name][1] > 0.5 else dy
            ax.text(
                _POS[name][0],
                _POS[name][1] + off,
                prefix + _brief(arr),
                ha="center",
                va="center",
                fontsize=8.5,
                color=color,
                gid=f"{kind}:{name}",
            )
    return fig


def plot_gradient_geometry(x_hat, dy, dx, gamma, inv_std, figsize=(9.0, 3.4)):
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
        ax.legend(loc="upper left", fontsize=8)
    a0.set_ylabel("gradient (loss units per unit of y)")
    return fig


def weight_scale_sweep(scales, steps=60, lr=0.05, m=128, d=8, h=6, eps=1e-5, seed=0):
    """Train only the weight W of ``u -> BN(W u) -> tanh -> fixed readout`` from ``a * W0``.

    The same data, target, W0 and readout for every scale ``a``; full-batch gradient descent
    on the mean squared error with learning rate ``lr``, updating W alone, so the only
    difference between runs is the norm of the starting weights.

    Args:
        scales: sequence of k positive factors a.
        steps: gradient steps per run. m, d, h: batch size, input and hidden width.

    Returns:
        dict with ``scales`` (k,), ``loss`` (k, steps + 1), ``angle`` (k, steps): mean over
        the rows of W of the angle (radians) each row turns in one step, ``rel_step``
        (k, steps): mean over rows of the relative step ``lr |g_j| / |w_j|``, ``norm`` (k, steps + 1):
        mean row norm of W, and ``radial`` (k, steps): max over rows of |w . g| / (|w| |g|)
        (how far the gradient is from orthogonal to the row).
    """
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(m, d))
    w0 = rng.normal(size=(h, d))
    w0 /= np.linalg.norm(w0, axis=1, keepdims=True)
    readout = rng.normal(size=h) / np.sqrt(h)
    teacher = rng.normal(size=(d, 1))
    target = np.tanh(u @ teacher).ravel()
    keys = ("loss", "angle", "rel_step", "norm", "radial")
    out = {k: [] for k in keys}
    for a in scales:
        w = a * w0
        losses, angles, rel_step, norms, radial = [], [], [], [], []
        for t in range(steps + 1):
            z = u @ w.T  # (m, h)
            zn, cache = F.norm_forward(z, None, None, (0,), eps)
            act = np.tanh(zn)
            pred = act @ readout  # (m,)
            diff = pred - target
            losses.append(float(np.mean(diff**2)))
            norms.append(float(np.linalg.norm(w, axis=1).mean()))
            if t == steps:
                break
            dact = (2.0 / m) * diff[:, None] * readout[None, :]
            dzn = dact * (1.0 - act**2)
            dz, _, _ = F.norm_backward(dzn, cache)
            g = dz.T @ u  # (h, d)
            gn = np.linalg.norm(g, axis=1) * np.linalg.norm(w, axis=1)
            radial.append(
                float(np.max(np.abs(np.sum(w * g, axis=1)) / np.maximum(gn, 1e-300)))
            )
            rel_step.append(
                float(
                    np.mean(lr * np.linalg.norm(g, axis=1) / np.linalg.norm(w, axis=1))
                )
            )
            w_new = w - lr * g
            cos = np.sum(w * w_new, axis=1) / (
                np.linalg.norm(w, axis=1) * np.linalg.norm(w_new, axis=1)
            )
            angles.append(float(np.mean(np.arccos(np.clip(cos, -1.0, 1.0)))))
            w = w_new
        for key, val in zip(keys, (losses, angles, rel_step, norms, radial)):
            out[key].append(val)
    res = {k: np.array(v) for k, v in out.items()}
    res["scales"] = np.asarray(scales, dtype=np.float64)
    return res


def plot_weight_scale_sweep(res, figsize=(10.0, 3.4)):
    """Three panels from :func:`weight_scale_sweep`: loss per step; the relative step
    ``lr |g| / |w|`` of the first update against the scale a (log-log, with the 1/a^2
    reference line); the mean row norm of W relative to its start, over training.
    One colour per scale (viridis). Returns the Figure."""
    scales = res["scales"]
    cols = plt.cm.viridis(np.linspace(0.0, 0.9, len(scales)))
    fig, (a0, a1, a2) = plt.subplots(1, 3, figsize=figsize, layout="constrained")
    for a, c, loss, norm in zip(scales, cols, res["loss"], res["norm"]):
        a0.plot(loss, color=c, label=f"a = {a:g}")
        a2.plot(norm / norm[0], color=c)
    a0.set_yscale("log")
    a0.set_xlabel("gradient step")
    a0.set_ylabel("training loss (MSE)")
    a0.legend(fontsize=8)
    a0.set_title("same network, different |W|")
    first = res["rel_step"][:, 0]
    ref = first[0] * (scales[0] / scales) ** 2
    a1.loglog(scales, ref, color=COLORS["reference"], ls="--", label=r"$\propto 1/a^2$")
    a1.loglog(scales, first, "o", color=COLORS["bn"], label="measured")
    a1.set_xticks(scales, [f"{a:g}" for a in scales])
    a1.minorticks_off()
    a1.set_xlabel("weight scale a")
    a1.set_ylabel(r"relative step $\eta|g|/|w|$ in step 1")
    a1.legend(fontsize=8)
    a1.set_title("larger weights move less")
    a2.set_xlabel("gradient step")
    a2.set_ylabel(r"mean row norm $|w_t| / |w_0|$")
    a2.set_title("row norms grow, small ones fastest")
    return fig
