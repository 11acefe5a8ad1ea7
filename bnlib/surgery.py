"""Working on a trained model's batch-norm layers: find them, recompute their
statistics, look at their inputs, and undo what a probe changed.

* :func:`batchnorm_layers`: every BatchNorm-like layer with running statistics.
* :func:`precise_bn`: recompute the running statistics over many batches ("precise BN",
  Wu & Johnson 2021; AdaBN, Li et al. 2016, on target-domain data; the cure for
  dropout's variance shift, Li et al. 2019).
* :func:`capture_inputs`: the inputs of chosen layers of a Sequential.
* :func:`preserved`: a context that restores a model exactly after a probe ran on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager

import numpy as np

from . import functional as F
from .modules import BatchNormBase, Module, Sequential

__all__ = [
    "batchnorm_layers",
    "precise_bn",
    "capture_inputs",
    "preserved",
]


def batchnorm_layers(model: Module) -> list[BatchNormBase]:
    """Every BatchNorm-like layer (BatchNorm1d/2d and the variants built on
    ``BatchNormBase``) of ``model`` that keeps running statistics, in order."""
    return [
        m
        for m in model.modules()
        if isinstance(m, BatchNormBase) and m.track_running_stats
    ]


class _StatsAccumulator:
    """Per-channel statistics of the inputs one BatchNorm layer saw, batch by batch.

    Keeps both estimators of :func:`precise_bn`: the pooled moments of every value
    (Chan et al.'s pairwise update: count n, mean, sum of squared deviations m2) and the
    running sums of per-batch means and unbiased per-batch variances.
    """

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0
        self.batches, self.sum_mean, self.sum_var = 0, 0.0, 0.0

    def add(self, x: np.ndarray):
        """Add one batch x ``(N, C, *spatial)``: ``m = N * prod(spatial)`` values per
        channel."""
        axes = F.batch_axes(x.ndim)
        m = x.size // x.shape[1]
        mu = x.mean(axis=axes, dtype=np.float64)
        var = x.var(axis=axes, dtype=np.float64)  # biased
        delta, n_new = mu - self.mean, self.n + m
        self.m2 = self.m2 + m * var + delta**2 * self.n * m / n_new
        self.mean = self.mean + delta * m / n_new
        self.n = n_new
        self.batches += 1
        self.sum_mean = self.sum_mean + mu
        self.sum_var = self.sum_var + var * m / (m - 1)

    def result(self, variance: str) -> tuple[np.ndarray, np.ndarray]:
        """(running_mean, running_var), each (C,)."""
        if variance == "population":
            return np.array(self.mean, copy=True), self.m2 / self.n
        return self.sum_mean / self.batches, self.sum_var / self.batches


@contextmanager
def _recording_inputs(layers: list[Module], accumulators: list[_StatsAccumulator]):
    """Within the block, each layer adds its input to its accumulator before running."""
    for layer, acc in zip(layers, accumulators):

        def forward(x, _run=layer.forward, _acc=acc):
            _acc.add(np.asarray(x))
            return _run(x)

        layer.forward = forward  # an instance attribute shadows the class's method
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def _as_batches(data, batch_size: int) -> Iterable:
    if isinstance(data, np.ndarray):
        return (data[i : i + batch_size] for i in range(0, len(data), batch_size))
    return data


def precise_bn(
    model: Module, data, variance: str = "population", batch_size: int = 200
):
    """Replace every BatchNorm layer's running statistics by statistics over ``data``.

    The BatchNorm layers run in training mode, as during training, so each one sees the
    batch-normalized outputs of the layers before it; every other layer runs in
    evaluation mode (dropout off), so the statistics are those the network meets at test
    time. Weights and every module's train/eval mode are left as they were.

    Args:
        model: a Module with BatchNorm layers.
        data: an array x (N, ...) split into consecutive batches of ``batch_size``, or
            an iterable of batches x (B, ...) or of ``(x, y)`` pairs (y is ignored).
        variance: what goes into ``running_var`` (the means follow the same choice):

            * ``"population"`` (default): the pooled mean and variance of all values a
              layer saw over all batches, as in the appendix of Wu & Johnson (2021) and
              fvcore's ``update_bn_stats``. For the first BatchNorm layer it is that
              layer's input variance over the data set.
            * ``"batch_mean"``: the averages of the per-batch means and *unbiased*
              variances, ``m/(m-1) E_B[sigma_B^2]`` (Ioffe & Szegedy's Algorithm 2;
              PyTorch's ``running_var`` with ``momentum=None``).

            After the first layer neither is exact at small m. Earlier layers
            normalized with batch statistics remove most of the variation of a later
            layer's batch means (pooling misses it: too small), and they inflate each
            batch's spread by about m/(m-1) (which the Bessel-corrected average counts
            in full: too large). In a linear chain the two cancel and pooling is exact;
            which error is larger in general depends on the network (chapter 3: at
            m = 4 pooling is closer for an untrained MLP, averaging for a trained one).
            With large batches both agree; use them.
        batch_size: used only when ``data`` is an array.

    Returns:
        the model (changed in place).
    """
    if variance not in ("population", "batch_mean"):
        raise ValueError(
            f"variance must be 'population' or 'batch_mean', got {variance!r}"
        )
    layers = batchnorm_layers(model)
    if not layers:
        raise ValueError(
            "precise_bn: the model has no BatchNorm layer with running statistics"
        )
    modes = [(m, m.training) for m in model.modules()]
    accumulators = [_StatsAccumulator() for _ in layers]
    model.eval()
    for layer in layers:
        layer.training = True
    try:
        with _recording_inputs(layers, accumulators):
            for batch in _as_batches(data, batch_size):
                model(batch[0] if isinstance(batch, (tuple, list)) else batch)
    finally:
        for m, mode in modes:
            m.training = mode
    if accumulators[0].batches == 0:
        raise ValueError("precise_bn: data is empty (expected at least one batch)")
    for layer, acc in zip(layers, accumulators):
        layer.running_mean, layer.running_var = acc.result(variance)
        layer.num_batches_tracked = acc.batches
    return model


def _snapshot(model: Module) -> list[dict]:
    """Per module: parameters and gradients (copies), running statistics, the state of
    its random stream (``module.rng``) and its train/eval flag."""
    snap = []
    for m in model.modules():
        rng = getattr(m, "rng", None)
        snap.append(
            {
                "params": {k: v.copy() for k, v in m.params.items()},
                "grads": {k: v.copy() for k, v in m.grads.items()},
                "running": (
                    (m.running_mean.copy(), m.running_var.copy(), m.num_batches_tracked)
                    if isinstance(m, BatchNormBase)
                    else None
                ),
                "rng": rng.bit_generator.state
                if isinstance(rng, np.random.Generator)
                else None,
                "training": m.training,
            }
        )
    return snap


def _restore(model: Module, snap: list[dict]):
    """Put a :func:`_snapshot` back; parameters are copied in place, so optimizers that
    hold the arrays keep working."""
    for m, s in zip(model.modules(), snap, strict=True):
        for k, v in s["params"].items():
            np.copyto(m.params[k], v)
        m.grads = {k: v.copy() for k, v in s["grads"].items()}
        if s["running"] is not None:
            mean, var, count = s["running"]
            m.running_mean, m.running_var, m.num_batches_tracked = mean, var, count
        if s["rng"] is not None:
            m.rng.bit_generator.state = s["rng"]
        m.training = s["training"]


@contextmanager
def preserved(model: Module):
    """``with preserved(model): ...`` runs the block, then restores the model's
    parameters, gradients, running statistics, random streams and train/eval modes, even
    if the block raises. For probes that run extra forward and backward passes."""
    snap = _snapshot(model)
    try:
        yield model
    finally:
        _restore(model, snap)


def capture_inputs(model: Sequential, x: np.ndarray, kind, mode: str = "eval"):
    """The inputs to every top-level layer of type ``kind`` when ``model`` runs on x.

    Args:
        model: a :class:`~bnlib.Sequential`.
        x: inputs (N, d_in).
        kind: a module class (or tuple of classes), e.g. ``Sigmoid`` for the inputs of
            each sigmoid, ``BatchNorm1d`` for what each BN layer normalizes.
        mode: ``"eval"`` (running statistics, no dropout) or ``"train"`` (batch
            statistics of x, dropout and noise on). The model is left untouched.

    Returns:
        list of arrays (N, C), one per matching layer, in order.
    """
    if mode not in ("eval", "train"):
        raise ValueError(
            f"capture_inputs: mode must be 'eval' or 'train', got {mode!r}"
        )
    found = []
    with preserved(model):
        model.train(mode == "train")
        h = x
        for layer in model.layers:
            if isinstance(layer, kind):
                found.append(h.copy())
            h = layer(h)
    return found
