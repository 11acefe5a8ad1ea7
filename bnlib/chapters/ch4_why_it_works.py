"""Probes and experiment drivers for the why-does-it-work chapter (chapter 4).

* :func:`internal_covariate_shift` measures ICS as Santurkar et al. define it (their
  Definition 2.1): the change of each layer's gradient when the layers before it take
  their update on the same batch.
* :func:`gradient_landscape` measures the loss and the gradient along the gradient
  direction (Santurkar et al., Figure 4): loss range, gradient predictiveness and
  effective beta-smoothness.
* :func:`probe_every` attaches such measurements to
  :func:`bnlib.fit` as ``probes`` and read them back; :func:`percentile_probe` looks at
  the inputs of a network's nonlinearities.
* Experiment drivers: :func:`train_mlps` (the same network with and without BN, same
  seeds), :func:`lr_sweep`, :func:`train_run` and :func:`train_runs` (independent
  runs, each described by a :class:`Run`, spread over processes),
  :func:`train_and_score`, :func:`weight_grad_norms`, :func:`mean_ics`, with the
  probe factories :func:`ics_probe` and :func:`landscape_probe`.
* Residual networks: :func:`residual_mlp` (BN, no normalization or SkipInit), built
  from :class:`ResidualBlock`, and :func:`residual_stream` (the stream's growth at
  initialization).
* :func:`summarize_landscape` condenses landscape probes into one number per run.
* :func:`spread_across_examples` measures signal collapse: how much the inputs of a
  layer's units still differ from one example to the next.
* Figures of the chapter: :func:`plot_figure1`, :func:`plot_depth`,
  :func:`plot_noisy_bn`, :func:`plot_landscape`, :func:`plot_effective_lr`.
* The live learning-rate figure: :func:`lr_smoothness_grid` (precomputed from a
  sweep), :func:`lr_smoothness_widget` (JupyterLab) and :func:`lr_smoothness_frames`
  (the site's scrubbable version).

The networks come from :func:`bnlib.make_mlp`; probes restore the model with
:func:`bnlib.preserved`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from .. import functional as F
from ..exercises import (
    CheckResult,
    answer_key,
    call_reader,
    case,
    judge_cases,
    never_raises,
    reader_name,
    reader_outputs,
)
from ..losses import softmax_cross_entropy
from ..models import make_mlp, register_norm
from ..modules import (
    BatchNorm1d,
    Conv1d,
    Linear,
    Module,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
    as_generator,
)
from ..optim import SGD
from ..plotting import COLORS, LABELS, caption_axes
from ..surgery import capture_inputs, preserved
from ..train import evaluate, fit, parallel_map

__all__ = [
    "layer_groups",
    "loss_and_gradients",
    "internal_covariate_shift",
    "gradient_landscape",
    "percentile_probe",
    "probe_every",
    "steps_to_accuracy",
    "ics_probe",
    "landscape_probe",
    "first_weight_sq_norm",
    "train_mlps",
    "lr_sweep",
    "Run",
    "train_run",
    "train_runs",
    "summarize_landscape",
    "scale_invariant_layers",
    "row_norms",
    "with_row_norms",
    "weight_grad_norms",
    "mean_ics",
    "train_and_score",
    "spread_across_examples",
    "plot_figure1",
    "plot_depth",
    "plot_noisy_bn",
    "plot_landscape",
    "plot_effective_lr",
    "lr_smoothness_grid",
    "lr_smoothness_view",
    "lr_smoothness_frames",
    "lr_smoothness_widget",
    "ResidualBlock",
    "residual_mlp",
    "residual_stream",
    "NoisyBatchNorm1d",
    "GhostBatchNorm1d",
    "check_gradient_change",
    "check_weight_decay_runs",
]

# --------------------------------------------------------------------------------
# Gradients, internal covariate shift and the loss landscape


def layer_groups(model: Module) -> list[list[tuple[Module, str]]]:
    """Split ``model.parameters()`` into layers: each Linear (or Conv1d) starts a new
    layer, and the parameters that follow it (e.g. its BatchNorm's gamma and beta)
    belong to it. Returns a list of ``[(module, name), ...]``, one per layer."""
    groups: list[list[tuple[Module, str]]] = []
    for m, k in model.parameters():
        if isinstance(m, (Linear, Conv1d)) and k == "weight" or not groups:
            groups.append([])
        groups[-1].append((m, k))
    return groups


def loss_and_gradients(model, x, y, loss_fn=softmax_cross_entropy):
    """Forward and backward on (x, y) in the model's current mode.

    Returns ``(loss, grads)`` with ``grads`` a list of arrays (copies) in the order of
    ``model.parameters()``. Changes the model's gradients, caches and (in training mode)
    BatchNorm running statistics: wrap in :func:`preserved` to avoid that.
    """
    out = model(x)
    loss, dout = loss_fn(out, y)
    model.backward(dout)
    return loss, [m.grads[k].copy() for m, k in model.parameters()]


def _cos(a, b):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a.ravel() @ b.ravel() / (na * nb)) if na > 0 and nb > 0 else 1.0


def internal_covariate_shift(model, x, y, lr, loss_fn=softmax_cross_entropy):
    """Internal covariate shift of every layer, as Santurkar et al. (2018, Def. 2.1)
    define it.

    For layer i with weight W_i: G_i is the gradient of the loss on the batch (x, y)
    with respect to W_i at the current parameters; G'_i is the same gradient after
    every layer *before* i has taken its SGD step ``W_j <- W_j - lr * G_j``
    (computed on the same batch), layers i and after unchanged. A layer whose gradient
    does not care what the layers below it just did has G'_i = G_i.

    Args:
        x: batch inputs (N, d_in); y: labels (N,).
        lr: the SGD step size of the update to the preceding layers.

    Returns:
        dict of arrays with one entry per layer (see :func:`layer_groups`; the first
        layer has no preceding layers, so its l2 is 0 and its cosine 1):
        ``"l2"`` ``||G_i - G'_i||``, ``"cosine"`` cos(G_i, G'_i), ``"relative"``
        ``||G_i - G'_i|| / ||G_i||``, ``"grad_norm"`` ``||G_i||``.
        The model is left exactly as it was.
    """
    groups = layer_groups(model)
    pos = {(id(m), k): j for j, (m, k) in enumerate(model.parameters())}

    def idx(m, k):
        return pos[(id(m), k)]

    l2, cos, rel, norms = [], [], [], []
    with preserved(model):
        model.train()
        w0 = [m.params[k].copy() for m, k in model.parameters()]
        _, g0 = loss_and_gradients(model, x, y, loss_fn)
        for i, group in enumerate(groups):
            m_w, k_w = group[0]
            for j, g in enumerate(groups):
                for m, k in g:
                    p = idx(m, k)
                    np.copyto(m.params[k], w0[p] - lr * g0[p] if j < i else w0[p])
            if i == 0:
                g_after = g0[idx(m_w, k_w)]
            else:
                _, g1 = loss_and_gradients(model, x, y, loss_fn)
                g_after = g1[idx(m_w, k_w)]
            g_before = g0[idx(m_w, k_w)]
            d = float(np.linalg.norm(g_before - g_after))
            n = float(np.linalg.norm(g_before))
            l2.append(d)
            cos.append(1.0 if i == 0 else _cos(g_before, g_after))
            rel.append(d / n if n > 0 else 0.0)
            norms.append(n)
    return {
        "l2": np.array(l2),
        "cosine": np.array(cos),
        "relative": np.array(rel),
        "grad_norm": np.array(norms),
    }


def gradient_landscape(
    model,
    x,
    y,
    lr,
    multipliers=(0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0),
    loss_fn=softmax_cross_entropy,
):
    """Loss and gradient along the gradient direction (Santurkar et al. 2018, Figure 4).

    With g the gradient of the loss on (x, y) at the current parameters w (all
    parameters, flattened), for each step size ``eta = c * lr`` (c in ``multipliers``)
    evaluate the loss L(w - eta g) and the gradient g(w - eta g) on the same batch.

    Returns a dict:
        ``"eta"`` (K,) step sizes; ``"loss"`` (K,) L(w - eta g); ``"loss0"`` L(w);
        ``"grad_change"`` (K,) ``||g(w) - g(w - eta g)||`` (gradient predictiveness:
        small means the gradient here predicts the gradient there);
        ``"beta"`` the effective beta-smoothness, ``max_eta ||g(w) - g(w - eta g)|| /
        ||eta g||``; ``"grad_norm"`` ``||g(w)||``.
        The model is left exactly as it was.
    """
    etas = lr * np.asarray(multipliers, dtype=np.float64)
    pairs = model.parameters()
    losses, changes, ratios = [], [], []
    with preserved(model):
        model.train()
        w0 = [m.params[k].copy() for m, k in pairs]
        loss0, g0 = loss_and_gradients(model, x, y, loss_fn)
        gflat = np.concatenate([g.ravel() for g in g0])
        gnorm = float(np.linalg.norm(gflat))
        for eta in etas:
            for (m, k), w, g in zip(pairs, w0, g0):
                np.copyto(m.params[k], w - eta * g)
            loss, g1 = loss_and_gradients(model, x, y, loss_fn)
            d = float(np.linalg.norm(np.concatenate([a.ravel() for a in g1]) - gflat))
            losses.append(loss)
            changes.append(d)
            ratios.append(d / (eta * gnorm) if gnorm > 0 else 0.0)
    return {
        "eta": etas,
        "loss": np.array(losses),
        "loss0": float(loss0),
        "grad_change": np.array(changes),
        "beta": float(np.max(ratios)),
        "grad_norm": gnorm,
    }


def percentile_probe(
    x, layer=-1, unit=0, q=(15, 50, 85), kind=(Sigmoid, Tanh, ReLU), mode="train"
):
    """A probe for :func:`bnlib.fit`: percentiles ``q`` of the input to one
    nonlinearity.

    The input of unit ``unit`` of the ``layer``-th nonlinearity (default: the last
    hidden layer), over the examples x (N, d_in), as in Ioffe & Szegedy's Figure 1
    (b, c).
    Returns ``fn(model) -> array (len(q),)``, or (len(q), C) for every unit if ``unit``
    is None. ``mode="train"`` uses the batch statistics
    of x (what the network sees while it trains); the model is left untouched.
    """

    def fn(model):
        z = capture_inputs(model, x, kind, mode=mode)[layer]
        return np.percentile(z if unit is None else z[:, unit], q, axis=0)

    return fn


def probe_every(k, fn, x=None, y=None, batch_size=None, rng=None):
    """Wrap ``fn`` so that :func:`bnlib.fit` calls it only every ``k`` steps.

    Without data, ``fn(model)`` is called at steps k, 2k, ... With ``x, y`` and
    ``batch_size``, each call draws a fresh random batch (from ``rng``) and calls
    ``fn(model, xb, yb)``, e.g. ``lambda m, xb, yb: internal_covariate_shift(m, xb, yb,
    lr)``. On other steps the probe returns None; ``History.series`` drops those.
    The first call (step 1) is also measured, so curves start at the beginning.
    """
    rng = as_generator(rng)
    count = [0]

    def probe(model):
        count[0] += 1
        if count[0] % k and count[0] != 1:
            return None
        if x is None:
            return fn(model)
        idx = rng.choice(len(x), size=batch_size, replace=False)
        return fn(model, x[idx], y[idx])

    return probe


def steps_to_accuracy(history, target):
    """The first evaluation step at which test accuracy reached ``target``, or None."""
    for s, a in zip(history.eval_step, history.test_acc):
        if a >= target:
            return s
    return None


# --------------------------------------------------------------------------------
# Experiment drivers


def ics_probe(every, lr, x, y, batch_size, rng=None):
    """A :func:`bnlib.fit` probe measuring :func:`internal_covariate_shift` (SGD step
    ``lr``) every ``every`` steps on a fresh random batch of ``batch_size`` rows of
    x (N, d_in), y (N,), drawn from ``rng`` (see :func:`probe_every`)."""

    def fn(m, xb, yb):
        return internal_covariate_shift(m, xb, yb, lr)

    return probe_every(every, fn, x, y, batch_size, rng=rng)


def landscape_probe(every, lr, x, y, batch_size, rng=None, rescale_to=None):
    """A :func:`bnlib.fit` probe measuring :func:`gradient_landscape` (base step ``lr``)
    every ``every`` steps on a fresh random batch of ``batch_size`` rows of x (N, d_in),
    y (N,), drawn from ``rng`` (see :func:`probe_every`). With ``rescale_to`` (row
    norms, as :func:`row_norms` returns them) it measures a copy of the model whose
    scale-invariant weights are rescaled to those norms (:func:`with_row_norms`)."""

    def fn(m, xb, yb):
        if rescale_to is not None:
            m = with_row_norms(m, rescale_to)
        return gradient_landscape(m, xb, yb, lr)

    return probe_every(every, fn, x, y, batch_size, rng=rng)


def scale_invariant_layers(model):
    """The Linear layers of a Sequential that feed a BatchNorm1d directly: scaling any
    row of their weight (and its bias) by a positive factor leaves the network's
    output unchanged, since BN divides it out."""
    layers = model.layers
    return [
        a
        for a, b in zip(layers, layers[1:])
        if isinstance(a, Linear) and isinstance(b, BatchNorm1d)
    ]


def row_norms(model):
    """The norm of every row of every :func:`scale_invariant_layers` weight: a list of
    arrays (out,)."""
    return [
        np.linalg.norm(lay.params["weight"], axis=1)
        for lay in scale_invariant_layers(model)
    ]


def with_row_norms(model, norms):
    """A copy of ``model`` whose scale-invariant rows are rescaled to ``norms`` (from
    :func:`row_norms`): the same function, with weights of the given length. The
    landscape of the copy is that of the model with the growth of those weights
    undone."""
    import copy

    model = copy.deepcopy(model)
    layers = model.layers
    for layer, target in zip(scale_invariant_layers(model), norms):
        factor = target / np.linalg.norm(layer.params["weight"], axis=1)
        layer.params["weight"] *= factor[:, None]
        if "bias" in layer.params:
            layer.params["bias"] *= factor
        bn = layers[layers.index(layer) + 1]  # its running statistics follow
        bn.running_mean *= factor
        bn.running_var *= factor**2
    return model


def first_weight_sq_norm(model):
    """A probe: the squared Frobenius norm ``||W1||^2`` (a float) of ``model[0]``'s
    weight (out, in)."""
    return float(np.sum(model[0].params["weight"] ** 2))


def train_mlps(
    variants,
    sizes,
    activation,
    x,
    y,
    lr,
    *,
    init,
    order,
    probes=None,
    mlp=None,
    **fit_kwargs,
):
    """Train the same :func:`make_mlp` network in several variants with plain SGD.

    Args:
        variants: iterable of ``(key, norm)``, e.g. ``[("plain", None), ("bn", "bn")]``;
            trained in this order.
        sizes, activation: passed to :func:`make_mlp`, with ``rng=init`` (so every
            variant starts from the weights drawn from the same seed) and ``**mlp``.
        x, y: training data (N, d_in), (N,). lr: the SGD learning rate.
        order: the ``rng`` of :func:`bnlib.fit` (the same batch order for every
            variant).
        probes: None or a function of no arguments returning a fresh ``probes`` dict for
            each run (probes keep counters and random streams, so they are not shared).
        **fit_kwargs: the rest of :func:`bnlib.fit`'s arguments (``epochs``,
            ``max_steps``, ``batch_size``, ``test``, ``eval_every``, ...); progress
            is off.

    Returns:
        ``(runs, models)``: dicts keyed like ``variants`` of the History and the trained
        model.
    """
    runs, models = {}, {}
    for key, norm in variants:
        model = make_mlp(sizes, activation, norm, rng=init, **(mlp or {}))
        runs[key] = fit(
            model,
            SGD(model, lr),
            x,
            y,
            probes=None if probes is None else probes(),
            rng=order,
            progress=False,
            **fit_kwargs,
        )
        models[key] = model
    return runs, models


def lr_sweep(
    rates,
    sizes,
    activation,
    x,
    y,
    *,
    init,
    order,
    steps,
    batch_size,
    variants=(("plain", None), ("bn", "bn")),
    land_rates=(),
    land_every=20,
    land_seed=None,
    epochs=100,
    jobs=1,
):
    """Train :func:`make_mlp` networks for ``steps`` SGD steps at each learning rate.

    For every ``(key, norm)`` in ``variants`` and every ``lr`` in ``rates`` (in this
    order), a network built with ``rng=init`` is trained on x (N, d_in), y (N,) with
    batch order ``order``, recording ``"w2"`` (:func:`first_weight_sq_norm`) after every
    step and, for ``lr`` in ``land_rates``, ``"land"`` (:func:`landscape_probe` every
    ``land_every`` steps, batches from ``land_seed``). A run whose loss becomes
    non-finite stops (``on_nonfinite="stop"``, floating-point warnings silenced).

    The runs are independent and go to ``jobs`` processes
    (:func:`bnlib.parallel_map`); the result does not depend on ``jobs``.

    Returns:
        ``{key: [{"lr": lr, "loss": final training loss (inf if diverged),
        "hist": History}, ...]}``, one entry per rate.
    """
    tasks = [
        dict(
            sizes=sizes,
            activation=activation,
            norm=norm,
            lr=lr,
            init=init,
            order=order,
            steps=steps,
            batch_size=batch_size,
            epochs=epochs,
            land_every=land_every if lr in land_rates else None,
            land_seed=land_seed,
        )
        for _, norm in variants
        for lr in rates
    ]
    results = iter(parallel_map(_sweep_task, [(t, x, y) for t in tasks], jobs))
    return {key: [dict(lr=lr, **next(results)) for lr in rates] for key, _ in variants}


def _sweep_task(task):
    spec, x, y = task
    model = make_mlp(spec["sizes"], spec["activation"], spec["norm"], rng=spec["init"])
    probes = {"w2": first_weight_sq_norm}
    if spec["land_every"]:
        probes["land"] = landscape_probe(
            spec["land_every"], spec["lr"], x, y, spec["batch_size"], spec["land_seed"]
        )
    with np.errstate(all="ignore"):  # diverging runs overflow before they stop
        hist = fit(
            model,
            SGD(model, spec["lr"]),
            x,
            y,
            epochs=spec["epochs"],
            max_steps=spec["steps"],
            batch_size=spec["batch_size"],
            probes=probes,
            rng=spec["order"],
            progress=False,
            on_nonfinite="stop",
        )
        loss = np.inf if hist.diverged else evaluate(model, x, y)[0]
    return {"loss": loss, "hist": hist}


@dataclass(kw_only=True)
class Run:
    """One training run: a :func:`make_mlp` network trained with plain SGD, and what
    to record along the way. :func:`train_run` carries it out.

    Every run records ``"w2"`` (:func:`first_weight_sq_norm`) after each step. The
    optional probes, off by default, are named after the History entry they fill.
    """

    sizes: list  #: layer widths, input first, passed to :func:`make_mlp`
    activation: str  #: ``"sigmoid"``, ``"relu"``, ``"tanh"`` or ``"linear"``
    norm: str | None  #: ``None`` (plain) or a :func:`make_mlp` norm, e.g. ``"bn"``
    lr: float  #: the SGD learning rate
    init: int  #: seed of the initial weights (``rng`` of :func:`make_mlp`)
    order: int  #: seed of the batch order (``rng`` of :func:`bnlib.fit`)
    steps: int  #: SGD steps
    batch_size: int
    mlp: dict = field(default_factory=dict)  #: more keyword arguments of make_mlp
    key: str = ""  #: names the run in tables and legends, e.g. ``"bn"``
    setting: str = ""  #: a label shared by a group of runs, e.g. ``"ReLU, lr 1"``
    eval_every: int | None = None  #: test accuracy every so many steps (``test``)
    pct_every: int | None = None  #: ``"pct"``: :func:`percentile_probe` ...
    pct_x: np.ndarray | None = None  #: ... of the last nonlinearity, on these inputs
    ics_every: int | None = None  #: ``"ics"``: :func:`ics_probe` ...
    ics_seed: int | None = None  #: ... on batches drawn from this seed
    land_every: int | None = None  #: ``"land"``: :func:`landscape_probe` ...
    land_seed: int | None = None  #: ... on batches drawn from this seed
    land_rescaled: bool = False  #: also ``"land_rescaled"``: rows at initial norms
    loss_every: int | None = None  #: ``"train_loss"``: loss on all of x, eval mode
    curve_every: int | None = None  #: ``"curve"``: train and test loss and accuracy


def _probes(run, model, x, y, test):
    """The probes ``run`` asks for, on a freshly built ``model``."""
    probes = {"w2": first_weight_sq_norm}
    if run.pct_every:
        probes["pct"] = probe_every(
            run.pct_every, percentile_probe(run.pct_x, unit=None)
        )
    if run.ics_every:
        probes["ics"] = ics_probe(
            run.ics_every, run.lr, x, y, run.batch_size, run.ics_seed
        )
    if run.land_every:
        land = (run.land_every, run.lr, x, y, run.batch_size, run.land_seed)
        probes["land"] = landscape_probe(*land)
        if run.land_rescaled:  # the same probe batches, initial weight lengths
            probes["land_rescaled"] = landscape_probe(
                *land, rescale_to=row_norms(model)
            )
    if run.loss_every:
        probes["train_loss"] = probe_every(
            run.loss_every, lambda m: evaluate(m, x, y)[0]
        )
    if run.curve_every:  # (4,): train loss, train accuracy, test loss, test accuracy
        probes["curve"] = probe_every(
            run.curve_every,
            lambda m: np.array([*evaluate(m, x, y), *evaluate(m, *test)]),
        )
    return probes


def train_run(run, x, y, test=None, return_model=False):
    """Carry out one :class:`Run` on x (N, d_in), y (N,), with ``test = (x_test,
    y_test)`` for ``eval_every`` and ``curve_every``. Returns the History, or
    ``(History, trained model)`` with ``return_model=True``."""
    model = make_mlp(run.sizes, run.activation, run.norm, rng=run.init, **run.mlp)
    hist = fit(
        model,
        SGD(model, run.lr),
        x,
        y,
        epochs=-(-run.steps // (len(x) // run.batch_size)),  # enough for the steps
        max_steps=run.steps,
        batch_size=run.batch_size,
        probes=_probes(run, model, x, y, test),
        rng=run.order,
        progress=False,
        test=test if run.eval_every else None,
        eval_every=run.eval_every,
    )
    return (hist, model) if return_model else hist


def _train_task(task):
    return train_run(*task)


def train_runs(runs, x, y, test=None, jobs=1, return_models=False):
    """:func:`train_run` for every :class:`Run` of ``runs``, on ``jobs`` processes
    (:func:`bnlib.parallel_map`). Each run is seeded by its own fields, so the
    Histories (or ``(History, model)`` pairs with ``return_models=True``), returned in
    the order of ``runs``, are the same for any ``jobs``. The processes take the runs
    in this order, so the slowest ones are best put first."""
    tasks = [(r, x, y, test, return_models) for r in runs]
    return parallel_map(_train_task, tasks, jobs)


def summarize_landscape(hist, until=None, probe="land"):
    """One run's :func:`landscape_probe` series (probe ``probe``, e.g.
    ``"land_rescaled"``) averaged over its checkpoints up to step ``until``:
    ``(loss range, gradient change, beta)``.

    Per checkpoint: the range of L(w - eta g) over the step sizes, the largest
    ||g(w) - g(w - eta g)||, and the effective beta.
    """
    steps, L = hist.series(probe, "loss")
    _, G = hist.series(probe, "grad_change")
    _, B = hist.series(probe, "beta")
    keep = steps <= (np.inf if until is None else until)
    return (
        float((L.max(1) - L.min(1))[keep].mean()),
        float(G.max(1)[keep].mean()),
        float(B[keep].mean()),
    )


def weight_grad_norms(model, x, y, loss_fn=softmax_cross_entropy):
    """The norm ``||dL/dW||`` of every Linear weight of ``model`` (input side first) on
    the batch x (N, d_in), y (N,), in training mode. Returns an array (L,); the model
    is left exactly as it was."""
    with preserved(model):
        _, grads = loss_and_gradients(model, x, y, loss_fn)
    return np.array(
        [
            np.linalg.norm(g)
            for (m, k), g in zip(model.parameters(), grads)
            if isinstance(m, Linear) and k == "weight"
        ]
    )


def mean_ics(history, name="ics", quantities=("l2", "cosine", "relative")):
    """Average an :func:`ics_probe` series over its checkpoints after the first
    (step 1).

    Returns ``{quantity: array (L,)}``, one value per layer (see
    :func:`internal_covariate_shift`)."""
    return {q: history.series(name, q)[1][1:].mean(axis=0) for q in quantities}


def train_and_score(model, lr, x, y, test, **fit_kwargs):
    """Train ``model`` with SGD(lr) on x (N, d_in), y (N,) (``**fit_kwargs`` go to
    :func:`bnlib.fit`, progress off), then evaluate it on the training data and on
    ``test = (x_test, y_test)``.

    Returns a dict of floats: ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc``
    and ``gap = train_acc - test_acc``.
    """
    fit(model, SGD(model, lr), x, y, progress=False, **fit_kwargs)
    tr_loss, tr_acc = evaluate(model, x, y)
    te_loss, te_acc = evaluate(model, *test)
    return dict(
        train_loss=tr_loss,
        train_acc=tr_acc,
        test_loss=te_loss,
        test_acc=te_acc,
        gap=tr_acc - te_acc,
    )


# --------------------------------------------------------------------------------
# Figures (each returns the figure; the notebook calls plt.show())


def _style(key):
    """Colour, label and line style of a method key (the strong-noise variant of
    noisy BN is the noisy-BN colour, dashed)."""
    if key == "noisy_bn_strong":
        return dict(color=COLORS["noisy_bn"], ls="--", label="noisy BN, stronger noise")
    return dict(color=COLORS[key], label=LABELS[key])


def spread_across_examples(model, x, kind=(Sigmoid, Tanh, ReLU)):
    """For each nonlinearity of ``model`` (input side first), the median over its units
    of the standard deviation *across the examples* x (N, d_in) of the unit's input, in
    training mode. Returns an array (layers,); the model is left untouched.

    A value near 0 means every example reaches that unit with nearly the same value:
    the layer no longer tells the examples apart (signal collapse)."""
    zs = capture_inputs(model, x, kind, mode="train")
    return np.array([np.median(z.std(axis=0)) for z in zs])


def plot_figure1(runs, pct, unit=0):
    """Ioffe & Szegedy's Figure 1, rerun, in four panels (two per row): (a) test
    accuracy of each History in ``runs``; (b, c) median and 15-85th percentile band of
    last-layer sigmoid input ``unit`` without and with BN, from ``pct[key] = (steps
    (T,), percentiles (T, 3, units))``; (d) the spread across examples (85th minus 15th
    percentile), median over the units, on a log scale. Returns ``(fig, axes)``."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(7.5, 5.6))
    (a, b), (c, d) = axes
    for key, h in runs.items():
        a.plot(h.eval_step, h.test_acc, **_style(key))
    caption_axes(a, "training step", "test accuracy", "(a) test accuracy")
    a.legend(loc="lower right")
    for ax, key, letter in ((b, "plain", "b"), (c, "bn", "c")):
        steps, p = pct[key]
        ax.fill_between(
            steps, p[:, 0, unit], p[:, 2, unit], color=COLORS[key], alpha=0.25
        )
        ax.plot(steps, p[:, 1, unit], color=COLORS[key])
        caption_axes(
            ax,
            "training step",
            "sigmoid input",
            f"({letter}) {LABELS[key]}, unit {unit}",
        )
    c.sharey(b)
    for key in runs:
        steps, p = pct[key]
        d.semilogy(steps, np.median(p[:, 2] - p[:, 0], axis=1), **_style(key))
    caption_axes(d, "training step", "85th - 15th percentile", "(d) spread, all units")
    return fig, axes


