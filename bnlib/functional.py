"""Pure numpy normalization kernels: forward returns ``(out, cache)``, backward
takes ``(dout, cache)`` and returns ``(dx, dgamma, dbeta)``.

One kernel, :func:`norm_forward`, normalizes ``x`` over the axes it is given.
The choice of axes is the whole difference between the methods:

=============  ==================  ================================
method         input               axes reduced over
=============  ==================  ================================
BatchNorm      (N, C) / (N, C, L)  (0,) / (0, 2)
BatchNorm2d    (N, C, H, W)        (0, 2, 3)
LayerNorm      (N, ..., *shape)    the last ``len(shape)`` axes
InstanceNorm   (N, C, L)           (2,)
GroupNorm      (N, G, C/G, L)      (2, 3) after splitting C into groups
=============  ==================  ================================

Notation follows Ioffe & Szegedy (2015): over a group of m values,
``mu`` is the mean, ``var`` the biased variance (divide by m),
``x_hat = (x - mu) / sqrt(var + eps)`` and ``y = gamma * x_hat + beta``.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "norm_forward",
    "norm_backward",
    "batchnorm_backward_staged",
    "batchnorm_forward",
    "batchnorm_backward",
    "layernorm_forward",
    "layernorm_backward",
    "groupnorm_forward",
    "groupnorm_backward",
    "rmsnorm_forward",
    "batch_axes",
    "sum_to_shape",
    "STAGED_NODES",
]


def sum_to_shape(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a broadcast gradient ``g`` back down to ``shape`` (numpy broadcasting rules)."""
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1
    )
    return g.sum(axis=axes, keepdims=True).reshape(shape) if axes else g.reshape(shape)


def batch_axes(ndim: int) -> tuple[int, ...]:
    """Axes BatchNorm reduces over for an (N, C, *spatial) input: all but the channel axis 1."""
    return (0,) + tuple(range(2, ndim))


def _group_size(shape: tuple, axes: tuple) -> int:
    return int(np.prod([shape[a] for a in axes]))


def norm_forward(x, gamma, beta, axes, eps=1e-5, stats=None, center=True):
    """Normalize ``x`` over ``axes``, then scale and shift.

    Args:
        x: array of any shape; the output has its dtype.
        gamma, beta: scale and shift, broadcastable to ``x`` (or None for no affine step).
        axes: tuple of axes to reduce over; each group of ``m`` values sharing the other
            indices is normalized to mean 0 and variance 1.
        eps: added to the variance inside the square root.
        stats: optional ``(mean, var)`` broadcastable to ``x``, used instead of the batch
            statistics (evaluation mode); the backward then treats them as constants.
        center: False skips the mean (RMSNorm): ``x_hat = x / sqrt(mean(x**2) + eps)``.

    Returns:
        out: ``gamma * x_hat + beta``, same shape and dtype as ``x``.
        cache: dict holding what both backwards need (``x``, ``mu``, ``var``,
            ``inv_std``, ``x_hat``, ``gamma``, ``axes``, ``m`` ...).
    """
    axes = tuple(a % x.ndim for a in axes)
    dtype = x.dtype
    if stats is None:
        mu = x.mean(axis=axes, keepdims=True) if center else np.zeros((1,) * x.ndim, dtype)
        xc = x - mu if center else x
        var = np.mean(np.square(xc), axis=axes, keepdims=True)
    else:
        mu, var = (np.asarray(s, dtype=dtype) for s in stats)
        xc = x - mu
    inv_std = 1.0 / np.sqrt(var + dtype.type(eps))
    x_hat = xc * inv_std
    out = x_hat
    if gamma is not None:
        gamma = np.asarray(gamma, dtype=dtype)
        out = x_hat * gamma
    if beta is not None:
        out = out + np.asarray(beta, dtype=dtype)
    cache = dict(x=x, mu=mu, var=var, inv_std=inv_std, x_hat=x_hat, gamma=gamma,
                 beta_shape=None if beta is None else np.shape(beta),
                 axes=axes, m=_group_size(x.shape, axes), eps=eps,
                 fixed_stats=stats is not None, center=center)
    return out.astype(dtype, copy=False), cache


def _param_grads(dout, cache):
    """dgamma = sum(dout * x_hat), dbeta = sum(dout), each summed to its parameter's shape."""
    gamma = cache["gamma"]
    dgamma = None if gamma is None else sum_to_shape(dout * cache["x_hat"], gamma.shape)
    shape = cache["beta_shape"]
    dbeta = None if shape is None else sum_to_shape(dout, shape)
    return dgamma, dbeta


