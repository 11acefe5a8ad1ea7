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

import math

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
    if stats is None and center:
        fast = _fast_forward(x, gamma, beta, axes, eps)
        if fast is not None:
            return fast
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
    if cache.get("_layout") is not None and getattr(dout, "dtype", None) in (np.float32,
                                                                              np.float64):
        return _fast_backward(dout, cache)
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


# ---------------------------------------------------------------- fast path
# The same computation as above with fewer passes over memory, used when the axes that
# are kept (not reduced) form one contiguous block, so x can be viewed as (A, K, B) and
# reduced over A and B (BatchNorm: (N, C, H*W); LayerNorm over trailing axes: (1, N, D)),
# and gamma and beta are constant over the reduced axes (one value per group, as in BN).
# Then sum(dout * gamma) = gamma * sum(dout) = gamma * dbeta and
# sum(dout * gamma * x_hat) = gamma * dgamma: the parameter gradients are the only two
# reductions the backward needs. Sums use np.einsum (no temporary arrays), every
# full-size operation writes into an array that is returned or cached, and consecutive
# operations run chunk by chunk (see _chunks) so that each chunk is still in cache.
# Results equal the general path's up to rounding (tests/test_functional.py checks).


def _layout(shape, axes):
    """(A, K, B) if the axes of ``shape`` not in ``axes`` form one contiguous block, else None."""
    kept = [a for a in range(len(shape)) if a not in axes]
    if not kept or kept != list(range(kept[0], kept[-1] + 1)):
        return None
    return (math.prod(shape[:kept[0]]), math.prod(shape[kept[0]:kept[-1] + 1]),
            math.prod(shape[kept[-1] + 1:]))


def _per_group(p, x_shape, axes, layout, dtype):
    """A parameter broadcastable to x as a vector over the K groups, or None if it varies
    over the reduced axes. Returns (vector of shape (K,), ok)."""
    if p is None:
        return None, True
    pshape = (1,) * (len(x_shape) - np.ndim(p)) + np.shape(p)
    if len(pshape) != len(x_shape) or any(pshape[a] != 1 for a in axes):
        return None, False
    kept_shape = tuple(1 if a in axes else n for a, n in enumerate(x_shape))
    p = np.asarray(p, dtype=dtype)
    if pshape != kept_shape:  # constant along some kept axes too: spread it over them
        p = np.broadcast_to(p.reshape(pshape), kept_shape)
    return p.reshape(layout[1]), True


def _views(layout):
    """Shapes for the full arrays and for per-group vectors, and the einsum subscripts."""
    a, k, b = layout
    if b == 1:
        return (a, k), (k,), "ak"
    if a == 1:
        return (k, b), (k, 1), "kb"
    return (a, k, b), (k, 1), "akb"


_CHUNK_BYTES = 1 << 20


def _chunks(full, itemsize, sub):
    """Slices along axis 0 of about _CHUNK_BYTES each (one slice when axis 0 is the groups),
    so that consecutive operations on a chunk find it in the CPU cache."""
    if sub == "kb":
        return [slice(None)]
    row = itemsize * math.prod(full[1:])
    step = max(1, _CHUNK_BYTES // max(row, 1))
    return [slice(i, i + step) for i in range(0, full[0], step)]


def _group_sum(a, sub):
    """Sum of ``a`` over everything but the group axis k."""
    if sub == "ak":  # over the rows: a matrix-vector product is the quickest reduction
        return np.ones(a.shape[0], a.dtype) @ a
    return np.einsum(f"{sub}->k", a)


def _fast_forward(x, gamma, beta, axes, eps):
    layout = _layout(x.shape, axes)
    if layout is None or x.size == 0 or x.dtype not in (np.float32, np.float64):
        return None
    dtype = x.dtype
    g, ok_g = _per_group(gamma, x.shape, axes, layout, dtype)
    b, ok_b = _per_group(beta, x.shape, axes, layout, dtype)
    if not (ok_g and ok_b):
        return None
    full, vec, sub = _views(layout)
    m = x.size // layout[1]
    x3 = x.reshape(full)
    mu = _group_sum(x3, sub) / dtype.type(m)
    mu_v = mu.reshape(vec)
    x_hat = np.empty(full, dtype)
    out = np.empty(full, dtype) if g is not None or b is not None else x_hat
    chunks = _chunks(full, dtype.itemsize, sub)
    var = np.zeros(layout[1], dtype)
    for c in chunks:  # centre, and sum the squares while the chunk is in cache
        xc = np.subtract(x3[c], mu_v, out=x_hat[c])
        var += np.einsum(f"{sub},{sub}->k", xc, xc)
    var /= dtype.type(m)
    inv_std = dtype.type(1.0) / np.sqrt(var + dtype.type(eps))
    inv_v = inv_std.reshape(vec)
    for c in chunks:  # x_hat = xc * inv_std, out = gamma * x_hat + beta
        xh = np.multiply(x_hat[c], inv_v, out=x_hat[c])
        if g is not None:
            o = np.multiply(xh, g.reshape(vec), out=out[c])
            if b is not None:
                o += b.reshape(vec)
        elif b is not None:
            np.add(xh, b.reshape(vec), out=out[c])
    kd = tuple(1 if a in axes else n for a, n in enumerate(x.shape))
    cache = dict(x=x, mu=mu.reshape(kd), var=var.reshape(kd), inv_std=inv_std.reshape(kd),
                 x_hat=x_hat.reshape(x.shape),
                 gamma=None if gamma is None else np.asarray(gamma, dtype=dtype),
                 beta_shape=None if beta is None else np.shape(beta),
                 axes=axes, m=m, eps=eps, fixed_stats=False, center=True,
                 _layout=layout, _gamma_k=g)
    return out.reshape(x.shape), cache


def _fast_backward(dout, cache):
    """dx = gamma * inv_std * (dout - (sum(dout) + x_hat * sum(dout * x_hat)) / m)."""
    layout, m, dtype = cache["_layout"], cache["m"], dout.dtype
    full, vec, sub = _views(layout)
    d3 = dout.reshape(full)
    xh3 = cache["x_hat"].reshape(full)
    chunks = _chunks(full, dtype.itemsize, sub)
    sum_d = np.zeros(layout[1], dtype)  # dbeta per group
    sum_dx = np.zeros(layout[1], dtype)  # dgamma per group
    for c in chunks:
        sum_d += _group_sum(d3[c], sub)
        sum_dx += np.einsum(f"{sub},{sub}->k", d3[c], xh3[c])
    scale = cache["inv_std"].reshape(vec).astype(dtype, copy=False)
    if cache["_gamma_k"] is not None:
        scale = scale * cache["_gamma_k"].reshape(vec).astype(dtype, copy=False)
    inv_m = dtype.type(1.0 / m)
    k_x = (sum_dx * inv_m).astype(dtype, copy=False).reshape(vec)
    k_1 = (sum_d * inv_m).astype(dtype, copy=False).reshape(vec)
    dx = np.empty(full, dtype)
    for c in chunks:
        t = np.multiply(xh3[c], k_x, out=dx[c])
        t += k_1
        np.subtract(d3[c], t, out=t)
        t *= scale
    kd = cache["mu"].shape
    gamma, beta_shape = cache["gamma"], cache["beta_shape"]
    dgamma = None if gamma is None else sum_to_shape(sum_dx.reshape(kd), gamma.shape)
    dbeta = None if beta_shape is None else sum_to_shape(sum_d.reshape(kd), beta_shape)
    return dx.reshape(dout.shape), dgamma, dbeta


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