def plot_depth(runs, grad_norms, title="6 x 100 sigmoid MLP, lr 1.0"):
    """Two panels: test accuracy over training of each History in ``runs`` (keyed by
    method, e.g. "plain", "bn"), and ``grad_norms[key]`` (L,) (see
    :func:`weight_grad_norms`) per layer on a log scale. Returns ``(fig, axes)``."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.2))
    for key in runs:
        axes[0].plot(runs[key].eval_step, runs[key].test_acc, **_style(key))
        layers = np.arange(1, len(grad_norms[key]) + 1)
        axes[1].semilogy(layers, grad_norms[key], "o-", **_style(key))
    caption_axes(axes[0], "training step", "test accuracy", title)
    caption_axes(
        axes[1], "layer (1 = input side)", "||dL/dW|| at init", "gradient per layer"
    )
    axes[0].legend()
    return fig, axes


def plot_noisy_bn(runs, pct, move, unit=0, compare=("bn", "noisy_bn")):
    """Three panels, (a) and (c) side by side, (b) across the bottom: (a) test accuracy
    of every History in ``runs``; (b) median (solid) and 15th and 85th percentiles
    (thin) of sigmoid input ``unit`` for the methods in ``compare``, from ``pct[key] =
    (steps (T,), percentiles (T, 3, units))``; (c) the distribution over units of
    ``move[key]`` (units,), how far each unit's percentiles moved, as outlined
    histograms. Returns ``(fig, axes)``, axes a dict keyed "a", "b", "c"."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplot_mosaic([["a", "c"], ["b", "b"]], figsize=(7.5, 5.6))
    for key, h in runs.items():
        axes["a"].plot(h.eval_step, h.test_acc, **_style(key))
    caption_axes(axes["a"], "training step", "test accuracy", "(a) test accuracy")
    for key in compare:
        steps, p = pct[key]
        st = _style(key)
        axes["b"].plot(steps, p[:, 1, unit], lw=1.5, **st)
        for q in (0, 2):
            axes["b"].plot(steps, p[:, q, unit], lw=0.6, color=st["color"], alpha=0.8)
    caption_axes(
        axes["b"],
        "training step",
        "sigmoid input",
        f"(b) unit {unit}: median (thick), 15th and 85th percentiles (thin)",
    )
    bins = np.linspace(0, max(m.max() for m in move.values()), 30)
    for key in move:
        st = _style(key)
        axes["c"].hist(move[key], bins=bins, histtype="step", lw=1.8, **st)
    caption_axes(axes["c"], "movement of a unit", "units (of 100)", "(c) all units")
    # one legend for the three panels, above the histograms
    axes["c"].set_ylim(top=1.7 * axes["c"].get_ylim()[1])
    axes["c"].legend(*axes["a"].get_legend_handles_labels(), loc="upper right")
    return fig, axes


