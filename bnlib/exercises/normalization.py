"""Checkers of the reader's normalization code (BatchNorm, LayerNorm, RMSNorm and
InstanceNorm, forward and backward), each with its catalogue of likely mistakes."""

from __future__ import annotations

import math
import sys

import numpy as np

from .. import functional as F
from .cases import _GROUPS, CASE_FIELDS
from .judging import (
    _Fail,
    call_reader,
    copy_array,
    judge_cases,
    never_raises,
    reader_name,
    reader_outputs,
)

__all__ = [
    "check_batchnorm_forward",
    "check_batchnorm_backward",
    "check_layernorm_forward",
    "check_layernorm_backward",
    "check_rmsnorm_backward",
    "check_instancenorm_forward",
    "DMU_TERM",
    "DVAR_TERM",
]


def _shape_or_none(v):
    try:
        return np.shape(v)
    except Exception:  # a ragged sequence
        return None


def _forward_out(result, shape, who):
    """``(out, cache)`` of a forward returning out or (out, cache); cache or None."""
    if isinstance(result, dict):
        raise _Fail(f"{who} returned a dict; return out, or the tuple (out, cache)")
    if isinstance(result, (tuple, list)) and len(result) == 2:
        out, cache = result
        if (
            isinstance(out, dict)
            or isinstance(out, tuple)
            and _shape_or_none(cache) == shape
        ):
            raise _Fail(f"{who} returned (cache, out); return (out, cache), out first")
        if isinstance(cache, (dict, tuple)) or _shape_or_none(out) == shape:
            return out, cache
    return result, None


#: The library forward of each kind, on a case: (out, cache).
_LIBRARY = {
    "batchnorm": lambda c: F.batchnorm_forward(c["x"], c["gamma"], c["beta"], c["eps"]),
    "batchnorm-eval": lambda c: F.batchnorm_forward(
        c["x"], c["gamma"], c["beta"], c["eps"], stats=(c["mean"], c["var"])
    ),
    "layernorm": lambda c: F.layernorm_forward(
        c["x"], c["gamma"], c["beta"], 1, c["eps"]
    ),
    "rmsnorm": lambda c: F.rmsnorm_forward(c["x"], c["gamma"], 1, c["eps"]),
    "instancenorm": lambda c: F.norm_forward(c["x"], None, None, (2,), c["eps"]),
}

#: The two terms of dx that exist because x also feeds the mean and the variance, as
#: the hints write them: dx = dx_hat * inv_std + DMU_TERM + DVAR_TERM, where
#: dx_hat = dout * gamma, inv_std = 1 / sqrt(var + eps), sums run over each normalized
#: group (the batch for BatchNorm, the features for LayerNorm) and m is its size.
DMU_TERM = "-inv_std * sum(dx_hat) / m"
DVAR_TERM = "-inv_std * x_hat * sum(dx_hat * x_hat) / m"


def _normalize(c, axes, center=True, ddof=0, eps=None, den="sqrt", affine=True):
    """The forward over ``axes`` with one deliberate mistake (the defaults: none).
    den: "sqrt" sqrt(var + eps), "outside" sqrt(var) + eps, "var" var + eps;
    affine: True, False (x_hat) or "swap" (gamma and beta swapped)."""
    x, eps = c["x"], c["eps"] if eps is None else eps
    mu = x.mean(axes, keepdims=True) if center else 0.0
    var = ((x - mu) ** 2).sum(axes, keepdims=True) / (
        math.prod(x.shape[a] for a in axes) - ddof
    )
    d = {"sqrt": np.sqrt(var + eps), "outside": np.sqrt(var) + eps, "var": var + eps}
    x_hat = (x - mu) / d[den]
    gamma, beta = (
        (c["beta"], c["gamma"]) if affine == "swap" else (c["gamma"], c["beta"])
    )
    return gamma * x_hat + beta if affine else x_hat


