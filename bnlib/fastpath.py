"""The same normalization as :func:`bnlib.functional.norm_forward` and
:func:`~bnlib.functional.norm_backward`, with fewer passes over memory.

The layers in :mod:`bnlib.modules` call :func:`norm_forward` (BatchNorm:
:func:`batchnorm_forward`) and :func:`norm_backward` here; they have the contract of
the functional versions (same arguments, same outputs up to rounding) and fall back
to them where the fast route does not apply.

When it applies:

* the axes that are kept (not reduced) form one contiguous block, so ``x`` can be
  viewed as (A, K, B) and reduced over A and B: BatchNorm (N, C, H*W), InstanceNorm,
  LayerNorm over trailing axes (1, N, D);
* gamma and beta are constant over the reduced axes (one value per group, as in BN);
* the input is float32 or float64, and the mean is subtracted (not RMSNorm).

What it does differently:

* **two reductions in the backward.** With gamma constant over a group,
  ``sum(dout * gamma) = gamma * sum(dout)`` and ``sum(dout * gamma * x_hat) =
  gamma * sum(dout * x_hat)``: the two sums the closed form needs are dbeta and
  dgamma themselves.
* **the cache keeps xc = x - mu** (and inv_std) instead of x_hat, so the forward writes
  two full-size arrays (xc and out) rather than three; ``x_hat = xc * inv_std`` enters
  the backward through per-group coefficients.
* **no temporaries.** Sums use ``np.einsum`` (a matrix-vector product for the (N, C)
  case); every full-size operation writes with ``out=`` into an array that is returned
  or cached.
* **chunks.** Consecutive operations run over slices of about :data:`CHUNK_BYTES`, so
  that a slice is still in the CPU cache for the next operation.

``tests/test_functional.py`` checks that both routes agree in float32 and float64, in
training and evaluation, and that :func:`bnlib.functional.batchnorm_backward_staged`
accepts this module's caches.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from . import functional as F

__all__ = [
    "norm_forward",
    "norm_backward",
    "batchnorm_forward",
    "Layout",
    "layout_for",
    "CHUNK_BYTES",
]

#: Target size of one chunk (bytes): small enough to stay in a core's L2 cache.
CHUNK_BYTES = 1 << 20

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@dataclass
class Layout:
    """``x`` viewed as (A, K, B): K groups (the kept axes), each reduced over A and B.

    ``keepdims`` is the shape of per-group statistics in ``x``'s own axes (the
    reduced axes with size 1), as the functional cache stores them. Derived:
    ``subscripts``, the einsum letters of the full view (``ak`` when B = 1, ``kb``
    when A = 1, else ``akb``); ``full``, its shape; ``vec``, the shape of a
    per-group vector that broadcasts against it; ``m``, the values per group.
    """

    a: int
    k: int
    b: int
    keepdims: tuple
    subscripts: str = field(init=False)
    full: tuple = field(init=False)
    vec: tuple = field(init=False)
    m: int = field(init=False)

    def __post_init__(self):
        a, k, b = self.a, self.k, self.b
        self.subscripts = "ak" if b == 1 else "kb" if a == 1 else "akb"
        self.full = {"ak": (a, k), "kb": (k, b), "akb": (a, k, b)}[self.subscripts]
        self.vec = (k,) if b == 1 else (k, 1)
        self.m = a * b

    def chunks(self, itemsize: int) -> tuple[slice, ...]:
        """Slices along the first axis of ``full`` of about CHUNK_BYTES each
        (one slice when that axis is the groups)."""
        if self.subscripts == "kb":
            return (slice(None),)
        return _slices(self.a, itemsize * math.prod(self.full[1:]), CHUNK_BYTES)


@functools.lru_cache(maxsize=64)
def _slices(rows: int, row_bytes: int, chunk_bytes: int) -> tuple[slice, ...]:
    step = max(1, chunk_bytes // max(row_bytes, 1))
    return tuple(slice(i, i + step) for i in range(0, rows, step))


def layout_for(x, axes, params=(), center=True):
    """The :class:`Layout` of ``x`` reduced over ``axes``, or None where the fast route
    does not apply (see the module docstring). ``axes`` as from
    :func:`bnlib.functional.check_axes`; ``params``: the arrays that must be constant
    over each group (gamma, beta, fixed statistics; None entries are skipped)."""
    if not center or x.dtype not in _FLOATS or x.size == 0:
        return None
    kept = [a for a in range(x.ndim) if a not in axes]
    if not kept or kept != list(range(kept[0], kept[-1] + 1)):
        return None
    keepdims = tuple(1 if a in axes else n for a, n in enumerate(x.shape))
    if not all(_constant_over_groups(p, keepdims) for p in params):
        return None
    return Layout(
        math.prod(x.shape[: kept[0]]),
        math.prod(x.shape[kept[0] : kept[-1] + 1]),
        math.prod(x.shape[kept[-1] + 1 :]),
        keepdims,
    )


def _constant_over_groups(p, keepdims):
    """True if ``p`` (broadcastable to x) has size 1 along every reduced axis."""
    if p is None:
        return True
    shape = (1,) * (len(keepdims) - p.ndim) + p.shape
    return all(n == 1 for n, kd in zip(shape, keepdims, strict=True) if kd == 1)


def _per_group(p, layout):
    """A parameter as a (K,) vector over the groups (spread over the kept axes)."""
    if p is None:
        return None
    if p.size == layout.k:  # one value per group already
        return p.reshape(layout.k)
    return np.broadcast_to(p, layout.keepdims).reshape(layout.k)


def _group_sum(a, subscripts):
    """Sum of ``a`` over everything but the group axis k."""
    if subscripts == "ak":  # over the rows: a matrix-vector product is the quickest
        return np.ones(a.shape[0], a.dtype) @ a
    return np.einsum(f"{subscripts}->k", a)


def _group_dot(a, b, subscripts):
    """Sum of ``a * b`` over everything but the group axis k, without a temporary."""
    return np.einsum(f"{subscripts},{subscripts}->k", a, b)


# ---------------------------------------------------------------- forward
def norm_forward(x, gamma, beta, axes, eps=1e-5, stats=None, center=True):
    """:func:`bnlib.functional.norm_forward` with fewer passes over memory.

    Same arguments and output. Where the fast route applies, the cache holds ``xc``
    (x - mu, shape of x) instead of ``x_hat`` and a ``layout``; it works with
    :func:`norm_backward` here and with
    :func:`bnlib.functional.batchnorm_backward_staged`.
    """
    x = F.check_float_array(x, "x")
    axes = F.check_axes(axes, x.ndim)
    gamma, beta = F.check_param(gamma, x, "gamma"), F.check_param(beta, x, "beta")
    fixed = None if stats is None else F.check_stats(stats, x)
    layout = layout_for(x, axes, (gamma, beta) + (fixed or ()), center)
    if layout is None:
        return F.norm_forward(x, gamma, beta, axes, eps, stats=fixed, center=center)
    per_group = [_per_group(p, layout) for p in (gamma, beta) + (fixed or (None, None))]
    return _forward(x, layout, axes, eps, gamma, beta, *per_group)


def batchnorm_forward(x, gamma, beta, eps=1e-5, stats=None):
    """BatchNorm for the layers: :func:`bnlib.functional.batchnorm_forward` through the
    fast route, without checking its input again.

    x: float array ``(N, C, *spatial)``, already checked by the layer; gamma, beta: (C,)
    or None; stats: None (batch statistics) or per-channel (mean, var), each (C,).
    Returns ``(out, cache)`` as :func:`norm_forward`; the cache's gamma has the shape
    (1, C, 1, ...), so dgamma and dbeta come back in that shape.
    """
    axes = F.batch_axes(x.ndim)
    keepdims = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    if x.dtype not in _FLOATS or x.size == 0:
        return F.norm_forward(
            x,
            *_reshaped((gamma, beta), keepdims),
            axes,
            eps,
            stats=None if stats is None else _reshaped(stats, keepdims),
        )
    n, c = x.shape[:2]
    layout = Layout(n, c, x.size // (n * c), keepdims)
    gamma_full, beta_full = _reshaped((gamma, beta), keepdims)
    mean, var = (None, None) if stats is None else stats
    return _forward(x, layout, axes, eps, gamma_full, beta_full, gamma, beta, mean, var)


def _reshaped(arrays, shape):
    return tuple(None if a is None else a.reshape(shape) for a in arrays)


def _forward(x, layout, axes, eps, gamma, beta, gamma_k, beta_k, mean_k, var_k):
    """The fast forward. gamma, beta: as broadcast against x (kept in the cache);
    ``*_k``: the same per group, shape (K,), and the fixed statistics (or None)."""
    dtype = x.dtype
    x3 = x.reshape(layout.full)
    xc = np.empty(layout.full, dtype)
    if mean_k is None:
        mu = _group_sum(x3, layout.subscripts) / dtype.type(layout.m)
        var = _center(x3, mu, xc, layout, sum_squares=True) / dtype.type(layout.m)
    else:
        mu, var = mean_k.astype(dtype, copy=False), var_k.astype(dtype, copy=False)
        _center(x3, mu, xc, layout, sum_squares=False)
    inv_std = 1 / np.sqrt(var + dtype.type(eps))
    gamma_k = None if gamma_k is None else gamma_k.astype(dtype, copy=False)
    beta_k = None if beta_k is None else beta_k.astype(dtype, copy=False)
    scale = inv_std if gamma_k is None else inv_std * gamma_k
    out = _scale_shift(xc, scale, beta_k, layout)
    kd = layout.keepdims
    cache = dict(
        x=x,
        xc=xc.reshape(x.shape),
        mu=mu.reshape(kd),
        var=var.reshape(kd),
        inv_std=inv_std.reshape(kd),
        gamma=None if gamma is None else gamma.astype(dtype, copy=False),
        beta_shape=None if beta is None else beta.shape,
        axes=axes,
        m=layout.m,
        eps=dtype.type(eps),
        fixed_stats=mean_k is not None,
        center=True,
        layout=layout,
        scale=scale,
    )
    return out.reshape(x.shape), cache


def _center(x3, mu, xc, layout, sum_squares):
    """Write ``xc = x - mu``; return the per-group sum of squares of xc if asked
    (computed chunk by chunk while each chunk is in cache)."""
    sub, mu_v = layout.subscripts, mu.reshape(layout.vec)
    total = np.zeros(layout.k, xc.dtype)
    for c in layout.chunks(xc.itemsize):
        part = np.subtract(x3[c], mu_v, out=xc[c])
        if sum_squares:
            total += _group_dot(part, part, sub)
    return total


def _scale_shift(xc, scale, shift, layout):
    """``out = xc * scale + shift``, per-group scale and shift (shift may be None)."""
    out = np.empty_like(xc)
    scale_v = scale.reshape(layout.vec)
    shift_v = None if shift is None else shift.reshape(layout.vec)
    for c in layout.chunks(xc.itemsize):
        part = np.multiply(xc[c], scale_v, out=out[c])
        if shift_v is not None:
            part += shift_v
    return out


# ---------------------------------------------------------------- backward
def norm_backward(dout, cache):
    """:func:`bnlib.functional.norm_backward` for caches of :func:`norm_forward` here.

    With ``x_hat = xc * inv_std`` and per-group sums ``S1 = sum(dout)`` (= dbeta) and
    ``S2 = sum(dout * xc)`` (= dgamma / inv_std)::

        dx = gamma * inv_std * (dout - S1 / m - xc * inv_std**2 * S2 / m)

    and ``dx = gamma * inv_std * dout`` with fixed statistics. Caches without a
    ``layout`` (the fallback) go to the functional backward.
    """
    if "layout" not in cache:
        return F.norm_backward(dout, cache)
    dout = F.check_dout(dout, cache)
    layout, dtype = cache["layout"], dout.dtype
    d3, xc = dout.reshape(layout.full), cache["xc"].reshape(layout.full)
    sum_d, sum_dxc = _two_sums(d3, xc, layout)
    inv_std = cache["inv_std"].reshape(layout.k).astype(dtype, copy=False)
    scale = cache["scale"].astype(dtype, copy=False)  # gamma * inv_std per group
    if cache["fixed_stats"]:
        dx = _scale_shift(d3, scale, None, layout)
    else:
        inv_m = dtype.type(1 / layout.m)
        k_x = sum_dxc * (inv_std * inv_std * inv_m)
        dx = _combine(d3, xc, scale, sum_d * inv_m, k_x, layout)
    gamma, beta_shape = cache["gamma"], cache["beta_shape"]
    dgamma = (
        None if gamma is None else _to_shape(sum_dxc * inv_std, layout, gamma.shape)
    )
    dbeta = None if beta_shape is None else _to_shape(sum_d, layout, beta_shape)
    return dx.reshape(dout.shape), dgamma, dbeta


def _to_shape(per_group, layout, shape):
    """A per-group (K,) gradient summed to a parameter's shape."""
    if shape == layout.keepdims:
        return per_group.reshape(shape)
    return F.sum_to_shape(per_group.reshape(layout.keepdims), shape)


def _two_sums(d3, xc, layout):
    """Per-group ``sum(dout)`` and ``sum(dout * xc)`` in one pass over the chunks."""
    sub = layout.subscripts
    sum_d = np.zeros(layout.k, d3.dtype)
    sum_dxc = np.zeros(layout.k, d3.dtype)
    for c in layout.chunks(d3.itemsize):
        sum_d += _group_sum(d3[c], sub)
        sum_dxc += _group_dot(d3[c], xc[c], sub)
    return sum_d, sum_dxc


def _combine(d3, xc, scale, k_1, k_x, layout):
    """``dx = scale * (dout - k_1 - xc * k_x)`` with per-group scale, k_1, k_x."""
    dx = np.empty_like(d3)
    scale_v, k1_v, kx_v = (v.reshape(layout.vec) for v in (scale, k_1, k_x))
    for c in layout.chunks(d3.itemsize):
        part = np.multiply(xc[c], kx_v, out=dx[c])
        part += k1_v
        np.subtract(d3[c], part, out=part)
        part *= scale_v
    return dx