def _landscape_rows(hist, probe):
    steps, L = hist.series(probe, "loss")
    _, G = hist.series(probe, "grad_change")
    _, B = hist.series(probe, "beta")
    return steps, [L.max(1) - L.min(1), G.max(1), B]


def plot_landscape(land, keys=("plain", "bn"), show=None):
    """The :func:`landscape_probe` series of several runs per setting, over training.

    ``land[setting, key]`` is a list of Histories with a ``"land"`` probe (one per
    run, same checkpoints). One column per setting in ``show`` (default: the first
    two), one row per measure: the loss range along the gradient, the largest
    gradient change (both over the step sizes, at each checkpoint) and the effective
    beta-smoothness (the first two on a log scale); for each method in ``keys`` a
    line for the median over the runs and a band from the lowest to the highest run.
    Where BN's runs carry a ``"land_rescaled"`` probe, a dashed line shows its median:
    the same network with its scale-invariant weights rescaled to their initial
    lengths. Returns ``(fig, axes)``.
    """
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(s for s, _ in land))
    show = settings[:2] if show is None else list(show)
    fig, axes = plt.subplots(
        3, len(show), figsize=(7.5, 7.2), sharex="col", sharey="row", squeeze=False
    )
    dashed = []
    for col, setting in enumerate(show):
        for key in keys:
            st = _style(key)
            hists = land[setting, key]
            per_run = [_landscape_rows(h, "land") for h in hists]
            steps = per_run[0][0]
            for row in range(3):
                v = np.array([rows[row] for _, rows in per_run])
                ax = axes[row, col]
                ax.fill_between(
                    steps, v.min(0), v.max(0), color=st["color"], alpha=0.25, lw=0
                )
                ax.plot(steps, np.median(v, 0), **st)
            if key == "bn" and all("land_rescaled" in h.probes for h in hists):
                rescaled = [_landscape_rows(h, "land_rescaled")[1] for h in hists]
                for row in range(3):
                    v = np.array([rows[row] for rows in rescaled])
                    dashed = axes[row, col].plot(
                        steps,
                        np.median(v, 0),
                        color=st["color"],
                        ls="--",
                        label="BN, weights rescaled to their initial lengths",
                    )
        caption_axes(axes[0, col], "", "loss range along g", setting)
        caption_axes(axes[1, col], "", "gradient change")
        caption_axes(axes[2, col], "training step", r"effective $\beta$")
        axes[0, col].set_yscale("log")  # the runs without BN span decades
        axes[1, col].set_yscale("log")
    handles, _ = axes[0, 0].get_legend_handles_labels()
    fig.legend(
        handles=handles[:2] + dashed,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=2,
        fontsize=9,
    )
    fig.set_layout_engine("tight")  # the style default is constrained
    return fig, axes


