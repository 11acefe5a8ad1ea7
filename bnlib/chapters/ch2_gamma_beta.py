"""Experiments and figures on what gamma and beta do (chapter 2).

* the histogram panel shared by the interactive widget and the site's animation
  (:func:`draw_bn_histograms`, :func:`draw_nonlinearity_panel`,
  :func:`gamma_beta_view`, :func:`gamma_beta_frames`, :func:`gamma_beta_widget`),
  fed by a sampler with a chosen mean, spread and skew (:func:`sample_skewed`);
* the sigmoid's linear regime (:func:`sigmoid_linear_bound`,
  :func:`sigmoid_linear_regime`, :func:`plot_sigmoid_regime`) and each unit's sigmoid
  input range in a trained network (:func:`unit_input_ranges`, :func:`draw_unit_ranges`,
  :func:`plot_learned_affine`, :func:`train_mlp`, :func:`linear_regime_shares`);
* the learning-dynamics experiment where a layer's output mean must move
  (:func:`mean_shift_task`, :func:`mean_shift_model`, :func:`steps_to_target`,
  :func:`median_steps`, :func:`best_lr`, :func:`plot_mean_shift`,
  :func:`mean_shift_table`, :func:`mean_shift_pair`);
* ReLU and beta: the active fraction ``Phi(beta / |gamma|)``
  (:func:`relu_active_fraction`, :func:`draw_relu_panel`, :func:`relu_view`,
  :func:`relu_widget`, :func:`relu_frames`) and dead units (:func:`active_fractions`,
  :func:`active_fractions_in_training`, :func:`dead_unit_census`, :func:`census_table`,
  :func:`dead_unit_profile`, :func:`active_share_gap`);
* the BN parameters of a network (:func:`bn_affine_parameters`).
"""

from __future__ import annotations

import functools
import math
from statistics import NormalDist

import numpy as np
from scipy.special import ndtr

from .. import functional as F
from ..exercises import answer_key
from ..losses import mse_loss
from ..models import make_mlp
from ..modules import BatchNorm1d, Linear, ReLU, Sequential, Sigmoid, as_generator
from ..optim import SGD, Adam
from ..plotting import COLORS, live_figure, markdown_table, slider
from ..surgery import batchnorm_layers, capture_inputs
from ..train import fit

__all__ = [
    "sample_skewed",
    "bn_stages",
    "draw_bn_histograms",
    "draw_nonlinearity_panel",
    "gamma_beta_view",
    "gamma_beta_frames",
    "gamma_beta_widget",
    "sigmoid_linear_bound",
    "sigmoid_linear_regime",
    "unit_input_ranges",
    "draw_unit_ranges",
    "plot_sigmoid_regime",
    "plot_learned_affine",
    "train_mlp",
    "linear_regime_shares",
    "mean_shift_task",
    "mean_shift_model",
    "steps_to_target",
    "median_steps",
    "best_lr",
    "plot_mean_shift",
    "mean_shift_table",
    "mean_shift_pair",
    "relu_active_fraction",
    "draw_relu_panel",
    "relu_view",
    "relu_widget",
    "relu_frames",
    "active_fractions",
    "active_fractions_in_training",
    "dead_unit_census",
    "census_table",
    "dead_unit_profile",
    "active_share_gap",
    "bn_affine_parameters",
]

#: Fixed histogram ranges, so panels drawn with different settings can be compared.
_RANGE = (-12.0, 12.0)


_ACT_RANGE = {"sigmoid": (0.0, 1.0), "relu": (0.0, 12.0)}


_ACT_COLOR = "#333333"


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=float)))


_PHI = {"sigmoid": _sigmoid, "relu": lambda z: np.maximum(z, 0.0)}


def _check_nonlinearity(nonlinearity):
    if nonlinearity not in _PHI:
        raise ValueError(
            f"nonlinearity must be one of {sorted(_PHI)}, got {nonlinearity!r}"
        )


# --------------------------------------------------------------------------------------
# The two knobs: input -> BN -> nonlinearity


def sample_skewed(n, mean=0.0, spread=1.0, skew=0.0, rng=None):
    """``n`` draws with the given mean, standard deviation ``spread`` and skewness
    ``skew``.

    A standardized gamma distribution with shape ``k = 4 / skew**2`` (whose skewness is
    exactly ``skew``; mirrored for negative ``skew``), or a normal when ``skew == 0``.
    Moments are exact in expectation, not forced on the sample.

    Returns:
        array (n,).
    """
    if spread <= 0:
        raise ValueError(f"sample_skewed: spread must be positive, got {spread}")
    rng = as_generator(rng)
    if abs(skew) < 1e-6:
        z = rng.standard_normal(n)
    else:
        k = 4.0 / skew**2
        z = np.sign(skew) * (rng.gamma(k, 1.0, n) - k) / np.sqrt(k)
    return mean + spread * z


def bn_stages(x, gamma, beta, nonlinearity="sigmoid", eps=1e-5):
    """One unit's values through batch norm and a nonlinearity.

    Args:
        x: the unit's pre-activations over a batch, shape (m,).
        gamma, beta: scalars.
        nonlinearity: ``"sigmoid"`` or ``"relu"``.

    Returns:
        dict of arrays (m,): ``"input"`` (x), ``"x_hat"``, ``"bn"`` (gamma * x_hat +
        beta) and ``"activation"`` (phi of the BN output).
    """
    _check_nonlinearity(nonlinearity)
    x = np.asarray(x, dtype=float)
    if x.ndim != 1:
        raise ValueError(
            f"bn_stages: expected one unit's values, shape (m,), got {x.shape}"
        )
    y, cache = F.norm_forward(x[:, None], gamma, beta, axes=(0,), eps=eps)
    return {
        "input": x,
        "x_hat": cache["x_hat"][:, 0],
        "bn": y[:, 0],
        "activation": _PHI[nonlinearity](y[:, 0]),
    }


def _stage_stats(stages, nonlinearity):
    stats = {
        f"{k}_{s}": float(f(stages[k]))
        for k in ("input", "bn", "activation")
        for s, f in (("mean", np.mean), ("var", np.var))
    }
    a, z = stages["activation"], stages["bn"]
    stats["saturated"] = (
        float(np.mean((a < 0.05) | (a > 0.95))) if nonlinearity == "sigmoid" else None
    )
    stats["active"] = float(np.mean(z > 0))
    return stats


