"""Pure numpy normalization kernels: forward returns ``(out, cache)``, backward
takes ``(dout, cache)`` and returns ``(dx, dgamma, dbeta)``.

One kernel, :func:`norm_forward`, normalizes ``x`` over the axes it is given.
The choice of axes is the whole difference between the methods:

=============  ======================  ================================
method         input                   axes reduced over
=============  ======================  ================================
BatchNorm      (N, C) / (N, C, L)      (0,) / (0, 2)
BatchNorm2d    (N, C, H, W)            (0, 2, 3)
LayerNorm      ``(N, ..., *shape)``    the last ``len(shape)`` axes
InstanceNorm   (N, C, L)               (2,)
GroupNorm      (N, G, C/G, L)          (2, 3) after splitting C into groups
=============  ======================  ================================

Notation follows Ioffe & Szegedy (2015): over a group of m values,
``mu`` is the mean, ``var`` the biased variance (divide by m),
``x_hat = (x - mu) / sqrt(var + eps)`` and ``y = gamma * x_hat + beta``.

The functions here are the formulas, one numpy expression per step. The layers in
:mod:`bnlib.modules` run the same computation through :mod:`bnlib.fastpath`, which
makes fewer passes over memory; tests prove the two agree.
"""

from __future__ import annotations

import operator

import numpy as np

__all__ = [
    "norm_forward",
    "norm_backward",
    "batchnorm_backward_staged",
    "batchnorm_forward",
    "batchnorm_backward",
    "layernorm_forward",
    "layernorm_backward",
    "rmsnorm_forward",
    "batch_axes",
    "sum_to_shape",
    "check_float_array",
    "check_axes",
    "check_param",
    "check_stats",
    "check_dout",
    "STAGED_NODES",
]