def plot_effective_lr(runs, rows):
    """Weight norm ``||W1||^2`` and effective learning rate ``lr / (||W1||^2 / rows)``
    (the step size relative to the mean squared row norm) over training, for the
    :func:`lr_sweep` entries ``runs`` (list of ``{"lr", "hist"}`` with a ``"w2"``
    probe), with one legend below the panels.

    Returns ``(fig, eff_final)``, ``eff_final[lr]`` the effective rate at the last step.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.6))
    # a perceptually ordered map with distinct ends, and each line named at its end
    shades = plt.cm.viridis(np.linspace(0.0, 0.9, len(runs)))
    eff_final = {}
    for r, shade in zip(runs, shades):
        steps, w2 = r["hist"].series("w2")
        eff = r["lr"] / (w2 / rows)  # eta / (mean squared row norm)
        axes[0].semilogy(steps, w2, color=shade, label=f"lr {r['lr']:.2g}")
        axes[1].loglog(steps, eff, color=shade)
        axes[1].annotate(
            f"{r['lr']:.2g}",
            (steps[-1], eff[-1]),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
            color=shade,
        )
        eff_final[r["lr"]] = eff[-1]
    caption_axes(axes[0], "training step", r"$\|W_1\|^2$", "weight norm (BN runs)")
    caption_axes(
        axes[1],
        "training step",
        r"$\eta\,/$ mean $\|w_j\|^2$",
        "effective learning rate",
    )
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=4)
    return fig, eff_final


# --------------------------------------------------------------------------------
# Live figure: learning rate and smoothness (JupyterLab), with its site version


def lr_smoothness_grid(sweep, rows):
    """Condense an :func:`lr_sweep` whose runs carry a ``"land"`` probe at every rate
    into what the learning-rate widget draws (precomputed, so a redraw trains nothing).

    Args:
        sweep: ``{key: [{"lr", "loss", "hist"}, ...]}`` from :func:`lr_sweep` with
            ``land_rates`` = all its rates.
        rows: the number of rows w_j of the first weight matrix (its output units).

    Returns:
        ``{key: [entry, ...]}``, one entry per rate, each a dict: ``"lr"``;
        ``"final_loss"`` (inf if diverged); ``"mult"`` (C + 1,) the step sizes as
        multiples of lr, 0 first; ``"land_steps"`` (K,) the probed steps;
        ``"along"`` (K, C + 1) the loss L(w - c lr g) minus L(w) on the probe batch
        (NaN where not finite); ``"steps"`` (T,) and ``"eff"`` (T,) the effective
        learning rate ``lr / mean_j ||w_j||^2`` of the first layer after every step.
    """
    grid = {}
    for key, runs in sweep.items():
        grid[key] = []
        for r in runs:
            h = r["hist"]
            land_steps, land = h.series("land")
            mult = np.concatenate([[0.0], land[0]["eta"] / r["lr"]])
            along = np.array(
                [np.concatenate([[0.0], d["loss"] - d["loss0"]]) for d in land]
            )
            steps, w2 = h.series("w2")
            with np.errstate(all="ignore"):
                eff = r["lr"] / (w2 / rows)
            grid[key].append(
                dict(
                    lr=r["lr"],
                    final_loss=float(r["loss"]),
                    mult=mult,
                    land_steps=land_steps,
                    along=np.where(np.isfinite(along), along, np.nan),
                    steps=steps,
                    eff=np.where(np.isfinite(eff), eff, np.nan),
                )
            )
    return grid


def _lr_smoothness_figure():
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.4), layout="none")
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.15, top=0.84, wspace=0.32)
    return fig, axes


def _draw_lr_smoothness(fig, axes, grid, log_lr):
    """Redraw the two panels for the rate of ``grid`` nearest 10**log_lr; returns the
    stats of that rate: ``{key: {"lr", "final_loss", "eff_last", "along_last"}}``."""
    a0, a1 = axes
    a0.clear()
    a1.clear()
    rates = np.array([e["lr"] for e in next(iter(grid.values()))])
    i = int(np.argmin(np.abs(np.log10(rates) - log_lr)))
    stats = {}
    for key, entries in grid.items():
        e = entries[i]
        color, ls = COLORS[key], "-" if key == "bn" else "--"
        k = len(e["land_steps"])
        for j, (step, curve) in enumerate(zip(e["land_steps"], e["along"])):
            last = j == k - 1
            a0.plot(
                e["mult"],
                curve,
                color=color,
                ls=ls,
                lw=2.0 if last else 0.8,
                alpha=1.0 if last else 0.25 + 0.5 * j / k,
                label=f"{LABELS[key]}, step {step}" if last else None,
            )
        for other in entries:  # the other rates, faint, for scale
            if other is not e:
                a1.plot(other["steps"], other["eff"], color=color, lw=0.5, alpha=0.2)
        a1.plot(e["steps"], e["eff"], color=color, ls=ls, lw=2.0, label=LABELS[key])
        stats[key] = dict(
            lr=e["lr"],
            final_loss=e["final_loss"],
            eff_last=float(e["eff"][np.isfinite(e["eff"])][-1]),
            along_last=e["along"][-1],
        )
    a0.axvline(1.0, color=COLORS["reference"], ls=":", lw=1.0)
    a0.axhline(0.0, color=COLORS["reference"], lw=0.6)
    a0.set_yscale("symlog", linthresh=0.1)
    caption_axes(
        a0,
        "step along -g, in multiples of the learning rate",
        "L(w - c·lr·g) - L(w)",
        "loss along the gradient (faint: earlier)",
    )
    caption_axes(
        a1, "training step", r"lr / mean $\|w_j\|^2$", "effective rate, first layer"
    )
    a1.set_yscale("log")
    a1.set_ylim(1e-3, 1e2)  # a diverged run's rate falls off the panel
    a0.legend(fontsize=7, loc="upper left")
    a1.legend(fontsize=8, loc="lower left")

    def fmt(loss):
        return f"{loss:.2f}" if np.isfinite(loss) else "diverged"

    losses = ", ".join(f"{LABELS[k]} {fmt(s['final_loss'])}" for k, s in stats.items())
    fig.suptitle(
        f"lr {rates[i]:.2g}: training loss after the last step: {losses}", fontsize=9
    )
    return stats


def lr_smoothness_view(grid, log_lr=-0.5):
    """The widget's figure for the rate nearest 10**log_lr: left, the loss along the
    gradient direction at each probed step (the last one bold); right, the effective
    learning rate of the first layer over training. Returns ``(fig, stats)``."""
    fig, axes = _lr_smoothness_figure()
    return fig, _draw_lr_smoothness(fig, axes, grid, log_lr)


def lr_smoothness_frames(grid):
    """A figure and ``draw(log_lr)`` for :func:`bnlib.plotting.scrubber`: the site's
    stand-in for :func:`lr_smoothness_widget`."""
    fig, axes = _lr_smoothness_figure()

    def draw(log_lr):
        return _draw_lr_smoothness(fig, axes, grid, log_lr)

    return fig, draw


def lr_smoothness_widget(grid):
    """A log-scale learning-rate slider ("log10 lr") above the live figure of
    :func:`lr_smoothness_view` (JupyterLab); every move only redraws ``grid``."""
    from ..plotting import live_figure, slider

    rates = np.log10([e["lr"] for e in next(iter(grid.values()))])
    step = float(np.round(np.diff(rates).min(), 6))
    controls = {
        "log_lr": slider(
            "log10 lr",
            -0.5,
            float(rates.min()),
            float(rates.max()),
            step,
            label="70px",
            width="320px",
        )
    }

    def view(log_lr):
        return lr_smoothness_view(grid, log_lr)

    return live_figure(view, controls)


# ------------------------------------------------------------------ residual networks
RESIDUAL_VARIANTS = ("bn", "plain", "skipinit", "rescaled")


def _he_linear(d_in, d_out, rng):
    """A Linear with He-normal weights (std sqrt(2 / d_in)) and zero bias: it keeps the
    second moment of ReLU outputs (He et al. 2015)."""
    lin = Linear(d_in, d_out, rng=rng)
    lin.params["weight"][...] = rng.normal(0.0, np.sqrt(2.0 / d_in), (d_out, d_in))
    lin.params["bias"][...] = 0.0
    return lin


class ResidualBlock(Module):
    """``x + F(x)`` on (N, d), pre-activation: F = [BN] ReLU Linear [BN] ReLU Linear.

    ``norm=True`` puts a :class:`bnlib.BatchNorm1d` before each ReLU of the branch.
    ``skipinit=True`` (De & Smith 2020) multiplies the branch by a learned scalar
    ``params["alpha"]`` (shape (1,)) that starts at 0, so the block starts as the
    identity. ``rescale=True`` returns ``(x + F(x)) / sqrt(2)``: the stream keeps its
    variance without the block being close to the identity.
    """

    def __init__(self, d, norm=False, skipinit=False, rescale=False, rng=None):
        super().__init__()
        rng = as_generator(rng)
        layers = []
        for _ in range(2):
            layers += [BatchNorm1d(d)] if norm else []
            layers += [ReLU(), _he_linear(d, d, rng)]
        self.branch = Sequential(*layers)
        if skipinit:
            self.params["alpha"] = np.zeros(1)
        self.out_scale = 1 / np.sqrt(2) if rescale else 1.0
        self.zero_grad()

    def children(self):
        return [self.branch]

    def forward(self, x):
        f = self.branch(x)
        self._cache = f
        alpha = self.params.get("alpha", 1.0)
        return self.out_scale * (x + alpha * f)

    def backward(self, dout):
        dout = self.out_scale * dout
        if "alpha" not in self.params:
            return dout + self.branch.backward(dout)
        self.grads["alpha"] = np.array([np.sum(dout * self._need_cache())])
        return dout + self.branch.backward(self.params["alpha"] * dout)


def residual_mlp(depth, variant, width=64, d_in=40, classes=10, rng=None):
    """A residual MLP on (N, d_in): a He-normal stem Linear(d_in, width), ``depth``
    blocks (:class:`ResidualBlock`), then [BN] ReLU Linear(width, classes).

    ``variant``: ``"bn"`` (BN in every branch and before the head), ``"plain"`` (no
    normalization), ``"skipinit"`` (no normalization, each branch scaled by a
    learned alpha starting at 0) or ``"rescaled"`` (no normalization, each block's
    output divided by sqrt(2)).
    """
    if variant not in RESIDUAL_VARIANTS:
        raise ValueError(f"variant must be one of {RESIDUAL_VARIANTS}, got {variant!r}")
    rng = as_generator(rng)
    kinds = dict(norm=variant == "bn", skipinit=variant == "skipinit")
    kinds["rescale"] = variant == "rescaled"
    blocks = [ResidualBlock(width, **kinds, rng=rng) for _ in range(depth)]
    head = [BatchNorm1d(width)] if kinds["norm"] else []
    head += [ReLU(), Linear(width, classes, rng=rng)]
    return Sequential(_he_linear(d_in, width, rng), *blocks, *head)


def residual_stream(model, x):
    """How the residual stream grows at initialization, on one batch x (N, d_in).

    Returns ``(stream, branch)``: ``stream`` (depth + 1,) is the variance of the
    stream after the stem and after each block; ``branch`` (depth,) is the variance
    of each block's branch output F(x) before any alpha, over the same batch.
    """
    blocks = [m for m in model.layers if isinstance(m, ResidualBlock)]
    h = model.layers[0](x)
    stream, branch = [h.var()], []
    for block in blocks:
        h = block(h)
        branch.append(block._cache.var())
        stream.append(h.var())
    return np.array(stream), np.array(branch)


# ------------------------------------------------------------------ noisy and ghost BN
# make_mlp builds them by name once this module is imported: norm="noisy_bn" (with
# noise={...}, keyword arguments of NoisyBatchNorm1d) and norm="ghost_bn" (ghost_size=).
class NoisyBatchNorm1d(BatchNorm1d):
    """BatchNorm1d followed by a random scale and shift, redrawn at every training
    forward pass: Santurkar et al.'s "noisy BatchNorm".

    At each training step, for the whole layer, a mean ``mu ~ U(-shift, shift)`` and a
    scale ``s ~ U(scale[0], scale[1])`` are drawn. Then

    * ``per_sample=False`` (default): each unit j gets its own ``m_j ~ N(mu,
      unit_std**2)`` and ``s_j ~ N(s, unit_std**2)``, shared by every example of the
      batch, and the output is ``s_j * BN(x)_j + m_j`` (a random jitter of gamma and
      beta at each step);
    * ``per_sample=True``: every activation of every example gets its own i.i.d.
      ``m_ij ~ N(mu, unit_std**2)`` and ``s_ij ~ N(s, unit_std**2)``, and the output is
      ``s_ij * BN(x)_ij + m_ij``: noise with non-zero mean and non-unit variance, drawn
      independently per sample, as Santurkar et al. (2018, Section 2.1) describe it.

    Either way the next layer sees inputs whose mean and variance jump from step to
    step, although BN itself normalized them. In evaluation mode the noise is off
    (plain BatchNorm with running statistics). The noise has its own ``rng``.

    Input (N, C) or (N, C, L), output the same shape.
    """

    def __init__(
        self,
        num_features,
        shift=0.5,
        scale=(1.0, 1.25),
        unit_std=0.1,
        rng=None,
        eps=1e-5,
        momentum=0.1,
        per_sample=False,
    ):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.shift, self.scale, self.unit_std = shift, tuple(scale), unit_std
        self.per_sample = bool(per_sample)
        self.rng = as_generator(rng)
        self._noise = None

    def forward(self, x):
        out = super().forward(x)
        if not self.training:
            self._noise = None
            return out
        c = self.num_features
        mu = self.rng.uniform(-self.shift, self.shift)
        s = self.rng.uniform(*self.scale)
        if self.per_sample:  # one draw per activation: shape of x
            shape = x.shape
            m = mu + self.unit_std * self.rng.standard_normal(shape)
            sc = s + self.unit_std * self.rng.standard_normal(shape)
        else:  # one draw per unit, broadcast over the batch (and length)
            shape = (1, c) + (1,) * (x.ndim - 2)
            m = (mu + self.unit_std * self.rng.standard_normal(c)).reshape(shape)
            sc = (s + self.unit_std * self.rng.standard_normal(c)).reshape(shape)
        self._noise = (sc.astype(x.dtype), m.astype(x.dtype))
        return out * self._noise[0] + self._noise[1]

    def backward(self, dout):
        if self._noise is not None:
            dout = dout * self._noise[0]
        return super().backward(dout)

    def extra_repr(self):
        return (
            f"{self.num_features}, shift={self.shift}, scale={self.scale}, "
            f"unit_std={self.unit_std}, per_sample={self.per_sample}"
        )


class GhostBatchNorm1d(BatchNorm1d):
    """BatchNorm1d whose training statistics come from "ghost" batches: the batch (N, C)
    is split into N / ghost_size consecutive groups and each group is normalized with
    its own mean and variance (Hoffer et al. 2017). The gradient batch stays N, so only
    the noise of the statistics changes with ``ghost_size``. Running statistics average
    the groups' statistics; evaluation is plain BatchNorm. Input and output (N, C).
    """

    def __init__(self, num_features, ghost_size, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps=eps, momentum=momentum)
        if ghost_size < 2:
            raise ValueError(
                f"GhostBatchNorm1d: ghost_size must be >= 2, got {ghost_size}"
            )
        self.ghost_size = ghost_size

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        self._check_input(x)
        n, c = x.shape[0], self.num_features
        g = self.ghost_size
        if x.ndim != 2 or n % g:
            raise ValueError(
                f"GhostBatchNorm1d: expected an (N, C) input with N a multiple of "
                f"ghost_size={g}, got shape {x.shape}"
            )
        gamma = self.params["weight"].reshape(1, 1, c)
        beta = self.params["bias"].reshape(1, 1, c)
        out, cache = F.norm_forward(
            x.reshape(n // g, g, c), gamma, beta, (1,), self.eps
        )
        self._update_running(
            {"m": g, "mu": cache["mu"].mean(axis=0), "var": cache["var"].mean(axis=0)}
        )
        self._cache = cache
        return out.reshape(n, c)

    def backward(self, dout):
        cache = self._need_cache()
        if cache["x"].ndim == 2:  # evaluation-mode forward
            return super().backward(dout)
        k, g, c = cache["x"].shape
        self._check_dout(dout, (k * g, c))
        dx, dgamma, dbeta = F.norm_backward(dout.reshape(k, g, c), cache)
        self._store_grads(dgamma, dbeta)
        return dx.reshape(k * g, c)

    def extra_repr(self):
        return f"{self.num_features}, ghost_size={self.ghost_size}"


register_norm(
    "noisy_bn",
    lambda c, rng=None, noise=None: NoisyBatchNorm1d(c, rng=rng, **(noise or {})),
)
register_norm(
    "ghost_bn", lambda c, rng=None, ghost_size=16: GhostBatchNorm1d(c, ghost_size)
)


# ------------------------------------------------------------------ exercise checkers
# The ICS-by-hand checker (its cases come from bnlib.exercises.case("gradient-change",
# k)) and the weight-decay checker.
def _gradient_change(c, step=(0,), keys=("weight", "bias"), sign=-1, lr=None):
    """(G2, G2 after the step) on a fresh copy of the case's model, with one mistake:
    the layers that ``step``, the parameters that move, the ``sign`` of the step."""
    model, lr = case("gradient-change", c["k"])[0], lr or c["lr"]

    def g2():
        model.backward(softmax_cross_entropy(model(c["x"]), c["y"])[1])
        return model[2].grads["weight"].copy()

    before = g2()
    for i in step:
        for key in keys:
            model[i].params[key] += sign * lr * model[i].grads[key]
    return before, g2()


@never_raises
def check_gradient_change(fn):
    """Check ``fn(model, x, y, lr) -> (G2, G2_after)`` of the ICS-by-hand exercise:
    model = ``make_mlp([3, 4, 2], "sigmoid", None)`` (Linear, Sigmoid, Linear), x
    (m, 3),
    y (m,) labels; G2 (2, 4) the gradient of the mean softmax cross-entropy with
    respect to the second Linear's weight; G2_after the same after one SGD step
    ``p -= lr * grad`` on the first Linear's weight and bias, from the same pass."""
    who = reader_name("function", fn)

    def run(c):
        result = call_reader(who, fn, c["model"], c["x"].copy(), c["y"].copy(), c["lr"])
        return reader_outputs(result, ["G2", "G2_after"], 2, who)

    mistakes = {
        "G2_after equals G2: the first layer did not move, or G2_after was not "
        "recomputed by a new forward and backward after the step": dict(step=()),
        "stepped both Linear layers; only the layers before layer 2 move": dict(
            step=(0, 2)
        ),
        "stepped up the gradient; an SGD step subtracts lr * grad": dict(sign=1),
        "moved the first layer's weight but not its bias": dict(keys=("weight",)),
        "ignored the lr argument and used 0.5": dict(lr=0.5),
    }
    mistakes = {
        k: functools.partial(_gradient_change, **kw) for k, kw in mistakes.items()
    }
    shape = "model[2].params['weight'].shape"
    outputs = [("G2", shape), ("G2_after", shape)]
    compare = (
        "Recreate the case and compare with model[2].grads['weight'] after "
        "model.backward(bnlib.softmax_cross_entropy(model(x), y)[1])"
    )
    return judge_cases(
        "gradient change",
        "gradient-change",
        outputs,
        run,
        _gradient_change,
        mistakes,
        check_gradient_change.__doc__,
        compare,
    )