def _forward_mistakes(kind):
    axes = _GROUPS[kind][0]
    size = {"batchnorm": "m", "layernorm": "n", "rmsnorm": "d"}.get(kind, "L")
    base = dict(axes=axes, affine=kind != "instancenorm", center=kind != "rmsnorm")
    affine = base["affine"]

    def v(**kw):
        def run(c):  # RMSNorm has no beta
            c = dict(c, beta=0.0) if kind == "rmsnorm" else c
            return (_normalize(c, **{**base, **kw}),)

        return run

    mistakes = {
        f"used the unbiased variance (divided by {size} - 1); normalize with the "
        f"biased variance (divide by {size}), as the paper and PyTorch do": v(ddof=1),
        "added eps outside the square root; use sqrt(var + eps)": v(den="outside"),
        "divided by the variance instead of the standard deviation sqrt(var + eps)": v(
            den="var"
        ),
        "ignored the eps argument and used 1e-5; use the eps you are given": v(
            eps=1e-5
        ),
        "left eps out; it matters where a group's variance is tiny": v(eps=0.0),
    }
    if affine:
        mistakes["returned x_hat without the affine step gamma * x_hat + beta"] = v(
            affine=False
        )
        mistakes["swapped gamma and beta"] = v(affine="swap")
    wrong_axes = {
        "batchnorm": {
            (1,): "normalized each example over its features (axis 1, that is "
            "LayerNorm); batch norm averages over the batch, axis 0"
        },
        "layernorm": {
            (0,): "normalized over the batch (axis 0, that is BatchNorm); layer norm "
            "normalizes each example over its features, axis -1"
        },
        "instancenorm": {
            (0, 2): "averaged over the batch and the positions (axes 0, 2: that is "
            "BatchNorm); instance norm averages over the positions only, axis 2",
            (1, 2): "averaged over the channels and the positions (axes 1, 2: that is "
            "LayerNorm); instance norm averages over the positions only, axis 2",
            (1,): "averaged over the channels (axis 1); instance norm averages over "
            "the positions, axis 2",
        },
    }.get(kind, {})
    mistakes.update({cause: v(axes=ax) for ax, cause in wrong_axes.items()})
    if kind == "instancenorm":
        mistakes["did not subtract the mean (that is RMSNorm)"] = v(center=False)
    if kind == "rmsnorm":
        mistakes["subtracted the mean (that is LayerNorm); RMSNorm does not"] = v(
            center=True
        )
    return mistakes


def _grads(c, axes, center=True, drop=(), ddof=0, eps=None, sums=None, size_axis=None):
    """(dx, dgamma, dbeta) of the normalization over ``axes`` with one deliberate
    mistake: the terms in ``drop`` left out ("dmu", "dvar", "stats", "gamma"; "mean"
    adds LayerNorm's term without centering; "gamma_out" takes gamma out of the sums;
    "fixed": evaluation mode, with c's mean and var), an unbiased variance, another
    eps, the sums over ``sums`` instead of ``axes``, m the size of ``size_axis``."""
    x, gamma, dy = c["x"], c["gamma"], c["dout"]
    eps = c["eps"] if eps is None else eps
    if "fixed" in drop:
        mu, var = c["mean"], c["var"]
    else:
        mu = x.mean(axes, keepdims=True) if center else 0.0
        var = ((x - mu) ** 2).mean(axes, keepdims=True)
    inv = 1 / np.sqrt(var + eps)
    x_hat = (x - mu) * inv
    m = math.prod(x.shape[a] for a in axes) if size_axis is None else x.shape[size_axis]
    g = dy if {"gamma", "gamma_out"} & set(drop) else dy * gamma
    inner, sums = m * g, axes if sums is None else sums
    if "dvar" not in drop:
        s = (g * x_hat).sum(sums, keepdims=True)
        inner = inner - x_hat * s * (m / (m - 1) if ddof else 1)
    if "dmu" not in drop and (center or "mean" in drop):
        inner = inner - g.sum(sums, keepdims=True)
    dx = inv / m * inner * (gamma if "gamma_out" in drop else 1)
    dx = g * inv if {"fixed", "stats"} & set(drop) else dx
    return dx, (dy * x_hat).sum(0), dy.sum(0)


