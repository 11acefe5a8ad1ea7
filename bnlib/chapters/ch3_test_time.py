"""Test-time batch norm: population statistics, EMA, precise BN, folding, Batch
Renormalization (chapter 3).

* ``ema_weights``, ``ema``, ``effective_window``, ``keras_to_torch_momentum``,
  ``torch_to_keras_momentum``: the exponential moving average that BatchNorm keeps.
* ``simulate_drift``, ``ema_tracking_error``: an EMA following a drifting statistic.
* ``fold_batchnorm``: merge an eval-mode BatchNorm into the Linear/Conv1d before it;
  ``check_fold`` checks the reader's folding by hand.
* ``BatchRenorm1d``: Batch Renormalization (Ioffe 2017), batch statistics corrected
  towards the running ones by r and d, held constant in the backward pass.
* ``covariate_shift``: a gain/offset/noise change of the inputs, for deployment
  experiments.
* ``draw_batch_dependence``, ``draw_drift``: the figures behind the chapter's two
  widgets (each drawn both by the widget and by its animation).
* The chapter's experiments: ``predictions_in_random_batches`` (one example in many
  batches), ``tracking_error_sweep`` (EMA error against momentum), ``ema_vs_precise``
  (EMA against precise statistics during training), ``train_mode_accuracy`` (forgetting
  ``eval()``), ``tiny_batch_runs`` (BN against Batch Renorm at batch size 2 and 4),
  ``adabn_under_shift`` (AdaBN on shifted inputs), ``layer_variance_ratios`` (pooled
  against per-batch variance), ``frozen_bn_tail`` (FrozenBN for the last steps); their
  figures ``draw_tracking_error``, ``draw_ema_vs_precise``, ``draw_shift_accuracy``.
"""

from __future__ import annotations

import copy
import functools
import math

import numpy as np

from .. import functional as F
from ..data import minibatches
from ..exercises import (
    CASE_FIELDS,
    answer_key,
    call_reader,
    copy_array,
    judge_cases,
    never_raises,
    reader_name,
    reader_outputs,
)
from ..gradcheck import numerical_gradient
from ..models import make_mlp
from ..modules import BatchNorm1d, BatchNormBase, Conv1d, Linear
from ..optim import SGD
from ..plotting import COLORS, caption_axes
from ..surgery import batchnorm_layers, precise_bn
from ..train import evaluate, fit, train_step

#: Layer widths of the chapter's MNIST-1D network: two hidden layers of 128.
MLP_SIZES = [40, 128, 128, 10]

__all__ = [
    "fold_batchnorm",
    "check_fold",
    "BatchRenorm1d",
    "MLP_SIZES",
    "ema_weights",
    "ema",
    "effective_window",
    "keras_to_torch_momentum",
    "torch_to_keras_momentum",
    "simulate_drift",
    "ema_tracking_error",
    "covariate_shift",
    "draw_batch_dependence",
    "draw_drift",
    "class_probabilities",
    "predictions_in_random_batches",
    "tracking_error_sweep",
    "running_mean_distance",
    "ema_vs_precise",
    "train_mode_accuracy",
    "tiny_batch_runs",
    "adabn_under_shift",
    "draw_tracking_error",
    "draw_ema_vs_precise",
    "draw_shift_accuracy",
    "layer_variance_ratios",
    "frozen_bn_tail",
    "renorm_gradients",
    "device_batch_statistics",
    "device_mean_noise",
]

# --------------------------------------------------------------------------- EMA


def _check_momentum(momentum, name="momentum"):
    if momentum is not None and not 0.0 <= momentum <= 1.0:
        raise ValueError(f"expected {name} in [0, 1] (or None), got {momentum}")


def ema_weights(momentum, T):
    """Weight of each of T batch statistics in the running value after T updates.

    With ``running_t = (1 - momentum) * running_{t-1} + momentum * batch_t`` (PyTorch's
    convention) the running value after T updates is
    ``(1 - momentum)**T * running_0 + sum_t w_t * batch_t`` with
    ``w_t = momentum * (1 - momentum)**(T - t)``: the most recent batch (t = T) weighs
    most. The weights sum to ``1 - (1 - momentum)**T``; the rest stays on the start
    value. ``momentum=None`` is the cumulative average: every batch weighs 1/T.

    Returns:
        w: shape (T,), ``w[t - 1]`` is the weight of batch t (oldest first).
    """
    _check_momentum(momentum)
    if T < 1:
        raise ValueError(f"expected T >= 1 batches, got T={T}")
    if momentum is None:
        return np.full(T, 1.0 / T)
    age = np.arange(T - 1, -1, -1)  # batch t is T - t updates old
    return momentum * (1.0 - momentum) ** age


def ema(values, momentum, init=0.0):
    """The running value after each update, exactly as BatchNorm keeps it.

    Args:
        values: (T, ...) the batch statistics in the order they arrive.
        momentum: weight of the new value (PyTorch convention), or None for the
            cumulative average (then ``init`` is ignored after the first update).
        init: start value, broadcastable to ``values[0]`` (BatchNorm: 0 for the mean,
            1 for the variance).

    Returns:
        running: (T, ...) float64, ``running[t - 1]`` after the t-th update.
    """
    _check_momentum(momentum)
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] == 0:
        return values.copy()
    if momentum is None:  # cumulative average: running_t = (v_1 + ... + v_t) / t
        count = np.arange(1, len(values) + 1).reshape((-1,) + (1,) * (values.ndim - 1))
        return np.cumsum(values, axis=0) / count
    init = np.broadcast_to(np.asarray(init, dtype=np.float64), values.shape[1:])
    keep, out = 1.0 - momentum, np.empty_like(values)
    if values.ndim == 1:  # one statistic: a plain-float loop is fastest
        r, rows = float(init), values.tolist()
        for t, v in enumerate(rows):
            r = keep * r + momentum * v
            rows[t] = r
        return np.array(rows)
    r = init.copy()
    for t, v in enumerate(values):
        r = keep * r + momentum * v
        out[t] = r
    return out


#: The share of the EMA's weight that defines its window: 1 - 1/e, about 63%.
WINDOW_MASS = 1.0 - float(np.exp(-1.0))


def effective_window(momentum, mass=WINDOW_MASS):
    """How many of the most recent batches hold ``mass`` of the EMA's weight (in steady
    state).

    Solves ``1 - (1 - momentum)**k = mass``: ``k = log(1 - mass) / log(1 - momentum)``.
    With the default mass ``1 - 1/e`` this is about ``1 / momentum`` for small momentum.
    """
    _check_momentum(momentum)
    if momentum is None or momentum == 0.0:
        return np.inf
    if momentum == 1.0:
        return 1.0
    return float(np.log1p(-mass) / np.log1p(-momentum))