def draw_bn_histograms(
    axes, x, gamma, beta, nonlinearity="sigmoid", eps=1e-5, bins=60, titles=True
):
    """Draw one unit's input, BN output and post-nonlinearity histograms into three
    axes.

    The same picture is used by the widget (:func:`gamma_beta_widget`) and by the static
    animation frames (:func:`gamma_beta_frames`). Input and BN output share the x range
    (-12, 12) so that widths and positions compare across panels; the nonlinearity's
    output uses its own range. Each panel states the mean and the (biased) variance.

    Args:
        axes: three matplotlib axes.
        x: the unit's pre-activations over a batch, shape (m,).
        gamma, beta, nonlinearity, eps: as in :func:`bn_stages`.

    Returns:
        dict of floats: ``{input,bn,activation}_{mean,var}``, ``saturated`` (share of
        sigmoid outputs below 0.05 or above 0.95; None for ReLU) and ``active`` (share
        of BN outputs > 0).
    """
    st = bn_stages(x, gamma, beta, nonlinearity, eps)
    stats = _stage_stats(st, nonlinearity)
    spec = [
        ("input", _RANGE, COLORS["reference"], "input $x$"),
        ("bn", _RANGE, COLORS["bn"], r"BN output $\gamma\hat{x}+\beta$"),
        (
            "activation",
            _ACT_RANGE[nonlinearity],
            _ACT_COLOR,
            f"{nonlinearity}$(\\gamma\\hat{{x}}+\\beta)$",
        ),
    ]
    for ax, (key, rng, col, title) in zip(axes, spec):
        v = st[key]
        # values beyond the range are left out (not piled into the edge bin) and counted
        off = float(np.mean((v < rng[0]) | (v > rng[1])))
        counts, edges = np.histogram(v, bins=bins, range=rng)
        counts = counts / (len(v) * np.diff(edges))  # density over all values
        ax.stairs(counts, edges, fill=True, color=col, alpha=0.85)
        ax.set_xlim(*rng)
        ax.set_ylim(0, 1.6 * counts.max())  # headroom for the text box
        ax.set_yticks([])
        mean = stats[key + "_mean"] if abs(stats[key + "_mean"]) >= 0.005 else 0.0
        text = f"mean {mean:.2f}, var {stats[key + '_var']:.2f}"  # never "-0.00"
        if key == "activation":
            text += (
                f"\nsaturated {stats['saturated']:.0%}"
                if nonlinearity == "sigmoid"
                else f"\nactive {stats['active']:.0%}"
            )
        elif off > 0:
            text += f"\n{off:.1%} off scale"
        ax.text(
            0.98,
            0.97,
            text,
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=9,
            bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=1),
        )
        if titles:
            ax.set_title(title, fontsize=10)
    # the dashed line at beta stops below the text boxes (the top 38% of the panel)
    axes[1].axvline(beta, ymax=0.6, color=COLORS["bn"], lw=1, ls="--")
    axes[0].set_xlabel("value (unit-free)")
    axes[1].set_xlabel("value (unit-free)")
    axes[2].set_xlabel("activation")
    return stats


def draw_nonlinearity_panel(ax, z, nonlinearity="sigmoid"):
    """The nonlinearity over the BN panel's range (-12, 12), with the middle 90% of the
    BN outputs ``z`` (m,) shaded: where on the curve this unit works. For the sigmoid,
    dotted lines mark the saturation levels 0.05 and 0.95.
    """
    _check_nonlinearity(nonlinearity)
    grid = np.linspace(*_RANGE, 400)
    lo, hi = np.percentile(z, [5, 95])
    ax.axvspan(lo, hi, color=COLORS["bn"], alpha=0.25, lw=0, label="middle 90% of z")
    ax.plot(grid, _PHI[nonlinearity](grid), color=_ACT_COLOR, lw=1.5)
    if nonlinearity == "sigmoid":
        for level in (0.05, 0.95):
            ax.axhline(level, color=_ACT_COLOR, lw=0.8, ls=":")
    ax.set_xlim(*_RANGE)
    ax.set_ylim(*_ACT_RANGE[nonlinearity])
    ax.set_xlabel(r"BN output $z$")
    ax.set_title(f"{nonlinearity}$(z)$ and where $z$ falls", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)