def sum_to_shape(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a broadcast gradient ``g`` back down to ``shape`` (numpy's broadcasting)."""
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1
    )
    return g.sum(axis=axes, keepdims=True).reshape(shape) if axes else g.reshape(shape)


def batch_axes(ndim: int) -> tuple[int, ...]:
    """Axes BatchNorm reduces over for ``(N, C, *spatial)``: all but channel axis 1."""
    return (0,) + tuple(range(2, ndim))


def norm_forward(x, gamma, beta, axes, eps=1e-5, stats=None, center=True):
    """Normalize ``x`` over ``axes``, then scale and shift.

    Args:
        x: floating-point array of any shape; the output has its dtype.
        gamma, beta: scale and shift, broadcastable to ``x`` without changing its
            shape (or None for no affine step).
        axes: tuple of axes to reduce over; each group of ``m`` values sharing the
            other indices is normalized to mean 0 and variance 1.
        eps: added to the variance inside the square root.
        stats: optional ``(mean, var)`` broadcastable to ``x``, used instead of the
            batch statistics (evaluation mode); the backward treats them as constants.
        center: False skips the mean (RMSNorm): ``x_hat = x / sqrt(mean(x**2) + eps)``.

    Returns:
        out: ``gamma * x_hat + beta``, same shape and dtype as ``x``.
        cache: dict holding what both backwards need (``x``, ``mu``, ``var``,
            ``inv_std``, ``x_hat``, ``gamma``, ``axes``, ``m`` ...); ``mu``, ``var``
            and ``inv_std`` keep the reduced axes with size 1.

    Raises:
        TypeError: ``x`` is not a numpy array of floats.
        ValueError: bad ``axes``, or a parameter that does not broadcast to ``x``.
    """
    x = check_float_array(x, "x")
    axes = check_axes(axes, x.ndim)
    gamma, beta = check_param(gamma, x, "gamma"), check_param(beta, x, "beta")
    eps = x.dtype.type(eps)
    if stats is None:
        zero = np.zeros((1,) * x.ndim, x.dtype)  # center=False: no mean is subtracted
        mu = x.mean(axis=axes, keepdims=True) if center else zero
        var = np.mean(np.square(x - mu), axis=axes, keepdims=True)
    else:
        mu, var = check_stats(stats, x)
    inv_std = 1 / np.sqrt(var + eps)
    x_hat = (x - mu) * inv_std
    out = x_hat if gamma is None else gamma * x_hat
    out = out if beta is None else out + beta
    cache = dict(
        x=x,
        mu=mu,
        var=var,
        inv_std=inv_std,
        x_hat=x_hat,
        gamma=gamma,
        beta_shape=None if beta is None else beta.shape,
        axes=axes,
        m=_group_size(x.shape, axes),
        eps=eps,
        fixed_stats=stats is not None,
        center=center,
    )
    return out, cache


def norm_backward(dout, cache):
    """Compact (closed-form) backward of :func:`norm_forward`.

    With ``g = dout * gamma`` and sums over each normalized group of m values::

        dx = inv_std / m * (m * g - sum(g) - x_hat * sum(g * x_hat))
        dgamma = sum(dout * x_hat),  dbeta = sum(dout)   (summed to their shapes)

    (for BatchNorm
    ``dx = gamma / (m sqrt(var + eps)) * (m dy - sum dy - x_hat sum(dy x_hat))``).
    Without centering (RMSNorm) the ``sum(g)`` term drops out; with fixed statistics
    (evaluation mode) ``dx = g * inv_std``.

    Returns:
        dx (shape and dtype of dout), dgamma (shape of gamma or None),
        dbeta (shape of beta or None).
    """
    dout = check_dout(dout, cache)
    x_hat, inv_std, gamma = cache["x_hat"], cache["inv_std"], cache["gamma"]
    axes, m, beta_shape = cache["axes"], cache["m"], cache["beta_shape"]
    dgamma = None if gamma is None else sum_to_shape(dout * x_hat, gamma.shape)
    dbeta = None if beta_shape is None else sum_to_shape(dout, beta_shape)
    g = dout if gamma is None else dout * gamma
    if cache["fixed_stats"]:
        dx = g * inv_std
    else:
        inner = m * g - x_hat * np.sum(g * x_hat, axis=axes, keepdims=True)
        if cache["center"]:
            inner = inner - np.sum(g, axis=axes, keepdims=True)
        dx = inv_std / m * inner
    return dx.astype(dout.dtype, copy=False), dgamma, dbeta


#: The forward graph the staged backward walks, in forward order: (node, formula).
STAGED_NODES = (
    ("mu", "mu = mean(x)"),
    ("xc", "xc = x - mu"),
    ("sq", "sq = xc ** 2"),
    ("var", "var = mean(sq)"),
    ("std", "std = sqrt(var + eps)"),
    ("inv_std", "inv_std = 1 / std"),
    ("x_hat", "x_hat = xc * inv_std"),
    ("scaled", "scaled = gamma * x_hat"),
    ("out", "out = scaled + beta"),
)


def batchnorm_backward_staged(dout, cache, trace=None):
    """Backward of :func:`norm_forward` node by node through the computational graph.

    Walks :data:`STAGED_NODES` in reverse, applying one local derivative per node.
    Slower than :func:`norm_backward` and the same result; it exists to be read.
    It needs only ``x``, ``mu``, ``var``, ``eps``, ``gamma``, ``beta_shape``, ``axes``
    and ``m`` from the cache, so it accepts the caches of :mod:`bnlib.fastpath` too.

    Args:
        dout: upstream gradient dL/dout, shape of x.
        cache: from :func:`norm_forward` (batch statistics, centered).
        trace: optional dict; if given it receives dL/d(node) for every node, keyed
            by the names in :data:`STAGED_NODES` (plus ``"x"``).

    Returns:
        dx, dgamma, dbeta as :func:`norm_backward`.
    """
    dout = check_dout(dout, cache)
    if cache["fixed_stats"] or not cache["center"]:
        raise ValueError(
            "staged backward expects batch statistics with centering "
            "(training-mode BatchNorm/LayerNorm); got fixed stats or "
            "center=False"
        )
    x, mu, var, axes, m = (
        cache["x"],
        cache["mu"],
        cache["var"],
        cache["axes"],
        cache["m"],
    )
    gamma = (
        cache["gamma"]
        if cache["gamma"] is not None
        else np.ones((1,) * x.ndim, x.dtype)
    )
    # Forward nodes, recomputed from the cached inputs so every line below is visible.
    xc = x - mu
    std = np.sqrt(var + cache["eps"])
    inv_std = 1.0 / std
    x_hat = xc * inv_std
    grads = {"out": dout}
    # out = scaled + beta
    grads["scaled"] = dout
    beta_shape = cache["beta_shape"]
    dbeta = None if beta_shape is None else sum_to_shape(dout, beta_shape)
    # scaled = gamma * x_hat
    dgamma = None if cache["gamma"] is None else sum_to_shape(dout * x_hat, gamma.shape)
    grads["x_hat"] = dout * gamma
    # x_hat = xc * inv_std   (xc feeds two nodes: x_hat and sq)
    grads["inv_std"] = np.sum(grads["x_hat"] * xc, axis=axes, keepdims=True)
    dxc_direct = grads["x_hat"] * inv_std
    # inv_std = 1 / std
    grads["std"] = -grads["inv_std"] / std**2
    # std = sqrt(var + eps)
    grads["var"] = grads["std"] * 0.5 / std
    # var = mean(sq)
    grads["sq"] = np.broadcast_to(grads["var"] / m, x.shape)
    # sq = xc ** 2
    grads["xc"] = dxc_direct + grads["sq"] * 2 * xc
    # xc = x - mu   (x feeds two nodes: xc and mu)
    grads["mu"] = -np.sum(grads["xc"], axis=axes, keepdims=True)
    # mu = mean(x)
    dx = grads["xc"] + grads["mu"] / m
    grads["x"] = dx
    if trace is not None:
        trace.update(grads)
    return dx.astype(dout.dtype, copy=False), dgamma, dbeta


# ---------------------------------------------------------------- named wrappers
def batchnorm_forward(x, gamma, beta, eps=1e-5, stats=None):
    """BatchNorm for (N, C) or ``(N, C, *spatial)``: statistics per channel over N and
    the spatial axes.

    gamma, beta: shape (C,) or None. stats: optional per-channel (mean, var), each (C,).
    Returns ``(out, cache)``; the cache works with :func:`batchnorm_backward` and
    :func:`batchnorm_backward_staged`.
    """
    x = check_float_array(x, "x")
    if x.ndim < 2:
        raise ValueError(
            f"batchnorm_forward: expected an input (N, C, *spatial) of at "
            f"least 2 dimensions, got shape {x.shape}"
        )
    gamma, beta = _channel_param(gamma, x, "gamma"), _channel_param(beta, x, "beta")
    if stats is not None:
        mean, var = stats
        stats = (_channel_param(mean, x, "mean"), _channel_param(var, x, "var"))
    return norm_forward(x, gamma, beta, batch_axes(x.ndim), eps, stats=stats)


def batchnorm_backward(dout, cache):
    """Compact BatchNorm backward: returns dx (N, C, ...), dgamma (C,), dbeta (C,)."""
    dx, dgamma, dbeta = norm_backward(dout, cache)
    return dx, _flat(dgamma), _flat(dbeta)


def layernorm_forward(x, gamma, beta, normalized_ndim=1, eps=1e-5):
    """LayerNorm over the last ``normalized_ndim`` axes; gamma and beta have the shape
    of those axes."""
    x = check_float_array(x, "x")
    axes = tuple(range(x.ndim - normalized_ndim, x.ndim))
    return norm_forward(x, gamma, beta, axes, eps)


def layernorm_backward(dout, cache):
    """LayerNorm backward: the closed form of BatchNorm's, over the feature axes."""
    return norm_backward(dout, cache)


def rmsnorm_forward(x, gamma, normalized_ndim=1, eps=1e-6):
    """RMSNorm (Zhang & Sennrich 2019): ``x / sqrt(mean(x**2) + eps) * gamma`` over the
    last ``normalized_ndim`` axes; no centering, no beta."""
    x = check_float_array(x, "x")
    axes = tuple(range(x.ndim - normalized_ndim, x.ndim))
    return norm_forward(x, gamma, None, axes, eps, center=False)


def _flat(p):
    return None if p is None else p.reshape(-1)


def _channel_param(p, x, name):
    """A per-channel (C,) array reshaped to broadcast over ``(N, C, *spatial)``."""
    if p is None:
        return None
    if np.shape(p) != (x.shape[1],):
        raise ValueError(
            f"{name} must have shape (C,) = ({x.shape[1]},) for an input of "
            f"shape {x.shape}, got shape {np.shape(p)}"
        )
    return np.reshape(p, (1, -1) + (1,) * (x.ndim - 2))


def _group_size(shape: tuple, axes: tuple) -> int:
    return int(np.prod([shape[a] for a in axes]))


# ---------------------------------------------------------------- input checks
def check_float_array(a, name="x"):
    """Return ``a`` if it is a numpy array of floats; raise a TypeError otherwise.

    As in PyTorch, normalization refuses integer and bool input rather than
    computing in floats and rounding the result back to integers. ``name`` says
    what ``a`` is in the message (``"x"``, ``"dout"``, ``"BatchNorm1d input"``).
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy array, got {type(a).__name__}; convert it "
            f"first, e.g. np.asarray(x, dtype=np.float32) (or np.float64)"
        )
    if a.dtype.kind != "f":  # float16, float32, float64, longdouble
        raise TypeError(
            f"{name} has dtype {a.dtype}, expected a floating-point array "
            f"(float32 or float64), as in PyTorch; convert it to float first, "
            f"e.g. x.astype(np.float32)"
        )
    return a


def check_axes(axes, ndim: int) -> tuple[int, ...]:
    """``axes`` as a tuple of non-negative axis numbers of an ``ndim``-D input.

    Raises ValueError for an empty tuple (each value would be its own group and
    normalize to 0), an axis out of range, or an axis named twice.
    """
    axes = (axes,) if isinstance(axes, (int, np.integer)) else tuple(axes)
    try:
        axes = tuple(operator.index(a) for a in axes)
    except TypeError:
        raise TypeError(f"axes must be integers, got {axes}") from None
    if not axes:
        raise ValueError(
            "axes is empty: name at least one axis to reduce over (with none, "
            "every value is its own group and normalizes to 0)"
        )
    bad = [a for a in axes if not -ndim <= a < ndim]
    if bad:
        raise ValueError(
            f"axes {axes}: axis {bad[0]} is out of range for a {ndim}-D input "
            f"(valid axes are {-ndim} to {ndim - 1})"
        )
    positive = tuple(a % ndim for a in axes)
    if len(set(positive)) != len(positive):
        raise ValueError(f"axes {axes} name the same axis more than once")
    return positive


def check_param(p, x, name):
    """``p`` as an array of x's dtype; it must broadcast to x, leaving x's shape."""
    if p is None:
        return None
    p = np.asarray(p, dtype=x.dtype)
    fits = p.ndim <= x.ndim and all(
        n in (1, size)
        for n, size in zip(p.shape, x.shape[x.ndim - p.ndim :], strict=True)
    )
    if not fits:
        raise ValueError(
            f"{name} of shape {p.shape} does not broadcast to the input's shape "
            f"{x.shape} (it must broadcast without changing that shape)"
        )
    return p


def check_stats(stats, x):
    """The ``(mean, var)`` pair of fixed statistics, each checked like a parameter."""
    if len(stats) != 2:
        raise ValueError(f"stats must be a pair (mean, var), got {len(stats)} items")
    return check_param(stats[0], x, "stats mean"), check_param(stats[1], x, "stats var")


def check_dout(dout, cache):
    """``dout`` if it is a float array of the forward input's shape (``cache["x"]``)."""
    dout = check_float_array(dout, "dout")
    if dout.shape != cache["x"].shape:
        raise ValueError(
            f"dout must have the shape of the forward output "
            f"{cache['x'].shape}, got {dout.shape}"
        )
    return dout