def keras_to_torch_momentum(momentum):
    """Keras/TensorFlow keep ``moving = momentum * moving + (1 - momentum) * batch``;
    PyTorch's momentum is the weight of the *new* batch. Keras 0.99 -> PyTorch 0.01."""
    _check_momentum(momentum)
    return 1.0 - momentum


def torch_to_keras_momentum(momentum):
    """Inverse of ``keras_to_torch_momentum``: PyTorch 0.1 -> Keras 0.9."""
    _check_momentum(momentum)
    return 1.0 - momentum


def simulate_drift(
    momentum, drift, steps=200, noise=1.0, batch_size=32, init=0.0, rng=None
):
    """An EMA tracking a statistic that drifts while noisy mini-batch estimates arrive.

    The true mean of a unit moves linearly, ``true_t = drift * t`` (as the weights
    change during training); batch t sees ``true_t + noise / sqrt(batch_size) * z_t``
    with ``z_t ~ N(0, 1)``; the running mean follows ``ema`` from ``init``.

    Returns:
        dict with ``step`` (steps,), ``true``, ``batch`` and ``ema`` (each shape
        (steps,)).
    """
    rng = np.random.default_rng(rng)
    step = np.arange(1, steps + 1)
    true = drift * step.astype(np.float64)
    batch = true + noise / np.sqrt(batch_size) * rng.standard_normal(steps)
    return dict(step=step, true=true, batch=batch, ema=ema(batch, momentum, init))


def ema_tracking_error(momentum, drift, batch_noise):
    """Steady-state error of an EMA following ``true_t = drift * t`` through noisy
    batches.

    The error ``e_t = running_t - true_t`` obeys ``e_t = (1 - a)(e_{t-1} - drift) + a
    n_t`` (a = momentum, n_t the batch noise of standard deviation ``batch_noise``), so
    in steady state:

    * lag (mean error): ``-drift * (1 - a) / a``, i.e. the EMA trails by (1 - a)/a
      steps;
    * jitter (standard deviation): ``batch_noise * sqrt(a / (2 - a))``.

    Returns:
        (lag, jitter) as floats.
    """
    a = momentum
    if a is None or not 0.0 < a <= 1.0:
        raise ValueError(f"expected momentum in (0, 1], got {momentum}")
    return float(-drift * (1.0 - a) / a), float(batch_noise * np.sqrt(a / (2.0 - a)))


# --------------------------------------------------------------------- deployment shift


def covariate_shift(x, gain=1.0, offset=0.0, noise=0.0, rng=None):
    """Inputs as a changed sensor would deliver them: ``gain * x + offset + noise * z``.

    Args:
        x: (N, ...) inputs. gain, offset: scalars or arrays broadcastable to x (e.g. one
            per input position). noise: standard deviation of added Gaussian noise z.
        rng: seed or Generator for the noise.

    Returns:
        a new array of x's shape and dtype.
    """
    x = np.asarray(x)
    out = gain * x + offset
    if noise:
        out = out + noise * np.random.default_rng(rng).standard_normal(x.shape)
    return out.astype(x.dtype, copy=False)


# --------------------------------------------------------------------------- figures


def draw_batch_dependence(ax, batch, value, index=-1, eps=1e-5):
    """Train-mode BatchNorm outputs of a one-feature batch in which one member is moved.

    Sets ``batch[index] = value`` (on a copy), normalizes the batch with its own mean
    and variance (training mode, gamma = 1, beta = 0) and, for contrast, with fixed
    statistics (the mean and variance of the *original* batch, as evaluation mode
    would). Draws both against the example number.

    Args:
        ax: a matplotlib Axes.
        batch: (m,) the inputs x_1..x_m of one feature.
        value: the new value of member ``index``.

    Returns:
        (train_out, eval_out), each shape (m,).
    """

    batch = np.asarray(batch, dtype=np.float64)
    x = batch.copy()
    x[index] = value
    train_out = (x - x.mean()) / np.sqrt(x.var() + eps)
    eval_out = (x - batch.mean()) / np.sqrt(batch.var() + eps)
    i = np.arange(1, len(x) + 1)
    moved = np.zeros(len(x), bool)
    moved[index] = True
    ax.plot(
        i[~moved],
        eval_out[~moved],
        "o",
        mfc="none",
        color=COLORS["reference"],
        ms=9,
        label="fixed statistics (evaluation)",
    )
    ax.plot(
        i[~moved],
        train_out[~moved],
        "o",
        color=COLORS["bn"],
        label="batch statistics (training)",
    )
    ax.plot(i[moved], train_out[moved], "D", color="k", label="the moved example")
    ax.axhline(0.0, color="k", lw=0.6)
    caption_axes(ax, "example in the batch", "normalized output")
    ax.set_xticks(i)
    return train_out, eval_out


def draw_drift(ax, sim, momentum, drift, batch_noise=None, legend=True):
    """One panel of the EMA-tracking figure: true statistic, noisy batch values, running
    EMA.

    Args:
        ax: a matplotlib Axes.
        sim: a dict from ``simulate_drift`` (``step``, ``true``, ``batch``, ``ema``).
        momentum, drift: the values the simulation used (for the title and the lag
            line).
        batch_noise: standard deviation of a batch value around the truth; if given, the
            title also shows the theoretical jitter.
    """

    ax.plot(
        sim["step"],
        sim["batch"],
        ".",
        ms=2.5,
        color=COLORS["reference"],
        alpha=0.6,
        label="batch mean",
    )
    ax.plot(sim["step"], sim["true"], color="k", lw=1.2, label="true mean")
    ax.plot(
        sim["step"], sim["ema"], color=COLORS["bn"], lw=1.6, label="running mean (EMA)"
    )
    title = f"momentum {momentum:g}, drift {drift:g}/step"
    if batch_noise is not None:
        lag, jitter = ema_tracking_error(momentum, drift, batch_noise)
        steps = (1 - momentum) / momentum
        if drift:
            plural = "" if round(steps) == 1 else "s"
            title += f"\nlag {steps:.0f} step{plural}, jitter {jitter:.2f}"
        else:
            title += f"\nno lag (no drift), jitter {jitter:.2f}"
    caption_axes(ax, "training step", "mean of one unit", title)
    if legend:
        ax.legend(loc="upper left")