def _backward_mistakes(kind):
    axes = _GROUPS[kind][0]
    over = {"batchnorm": "the batch", "layernorm": "each example's features"}.get(
        kind, "each vector's d features"
    )

    def v(**kw):
        return lambda c: _grads(c, **{"axes": axes, "center": kind != "rmsnorm", **kw})

    def dx_only(**kw):
        return lambda c: (v(**kw)(c)[0], None, None)

    if kind == "batchnorm-eval":

        def fixed(drop=(), **kw):
            return dx_only(drop=("fixed", *drop), **kw)

        return {
            "used the training-mode gradient; in evaluation mode the mean and "
            "variance are constants, so dx = gamma * dout * inv_std": dx_only(),
            "forgot gamma: dx = gamma * dout * inv_std": fixed(("gamma",)),
            "ignored the cache's eps and used 1e-5": fixed(eps=1e-5),
            "left eps out of inv_std = 1 / sqrt(var + eps)": fixed(eps=0.0),
            "divided by var + eps instead of its square root": lambda c: (
                c["gamma"] * c["dout"] / (c["var"] + c["eps"]),
                None,
                None,
            ),
        }
    if kind == "rmsnorm":
        mistakes = {
            "forgot the projection term -x_hat * sum(g * x_hat) / (d r), that is, "
            "treated r as a constant: x also feeds r": dx_only(drop=("dvar",)),
            "added LayerNorm's -sum(g) term; RMSNorm does not subtract the mean, so "
            "its backward has no such term": dx_only(drop=("mean",)),
            "left eps out of r = sqrt(mean(x**2) + eps)": dx_only(eps=0.0),
        }
    else:
        mistakes = {
            f"forgot the dmu term: x feeds the mean too, which adds {DMU_TERM} to "
            "every entry (inv_std = 1 / sqrt(var + eps), dx_hat = dout * gamma, sums "
            f"over {over})": dx_only(drop=("dmu",)),
            f"forgot the dvar term: x feeds the variance too, which adds {DVAR_TERM} "
            f"(sums over {over})": dx_only(drop=("dvar",)),
            "treated the mean and variance as constants (that is the evaluation-mode "
            "gradient, dx = gamma * dout * inv_std)": dx_only(drop=("stats",)),
            "used an unbiased (m - 1) variance somewhere in the backward": dx_only(
                ddof=1
            ),
            "swapped dgamma and dbeta (dgamma = sum(dout * x_hat), dbeta = "
            "sum(dout))": lambda c: (None, *v()(c)[:0:-1]),
        }
    mistakes["forgot to multiply dout by gamma before back-propagating into x_hat"] = (
        dx_only(drop=("gamma",))
    )
    mistakes["averaged dgamma (and dbeta) over the batch instead of summing"] = (
        lambda c: (None, *(p / len(c["x"]) for p in v()(c)[1:]))
    )
    if kind == "batchnorm":
        mistakes["summed over the features (axis 1), not the batch (axis 0)"] = dx_only(
            sums=(1,)
        )
        return mistakes
    size = "n" if kind == "layernorm" else "d"
    mistakes[f"summed over the batch (axis 0, as BatchNorm does), not over {over}"] = (
        dx_only(sums=(0,))
    )
    mistakes[f"used the batch size for m; here m = {size} (cache['m'])"] = dx_only(
        size_axis=0
    )
    if kind == "layernorm":
        mistakes[
            "took gamma out of the sums, as BatchNorm allows; in LayerNorm gamma "
            "varies inside each group (row), so keep dx_hat = dout * gamma inside"
        ] = dx_only(drop=("gamma_out",))
    return mistakes


def _check_forward(name, kind, fn, doc):
    """Check the reader's forward of ``kind`` against bnlib's."""
    who, affine = reader_name("forward", fn), kind != "instancenorm"

    def run(c):
        args = (c["gamma"].copy(), c["beta"].copy()) if affine else ()
        out = call_reader(who, fn, c["x"].copy(), *args, c["eps"])
        return (_forward_out(out, c["x"].shape, who)[0],)

    library = (
        "bnlib.functional."
        + {
            "batchnorm": "batchnorm_forward(x, gamma, beta, eps)",
            "layernorm": "layernorm_forward(x, gamma, beta, 1, eps)",
            "instancenorm": "norm_forward(x, None, None, (2,), eps)",
        }[kind]
    )
    compare = f"Recreate the case and compare your mu, var, x_hat with {library}[1]"
    return judge_cases(
        name,
        kind,
        [("out", "the shape of x")],
        run,
        lambda c: (_LIBRARY[kind](c)[0],),
        _forward_mistakes(kind),
        doc,
        compare,
    )


_GRAD_OUTPUTS = [
    ("dx", "the shape of x"),
    ("dgamma", "the shape of gamma: one per feature, summed over the batch"),
    ("dbeta", "the shape of beta: one per feature, summed over the batch"),
]


def _check_backward(name, kind, backward, forward, doc):
    """Check the reader's backward of ``kind`` (with their forward, if given)."""
    outputs = _GRAD_OUTPUTS[:2] if kind == "rmsnorm" else _GRAD_OUTPUTS
    names, required = [o[0] for o in outputs], 1 if kind == "rmsnorm" else 3
    who_b, who_f = reader_name("backward", backward), reader_name("forward", forward)

    def run(c):
        if forward is None:
            got, cache = (), _LIBRARY[kind]({k: copy_array(v) for k, v in c.items()})[1]
        else:
            args = [
                c[f].copy() for f in ("x", "gamma", "beta") if f in CASE_FIELDS[kind]
            ]
            got = _forward_out(
                call_reader(who_f, forward, *args, c["eps"]), c["x"].shape, who_f
            )
            if got[1] is None:
                raise _Fail(f"{who_f} returned out alone; return (out, cache)")
            got, cache = got[:1], got[1]
        result = call_reader(who_b, backward, c["dout"].copy(), cache)
        return got + reader_outputs(result, names, required, who_b)

    def reference(c):
        out, cache = _LIBRARY[kind](c)
        dx, dgamma, dbeta = F.norm_backward(c["dout"], cache)
        grads = (dx, dgamma.reshape(-1), None if dbeta is None else dbeta.reshape(-1))
        return ((out,) if forward is not None else ()) + grads[: len(names)]

    mistakes = _backward_mistakes(kind)
    if forward is not None:  # the reader's out comes first
        mistakes = {k: (lambda c, f=f: (None, *f(c))) for k, f in mistakes.items()}
        more = _forward_mistakes(kind).items()
        mistakes.update({k: (lambda c, f=f: f(c) + (None,) * 3) for k, f in more})
        outputs = [("out of your forward", "the shape of x")] + outputs
    compare = "Recreate the case and compare your values with bnlib.functional." + (
        "norm_backward(dout, cache)"
        if kind in ("rmsnorm", "batchnorm-eval")
        else "batchnorm_backward_staged(dout, cache, trace={}), which returns the "
        "gradient of every node in trace"
    )
    return judge_cases(name, kind, outputs, run, reference, mistakes, doc, compare)