def _weight_decay_fault(plain, decayed):
    """What is wrong with the two ``||W1||^2`` series, or None."""
    runs = []
    for series, k in ((plain, "plain"), (decayed, "weight-decay")):
        try:
            a = np.asarray(series, dtype=np.float64).squeeze()
        except (TypeError, ValueError):
            return f"the {k} series is not a sequence of numbers"
        if a.ndim != 1 or a.size < 2:
            return (
                f"the {k} series has shape {a.shape}; pass ||W1||^2 after every "
                "step, a 1-D sequence"
            )
        if not np.all(np.isfinite(a) & (a > 0)):
            return (
                f"the {k} series has values that are not positive and finite: did "
                "the run diverge?"
            )
        runs.append(a)
    (p, d), fall = runs, np.diff(runs[0]) / runs[0][:-1]
    if p.size != d.size:
        return (
            f"the series have {p.size} and {d.size} values; record both runs for the "
            "same number of steps"
        )
    if np.allclose(p, d, rtol=1e-12):
        return (
            "the two series are identical: pass weight_decay=5e-3 to bnlib.SGD in "
            "the second run"
        )
    if d[-1] >= p[-1]:
        return (
            "the weight-decay run ends with the larger ||W1||^2; weight decay shrinks "
            "W1 at every step: are the two runs swapped?"
        )
    if fall.min() < -1e-6:
        return (
            f"the plain run's ||W1||^2 fell at step {np.argmin(fall) + 2}; scale "
            "invariance allows no fall under plain SGD: does this run have "
            "weight_decay=0, and does the probe read model[0].params['weight'] (the "
            "Linear right before the first BN)?"
        )
    return None