def _stage_figure(figsize):
    """A 2 x 2 figure: input and BN output above, the nonlinearity and its output
    below. Returns ``(fig, hist_axes, curve_ax)`` with ``hist_axes`` in the order of
    :func:`draw_bn_histograms`."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplot_mosaic(
        [["input", "bn"], ["curve", "activation"]],
        figsize=figsize,
        layout="constrained",
    )
    return fig, [ax["input"], ax["bn"], ax["activation"]], ax["curve"]


def _draw_stages(fig, hist_axes, curve_ax, x, gamma, beta, nonlinearity, eps):
    stats = draw_bn_histograms(hist_axes, x, gamma, beta, nonlinearity, eps)
    z = bn_stages(x, gamma, beta, nonlinearity, eps)["bn"]
    draw_nonlinearity_panel(curve_ax, z, nonlinearity)
    fig.suptitle(rf"$\gamma$ = {gamma:.2f}, $\beta$ = {beta:.2f}", fontsize=10)
    return stats


def gamma_beta_view(
    gamma=1.0,
    beta=0.0,
    mean=0.0,
    spread=1.0,
    skew=0.0,
    nonlinearity="sigmoid",
    n=4000,
    seed=0,
    eps=1e-5,
    figsize=(7.5, 4.6),
):
    """The widget's picture: sample ``n`` skewed inputs (seeded, so only the sliders
    change the picture) and draw, two panels per row, :func:`draw_bn_histograms` and
    :func:`draw_nonlinearity_panel`.

    Returns:
        ``(fig, stats)`` with ``stats`` as in :func:`draw_bn_histograms`.
    """
    x = sample_skewed(n, mean, spread, skew, rng=seed)
    fig, hist_axes, curve_ax = _stage_figure(figsize)
    stats = _draw_stages(fig, hist_axes, curve_ax, x, gamma, beta, nonlinearity, eps)
    return fig, stats


def gamma_beta_frames(x, nonlinearity="sigmoid", eps=1e-5, figsize=(7.5, 4.6)):
    """A figure and a ``draw((gamma, beta))`` that redraws the picture of
    :func:`gamma_beta_view` in it: the frames of :func:`bnlib.plotting.scrubber`, the
    site's stand-in for :func:`gamma_beta_widget`. ``x`` (m,) is the same in every
    frame.

    Returns:
        ``(fig, draw)``; ``draw`` returns the stats of :func:`draw_bn_histograms`.
    """
    fig, hist_axes, curve_ax = _stage_figure(figsize)

    def draw(setting):
        g, b = setting
        for ax in fig.axes:
            ax.clear()
        return _draw_stages(fig, hist_axes, curve_ax, x, g, b, nonlinearity, eps)

    return fig, draw


def gamma_beta_widget(
    gamma=1.0,
    beta=0.0,
    mean=2.0,
    spread=1.5,
    skew=1.0,
    nonlinearity="sigmoid",
    n=4000,
    seed=0,
):
    """Sliders for gamma, beta and the input's mean, spread and skew, and a choice of
    nonlinearity, above the picture of :func:`gamma_beta_view`.

    Returns:
        the :func:`bnlib.plotting.live_figure` box; ``box.controls`` maps each argument
        name to its control, ``box.last_stats`` holds the stats of the latest redraw.
    """
    import ipywidgets as widgets

    c = {
        "gamma": slider("γ", gamma, 0.0, 4.0, 0.05),
        "beta": slider("β", beta, -4.0, 4.0, 0.05),
        "mean": slider("mean", mean, -5.0, 5.0, 0.1),
        "spread": slider("spread", spread, 0.2, 4.0, 0.1),
        "skew": slider("skew", skew, -2.0, 2.0, 0.1),
        "nonlinearity": widgets.Dropdown(
            options=["sigmoid", "relu"],
            value=nonlinearity,
            description="φ",
            style={"description_width": "50px"},
            layout=widgets.Layout(width="180px"),
        ),
    }

    def view(**v):
        return gamma_beta_view(n=n, seed=seed, **v)

    rows = [
        [c["gamma"], c["beta"], c["nonlinearity"]],
        [c["mean"], c["spread"], c["skew"]],
    ]
    return live_figure(view, c, rows)


# --------------------------------------------------------------------------------------
# The sigmoid's linear regime


def sigmoid_linear_bound(rel_tol=0.05):
    """The half-width ``z*`` of the sigmoid's linear regime.

    Within ``|z| <= z*`` the sigmoid's distance from 1/2 is at least ``1 - rel_tol``
    times its tangent's at 0: ``(sigmoid(z) - 1/2) / (z / 4) >= 1 - rel_tol``. The ratio
    equals ``tanh(u) / u`` with ``u = z / 2`` and falls monotonically in ``|z|``, so the
    regime is one interval, found by bisection. Returns a float.
    """
    if not 0.0 < rel_tol < 1.0:
        raise ValueError(
            f"sigmoid_linear_bound: rel_tol must be in (0, 1), got {rel_tol}"
        )
    lo, hi = 1e-9, 100.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.tanh(mid) / mid >= 1.0 - rel_tol:
            lo = mid
        else:
            hi = mid
    return 2.0 * lo


def sigmoid_linear_regime(z, rel_tol=0.05):
    """How linear a sigmoid is on the inputs ``z`` (any shape, all values pooled).

    Returns:
        dict of floats: ``fraction`` (share of z inside the linear regime of
        :func:`sigmoid_linear_bound`), ``mean_abs_error`` and ``max_abs_error`` of the
        tangent ``1/2 + z/4`` as a stand-in for the sigmoid, ``saturated`` (share of
        outputs below 0.05 or above 0.95) and ``r2`` (share of the variance of
        sigmoid(z) explained by the best straight line in z).
    """
    z = np.asarray(z, dtype=float).ravel()
    s = _sigmoid(z)
    err = np.abs(s - (0.5 + z / 4.0))
    fit_ = np.polyval(np.polyfit(z, s, 1), z)
    return {
        "fraction": float(np.mean(np.abs(z) <= sigmoid_linear_bound(rel_tol))),
        "mean_abs_error": float(err.mean()),
        "max_abs_error": float(err.max()),
        "saturated": float(np.mean((s < 0.05) | (s > 0.95))),
        "r2": float(1.0 - np.var(s - fit_) / np.var(s)),
    }


def unit_input_ranges(model, x, kind=Sigmoid, q=(5, 50, 95)):
    """Percentiles of every unit's input to each nonlinearity of type ``kind``.

    Runs ``model`` in eval mode on x (N, d_in) without changing it.

    Returns:
        list (one per nonlinearity layer) of arrays (len(q), C): the q-th percentiles of
        each unit's input over the N examples.
    """
    return [
        np.percentile(z, q, axis=0) for z in capture_inputs(model, x, kind, mode="eval")
    ]


def draw_unit_ranges(ax, ranges, z_lin=None, label=None):
    """Draw each unit's 5-95% input range as a vertical bar with a dot at the median,
    units sorted by median; shade the sigmoid's linear regime ``|z| <= z_lin``.

    Args:
        ax: matplotlib axes.
        ranges: array (3, C) of (low, median, high), e.g. one entry of
            :func:`unit_input_ranges`.
    """
    lo, med, hi = ranges
    order = np.argsort(med)
    units = np.arange(len(med))
    ax.vlines(
        units, lo[order], hi[order], color=COLORS["bn"], lw=0.9, alpha=0.75, label=label
    )
    ax.plot(units, med[order], ".", color="black", ms=3)
    if z_lin is not None:
        ax.axhspan(
            -z_lin,
            z_lin,
            color=COLORS["reference"],
            alpha=0.3,
            lw=0,
            zorder=3,
            label=f"linear regime |z| ≤ {z_lin:.2f}",
        )
        for v in (-z_lin, z_lin):
            ax.axhline(v, color="black", lw=0.8, ls="--", zorder=4)
    ax.set_xlabel("unit (sorted by median input)")
    ax.set_ylabel("sigmoid input z")
    return ax


def plot_sigmoid_regime(gammas, betas=(0.0, 2.0), rel_tol=0.1, n=20000, rng=0):
    """Left: the sigmoid, its tangent at 0 and the linear regime, with the density of
    ``gamma * x_hat`` for the smallest and largest gamma. Right: for x_hat ~ N(0, 1),
    the share of inputs in the linear regime and the share saturated, against gamma,
    one line pair per beta.

    Args:
        gammas: increasing gamma values (G,) for the right panel.

    Returns:
        ``(fig, table)`` where ``table[beta]`` is a list (one per gamma) of the dicts of
        :func:`sigmoid_linear_regime`.
    """
    import matplotlib.pyplot as plt

    z_lin = sigmoid_linear_bound(rel_tol)
    x_hat = as_generator(rng).standard_normal(n)
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(7.5, 3.8), layout="constrained")
    z = np.linspace(-8, 8, 401)
    a0.axvspan(
        -z_lin,
        z_lin,
        color=COLORS["reference"],
        alpha=0.25,
        lw=0,
        label=f"linear regime |z| ≤ {z_lin:.2f}",
    )
    a0.plot(z, _sigmoid(z), color="black", label="sigmoid(z)")
    zt = z[np.abs(z) <= 2.4]  # the tangent only where it stays inside the panel
    a0.plot(zt, 0.5 + zt / 4, color="black", ls=":", label="tangent 1/2 + z/4")
    for g, ls in ((gammas[0], "-"), (gammas[-1], "--")):
        dens = np.exp(
            -0.5 * (z / g) ** 2
        )  # the N(0, gamma^2) density, peak scaled to 1
        a0.plot(
            z, dens, color=COLORS["bn"], ls=ls, label=rf"density of z, $\gamma$={g:g}"
        )
    a0.set_ylim(-0.1, 1.1)
    a0.set_xlabel("sigmoid input z")
    a0.set_ylabel("sigmoid(z); density (peak = 1)")
    # below the panel: inside, it would hide the wide density
    a0.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    table = {}
    for b, ls in zip(betas, ("-", "--", ":")):
        rows = [sigmoid_linear_regime(g * x_hat + b, rel_tol) for g in gammas]
        table[b] = rows
        a1.plot(
            gammas,
            [r["fraction"] for r in rows],
            ls=ls,
            marker="o",
            ms=3,
            color=COLORS["bn"],
            label=rf"in linear regime, $\beta$={b:g}",
        )
        a1.plot(
            gammas,
            [r["saturated"] for r in rows],
            ls=ls,
            marker="s",
            ms=3,
            color=_ACT_COLOR,
            label=rf"saturated, $\beta$={b:g}",
        )
    a1.set_xscale("log")
    a1.set_xticks(list(gammas), [f"{g:g}" for g in gammas])
    a1.minorticks_off()
    a1.set_xlabel(r"$\gamma$ (log scale)")
    a1.set_ylabel("fraction of sigmoid inputs")
    a1.legend(fontsize=8)
    return fig, table


def plot_learned_affine(model, x, rel_tol=0.1):
    """Learned gamma and beta of every BatchNorm1d in a sigmoid network (top, all
    layers in one panel), and each unit's 5-95% sigmoid input range on the examples
    x (N, d_in), one panel per layer, two per row.

    Returns:
        ``(fig, ranges)`` with ``ranges`` from :func:`unit_input_ranges`.
    """
    import matplotlib.pyplot as plt

    bns = [m for m in model.modules() if isinstance(m, BatchNorm1d)]
    ranges = unit_input_ranges(model, x)
    z_lin = sigmoid_linear_bound(rel_tol)
    names = [str(i) for i in range(len(bns))] + ["."] * (len(bns) % 2)
    mosaic = [["affine", "affine"]] + [names[i : i + 2] for i in range(0, len(bns), 2)]
    fig, ax = plt.subplot_mosaic(
        mosaic, figsize=(7.5, 2.8 * len(mosaic)), layout="constrained"
    )
    axes = [ax["affine"]] + [ax[str(i)] for i in range(len(bns))]
    markers = "os^v"
    for i, bn in enumerate(bns):
        axes[0].plot(
            bn.params["weight"],
            bn.params["bias"],
            markers[i % 4],
            ms=3.5,
            color=COLORS["bn"],
            alpha=0.35 + 0.65 * i / max(1, len(bns) - 1),
            label=f"layer {i + 1}",
        )
        draw_unit_ranges(axes[i + 1], ranges[i], z_lin)
        axes[i + 1].set_title(f"layer {i + 1}: 5-95% input range per unit", fontsize=9)
    axes[0].plot([1], [0], "+", color="black", ms=10, mew=1.5, label="initial (1, 0)")
    axes[0].set_xlabel(r"learned $\gamma$")
    axes[0].set_ylabel(r"learned $\beta$")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8, loc="upper left")
    return fig, ranges


def train_mlp(
    data,
    activation="sigmoid",
    norm="bn",
    width=128,
    depth=2,
    lr=1e-2,
    epochs=10,
    batch_size=100,
    rng=0,
    fit_rng=1,
):
    """Train a :func:`~bnlib.make_mlp` network (``depth`` hidden layers of ``width``) on
    ``data`` (x_train (N, d_in), y_train (N,)) with Adam.

    Args:
        data: a :class:`~bnlib.Dataset`; the test split is evaluated once per epoch.
        rng: seed of the initial weights; ``fit_rng``: seed of the batch order.

    Returns:
        ``(model, history)``: the trained network and the :class:`~bnlib.History`.
    """
    model = make_mlp(
        [data.x_train.shape[1]] + [width] * depth + [data.num_classes],
        activation,
        norm,
        rng=rng,
    )
    hist = fit(
        model,
        Adam(model, lr=lr),
        data.x_train,
        data.y_train,
        epochs=epochs,
        batch_size=batch_size,
        test=(data.x_test, data.y_test),
        rng=fit_rng,
        progress=False,
    )
    return model, hist


def linear_regime_shares(model, x, z_lin):
    """For each sigmoid of ``model`` (eval mode, model unchanged): the share of the
    examples x (N, d_in) whose input to each unit lies in the linear regime
    ``|z| <= z_lin`` (see :func:`sigmoid_linear_bound`).

    Returns:
        list (one per sigmoid layer) of arrays (C,).
    """
    return [
        np.mean(np.abs(z) <= z_lin, axis=0)
        for z in capture_inputs(model, x, Sigmoid, mode="eval")
    ]


# --------------------------------------------------------------------------------------
# Learning dynamics: a task that needs a layer's output mean to move


def mean_shift_task(shift, n=256, d=10, k=2, rng=0):
    """Regression whose targets have mean ``shift``: ``t = tanh(x U) + shift``.

    x ~ N(0, I) of shape (n, d); U ~ N(0, 1/d) of shape (d, k), drawn from ``rng`` (the
    same x and U for every ``shift``, so tasks differ only in the mean to reach).

    Returns:
        ``(x, t)``, shapes (n, d) and (n, k).
    """
    rng = as_generator(rng)
    x = rng.standard_normal((n, d))
    u = rng.standard_normal((d, k)) / np.sqrt(d)
    return x, np.tanh(x @ u) + shift


def mean_shift_model(bn, d=10, h=32, k=2, depth=2, rng=1):
    """``depth`` hidden layers ``Linear -> Sigmoid`` (width h), then an output layer.

    The output layer is ``Linear(h, k)`` with a bias (``bn=False``), or
    ``Linear(h, k, bias=False) -> BatchNorm1d(k)`` (``bn=True``), whose output mean is
    beta alone. The hidden layers are identical (same seed) in both, so only the
    parameterization of the layer whose mean must move differs.
    """
    rng = as_generator(rng)
    layers, n_in = [], d
    for _ in range(depth):
        layers += [Linear(n_in, h, rng=rng), Sigmoid()]
        n_in = h
    if bn:
        layers += [Linear(n_in, k, bias=False, rng=rng), BatchNorm1d(k)]
    else:
        layers.append(Linear(n_in, k, rng=rng))
    return Sequential(*layers)


def steps_to_target(model, optimizer, x, t, loss_target=0.02, max_steps=1500):
    """Full-batch training on the MSE until the loss is below ``loss_target``.

    Every step uses all of (x, t), so a BatchNorm layer sees the statistics of the
    whole data set: the run is deterministic and BN is a pure reparameterization.

    Returns:
        dict: ``steps`` (int: updates taken before the loss first fell below the target,
        or None if it did not within ``max_steps``), ``diverged`` (bool), ``loss``
        (array (S,), loss before each update) and ``mean`` (array (S, k), the output's
        mean over the batch before each update).
    """
    losses, means, steps, diverged = [], [], None, False
    for s in range(max_steps + 1):
        out = model(x)
        loss, dout = mse_loss(out, t)
        if not np.isfinite(loss):
            diverged = True
            break
        losses.append(loss)
        means.append(out.mean(axis=0))
        if loss < loss_target:
            steps = s
            break
        if s == max_steps:
            break
        optimizer.zero_grad()
        model.backward(dout)
        optimizer.step()
    return {
        "steps": steps,
        "diverged": diverged,
        "loss": np.array(losses),
        "mean": np.array(means),
    }


def _steps_or_inf(r):
    return np.inf if r["steps"] is None else r["steps"]


def median_steps(runs, name, lr, n_runs):
    """Median over ``n_runs`` runs of the steps to the target (``inf``: not reached).

    Args:
        runs: dict keyed ``(name, lr, run)`` of the dicts of :func:`steps_to_target`.
    """
    return float(np.median([_steps_or_inf(runs[name, lr, i]) for i in range(n_runs)]))


def best_lr(runs, name, lrs, n_runs):
    """``(median steps, lr)`` of the learning rate with the lowest median step count
    (``inf`` if no learning rate reached the target in most runs)."""
    return min((median_steps(runs, name, lr, n_runs), lr) for lr in lrs)


def _setup_style(setup):
    """Colour and line style of a mean-shift setup ``(bn, shift, bias_at_mean)``:
    BN blue, plain vermillion; dashed when the output starts at the target mean."""
    bn, shift, at_mean = setup
    return COLORS["bn" if bn else "plain"], "--" if (at_mean or shift == 0) else "-"


def mean_shift_table(runs, setups, lrs, n_runs, max_steps=2000):
    """The mean-shift sweep as a Markdown table: one row per setup, one column per
    learning rate; each cell the median steps to the target over ``n_runs`` runs and
    how many runs reached it (``>max_steps`` when the median run did not).

    Args:
        runs: dict keyed ``(name, lr, run)`` of the dicts of :func:`steps_to_target`.
        setups: dict ``name -> (bn, shift, bias_at_mean)``; its order is the rows'.
    """
    rows = []
    for name in setups:
        row = [name]
        for lr in lrs:
            med = median_steps(runs, name, lr, n_runs)
            k = sum(runs[name, lr, i]["steps"] is not None for i in range(n_runs))
            row.append(
                f"{med:.0f} ({k}/{n_runs})"
                if np.isfinite(med)
                else f">{max_steps} ({k}/{n_runs})"
            )
        rows.append(row)
    return markdown_table(["output layer, task", *(f"lr {lr:g}" for lr in lrs)], rows)


def plot_mean_shift(runs, setups, lrs, n_runs, show_lr, max_steps=2000):
    """Left: for each setup at its best learning rate (lowest median), the steps to
    the target of every run (hollow at ``max_steps``: not reached) and their median
    (bar). Right, top and bottom: the first run of each setup at ``show_lr``: the loss,
    and the distance of the output mean from the targets' mean, over the steps.

    Args:
        runs: dict keyed ``(name, lr, run)`` of the dicts of :func:`steps_to_target`,
            each with ``target_mean`` (k,) added.
        setups: dict ``name -> (bn, shift, bias_at_mean)``.

    Returns:
        ``(fig, best)`` with ``best[name] = (median steps or inf, lr)``.
    """
    import matplotlib.pyplot as plt

    best = {name: best_lr(runs, name, lrs, n_runs) for name in setups}
    fig, ax = plt.subplot_mosaic(
        [["steps", "loss"], ["steps", "err"]], figsize=(7.5, 5.2), layout="constrained"
    )
    for i, (name, setup) in enumerate(setups.items()):
        color, ls = _setup_style(setup)
        med, lr = best[name]
        steps = [_steps_or_inf(runs[name, lr, j]) for j in range(n_runs)]
        y = [min(s, max_steps) for s in steps]
        done = [np.isfinite(s) for s in steps]
        ax["steps"].scatter(
            [i] * n_runs,
            y,
            facecolor=[color if d else "white" for d in done],
            edgecolor=color,
            zorder=3,
        )
        ax["steps"].hlines(min(med, max_steps), i - 0.3, i + 0.3, color=color, lw=2)
        ax["steps"].annotate(
            f"lr {lr:g}",
            (i, max(y)),
            textcoords="offset points",
            xytext=(0, 7),
            ha="center",
            fontsize=8,
            color=color,
        )
        r = runs[name, show_lr, 0]
        ax["loss"].plot(r["loss"], color=color, ls=ls, label=name)
        err = np.abs(r["mean"] - r["target_mean"]).max(axis=1)
        ax["err"].plot(err, color=color, ls=ls, label=name)
    ax["steps"].set_xticks(range(len(setups)), [n.replace(", ", ",\n") for n in setups])
    ax["steps"].tick_params(axis="x", labelsize=7)
    ax["steps"].set_yscale("log")
    ax["steps"].set_ylabel(f"steps to loss < target (cap {max_steps})")
    ax["steps"].margins(x=0.1, y=0.1)
    ax["loss"].set_yscale("log")
    ax["loss"].set_ylabel("training MSE")
    ax["loss"].set_title(f"first run, lr = {show_lr:g}", fontsize=9)
    ax["loss"].legend(fontsize=7)
    ax["err"].set_yscale("log")
    ax["err"].set_xlabel("step")
    ax["err"].set_ylabel("|output mean − target|")
    return fig, best


def _fixed_steps(bn, shift, steps, lr, rng, init_rng, bias_at_mean=False):
    x, t = mean_shift_task(shift, rng=rng)
    net = mean_shift_model(bn, rng=init_rng)
    if bias_at_mean:
        net[-1].params["bias"][:] = t.mean(axis=0)
    steps_to_target(net, SGD(net, lr=lr), x, t, loss_target=0.0, max_steps=steps)
    # the last hidden layer's sigmoid outputs: saturated share, share at the floor
    z = capture_inputs(net, x, Sigmoid, mode="eval")[-1]
    floor = float(np.mean(_sigmoid(z) < 0.05))
    return net, sigmoid_linear_regime(z)["saturated"], floor


def mean_shift_pair(
    bn,
    shift_a=0.0,
    shift_b=10.0,
    steps=100,
    lr=0.3,
    rng=0,
    init_rng=1,
    bias_at_mean=False,
):
    """Train :func:`mean_shift_model` for exactly ``steps`` full-batch SGD updates on
    the task of :func:`mean_shift_task` with two shifts (same data seed ``rng``, same
    initial weights from ``init_rng``) and compare the two trained networks. With
    ``bias_at_mean`` the output bias (of the plain network) starts at the targets' mean.

    Returns:
        dict: ``models`` (the two networks), ``diffs`` (list of floats, one per
        parameter array in ``model.parameters()`` order: the largest absolute difference
        between the two runs), ``bias_change`` (array (k,): the output layer's bias,
        beta with BN, of run b minus run a), ``bias`` (pair of arrays (k,): that bias
        in each run), ``saturated`` (pair of floats: share of the last hidden layer's
        sigmoid inputs whose outputs are below 0.05 or above 0.95, per run) and
        ``floor`` (pair of floats: the share of those outputs below 0.05 alone).
    """
    a, sat_a, floor_a = _fixed_steps(
        bn, shift_a, steps, lr, rng, init_rng, bias_at_mean
    )
    b, sat_b, floor_b = _fixed_steps(
        bn, shift_b, steps, lr, rng, init_rng, bias_at_mean
    )
    diffs = [
        np.abs(m1.params[k] - m2.params[k]).max()
        for (m1, k), (m2, _) in zip(a.parameters(), b.parameters())
    ]
    return {
        "models": (a, b),
        "diffs": diffs,
        "bias_change": b[-1].params["bias"] - a[-1].params["bias"],
        "bias": (a[-1].params["bias"].copy(), b[-1].params["bias"].copy()),
        "saturated": (sat_a, sat_b),
        "floor": (floor_a, floor_b),
    }


# --------------------------------------------------------------------------------------
# ReLU: beta sets the fraction of active units


def relu_active_fraction(gamma, beta):
    """Share of ``gamma * x_hat + beta > 0`` for a standard normal x_hat:
    ``Phi(beta / |gamma|)```` (broadcasts; gamma = 0 gives 1 if beta > 0 else 0)."""
    gamma, beta = np.asarray(gamma, dtype=float), np.asarray(beta, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = ndtr(beta / np.abs(gamma))
    out = np.where(gamma == 0, (beta > 0).astype(float), out)
    return float(out) if out.ndim == 0 else out


def draw_relu_panel(ax, x_hat, gamma, beta, bins=60):
    """Histogram of one ReLU unit's input ``z = gamma * x_hat + beta`` over (-6, 6), the
    active part (z > 0) in the BN colour and the inactive part grey, with the measured
    active share and ``Phi(beta / |gamma|)`` in the title.

    Args:
        x_hat: normalized values (m,).

    Returns:
        the measured active fraction (float).
    """
    z = gamma * np.asarray(x_hat, dtype=float) + beta
    rng_ = (-6.0, 6.0)
    edges = np.linspace(*rng_, bins + 1)
    # values beyond the range are left out (not piled into the edge bins)
    counts, _ = np.histogram(z, bins=edges)
    counts = counts / (len(z) * np.diff(edges))
    k = bins // 2  # edges[k] == 0: the left half is inactive, the right half active
    ax.stairs(
        counts[:k],
        edges[: k + 1],
        fill=True,
        color=COLORS["reference"],
        alpha=0.7,
        label="inactive (output 0)",
    )
    ax.stairs(
        counts[k:], edges[k:], fill=True, color=COLORS["bn"], alpha=0.85, label="active"
    )
    ax.axvline(0, color="black", lw=0.8)
    active = float(np.mean(z > 0))
    ax.set_title(
        rf"$\gamma$={gamma:g}, $\beta$={beta:g}: active {active:.0%}"
        f"\n(Φ(β/|γ|) = {relu_active_fraction(gamma, beta):.0%})",
        fontsize=9,
    )
    ax.set_xlim(*rng_)
    ax.set_yticks([])
    ax.set_xlabel("ReLU input z")
    return active


def _draw_relu(axes, x_hat, gamma, beta, gammas_curve):
    """The two panels of the ReLU figure, redrawn: :func:`draw_relu_panel` on x_hat
    (m,) at the left; at the right ``Phi(beta / |gamma|)`` against beta for each gamma
    of ``gammas_curve`` and for ``gamma``, with the measured active share as a dot.
    Returns the measured share."""
    a0, a1 = axes
    a0.clear()
    a1.clear()
    active = draw_relu_panel(a0, x_hat, gamma, beta)
    b = np.linspace(-4, 4, 201)
    for i, gc in enumerate(gammas_curve):
        a1.plot(
            b,
            relu_active_fraction(gc, b),
            color=COLORS["reference"],
            ls=("--", "-.", ":")[i % 3],
            label=rf"$\gamma$={gc:g}",
        )
    a1.plot(
        b,
        relu_active_fraction(gamma, b),
        color=COLORS["bn"],
        label=rf"this $\gamma$={gamma:g}",
    )
    a1.plot([beta], [active], "o", color="black", label="measured")
    a1.set_xlabel(r"$\beta$")
    a1.set_ylabel("fraction of inputs active")
    a1.set_ylim(-0.02, 1.02)
    a1.set_title("Φ(β/|γ|)", fontsize=10)
    a1.legend(fontsize=8, loc="upper left")
    return active


def relu_view(gamma=1.0, beta=0.0, n=4000, seed=0, gammas_curve=(0.5, 1.0, 2.0)):
    """The ReLU widget's picture (the one :func:`relu_frames` draws) on n standard
    normal x_hat.

    Returns:
        ``(fig, stats)``, stats = {"active": measured,
        "predicted": ``Phi(beta/|gamma|)``}.
    """
    import matplotlib.pyplot as plt

    x_hat = as_generator(seed).standard_normal(n)
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 2.9), layout="constrained")
    active = _draw_relu(axes, x_hat, gamma, beta, gammas_curve)
    return fig, {"active": active, "predicted": relu_active_fraction(gamma, beta)}


def relu_widget(gamma=1.0, beta=0.0, n=4000, seed=0):
    """Sliders for gamma and beta above :func:`relu_view` (``box.controls``,
    ``box.last_stats`` as in :func:`gamma_beta_widget`)."""
    c = {
        "gamma": slider("γ", gamma, 0.0, 4.0, 0.05),
        "beta": slider("β", beta, -4.0, 4.0, 0.05),
    }

    def view(**v):
        return relu_view(n=n, seed=seed, **v)

    return live_figure(view, c)


def relu_frames(x_hat, gammas_curve=(0.5, 1.0, 2.0), figsize=(7.5, 2.9)):
    """A figure and a ``draw((gamma, beta))`` for :func:`bnlib.plotting.scrubber`, the
    site's stand-in for :func:`relu_widget`: the picture of :func:`relu_view` on
    ``x_hat`` (m,).

    Returns:
        ``(fig, draw)``; ``draw`` returns the measured active share.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=figsize, layout="constrained")

    def draw(setting):
        return _draw_relu(axes, x_hat, *setting, gammas_curve)

    return fig, draw