@never_raises
def check_batchnorm_forward(fn):
    """Check ``fn(x, gamma, beta, eps) -> out`` (or ``(out, cache)``): training-mode
    BatchNorm, x (m, n) normalized with the mean and biased variance of its batch
    (axis 0); gamma, beta (n,); out (m, n)."""
    return _check_forward("batchnorm forward", "batchnorm", fn, _doc())


@never_raises
def check_layernorm_forward(fn):
    """Check ``fn(x, gamma, beta, eps) -> out`` (or ``(out, cache)``): LayerNorm, each
    row of x (m, n) normalized over its n features (axis -1); gamma, beta (n,); out
    (m, n)."""
    return _check_forward("layernorm forward", "layernorm", fn, _doc())


@never_raises
def check_instancenorm_forward(fn):
    """Check ``fn(x, eps) -> out`` (or ``(out, cache)``): InstanceNorm without gamma
    and beta, each channel of each example of x (N, C, L) normalized over its L
    positions (axis 2); out (N, C, L)."""
    return _check_forward("instancenorm forward", "instancenorm", fn, _doc())


@never_raises
def check_batchnorm_backward(backward, forward=None, training=True):
    """Check ``backward(dout, cache) -> (dx, dgamma, dbeta)`` of BatchNorm: x, dout and
    dx (m, n); dgamma, dbeta (n,) ((1, n) accepted). The cache is
    ``bnlib.functional.batchnorm_forward(x, gamma, beta, eps)[1]``, a dict with x,
    x_hat (m, n); mu, var, inv_std, gamma (1, n); eps; and m, the batch size. With
    ``forward=``, your ``forward(x, gamma, beta, eps) -> (out, cache)`` makes the cache
    and its out is checked too. ``training=False`` checks the evaluation-mode gradient,
    on a cache made with ``stats=(mean, var)`` (its var is the given variance)."""
    if training:
        name, kind = "batchnorm backward", "batchnorm"
        return _check_backward(name, kind, backward, forward, _doc())
    name, kind = "batchnorm backward (evaluation)", "batchnorm-eval"
    return _check_backward(name, kind, backward, None, _doc())


@never_raises
def check_layernorm_backward(backward, forward=None):
    """Check ``backward(dout, cache) -> (dx, dgamma, dbeta)`` of LayerNorm over the
    last axis: x, dout and dx (m, n); dgamma, dbeta (n,). The cache is
    ``bnlib.functional.layernorm_forward(x, gamma, beta, 1, eps)[1]`` (or from your
    ``forward=``), a dict with x, x_hat (m, n); mu, var, inv_std (m, 1), one per
    example; gamma (n,); eps; and m = n: the cache's m is the size of each normalized
    group, here the n features of an example, not the batch size."""
    name, kind = "layernorm backward", "layernorm"
    return _check_backward(name, kind, backward, forward, _doc())


@never_raises
def check_rmsnorm_backward(backward, forward=None):
    """Check ``backward(dout, cache) -> dx`` (or ``(dx, dgamma)``) of RMSNorm of each
    row of x (m, d): ``r = sqrt(mean(x**2) + eps)``, ``x_hat = x / r``,
    ``y = gamma * x_hat``. The
    cache is ``bnlib.functional.rmsnorm_forward(x, gamma, 1, eps)[1]`` (or from your
    ``forward(x, gamma, eps) -> (out, cache)``): x, x_hat (m, d); inv_std = 1 / r
    (m, 1); gamma (d,); eps; and m = d, the length of each vector."""
    name, kind = "rmsnorm backward", "rmsnorm"
    return _check_backward(name, kind, backward, forward, _doc())


def _doc():
    """The docstring of the public checker that calls this (the interface)."""
    return globals()[sys._getframe(1).f_code.co_name].__doc__