@never_raises
def check_weight_decay_runs(plain, decayed):
    """Check the two series of ``||W1||^2`` (one value after every step) of the
    weight-decay exercise against what scale invariance implies. With BN right after
    W1 (no bias), scaling a row of W1 leaves the loss as it is, so the row's gradient
    is orthogonal to it and plain SGD can only grow ``||W1||^2``
    (``||w - lr g||^2 = ||w||^2 + lr^2 ||g||^2``), but for eps's tiny leak: a fall of
    1e-6 (relative) per step is allowed. Weight decay must end lower."""
    fault = _weight_decay_fault(plain, decayed)
    if fault:
        return CheckResult("weight decay runs", False, [fault])
    return CheckResult(
        "weight decay runs",
        True,
        [
            "the plain run's ||W1||^2 never falls, as scale invariance requires, and "
            "the weight-decay run ends lower."
        ],
    )


# ------------------------------------------------------------------ answer keys
# The keys of this chapter's exercises whose answer is a number, judged by
# bnlib.exercises.check_answer; importing this module registers them.

_SQ = math.sqrt(3)
answer_key(
    "ex-ch4-tanh",
    "(slope of the sigmoid at 0, slope of tanh at 0)",
    1e-3,
    [0.25, 1.0],  # sigmoid' = s (1 - s) = 1/4 and tanh' = 1 - tanh**2 = 1 at 0
    {"those are sigmoid(0) and tanh(0), not the slopes": [0.5, 0]},
)
answer_key(
    "ex-ch4-collapse-sigmoid",
    "the measured layer-to-layer ratios, sigmoid (one or more numbers)",
    0.2,
    1 / (4 * _SQ),  # weights of variance 1 / (3 fan-in), then a slope of at most 1/4
    {
        "that is the sigmoid's slope alone; the weights multiply by 1 / sqrt(3)": 0.25,
        "that is the weights' factor alone; the sigmoid's slope multiplies it": 1 / _SQ,
        "that is a ratio of variances; the spread is a standard deviation": 1 / 48,
    },
    each=True,
    rel=True,
)
answer_key(
    "ex-ch4-collapse-tanh",
    "the measured layer-to-layer ratios, tanh (one or more numbers)",
    0.3,
    1 / _SQ,
    {
        "that is tanh's slope alone; the weights multiply by about 1 / sqrt(3)": 1,
        "that is a ratio of variances; the spread is a standard deviation": 1 / 3,
        "that is the sigmoid's factor": 1 / (4 * _SQ),
    },
    each=True,
    rel=True,
)
answer_key(
    "ex-ch4-collapse-scale",
    "the predicted factor by which the sigmoid ratio grows with weight_scale 4 sqrt(3)",
    0.03,
    4 * _SQ,
    {
        "that is how much the weights' variance grows; the ratio follows "
        "their spread": 48,
        "that is the slope's share alone; the weights are multiplied by 4 sqrt(3)": 4,
        "that is the variance-1/fan-in scale; this one makes up for the slope": _SQ,
        "the sigmoid's slope stays, but the weights' factor grows": 1,
        "that is about the measured change; the question is the prediction": 3,
    },
    rel=True,
)