def active_fractions(model, x):
    """For each ReLU of ``model`` (eval mode, model unchanged): the share of the
    examples x (N, d_in) on which each unit is active. List of arrays (C,)."""
    return [np.mean(z > 0, axis=0) for z in capture_inputs(model, x, ReLU, mode="eval")]


def active_fractions_in_training(model, x, batch_size, passes=5, rng=0):
    """For each ReLU of ``model``: the share of the examples x (N, d_in) on which each
    unit is active in *training mode*, over ``passes`` reshuffled epochs of batches of
    ``batch_size`` (each batch normalized with its own statistics; model unchanged).
    List of arrays (C,)."""
    rng = as_generator(rng)
    counts, seen = None, 0
    for _ in range(passes):
        order = rng.permutation(len(x))
        for start in range(0, len(x) - batch_size + 1, batch_size):
            batch = x[order[start : start + batch_size]]
            act = [
                np.sum(z > 0, axis=0)
                for z in capture_inputs(model, batch, ReLU, "train")
            ]
            counts = act if counts is None else [c + a for c, a in zip(counts, act)]
            seen += batch_size
    return [c / seen for c in counts]


def dead_unit_census(
    data, lrs, width=128, depth=2, epochs=5, batch_size=100, momentum=0.9, rng=0
):
    """Train ReLU MLPs with and without BN on ``data`` at each learning rate (SGD with
    momentum) and count the units never active on the training set.

    Returns:
        list of dicts (one per (norm, lr)): ``norm`` (None or "bn"), ``lr``, ``dead``
        (list: dead units per hidden layer, out of ``width``), ``test_acc`` and
        ``model``.
    """
    rows = []
    for norm in (None, "bn"):
        for lr in lrs:
            model = make_mlp(
                [data.x_train.shape[1]] + [width] * depth + [data.num_classes],
                "relu",
                norm,
                rng=rng,
            )
            hist = fit(
                model,
                SGD(model, lr=lr, momentum=momentum),
                data.x_train,
                data.y_train,
                epochs=epochs,
                batch_size=batch_size,
                test=(data.x_test, data.y_test),
                rng=rng,
                progress=False,
                on_nonfinite="stop",
            )
            fr = active_fractions(model, data.x_train)
            rows.append(
                {
                    "norm": norm,
                    "lr": lr,
                    "dead": [int(np.sum(f == 0)) for f in fr],
                    "test_acc": hist.test_acc[-1] if hist.test_acc else float("nan"),
                    "model": model,
                }
            )
    return rows