# -------------------------------------------------------------------------- experiments


def class_probabilities(logits):
    """Softmax over the last axis, computed stably: (..., K) logits -> (..., K)
    probabilities."""
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def predictions_in_random_batches(
    train_model, eval_model, x0, others, n_batches=200, batch_size=16, rng=None
):
    """Class probabilities of one example classified inside many random batches.

    For each of ``n_batches`` batches, ``batch_size - 1`` batch-mates are drawn from
    ``others`` without replacement (``rng.choice``), the batch ``[x0, mates...]`` goes
    through both models, and the softmax of the first row (x0's) is kept.

    Args:
        train_model: the model in training mode (a copy: it overwrites its running
            statistics).
        eval_model: the same model in evaluation mode.
        x0: (1, D) the example. others: (N, D) the pool of batch-mates.
        rng: seed or Generator for the draws (a Generator is advanced in place).

    Returns:
        (p_train, p_eval), each shape (n_batches, K).
    """
    rng = np.random.default_rng(rng)
    p_train, p_eval = [], []
    for _ in range(n_batches):
        mates = others[rng.choice(len(others), batch_size - 1, replace=False)]
        xb = np.concatenate([x0, mates])
        p_train.append(class_probabilities(train_model(xb)[0]))
        p_eval.append(class_probabilities(eval_model(xb)[0]))
    return np.array(p_train), np.array(p_eval)


def tracking_error_sweep(
    momenta, drift, steps=6000, noise=1.0, batch_size=16, rng=None
):
    """Root-mean-square error of the running mean against the drifting truth, per
    momentum.

    Draws one seed from ``rng`` and runs ``simulate_drift`` with it for every momentum
    (the same batch noise for all). The error is measured over the second half of each
    run (the steady state) and compared with ``sqrt(lag**2 + jitter**2)`` from
    ``ema_tracking_error`` with batch noise ``noise / sqrt(batch_size)``.

    Args:
        momenta: (G,) momenta (PyTorch convention).
        rng: seed or Generator (a Generator is advanced by one draw).

    Returns:
        (rmse, theory), each shape (G,).
    """
    rng = np.random.default_rng(rng)
    seed = int(rng.integers(2**31))
    sims = [
        simulate_drift(
            a, drift, steps=steps, noise=noise, batch_size=batch_size, rng=seed
        )
        for a in momenta
    ]
    half = steps // 2
    rmse = np.array(
        [np.sqrt(np.mean((s["ema"] - s["true"])[half:] ** 2)) for s in sims]
    )
    batch_noise = noise / np.sqrt(batch_size)
    lag_jit = np.array([ema_tracking_error(a, drift, batch_noise) for a in momenta])
    theory = np.sqrt(lag_jit[:, 0] ** 2 + lag_jit[:, 1] ** 2)
    return rmse, theory


def running_mean_distance(net, reference):
    """How far a network's running means are from a reference network's.

    For each pair of corresponding BatchNorm layers: the root-mean-square over units of
    ``(mean - reference mean) / reference std`` (std from the reference's running
    variance); then the average over layers. Both networks need the same BatchNorm
    layers.

    Returns:
        a float (in units of the reference standard deviation).
    """
    pairs = zip(batchnorm_layers(net), batchnorm_layers(reference))
    return np.mean(
        [
            np.sqrt(np.mean((a.running_mean - b.running_mean) ** 2 / b.running_var))
            for a, b in pairs
        ]
    )


def ema_vs_precise(
    data, epochs=8, momenta=(0.1, 0.01), lr=2.0, batch_size=64, rng=None
):
    """Train identical networks that differ only in BatchNorm momentum; compare with
    precise BN.

    Draws one seed from ``rng`` for the initial weights (shared by all networks, built
    by ``make_mlp([40, 128, 128, 10], "relu")`` with ``BatchNorm1d(c, momentum=a)`` for
    each a in ``momenta``), then, every
    epoch: one seed for the shuffle (shared, so all networks see the same batches and,
    since running statistics play no part in training, keep the same weights), one epoch
    of plain SGD for each network, and ``precise_bn`` on a copy of the first network
    over the training set in batches of ``batch_size`` shuffled with ``rng``.

    Args:
        data: a ``Dataset`` (x_train (N, D), y_train, x_test, y_test).
        rng: a Generator (advanced in place) or seed.

    Returns:
        dict with ``acc`` (keys ``"ema <a>"`` per momentum and ``"precise"``, each shape
        (epochs,): test accuracy after every epoch), ``err`` (keys ``"ema <a>"``, shape
        (epochs,): ``running_mean_distance`` from the precise statistics) and ``nets``
        (the trained networks, in the order of ``momenta``).
    """
    rng = np.random.default_rng(rng)
    init_seed = int(rng.integers(2**31))
    keys = [f"ema {a:g}" for a in momenta]
    nets = [
        make_mlp(
            MLP_SIZES,
            "relu",
            norm=lambda c, a=a: BatchNorm1d(c, momentum=a),
            rng=init_seed,
        )
        for a in momenta
    ]
    opts = [SGD(net, lr=lr) for net in nets]
    acc = {k: [] for k in keys + ["precise"]}
    err = {k: [] for k in keys}
    for _ in range(epochs):
        shuffle_seed = int(rng.integers(2**31))
        for net, opt in zip(nets, opts):
            fit(
                net,
                opt,
                data.x_train,
                data.y_train,
                epochs=1,
                batch_size=batch_size,
                rng=shuffle_seed,
                progress=False,
            )
        train_batches = minibatches(data.x_train, data.y_train, batch_size, rng=rng)
        precise = precise_bn(copy.deepcopy(nets[0]), train_batches)
        for name, net in zip(keys + ["precise"], nets + [precise]):
            acc[name].append(evaluate(net, data.x_test, data.y_test)[1])
        for name, net in zip(keys, nets):
            err[name].append(running_mean_distance(net, precise))
    return dict(
        acc={k: np.array(v) for k, v in acc.items()},
        err={k: np.array(v) for k, v in err.items()},
        nets=nets,
    )


def train_mode_accuracy(net, x, y, batch_size):
    """Accuracy of ``net`` as called, in its current mode, on (x, y) in consecutive
    batches.

    Unlike ``evaluate`` it does not switch to evaluation mode: a model left in training
    mode normalizes each batch with its own statistics (and updates its running
    statistics).

    Args:
        x: (N, D) inputs, batched in the given order. y: (N,) integer labels.

    Returns:
        the fraction of correct predictions, a float.
    """
    preds = [
        net(x[i : i + batch_size]).argmax(axis=1) for i in range(0, len(x), batch_size)
    ]
    return float(np.mean(np.concatenate(preds) == y))