def norm_backward(dout, cache):
    """Compact (closed-form) backward of :func:`norm_forward`.

    With ``g = dout * gamma`` and sums over each normalized group of m values::

        dx = inv_std / m * (m * g - sum(g) - x_hat * sum(g * x_hat))

    (for BatchNorm this is ``gamma / (m sqrt(var + eps)) * (m dy - sum dy - x_hat sum(dy x_hat))``).
    Without centering (RMSNorm) the ``sum(g)`` term drops out; with fixed statistics
    (evaluation mode) ``dx = g * inv_std``.

    Returns:
        dx (shape of x), dgamma (shape of gamma or None), dbeta (shape of beta or None).
    """
    _check_dout(dout, cache)
    dgamma, dbeta = _param_grads(dout, cache)
    g = dout if cache["gamma"] is None else dout * cache["gamma"]
    inv_std, x_hat, axes, m = cache["inv_std"], cache["x_hat"], cache["axes"], cache["m"]
    if cache["fixed_stats"]:
        return (g * inv_std).astype(dout.dtype, copy=False), dgamma, dbeta
    proj = np.sum(g * x_hat, axis=axes, keepdims=True)
    inner = m * g - x_hat * proj
    if cache["center"]:
        inner -= np.sum(g, axis=axes, keepdims=True)
    dx = inner * (inv_std / m)
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

    Args:
        dout: upstream gradient dL/dout, shape of x.
        cache: from :func:`norm_forward` (batch statistics, centered).
        trace: optional dict; if given it receives dL/d(node) for every node, keyed
            by the names in :data:`STAGED_NODES` (plus ``"x"``).

    Returns:
        dx, dgamma, dbeta as :func:`norm_backward`.
    """
    _check_dout(dout, cache)
    if cache["fixed_stats"] or not cache["center"]:
        raise ValueError("staged backward expects batch statistics with centering "
                         "(training-mode BatchNorm/LayerNorm); got fixed stats or center=False")
    x, mu, var, axes, m = cache["x"], cache["mu"], cache["var"], cache["axes"], cache["m"]
    gamma = cache["gamma"] if cache["gamma"] is not None else np.ones((1,) * x.ndim, x.dtype)
    # Forward nodes, recomputed from the cached inputs so every line below is visible.
    xc = x - mu
    std = np.sqrt(var + cache["eps"])
    inv_std = 1.0 / std
    x_hat = xc * inv_std
    grads = {"out": dout}
    # out = scaled + beta
    grads["scaled"] = dout
    dbeta = None if cache["beta_shape"] is None else sum_to_shape(dout, cache["beta_shape"])
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


def _check_dout(dout, cache):
    if np.shape(dout) != cache["x"].shape:
        raise ValueError(f"dout must have the shape of the forward output "
                         f"{cache['x'].shape}, got {np.shape(dout)}")


def _channel_param(p, ndim):
    """Reshape a per-channel (C,) parameter to broadcast over (N, C, *spatial)."""
    return None if p is None else np.reshape(p, (1, -1) + (1,) * (ndim - 2))


def batchnorm_forward(x, gamma, beta, eps=1e-5, stats=None):
    """BatchNorm for (N, C) or (N, C, *spatial): statistics per channel over N and spatial axes.

    gamma, beta: shape (C,). stats: optional per-channel (mean, var), each shape (C,).
    Returns ``(out, cache)``; the cache works with :func:`batchnorm_backward` and
    :func:`batchnorm_backward_staged`.
    """
    if stats is not None:
        stats = tuple(_channel_param(s, x.ndim) for s in stats)
    return norm_forward(x, _channel_param(gamma, x.ndim), _channel_param(beta, x.ndim),
                        batch_axes(x.ndim), eps, stats=stats)


def batchnorm_backward(dout, cache):
    """Compact BatchNorm backward: returns dx (N, C, ...), dgamma (C,), dbeta (C,)."""
    dx, dgamma, dbeta = norm_backward(dout, cache)
    return dx, _flat(dgamma), _flat(dbeta)


def _flat(p):
    return None if p is None else p.reshape(-1)


def layernorm_forward(x, gamma, beta, normalized_ndim=1, eps=1e-5):
    """LayerNorm over the last ``normalized_ndim`` axes; gamma, beta have those axes' shape."""
    axes = tuple(range(x.ndim - normalized_ndim, x.ndim))
    return norm_forward(x, gamma, beta, axes, eps)


def layernorm_backward(dout, cache):
    """LayerNorm backward: the same closed form as BatchNorm's, over the feature axes."""
    return norm_backward(dout, cache)


def rmsnorm_forward(x, gamma, normalized_ndim=1, eps=1e-6):
    """RMSNorm (Zhang & Sennrich 2019): ``x / sqrt(mean(x**2) + eps) * gamma``, no centering, no beta."""
    axes = tuple(range(x.ndim - normalized_ndim, x.ndim))
    return norm_forward(x, gamma, None, axes, eps, center=False)


def groupnorm_forward(x, gamma, beta, num_groups, eps=1e-5):
    """GroupNorm for (N, C, *spatial): statistics per example over each group of C/G channels
    and all spatial positions; gamma, beta are per channel, shape (C,).
    """
    n, c = x.shape[:2]
    if c % num_groups:
        raise ValueError(f"num_channels ({c}) must be divisible by num_groups ({num_groups})")
    xg = x.reshape(n, num_groups, c // num_groups, -1)
    shape4 = (1, num_groups, c // num_groups, 1)
    g = None if gamma is None else np.reshape(gamma, shape4)
    b = None if beta is None else np.reshape(beta, shape4)
    out, cache = norm_forward(xg, g, b, (2, 3), eps)
    cache["input_shape"] = x.shape
    return out.reshape(x.shape), cache


def groupnorm_backward(dout, cache):
    """GroupNorm backward: returns dx (N, C, ...), dgamma (C,), dbeta (C,)."""
    dx, dgamma, dbeta = norm_backward(dout.reshape(cache["x"].shape), cache)
    return dx.reshape(cache["input_shape"]), _flat(dgamma), _flat(dbeta)