def census_table(census, width=128):
    """The rows of :func:`dead_unit_census` as a Markdown table, one row per
    (norm, lr): dead units per hidden layer out of ``width``, final test accuracy."""
    rows = [
        [
            "BN" if row["norm"] else "none",
            f"{row['lr']:.1f}",
            ", ".join(str(d) for d in row["dead"]) + f" of {width}",
            f"{row['test_acc']:.3f}",
        ]
        for row in census
    ]
    return markdown_table(
        ["normalization", "lr", "dead units per layer", "test accuracy"], rows
    )


def dead_unit_profile(model, x, layer, batch_size=None):
    """Where the dead units of one BN + ReLU layer sit in ``beta / |gamma|``.

    Args:
        model: a network with ``BatchNorm1d -> ReLU`` blocks.
        x: examples (N, d_in) on which a unit counts as dead if it is never active.
        layer: index of the block (0 for the first).
        batch_size: the training batch size m; if given, ``n_provable`` counts the dead
            units with ``beta / |gamma| < -sqrt(m - 1)``, which no batch can switch on.

    Returns:
        dict: arrays (C,) ``ratio`` (``beta / |gamma|``), ``abs_gamma``, ``active``
        (share of x on which each unit is active) and ``dead`` (bool); floats
        ``ratio_dead``, ``ratio_live`` (medians over dead and live units),
        ``ratio_dead_max``, ``gamma_dead``, ``gamma_live`` (medians of ``|gamma|``),
        ``active_live`` (median active share of the live units); ints ``n_dead`` and
        ``n_provable``.
    """
    bl = batchnorm_layers(model)[layer]
    frac = active_fractions(model, x)[layer]
    gam = np.abs(bl.params["weight"])
    ratio = bl.params["bias"] / gam
    dead = frac == 0
    return {
        "ratio": ratio,
        "abs_gamma": gam,
        "active": frac,
        "dead": dead,
        "n_dead": int(dead.sum()),
        "n_provable": (
            None
            if batch_size is None
            else int(np.sum(dead & (ratio < -np.sqrt(batch_size - 1))))
        ),
        "ratio_dead": np.median(ratio[dead]),
        "ratio_dead_max": ratio[dead].max(),
        "ratio_live": np.median(ratio[~dead]),
        "gamma_dead": np.median(gam[dead]),
        "gamma_live": np.median(gam[~dead]),
        "active_live": np.median(frac[~dead]),
    }