def _train_mlp(data, norm, batch_size, init_seed, shuffle_seed, steps, lr=0.01):
    """``make_mlp(MLP_SIZES, "relu", norm)`` initialized from ``init_seed``, trained
    with SGD (momentum 0.9) for ``steps`` steps of ``batch_size`` examples of
    ``data.x_train``, shuffled from ``shuffle_seed``: ``(net, opt, history)``."""
    net = make_mlp(MLP_SIZES, "relu", norm=norm, rng=init_seed)
    opt = SGD(net, lr=lr, momentum=0.9)
    hist = fit(
        net,
        opt,
        data.x_train,
        data.y_train,
        epochs=1,
        batch_size=batch_size,
        rng=shuffle_seed,
        progress=False,
        max_steps=steps,
    )
    return net, opt, hist


def tiny_batch_runs(
    data,
    batch_sizes=(2, 4),
    init_seed=0,
    shuffle_seed=0,
    momentum=0.01,
    lr=0.01,
    max_steps=1000,
    last=250,
):
    """BatchNorm against Batch Renormalization, trained with tiny batches.

    For each batch size m and each of ``"bn"`` (``BatchNorm1d``) and ``"renorm"``
    (``BatchRenorm1d`` with its default r_max = 3, d_max = 5), both with running
    statistics
    ``momentum``: a ``make_mlp(MLP_SIZES, "relu")`` network initialized from
    ``init_seed``, trained with SGD (momentum 0.9) for ``max_steps`` steps of batch size
    m, shuffled from ``shuffle_seed``.

    Args:
        data: a ``Dataset`` (x_train (N, D), y_train, x_test, y_test).

    Returns:
        dict ``{(key, m): (train_acc, test_acc)}``: the mean training-mode accuracy of
        the ``last`` steps and the test accuracy in evaluation mode.
    """
    norms = {
        "bn": lambda c: BatchNorm1d(c, momentum=momentum),
        "renorm": lambda c: BatchRenorm1d(c, momentum=momentum),
    }
    runs = {}
    for m in batch_sizes:
        for key, norm in norms.items():
            net, _, hist = _train_mlp(
                data, norm, m, init_seed, shuffle_seed, max_steps, lr
            )
            runs[key, m] = (
                float(np.mean(hist.acc[-last:])),
                evaluate(net, data.x_test, data.y_test)[1],
            )
    return runs


def adabn_under_shift(model, x_train, x_test, y_test, shifts, batch_size=64, rng=None):
    """Test accuracy on shifted inputs, with the training statistics and with AdaBN.

    For each shift, in order: the test inputs and (a fresh draw) the training inputs are
    passed through ``covariate_shift(x, rng=rng, **kwargs)``; AdaBN is ``precise_bn`` on
    a copy of ``model`` over the shifted training inputs (no labels), in consecutive
    batches of ``batch_size``.

    Args:
        model: a trained model with BatchNorm layers (not modified).
        x_train: (N, D) unlabeled inputs for AdaBN. x_test: (M, D), y_test: (M,).
        shifts: ``{name: covariate_shift keyword arguments}``.
        rng: Generator (advanced in place) or seed for the noise.

    Returns:
        ``{name: (shifted_acc, adabn_acc)}``.
    """

    rng = np.random.default_rng(rng)
    results = {}
    for name, kw in shifts.items():
        x_target_test = covariate_shift(x_test, rng=rng, **kw)
        x_target = covariate_shift(x_train, rng=rng, **kw)
        adapted = precise_bn(copy.deepcopy(model), x_target, batch_size=batch_size)
        results[name] = (
            evaluate(model, x_target_test, y_test)[1],
            evaluate(adapted, x_target_test, y_test)[1],
        )
    return results


# ------------------------------------------------------------------- experiment figures


def draw_tracking_error(ax, momenta, sweeps, styles=("-", "--", ":")):
    """RMS error of the running mean against momentum: simulation dots, theory lines.

    Args:
        ax: a matplotlib Axes.
        momenta: (G,) the momenta of the sweep.
        sweeps: ``{drift: (rmse, theory)}`` from ``tracking_error_sweep``, each shape
            (G,); one line style per drift (the simulation is labelled once, on the
            last).
    """

    last = list(sweeps)[-1]
    for (drift, (rmse, theory)), style in zip(sweeps.items(), styles):
        ax.plot(
            momenta,
            rmse,
            "o",
            ms=3,
            color=COLORS["bn"],
            label="simulation" if drift == last else None,
        )
        ax.plot(
            momenta,
            theory,
            style,
            color=COLORS["reference"],
            label=f"drift {drift}/step (theory)",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    caption_axes(ax, "momentum α (PyTorch convention)", "RMS error of the running mean")
    ax.legend(fontsize=8)


def draw_ema_vs_precise(acc, err, figsize=(7.5, 5.6)):
    """The figure of ``ema_vs_precise``: accuracy, accuracy gap to precise BN,
    statistics gap.

    Args:
        acc: ``{"ema <a>": (E,), ..., "precise": (E,)}`` test accuracies per epoch.
        err: ``{"ema <a>": (E,)}`` running-mean distances from the precise statistics.

    Returns:
        the Figure (panels: accuracy, gap in percentage points, statistics gap, legend).
    """
    import matplotlib.pyplot as plt

    fig, ax_dict = plt.subplot_mosaic(
        [["acc", "gap"], ["stats", "key"]], figsize=figsize
    )
    axes = [ax_dict["acc"], ax_dict["gap"], ax_dict["stats"]]
    ep = np.arange(1, len(acc["precise"]) + 1)
    styles, lines = {}, iter([("-", "o"), ("--", "s"), (":", "D"), ("-.", "v")])
    for k in acc:
        if k == "precise":
            styles[k] = ("reference", "-", "^", "precise BN (recomputed)")
            continue
        a = float(k.split()[1])
        note = "PyTorch default" if a == 0.1 else f"Keras {1 - a:g}"
        styles[k] = ("bn", *next(lines), f"EMA, momentum {a:g} ({note})")
    for k, (c, ls, mk, label) in styles.items():
        kw = dict(
            ls=ls, marker=mk, ms=4, color=COLORS[c], mfc="white" if ls == "--" else None
        )
        axes[0].plot(ep, acc[k], label=label, **kw)
        if k in err:
            axes[1].plot(ep, 100 * (acc["precise"] - acc[k]), **kw)
            axes[2].plot(ep, err[k], **kw)
    axes[1].axhline(0.0, color="k", lw=0.6)
    caption_axes(axes[0], "epoch", "test accuracy", "accuracy")
    caption_axes(
        axes[1], "epoch", "precise - EMA accuracy\n(percentage points)", "accuracy gap"
    )
    caption_axes(
        axes[2],
        "epoch",
        "RMS distance of running means\nfrom precise (in precise std)",
        "statistics gap",
    )
    axes[2].set_ylim(bottom=0)
    ax_dict["key"].axis("off")
    ax_dict["key"].legend(*axes[0].get_legend_handles_labels(), loc="center")
    return fig


def draw_shift_accuracy(ax, results, clean_acc):
    """Bars of test accuracy per deployment shift, with training and with AdaBN
    statistics.

    Args:
        ax: a matplotlib Axes.
        results: ``{name: (shifted_acc, adabn_acc)}`` from ``adabn_under_shift``.
        clean_acc: accuracy on unshifted test data (a dashed reference line).
    """

    names = list(results)
    xs = np.arange(len(names))
    ax.bar(
        xs - 0.2,
        [results[n][0] for n in names],
        width=0.38,
        color=COLORS["bn"],
        label="shifted data,\ntraining statistics",
    )
    ax.bar(
        xs + 0.2,
        [results[n][1] for n in names],
        width=0.38,
        color="white",
        hatch="//",
        edgecolor=COLORS["bn"],
        label="shifted data,\nAdaBN statistics",
    )
    ax.axhline(clean_acc, color=COLORS["reference"], ls="--", label="clean test data")
    ax.set_xticks(xs, [n.replace(", ", ",\n").replace(" per", "\nper") for n in names])
    caption_axes(ax, "deployment shift", "test accuracy")
    ax.set_ylim(0, 0.8)
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=3)


