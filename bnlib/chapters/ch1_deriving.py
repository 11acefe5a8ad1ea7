"""Figures of the derivation chapter (chapter 1).

:func:`draw_bn_graph` (the computational graph of batch norm),
:func:`plot_gradient_geometry` (the backward pass as a regression residual),
:func:`plot_weight_scale_sweep` (scale invariance: larger weights get smaller updates;
the training loop itself is on the chapter's page), the layer diagnostics of a deeper
network (:func:`record_layers`, :func:`saturated_fraction`, :func:`layer_summary`,
:func:`plot_layer_profiles`) on scikit-learn's digits (:func:`load_digits`),
and :func:`wrap_report` for checker reports in outputs; :func:`check_batchnorm_layer`
checks the reader's own BatchNorm1d layer.
"""

from __future__ import annotations

import functools
import math
import textwrap
from statistics import NormalDist

import matplotlib.pyplot as plt
import numpy as np

from .. import functional as F
from ..data import Dataset
from ..exercises import (
    answer_key,
    call_reader,
    copy_array,
    judge_cases,
    never_raises,
)
from ..losses import softmax_cross_entropy
from ..modules import BatchNorm1d, Sigmoid
from ..plotting import COLORS

__all__ = [
    "BN_GRAPH_NODES",
    "BN_GRAPH_EDGES",
    "wrap_report",
    "draw_bn_graph",
    "plot_gradient_geometry",
    "backward_geometry",
    "backward_geometry_view",
    "backward_geometry_frames",
    "backward_geometry_widget",
    "plot_weight_scale_sweep",
    "SATURATION_TOL",
    "record_layers",
    "saturated_fraction",
    "layer_summary",
    "plot_layer_profiles",
    "load_digits",
    "check_batchnorm_layer",
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
    fig, axes = _geometry_figure(figsize)
    _draw_geometry(*axes, x_hat, dy, dx / (gamma * inv_std))
    return fig


def backward_geometry(m=6, shift=1.0, trend=0.8, noise=0.6, log_eps=-5.0, seed=0):
    """One feature's backward, with the upstream gradient built from its parts.

    A batch x of ``m`` values (drawn from ``seed``) is standardized to
    ``z = (x - mu) / sigma`` (no eps), and the upstream gradient is
    ``dy = shift + trend * z + noise * e`` with e a fixed random vector of mean 0 and
    no component along z. BN runs with ``eps = 10**log_eps * sigma**2``.

    Returns:
        dict with ``z``, ``dy`` and ``passed`` = dx / (gamma r) (each (m,)), and the
        numbers of the compact formula: ``mean_dy``, ``mean_dy_xhat`` (the two sums
        divided by m), ``leak`` = eps / (sigma^2 + eps), ``sum_passed`` (0 up to
        rounding) and ``trend_passed``, the slope of ``passed`` on z (leak * trend).
    """
    rng = np.random.default_rng(seed)
    x, e = rng.normal(1.0, 2.0, m), rng.normal(size=m)
    z = (x - x.mean()) / x.std()
    e = e - e.mean() - z * (e @ z) / m  # the part of the gradient BN keeps
    dy = shift + trend * z + noise * e
    eps = 10.0**log_eps * x.var()
    _, cache = F.batchnorm_forward(x[:, None], np.ones(1), np.zeros(1), eps)
    dx = F.batchnorm_backward(dy[:, None], cache)[0][:, 0]
    x_hat, r = cache["x_hat"][:, 0], cache["inv_std"].item()
    passed = dx / r
    return dict(
        z=z,
        dy=dy,
        passed=passed,
        mean_dy=dy.mean(),
        mean_dy_xhat=(dy * x_hat).mean(),
        leak=eps / (x.var() + eps),
        sum_passed=passed.sum(),
        trend_passed=(passed @ z) / m,
    )


def _draw_geometry(a0, a1, z, dy, passed):
    """The two panels of the backward's geometry, against z = x_hat up to eps: what
    arrives (dy, its least-squares line, the residuals) and what passes to x."""
    slope, intercept = np.polyfit(z, dy, 1)
    grid = np.array([z.min() - 0.3, z.max() + 0.3])
    a0.plot(
        grid,
        intercept + slope * grid,
        color=COLORS["reference"],
        label=r"shift + scale part $a + b\,\hat{x}$",
    )
    a0.vlines(z, intercept + slope * z, dy, color=COLORS["bn"], lw=1.2, alpha=0.6)
    a0.scatter(
        z, dy, color="k", s=18, zorder=3, label=r"upstream $\partial \ell/\partial y_i$"
    )
    a0.set_title("what arrives: dy")
    a1.axhline(0.0, color=COLORS["reference"], lw=1.0, label="no shift, no slope")
    a1.vlines(z, 0.0, passed, color=COLORS["bn"], lw=1.2, alpha=0.6, gid="residual")
    a1.scatter(
        z,
        passed,
        color=COLORS["bn"],
        s=18,
        zorder=3,
        label=r"$\partial \ell/\partial x_i \,/\, (\gamma r)$",
    )
    a1.set_title("what passes to x: dx (rescaled)")
    for ax in (a0, a1):
        ax.set_xlabel(r"normalized input $\hat{x}_i$ (batch std units)")
        ax.legend(loc="upper left", fontsize=8)
    a0.set_ylabel("gradient (loss units per unit of y)")


def _geometry_numbers(g) -> str:
    return (
        f"mean(dy) = {g['mean_dy']:.2f}   mean(dy x_hat) = {g['mean_dy_xhat']:.2f}   "
        f"eps/(var+eps) = {g['leak']:.1e}\n"
        f"what passes: sum = {abs(g['sum_passed']):.0e}, slope on x_hat = "
        f"{g['trend_passed']:.2e}"
    )


def _geometry_figure(figsize=(7.5, 3.9)):
    fig, axes = plt.subplots(1, 2, figsize=figsize, sharey=True, layout="constrained")
    return fig, axes


def _redraw_geometry(fig, axes, g):
    for ax in axes:
        ax.clear()
    _draw_geometry(*axes, g["z"], g["dy"], g["passed"])
    if abs(g["trend_passed"]) > 1e-3:  # the part of the trend that eps lets through
        grid = np.array([g["z"].min() - 0.3, g["z"].max() + 0.3])
        axes[1].plot(grid, g["trend_passed"] * grid, "--", color="k", lw=1.0)
        axes[1].plot([], [], "--", color="k", lw=1.0, label="slope ε lets through")
        axes[1].legend(loc="upper left", fontsize=8)
    lo = min(g["dy"].min(), g["passed"].min(), 0.0) - 0.5
    axes[0].set_ylim(lo, max(g["dy"].max(), g["passed"].max(), 0.0) + 1.5)
    fig.supxlabel(_geometry_numbers(g), fontsize=8, family="monospace")


def backward_geometry_view(m=6, shift=1.0, trend=0.8, noise=0.6, log_eps=-5.0, seed=0):
    """The figure of :func:`plot_gradient_geometry` for :func:`backward_geometry`'s
    gradient, with the compact formula's numbers under it. Returns ``(fig, g)``."""
    g = backward_geometry(m, shift, trend, noise, log_eps, seed)
    fig, axes = _geometry_figure()
    _redraw_geometry(fig, axes, g)
    return fig, g


def backward_geometry_frames(seed=0, m=6):
    """A figure and ``draw((shift, trend, noise, log_eps))`` for
    :func:`bnlib.plotting.scrubber`: the site's stand-in for the widget."""
    fig, axes = _geometry_figure()

    def draw(setting):
        g = backward_geometry(m, *setting, seed=seed)
        _redraw_geometry(fig, axes, g)
        return g

    return fig, draw


def backward_geometry_widget(seed=0):
    """Sliders for the upstream gradient's parts (shift, trend along x_hat, the rest),
    the batch size and eps / sigma^2 (log scale), above the live figure (JupyterLab)."""
    from ..plotting import live_figure, slider

    wide = dict(label="90px", width="320px")
    controls = {
        "shift": slider("shift", 1.0, -2.0, 2.0, 0.1, **wide),
        "trend": slider("trend on x̂", 0.8, -2.0, 2.0, 0.1, **wide),
        "noise": slider("the rest", 0.6, 0.0, 1.5, 0.1, **wide),
        "log_eps": slider("log10 ε/σ²", -5.0, -6.0, 1.0, 0.5, **wide),
        "m": slider("batch m", 6, 3, 8, 1, integer=True, **wide),
    }

    def view(**values):
        return backward_geometry_view(seed=seed, **values)

    c = controls
    rows = [[c["shift"], c["trend"]], [c["noise"], c["log_eps"]], [c["m"]]]
    return live_figure(view, controls, rows=rows)


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


# --- layer diagnostics (Karpathy's makemore part 3) ---------------------------------

#: A sigmoid output s is *saturated* when it lies within this distance of 0 or 1. It is
#: Karpathy's cut ``|tanh| > 0.97`` carried over to the sigmoid, since
#: ``sigmoid(z) = (1 + tanh(z / 2)) / 2``: there the slope s (1 - s) is below 6 % of its
#: maximum 1/4.
SATURATION_TOL = 0.015


def record_layers(net, x, y, loss_fn=softmax_cross_entropy):
    """One forward and backward pass through a Sequential, layer by layer, keeping for
    every sigmoid its output h and the gradient dl/dh of the loss on (x, y).

    Returns ``(acts, grads)``: lists with one (N, width) array per sigmoid, lowest
    layer first. The pass fills the layers' ``grads`` like ``net.backward`` does, and in
    training mode BN layers update their running statistics: pass a copy of a network
    you want to keep untouched.
    """
    if not any(isinstance(layer, Sigmoid) for layer in net.layers):
        raise ValueError(
            "record_layers: the network has no Sigmoid layer to record (it follows the "
            "sigmoid networks of chapter 1; for another nonlinearity, adapt the test)"
        )
    acts, grads = [], []
    h = x
    for layer in net.layers:
        h = layer(h)
        if isinstance(layer, Sigmoid):
            acts.append(h)  # what the next layer receives
    loss, dout = loss_fn(h, y)
    for layer in reversed(net.layers):
        if isinstance(layer, Sigmoid):
            grads.insert(0, dout)  # dl/dh: the gradient arriving at that output
        dout = layer.backward(dout)
    return acts, grads


def saturated_fraction(s, tol=SATURATION_TOL):
    """Fraction of sigmoid outputs within ``tol`` of 0 or 1."""
    s = np.asarray(s)
    return float(np.mean((s < tol) | (s > 1 - tol)))


def layer_summary(acts, grads, tol=SATURATION_TOL):
    """Per-layer numbers of :func:`record_layers`' output, as arrays over the layers.

    Keys: ``"saturated"`` (fraction, :func:`saturated_fraction`), ``"std"`` (std of
    all outputs of the layer, pooled over units and examples, what a histogram shows),
    ``"spread"`` (for each unit the std across the examples, median over the units),
    ``"grad_std"`` (std of dl/dh, pooled).
    """
    return {
        "saturated": np.array([saturated_fraction(a, tol) for a in acts]),
        "std": np.array([a.std() for a in acts]),
        "spread": np.array([np.median(a.std(axis=0)) for a in acts]),
        "grad_std": np.array([g.std() for g in grads]),
    }


def plot_layer_profiles(profiles, figsize=(7.5, 3.4)):
    """The signal and the gradient of each hidden layer at initialization, one line
    per network.

    Args:
        profiles: ``{label: (key, spread, grad_std)}``: ``key`` is ``"plain"`` or
            ``"bn"`` (the colour), ``spread`` and ``grad_std`` arrays (runs, layers)
            of :func:`layer_summary`'s ``"spread"`` (std across examples, median over
            units) and ``"grad_std"``.

    Line: the median over the runs; band: their range; log scale. Networks of the same
    key get different line styles.

    Returns:
        The Figure (lines carry ``gid="profile:<panel>:<label>"``).
    """
    fig, axes = plt.subplots(1, 2, figsize=figsize, layout="constrained")
    styles = {"plain": iter((":", "--", "-", "-.")), "bn": iter(("-", "--", ":"))}
    handles = []
    for label, (key, spread, grad) in profiles.items():
        ls = next(styles[key])
        for ax, name, values in ((axes[0], "spread", spread), (axes[1], "grad", grad)):
            values = np.asarray(values, np.float64)
            layers = np.arange(1, values.shape[1] + 1)
            ax.fill_between(
                layers,
                values.min(axis=0),
                values.max(axis=0),
                color=COLORS[key],
                alpha=0.18,
                lw=0,
            )
            (line,) = ax.plot(
                layers,
                np.median(values, axis=0),
                color=COLORS[key],
                ls=ls,
                lw=1.8,
                marker="o",
                ms=4,
                label=label,
                gid=f"profile:{name}:{label}",
            )
        handles.append(line)
    for ax, title in zip(
        axes, ("signal: std across examples", "gradient: std of ∂ℓ/∂h")
    ):
        ax.set_yscale("log")
        ax.set_xticks([1, 2, 3])
        ax.set_xlabel("hidden layer")
        ax.set_title(title)
    fig.legend(handles=handles, loc="outside upper center", ncols=2, fontsize=9)
    return fig


# ------------------------------------------------------------------ data


def load_digits(test_fraction=0.25, seed=0, dtype=np.float64):
    """scikit-learn's bundled 8x8 digits (1797 images, no download), flattened to
    (N, 64) and scaled to [0, 1], split at random with ``seed``."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    x, y = (d.data / 16.0).astype(dtype), d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    te, tr = order[:n_test], order[n_test:]
    return Dataset(x[tr], y[tr], x[te], y[te])


# ------------------------------------------------------------------ a layer of your own
# The checker of the exercise that writes a BatchNorm1d layer (its cases come from
# bnlib.exercises.case("layer", k)).
_LAYER_OUTPUTS = [
    (f"{q} after training step {t}", doc)
    for t in (1, 2, 3)
    for q, doc in (
        ("out", "(m, n)"),
        ("dx", "(m, n)"),
        ("grads['weight']", "(n,), dL/dgamma"),
        ("grads['bias']", "(n,), dL/dbeta"),
        ("running_mean", "(n,)"),
        ("running_var", "(n,)"),
    )
] + [
    ("out in evaluation mode", "(m, n)"),
    ("running_mean after the evaluation forward", "(n,)"),
    ("running_var after the evaluation forward", "(n,)"),
]


def _drive(layer, c, name):
    """Three training steps (forward, backward), then eval() and one forward; returns
    what the layer shows after each, in the order of :data:`_LAYER_OUTPUTS`."""

    def read(what, get):
        return copy_array(call_reader(f"{name}.{what}", get))

    for key, value in (("weight", c["gamma"]), ("bias", c["beta"])):
        call_reader(
            f"setting {name}.params[{key!r}][...]",
            lambda k=key, v=value: np.copyto(layer.params[k], v, casting="unsafe"),
        )
    stats = [
        *(lambda k=k: layer.grads[k] for k in ("weight", "bias")),
        lambda: layer.running_mean,
        lambda: layer.running_var,
    ]
    trace = []
    for x, dout in zip(c["xs"][:3], c["douts"]):
        trace.append(read("forward", lambda x=x: layer(x.copy())))
        trace.append(read("backward", lambda d=dout: layer.backward(d.copy())))
        trace += [
            read(o[0].split(" after")[0], get)
            for o, get in zip(_LAYER_OUTPUTS[2:6], stats)
        ]
    call_reader(f"{name}.eval()", lambda: layer.eval())
    trace.append(read("forward in evaluation mode", lambda: layer(c["xs"][3].copy())))
    return tuple(
        trace
        + [read(k, get) for k, get in zip(("running_mean", "running_var"), stats[2:])]
    )


def _layer_trace(
    c,
    ddof=1,
    keras=False,
    batch_in_eval=False,
    update_in_eval=False,
    var0=1.0,
    momentum=None,
    eps=None,
):
    """What :func:`_drive` sees of a layer with one deliberate mistake."""
    k = c["momentum"] if momentum is None else momentum
    k, eps = (1 - k if keras else k), (c["eps"] if eps is None else eps)
    rm, rv = np.zeros_like(c["gamma"]), np.full_like(c["gamma"], var0)
    trace = []
    for t, x in enumerate(c["xs"]):
        if t < 3 or update_in_eval:
            rm = (1 - k) * rm + k * x.mean(0)
            rv = (1 - k) * rv + k * x.var(0, ddof=ddof)
        stats = None if t < 3 or batch_in_eval else (rm, rv)
        out, cache = F.batchnorm_forward(x, c["gamma"], c["beta"], eps, stats=stats)
        trace.append(out)
        trace += F.batchnorm_backward(c["douts"][t], cache) if t < 3 else ()
        trace += [rm, rv]
    return tuple(trace)


_LAYER_MISTAKES = {
    "running_var stores the biased batch variance; PyTorch stores the unbiased one, "
    "var * m / (m - 1) (and normalizes with the biased one)": dict(ddof=0),
    "used Keras's convention running = momentum * running + (1 - momentum) * batch; "
    "PyTorch's momentum is the weight of the new batch": dict(keras=True),
    "ignored the momentum argument and used 0.1": dict(momentum=0.1),
    "ignored the eps argument and used 1e-5": dict(eps=1e-5),
    "running_var starts at 0; PyTorch starts it at 1 (and running_mean at 0)": dict(
        var0=0.0
    ),
    "evaluation mode still normalizes with the batch statistics; when not "
    "self.training, use running_mean and running_var": dict(batch_in_eval=True),
    "evaluation mode updates the running statistics too; only training mode does": dict(
        update_in_eval=True
    ),
}


@never_raises
def check_batchnorm_layer(cls):
    """Check a layer class ``cls(n, eps=1e-5, momentum=0.1)`` following bnlib's Module
    contract, against :class:`bnlib.BatchNorm1d` on (m, n) batches: ``params`` and
    ``grads`` with keys "weight" and "bias" (n,); ``forward(x) -> y``;
    ``backward(dout) -> dx`` filling ``grads``; ``running_mean`` (from 0) and
    ``running_var`` (from 1, stores the unbiased batch variance), updated in training
    as ``running = (1 - momentum) * running + momentum * batch``; after ``eval()`` the
    running statistics normalize. Three training steps, then one evaluation forward."""
    name = getattr(cls, "__name__", "your layer")

    def run(c):
        n, eps, mom = len(c["gamma"]), c["eps"], c["momentum"]
        who = f"{name}({n}, eps={eps:g}, momentum={mom:g})"
        return _drive(call_reader(who, cls, n, eps=eps, momentum=mom), c, name)

    def reference(c):
        layer = BatchNorm1d(len(c["gamma"]), eps=c["eps"], momentum=c["momentum"])
        return _drive(layer, c, "BatchNorm1d")

    mistakes = {
        cause: functools.partial(_layer_trace, **kw)
        for cause, kw in _LAYER_MISTAKES.items()
    }
    compare = (
        "Run bnlib.BatchNorm1d(n, eps=eps, momentum=momentum), with its params set to "
        "the case's gamma and beta, on the same batches"
    )
    return judge_cases(
        "batchnorm layer",
        "layer",
        _LAYER_OUTPUTS,
        run,
        reference,
        mistakes,
        check_batchnorm_layer.__doc__,
        compare,
    )


# ------------------------------------------------------------------ answer keys
# The keys of this chapter's exercises whose answer is a number, judged by
# bnlib.exercises.check_answer; importing this module registers them.


def _phi(z):
    return NormalDist().cdf(z)


def _x_hat(x, eps):
    """x_hat of a single feature x (m values), from bnlib."""
    return F.batchnorm_forward(np.reshape(x, (-1, 1)), None, None, eps)[1]["x_hat"]


def _bessel_dx(x=(1.0, 2.0, 4.0), dout=(1.0, 0.0, 0.0), ddof=1, factor=True):
    """dl/dx of training-mode BN (gamma 1, eps 0) normalized with the variance of
    ``ddof`` (1: Bessel's correction), for ex-ch1-bessel; ``factor=False`` leaves out
    the m / (m - 1) on the x_hat term (the biased formula)."""
    x, dout = np.asarray(x, np.float64), np.asarray(dout, np.float64)
    m = x.size
    r = 1 / np.sqrt(x.var(ddof=ddof))
    x_hat = (x - x.mean()) * r
    k = m / (m - ddof) if factor else 1.0
    return r / m * (m * dout - dout.sum() - k * x_hat * (dout * x_hat).sum())


def _eigenvalues_of_P():
    x_hat = _x_hat([1.0, 2.0, 3.0, 4.0], 1.25)
    return np.linalg.eigvalsh(np.eye(4) - 1 / 4 - x_hat @ x_hat.T / 4)


def _saturating_scale():
    """The smallest a of 1, 2, 4, 8, 16 at which over 5 % of a sigmoid's inputs pass
    |z| > 4.2 (output within 0.015 of 0 or 1), with sd(z) = a sqrt(0.26 / 3)."""
    cut, sd = math.log(1 / 0.015 - 1), math.sqrt(0.26 / 3)
    return min(a for a in (1, 2, 4, 8, 16) if 2 * (1 - _phi(cut / (a * sd))) > 0.05)


answer_key(
    "ex-ch1-m2",
    "x_hat of the batch (0.71, 0.70) with eps = 1e-5, 2 numbers",
    1e-3,
    lambda: _x_hat([0.71, 0.70], 1e-5),
    {
        "that is the limit for inputs far apart; these two are only 0.01 apart, so "
        "their variance is close to eps: keep eps in the computation": [1, -1],
        "used the unbiased variance (m - 1 = 1)": [
            0.005 / 6e-5**0.5,
            -0.005 / 6e-5**0.5,
        ],
        "added eps outside the square root": [0.005 / 0.00501, -0.005 / 0.00501],
    },
)
answer_key(
    "ex-ch1-bessel",
    "dl/dx for x = (1, 2, 4), gamma = 1, eps = 0, dout = (1, 0, 0), with Bessel's "
    "correction in training, 3 numbers",
    1e-3,
    _bessel_dx,
    {
        "that is the biased formula on x_hat of the unbiased variance: the x_hat term "
        "needs the factor m / (m - 1)": lambda: _bessel_dx(factor=False),
        "that is the gradient of ordinary BN (variance divided by m)": lambda: (
            _bessel_dx(ddof=0)
        ),
    },
)
answer_key(
    "ex-ch1-projection",
    "the 4 eigenvalues of P for x = (1, 2, 3, 4), eps = 1.25, any order",
    1e-3,
    _eigenvalues_of_P,
    {
        "those are for eps = 0; with eps > 0 the direction x_hat keeps a fraction "
        "eps / (var + eps)": [0, 0, 1, 1],
        "that removes the mean direction only; x_hat x_hat^T / m removes most of a "
        "second one": [0, 1, 1, 1],
        "those are the eigenvalues of I - P": lambda: 1 - _eigenvalues_of_P(),
    },
    any_order=True,
)
answer_key(
    "ex-ch1-saturation",
    "the smallest a of 1, 2, 4, 8, 16 at which over 5 % of a hidden layer saturate",
    0,
    _saturating_scale,
    {
        "at 16 a third or more saturate, but a visible share does one step before": 16,
        "at a = 4 the cut |z| > 4.2 lies over 3.5 standard deviations of z out": 4,
    },
)
answer_key(
    "ex-ch1-saturation-layer",
    "which hidden layer, 1, 2 or 3, saturates least",
    0,
    1,  # its inputs, the pixels, have the smallest mean square (0.23 < 0.25)
    {"its inputs, sigmoid outputs, have a larger mean square than the pixels": 3},
)