def active_share_gap(model, x, layer=0):
    """Mean over the units of one BN + ReLU layer of the absolute gap between the
    measured active share on x (N, d_in) and ``Phi(beta / |gamma|)``
    (:func:`relu_active_fraction`). Returns a float."""
    bl = batchnorm_layers(model)[layer]
    phi = relu_active_fraction(bl.params["weight"], bl.params["bias"])
    return np.abs(active_fractions(model, x)[layer] - phi).mean()


# --------------------------------------------------------------------------------------
# The BN parameters of a network


def bn_affine_parameters(model):
    """The ``(module, name)`` pairs of every BatchNorm gamma ("weight") and beta
    ("bias") in ``model``, in forward order: what an optimizer needs to train only
    them."""
    return [
        (m, k)
        for m in model.modules()
        if isinstance(m, BatchNorm1d)
        for k in ("weight", "bias")
        if k in m.params
    ]


# ------------------------------------------------------------------ answer keys
# The keys of this chapter's exercises whose answer is a number, judged by
# bnlib.exercises.check_answer; importing this module registers them.


def _phi(z):
    return NormalDist().cdf(z)


@functools.cache
def _count():
    """(parameters, BN parameters, BN running statistics, BN layers) of ex-ch2-count."""
    net = make_mlp([40, 100, 50, 10], "relu", "bn", rng=0)
    bns = batchnorm_layers(net)
    running = sum(b.running_mean.size + b.running_var.size for b in bns)
    return net.num_parameters(), sum(b.num_parameters() for b in bns), running, len(bns)