# --------------------------------------------------------------------------- precise BN


def layer_variance_ratios(model, x, layer, batch_sizes, rng=None):
    """How well ``precise_bn``'s two variance estimators match what a layer meets.

    For each batch size m: ``precise_bn`` over ``x`` (shuffled with ``rng``, batches of
    m) on two copies of ``model``, one per estimator; then, in evaluation mode with
    those statistics, the input of BatchNorm layer number ``layer`` over all of ``x``;
    its variance is the target. The ratio of ``running_var`` to that variance, averaged
    over the layer's units, says how well the estimator did (1 is exact).

    Args:
        model: a ``Sequential`` of Linear or Conv1d layers with BatchNorm.
        x: (N, D) or (N, C, L) inputs (a remainder of fewer than m is left out).
        layer: 0 for the first BN layer, 1 for the second, ...
        batch_sizes: the m to try. rng: Generator (advanced in place) or seed.

    Returns:
        ``{"population": (M,), "batch_mean": (M,)}`` ratios, one per batch size.
    """
    rng = np.random.default_rng(rng)
    ratios = {"population": [], "batch_mean": []}
    for m in batch_sizes:
        xs = x[rng.permutation(len(x))[: len(x) // m * m]]  # whole batches only
        batches = list(xs.reshape(-1, m, *x.shape[1:]))
        for variance, out in ratios.items():
            net = precise_bn(copy.deepcopy(model), batches, variance=variance)
            net.eval()
            bn = batchnorm_layers(net)[layer]
            h = x
            for module in net:
                if module is bn:
                    break
                h = module(h)
            axes = tuple(i for i in range(h.ndim) if i != 1)  # all but channels
            out.append(float(np.mean(bn.running_var / h.var(axis=axes))))
    return {k: np.array(v) for k, v in ratios.items()}


def frozen_bn_tail(data, batch_size, init_seed, shuffle_seed, steps=1000, tail=250):
    """Train with tiny batches; for the last ``tail`` steps BN either stays in training
    mode or is frozen (FrozenBN: precise statistics, then evaluation mode in training).

    Both continuations start from the same network after ``steps - tail`` SGD steps
    (lr 0.01, momentum 0.9, running momentum 0.01) of ``make_mlp(MLP_SIZES, "relu",
    "bn")`` and see the same batches. Each ends with ``precise_bn`` (batches of 64).

    Returns:
        ``{"bn": test accuracy, "frozen": test accuracy}`` in evaluation mode.
    """

    def norm(c):
        return BatchNorm1d(c, momentum=0.01)

    net, opt, _ = _train_mlp(
        data, norm, batch_size, init_seed, shuffle_seed, steps - tail
    )
    x, y = data.x_train, data.y_train
    out = {}
    for key in ("bn", "frozen"):
        run, run_opt = copy.deepcopy((net, opt))  # the optimizer points into run
        if key == "frozen":
            precise_bn(run, data.x_train, batch_size=64)
            for bn in batchnorm_layers(run):
                bn.eval()  # fixed statistics from here on, gamma and beta still learn
        rng = np.random.default_rng([shuffle_seed, 1])  # the same batches for both
        for xb, yb in list(minibatches(x, y, batch_size, rng, drop_last=True))[:tail]:
            train_step(run, run_opt, xb, yb)
        precise_bn(run, data.x_train, batch_size=64)
        out[key] = evaluate(run, data.x_test, data.y_test)[1]
    return out


# ------------------------------------------------------------------------------ folding


def fold_batchnorm(layer: Linear | Conv1d, bn: BatchNormBase) -> Linear | Conv1d:
    """A new layer computing ``bn(layer(x))`` of an eval-mode BatchNorm in one affine
    map.

    In evaluation BatchNorm is per-channel affine: ``y = s * (z - running_mean) + beta``
    with ``s = gamma / sqrt(running_var + eps)``. Folding it into the layer before gives
    ``W' = s * W`` (row c of W scaled by s_c) and
    ``b' = s * (b - running_mean) + beta``.

    Args:
        layer: a ``Linear`` (in, out) followed by BatchNorm1d(out) on (N, out), or a
            ``Conv1d`` (C_in -> C_out) followed by BatchNorm1d(C_out) on (N, C_out, L);
            with or without a bias.
        bn: the BatchNorm layer (its running statistics and affine parameters are used,
            whatever its train/eval mode).

    Returns:
        a new Linear/Conv1d with a bias, same shapes, float64 parameters; the inputs are
        not modified.
    """
    if not isinstance(bn, BatchNormBase):
        raise ValueError(
            f"fold_batchnorm: expected a BatchNorm layer, got {type(bn).__name__}"
        )
    if not bn.track_running_stats:
        raise ValueError(
            "fold_batchnorm: the BatchNorm layer keeps no running statistics "
            "(track_running_stats=False); nothing to fold"
        )
    if isinstance(layer, Linear):
        out_ch = layer.out_features
    elif isinstance(layer, Conv1d):
        out_ch = layer.out_channels
    else:
        raise ValueError(
            f"fold_batchnorm: expected a Linear or Conv1d layer, "
            f"got {type(layer).__name__}"
        )
    if bn.num_features != out_ch:
        raise ValueError(
            f"fold_batchnorm: the layer has {out_ch} outputs but the BatchNorm "
            f"layer expects {bn.num_features} channels"
        )
    gamma = bn.params.get("weight", np.ones(out_ch)).astype(np.float64)
    beta = bn.params.get("bias", np.zeros(out_ch)).astype(np.float64)
    scale = gamma / np.sqrt(np.asarray(bn.running_var, np.float64) + bn.eps)
    w = layer.params["weight"].astype(np.float64)
    b = layer.params.get("bias", np.zeros(out_ch)).astype(np.float64)
    folded = copy.deepcopy(layer)  # same hyper-parameters (padding, stride ...)
    folded.params = {
        "weight": w * scale.reshape((-1,) + (1,) * (w.ndim - 1)),
        "bias": scale * (b - bn.running_mean) + beta,
    }
    folded.zero_grad()
    return folded


# ------------------------------------------------------------------------- Batch Renorm


class BatchRenorm1d(BatchNormBase):
    """Batch Renormalization (Ioffe 2017) for (N, C) or (N, C, L) inputs.

    Training, per channel, with batch mean ``mu_B``, ``sigma_B = sqrt(var_B + eps)``
    (biased batch variance) and the running estimates ``mu``, ``sigma``::

        # r, d: constants in the backward (no gradient flows through them)
        r = clip(sigma_B / sigma, 1/r_max, r_max)
        d = clip((mu_B - mu) / sigma, -d_max, d_max)
        x_hat = (x - mu_B) / sigma_B * r + d
        y = gamma * x_hat + beta

    Unclipped, ``x_hat = (x - mu) / sigma``: the training output is the evaluation
    output. With ``r_max = 1, d_max = 0`` it is BatchNorm. Evaluation:
    ``y = gamma (x - mu) / sigma + beta``.

    Running statistics, after r and d are computed (a = momentum, None = cumulative):

    * ``running="std"`` (the paper): ``sigma <- sigma + a (sigma_B - sigma)``, an EMA of
      the batch *standard deviations* (eps included). It is stored as
      ``running_var = sigma**2 - eps``, so that the usual ``sqrt(running_var + eps)`` is
      sigma; ``running_std`` gives sigma directly.
    * ``running="var"``: PyTorch's BatchNorm rule, an EMA of the unbiased batch
      variances, ``sigma = sqrt(running_var + eps)``. Then ``r_max=1, d_max=0``
      reproduces ``BatchNorm1d`` exactly, running statistics included.

    The paper starts with r_max = 1, d_max = 0 and relaxes them during training;
    ``r_max`` and ``d_max`` are plain attributes, so a training loop can change them.
    After a training forward, ``last_r`` and ``last_d`` (shape (C,)) hold the values
    used.
    """

    _ranks = (2, 3)
    _shape_doc = "a 2-D (N, C) or 3-D (N, C, L) input"

    def __init__(
        self,
        num_features,
        eps=1e-5,
        momentum=0.1,
        r_max=3.0,
        d_max=5.0,
        affine=True,
        running="std",
    ):
        if r_max < 1.0 or d_max < 0.0:
            raise ValueError(
                f"BatchRenorm1d: expected r_max >= 1 and d_max >= 0, "
                f"got r_max={r_max}, d_max={d_max}"
            )
        if running not in ("std", "var"):
            raise ValueError(
                f"BatchRenorm1d: running must be 'std' or 'var', got {running!r}"
            )
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(
                f"BatchRenorm1d: expected momentum in [0, 1] (or None), got {momentum}"
            )
        super().__init__(num_features, eps, momentum, affine)
        self.r_max, self.d_max, self.running = float(r_max), float(d_max), running
        self.last_r = self.last_d = None

    @property
    def running_std(self):
        """sigma, the running standard deviation used to normalize:
        ``sqrt(running_var + eps)``."""
        return np.sqrt(self.running_var + self.eps)

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        self._check_input(x)
        m = x.size // x.shape[1]
        if m <= 1:
            raise ValueError(
                f"BatchRenorm1d: expected more than 1 value per channel when "
                f"training, got input of shape {x.shape} (m = {m})"
            )
        axes = F.batch_axes(x.ndim)
        mu_b = x.mean(axis=axes).astype(np.float64)
        sigma_b = np.sqrt(x.var(axis=axes).astype(np.float64) + self.eps)
        sigma = self.running_std
        r = np.clip(sigma_b / sigma, 1.0 / self.r_max, self.r_max)
        d = np.clip((mu_b - self.running_mean) / sigma, -self.d_max, self.d_max)
        gamma, beta = self._affine()
        g = np.ones(self.num_features) if gamma is None else gamma
        b = np.zeros(self.num_features) if beta is None else beta
        # gamma * (x_hat0 * r + d) + beta == (gamma r) * x_hat0 + (gamma d + beta)
        out, cache = F.batchnorm_forward(x, g * r, g * d + b, self.eps)
        self._cache, self.last_r, self.last_d = cache, r, d
        if self.track_running_stats:
            self._update_running(cache)
        return out

    def _update_running(self, cache):
        if self.running == "var":
            return super()._update_running(cache)
        mean = cache["mu"].reshape(-1).astype(np.float64)
        sigma_b = np.sqrt(cache["var"].reshape(-1).astype(np.float64) + self.eps)
        self.num_batches_tracked += 1
        w = 1.0 / self.num_batches_tracked if self.momentum is None else self.momentum
        self.running_mean = (1 - w) * self.running_mean + w * mean
        sigma = (1 - w) * self.running_std + w * sigma_b
        self.running_var = sigma**2 - self.eps

    def backward(self, dout):
        if not self.training:
            return super().backward(dout)
        cache = self._need_cache()
        self._check_dout(dout, cache["x"].shape)
        # r and d are constants: the BatchNorm backward with effective gamma = gamma * r
        dx, dgamma_eff, dbeta = F.batchnorm_backward(dout, cache)
        # d/dgamma of gamma * (r x_hat0 + d) summed:
        # r * sum(dout x_hat0) + d * sum(dout)
        self._store_grads(self.last_r * dgamma_eff + self.last_d * dbeta, dbeta)
        return dx

    def extra_repr(self):
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"r_max={self.r_max}, d_max={self.d_max}, running={self.running!r}"
        )


def renorm_gradients(layer, x, dout, h=1e-5):
    """Three input gradients of a training-mode ``BatchRenorm1d`` at x, for ``dout``.

    * ``"backward"``: what ``layer.backward`` returns (r and d held constant);
    * ``"fixed_rd"``: centered differences of ``sum(dout * f(x))``, where f is the
      Batch Renorm forward with r and d frozen at their values at x;
    * ``"full"``: centered differences of ``sum(dout * layer(x))``, r and d recomputed
      from every perturbed batch (the derivative through r and d).

    The layer needs ``momentum=0`` so that its running statistics stay fixed.

    Returns:
        dict of three (N, C) arrays.
    """
    if layer.momentum != 0.0:
        raise ValueError("renorm_gradients: use a layer with momentum=0")
    x = np.array(x, dtype=np.float64)
    layer.train()
    layer(x)
    r, d = layer.last_r.copy(), layer.last_d.copy()
    grads = {"backward": layer.backward(dout)}
    gamma, beta = layer.params["weight"], layer.params["bias"]

    def fixed_rd():
        sigma_b = np.sqrt(x.var(axis=0) + layer.eps)
        x_hat = (x - x.mean(axis=0)) / sigma_b * r + d
        return float(np.sum(dout * (gamma * x_hat + beta)))

    def full():
        return float(np.sum(dout * layer(x)))

    grads["fixed_rd"] = numerical_gradient(fixed_rd, x, h)
    grads["full"] = numerical_gradient(full, x, h)
    return grads


# --------------------------------------------------------------------------- practice


def device_batch_statistics(x, devices):
    """Batch means as K data-parallel devices compute them, per device and synced.

    Splits the global batch x (N, C) into ``devices`` equal shards, as data-parallel
    training does. Per-device BatchNorm normalizes each shard with its own mean;
    synchronized BatchNorm (SyncBN) with the mean over all shards, which is the
    global batch's mean.

    Returns:
        (per_device, synced): (K, C) shard means and the (C,) synced mean.
    """
    shards = np.split(np.asarray(x, dtype=np.float64), devices)
    per_device = np.stack([s.mean(axis=0) for s in shards])
    synced = per_device.mean(axis=0)  # equal shards: the mean of the global batch
    return per_device, synced


def device_mean_noise(x, device_batch_sizes, devices=8, rng=None, repeats=50):
    """RMS error of the batch mean each device normalizes with, against the data mean.

    For each per-device batch size b: ``repeats`` global batches of ``devices * b``
    examples drawn from x without replacement; the per-device means (per-device BN)
    and the global mean (SyncBN) are compared with the mean of all of x, in units of
    its standard deviation, RMS over units, devices and repeats.

    Returns:
        ``{"per_device": (B,), "synced": (B,)}``.
    """
    rng = np.random.default_rng(rng)
    mu, sd = x.mean(axis=0), x.std(axis=0)
    out = {"per_device": [], "synced": []}
    for b in device_batch_sizes:
        errs_dev, errs_sync = [], []
        for _ in range(repeats):
            batch = x[rng.choice(len(x), devices * b, replace=False)]
            per_device, synced = device_batch_statistics(batch, devices)
            errs_dev.append(((per_device - mu) / sd) ** 2)
            errs_sync.append(((synced - mu) / sd) ** 2)
        out["per_device"].append(float(np.sqrt(np.mean(errs_dev))))
        out["synced"].append(float(np.sqrt(np.mean(errs_sync))))
    return {k: np.array(v) for k, v in out.items()}


# ------------------------------------------------------------------ folding by hand
# The checker of the folding exercise (its cases come from
# bnlib.exercises.case("fold", k)).
def _fold(
    c,
    eps=None,
    den="sqrt",
    cols=False,
    no_gamma=False,
    no_b=False,
    raw_mean=False,
    no_beta=False,
    keep_W=False,
):
    """(W', b') of Linear (W, b) and evaluation-mode BN, with one deliberate mistake."""
    eps = c["eps"] if eps is None else eps
    s = (1.0 if no_gamma else c["gamma"]) / (
        np.sqrt(c["var"] + eps) if den == "sqrt" else c["var"] + eps
    )
    W = c["W"] if keep_W else c["W"] * s if cols else s[:, None] * c["W"]
    b = s * (0.0 if no_b else c["b"]) - (1 if raw_mean else s) * c["mean"]
    return W, b + (0.0 if no_beta else c["beta"])


_FOLD_MISTAKES = {
    "ignored the eps argument and used 1e-5": dict(eps=1e-5),
    "left eps out of sqrt(var + eps)": dict(eps=0.0),
    "divided by var + eps instead of its square root": dict(den="var"),
    "scaled the columns of W; each BN unit's scale belongs to the output unit it "
    "normalizes, a row of W (shape (out, in))": dict(cols=True),
    "left gamma out of the scale s = gamma / sqrt(var + eps)": dict(no_gamma=True),
    "left the Linear layer's bias b out of b'": dict(no_b=True),
    "did not scale the mean by s: the mean is subtracted before the scaling": dict(
        raw_mean=True
    ),
    "left beta out of b'": dict(no_beta=True),
    "left W unchanged; W' = s * W, row by row": dict(keep_W=True),
}


def _fold_reference(c):
    """(W', b') of :func:`fold_batchnorm` on layers holding the case's values."""
    out, n_in = c["W"].shape
    lin, bn = Linear(n_in, out), BatchNorm1d(out, eps=c["eps"])
    lin.params.update(weight=c["W"], bias=c["b"])
    bn.params.update(weight=c["gamma"], bias=c["beta"])
    bn.running_mean, bn.running_var = c["mean"], c["var"]
    folded = fold_batchnorm(lin, bn)
    return folded.params["weight"], folded.params["bias"]


@never_raises
def check_fold(fn):
    """Check ``fn(W, b, gamma, beta, mean, var, eps) -> (W2, b2)``: a Linear layer (W
    (out, in), b (out,)) followed by evaluation-mode BatchNorm (gamma, beta, running
    mean and var, each (out,)) folded into one Linear, W2 (out, in) and b2 (out,)."""
    who = reader_name("function", fn)

    def run(c):
        args = [copy_array(c[f]) for f in CASE_FIELDS["fold"]]
        return reader_outputs(call_reader(who, fn, *args), ["W2", "b2"], 2, who)

    mistakes = {k: functools.partial(_fold, **kw) for k, kw in _FOLD_MISTAKES.items()}
    outputs = [("W2", "(out, in), the shape of W"), ("b2", "(out,), the shape of b")]
    compare = "Recreate the case and compare with ch3.fold_batchnorm(linear, bn)"
    return judge_cases(
        "fold",
        "fold",
        outputs,
        run,
        _fold_reference,
        mistakes,
        check_fold.__doc__,
        compare,
    )


# ------------------------------------------------------------------ answer keys
# The keys of this chapter's exercises whose answer is a number, judged by
# bnlib.exercises.check_answer; importing this module registers them.


def _ema(means, momentum):
    """The running mean after each batch mean, from bnlib.BatchNorm1d (start 0)."""
    bn, out = BatchNorm1d(1, momentum=momentum), []
    for mean in means:
        bn(np.array([[mean - 1.0], [mean + 1.0]]))
        out.append(bn.running_mean[0])
    return out


answer_key(
    "ex-ch3-ema",
    "the running mean after each of the three batches, 3 numbers",
    1e-3,
    lambda: _ema([2, 4, 6], 0.1),
    {
        "used Keras's convention; PyTorch's momentum 0.1 is the weight of the new "
        "batch": lambda: _ema([2, 4, 6], 0.9),
        "that is the cumulative average (momentum=None), not the EMA": [2, 3, 4],
        "that is momentum * batch mean alone; the running value also keeps 0.9 of "
        "its previous value": [0.2, 0.4, 0.6],
    },
)
answer_key(
    "ex-ch3-ema-weights",
    "the weights of batches 1, 2, 3 in the final running mean, 3 numbers",
    1e-4,
    0.1 * 0.9 ** np.arange(2, -1, -1),
    {
        "this gives the oldest batch the largest weight; batch 1 has been shrunk by "
        "0.9 twice since it arrived, so the newest weighs most": 0.1
        * 0.9 ** np.arange(3),
        "each batch enters with weight 0.1, but each later update shrinks it": [0.1]
        * 3,
        "equal weights are the cumulative average (momentum=None)": [1 / 3] * 3,
    },
)
answer_key(
    "ex-ch3-ema-start",
    "the weight of the start value in the final running mean",
    1e-4,
    0.9**3,
    {
        "that is 0.1 ** 3; the start value keeps 0.9 of its weight per update": 1e-3,
        "that is its weight after one update": 0.9,
        "that is the batches' total weight; the start value keeps the rest": 0.271,
    },
)
answer_key(
    "ex-ch3-momentum-a",
    "PyTorch's momentum for Keras's momentum=0.95",
    1e-6,
    1 - 0.95,
    {
        "that is Keras's number; Keras's momentum is the weight of the old value, "
        "PyTorch's the weight of the new batch": 0.95
    },
)
answer_key(
    "ex-ch3-momentum-b",
    "the weight of the newest batch in the running statistics with PyTorch's "
    "momentum 0.99",
    1e-6,
    0.99,
    {
        "that is the weight Keras's momentum=0.99 gives the newest batch; PyTorch's "
        "momentum is the weight of the new batch itself": 0.01,
        "that is the weight of the batch before the newest": 0.99 * 0.01,
    },
)
answer_key(
    "ex-ch3-nan",
    "unit 2's output for the input 0.2 with eps = 1e-5 (gamma = 1, beta = 0)",
    0.1,
    lambda: F.batchnorm_forward(np.array([[0.2]]), None, None, 1e-5, stats=([0], [0]))[
        0
    ],
    {"divided by eps; the denominator is sqrt(var + eps)": 0.2 / 1e-5},
)
answer_key(
    "ex-ch3-port-eps",
    "the eps of the PyTorch layer",
    0.01,
    1e-3,
    {"that is PyTorch's default; Keras's default is another": 1e-5},
    rel=True,
)
answer_key(
    "ex-ch3-port-momentum",
    "the momentum of the PyTorch layer",
    1e-6,
    1 - 0.99,
    {
        "that is Keras's number; PyTorch's momentum weighs the other term": 0.99,
        "that is PyTorch's default, a window ten times shorter than Keras's": 0.1,
    },
)
_RATIO = math.sqrt((0.0004 + 1e-3) / (0.0004 + 1e-5))
answer_key(
    "ex-ch3-port-error",
    "the factor by which unit 2's output (minus beta) is too large with eps = 1e-5",
    0.01,
    _RATIO,
    {
        "the inverse: a smaller eps makes the denominator smaller": 1 / _RATIO,
        "that is the ratio of variances; the output scales with its root": _RATIO**2,
    },
    rel=True,
)
answer_key(
    "ex-ch3-precise-m",
    "the batch size to choose for precise BN",
    0,
    512,
    {
        "the training batch size is the least to use, but at small m every recomputed "
        "variance is biased (too small or too large, depending on the estimator and "
        "the network), and larger batches shrink that bias": 128,
        "with batches of 8 the later layers are recomputed under statistics far from "
        "evaluation mode's, and the variance estimates are off by about 1/8": 8,
    },
)


_FOLD_EXAMPLE = dict(
    W=np.array([[1.0, 2.0], [-1.0, 0.0]]),
    b=np.array([0.5, 1.0]),
    gamma=np.array([2.0, 1.0]),
    beta=np.array([0.0, -1.0]),
    mean=np.array([1.5, -1.0]),
    var=np.array([4.0, 0.25]),
    eps=0.0,
)

# The keys of the folding exercise share check_fold's mistakes.
_FOLD_PARTS = {  # the mistakes that change W' or b' (eps is 0 in the exercise)
    "W": {"den", "cols", "no_gamma", "keep_W"},
    "b": {"den", "no_gamma", "no_b", "raw_mean", "no_beta"},
}
for _i, (_part, _kinds) in enumerate(_FOLD_PARTS.items()):
    answer_key(
        f"ex-ch3-fold-{_part}",
        f"the folded {_part}' of the exercise, the shape of {_part}",
        1e-6,
        lambda i=_i: _fold_reference(_FOLD_EXAMPLE)[i],
        {
            k: lambda i=_i, kw=kw: _fold(_FOLD_EXAMPLE, **kw)[i]
            for k, kw in _FOLD_MISTAKES.items()
            if set(kw) & _kinds
        },
    )