answer_key(
    "ex-ch2-predict",
    "(mean, variance) of the BN output for gamma = 0.5, beta = -1",
    0.01,
    [-1.0, 0.5**2],  # beta and gamma**2, whatever the input
    {
        "those are the input's; BN removes the input's mean and variance": [3, 4],
        "0.5 is gamma, the standard deviation; the variance is gamma**2": [-1, 0.5],
        "forgot gamma: the variance of gamma * x_hat is gamma**2": [-1, 1],
    },
)
answer_key(
    "ex-ch2-predict-sigmoid",
    "the typical sigmoid output, at the BN output's mean",
    0.02,
    1 / (1 + math.e),
    {
        "that is sigmoid(0); the BN output is centred at beta": 0.5,
        "that is sigmoid(+1); beta is -1": 1 / (1 + 1 / math.e),
    },
)
answer_key(
    "ex-ch2-step-line",
    "the share of outputs above 0.5 for a step 1 standard deviation above the mean",
    0.005,
    1 - _phi(1),
    {"that is the share below the step": _phi(1), "that is a step at the mean": 0.5},
)
answer_key(
    "ex-ch2-count",
    "the number of trainable parameters of the network",
    0,
    lambda: _count()[0],
    {
        "counted a bias in the Linear layers before BN; make_mlp leaves them "
        "out": lambda: _count()[0] + _count()[1] // 2,
        "counted the running statistics; they are buffers": lambda: sum(_count()[:2]),
        "left out BN's gamma and beta": lambda: _count()[0] - _count()[1],
    },
)
answer_key(
    "ex-ch2-count-bn",
    "how many of the trainable parameters belong to BN",
    0,
    lambda: _count()[1],
    {
        "gamma and beta: two per feature": lambda: _count()[1] // 2,
        "the running statistics are buffers, not parameters": lambda: 2 * _count()[1],
    },
)
answer_key(
    "ex-ch2-count-buffers",
    "how many numbers BN stores that are not parameters",
    0,
    lambda: _count()[2],
    {"a running mean and a running variance per feature": lambda: _count()[2] // 2},
    {
        "(You also counted num_batches_tracked, one per layer, which bnlib keeps "
        "too.)": lambda: _count()[2] + _count()[3]
    },
)
answer_key(
    "ex-ch2-adam",
    "the least number of Adam steps in which beta covers the shift 10 at lr 0.01",
    0.05,
    10 / 0.01,
    {
        "that is the count at lr 0.1": 100,
        "that is the shift alone; Adam moves beta by about lr per step": 10,
    },
    rel=True,
)
answer_key(
    "ex-ch2-bound-b",
    "how large -beta / |gamma| must be before a unit is provably dead, m = 100",
    0.01,
    math.sqrt(100 - 1),
    {"that is sqrt(m); the bound is sqrt(m - 1)": 10, "forgot the square root": 99},
)
answer_key(
    "ex-ch2-bound-p",
    "the probability that a batch of 100 standard normal values has at least one "
    "above 3",
    0.005,  # a simulation over 10 000 batches is within it; the two near-misses not
    1 - _phi(3) ** 100,
    {
        "that is the chance for one value; a batch has 100 chances": 1 - _phi(3),
        "that is the probability that none is above 3": _phi(3) ** 100,
        "that is the union bound 100 p, which counts a batch with two such values "
        "twice; use the complement of 'none'": 100 * (1 - _phi(3)),
        "that is the probability of exactly one": 100 * (1 - _phi(3)) * _phi(3) ** 99,
    },
)
