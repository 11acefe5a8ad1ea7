"""Self-checks for the course's exercises.

* Code checkers, ``check_<what>(your_function)``, run your code on four seeded cases
  (eps from 1e-5 to 0.1, batches of 2 to 16, float64 and float32), compare each output
  with bnlib's and name the likely mistake.
* :func:`check_answer` ``(label, value)`` judges a number or a small array against an
  answer key of ``ANSWERS``, computed with bnlib or numpy.

Both return a :class:`CheckResult`. A failure shows the failing case and the call that
recreates it (:func:`case`). No checker prints the answer or raises, whatever it gets.

A checker used by one chapter lives in that chapter's module, built from the same
parts: :func:`never_raises`, :func:`judge_cases`, :func:`call_reader`,
:func:`reader_outputs`, :func:`reader_name` and :func:`copy_array`.

    >>> result = check_batchnorm_forward(my_batchnorm_forward)
    >>> result            # prints the report
    >>> assert result.passed
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import os
import re
import sys
import traceback
from dataclasses import dataclass, field

import numpy as np

from . import functional as F

__all__ = [
    "CheckResult",
    "case",
    "CASE_FIELDS",
    "check_batchnorm_forward",
    "check_batchnorm_backward",
    "check_layernorm_forward",
    "check_layernorm_backward",
    "check_rmsnorm_backward",
    "check_instancenorm_forward",
    "check_answer",
    "ANSWERS",
    "answer_key",
    "DMU_TERM",
    "DVAR_TERM",
    "never_raises",
    "judge_cases",
    "call_reader",
    "reader_outputs",
    "reader_name",
    "copy_array",
]

TOL64, TOL32 = 1e-6, 1e-4  # largest difference over largest entry, by precision


UNANSWERED = "no answer yet"  # the cause of a starter cell's ``...``


@dataclass
class CheckResult:
    """Outcome of a check: ``passed``, a readable ``report``, the named ``cause``."""

    name: str
    passed: bool
    lines: list = field(default_factory=list)
    cause: str | None = None

    @property
    def report(self) -> str:
        mark = "PASSED" if self.passed else "FAILED"
        mark = "NO ANSWER YET" if self.cause == UNANSWERED else mark
        return "\n".join([f"{self.name}: {mark}"] + ["  " + s for s in self.lines])

    def __bool__(self):
        return self.passed

    def __repr__(self):
        return self.report


class _Fail(Exception):
    """A rejection: the message, and the named mistake or a hint."""

    def __init__(self, message, cause=None, hint=None):
        super().__init__(message)
        self.message, self.cause, self.hint = message, cause, hint


def never_raises(check):
    """Decorate a checker so that it reports, rather than raises, on anything it is
    given; a starter's ``...`` or empty skeleton is reported as not answered yet."""

    name = check.__name__.removeprefix("check_").replace("_", " ")

    @functools.wraps(check)
    def guarded(*args, **kwargs):
        unwritten = [a for a in args if a is Ellipsis or _is_stub(a)]
        if unwritten and check.__name__ != "check_answer":  # a starter, as it comes
            what = getattr(unwritten[0], "__name__", "the ...")
            return CheckResult(name, False, [f"fill in {what}"], UNANSWERED)
        try:
            with np.errstate(all="ignore"):
                return check(*args, **kwargs)
        except Exception as err:  # an input no rule foresaw: say so plainly
            why = f"could not judge this answer ({type(err).__name__}: {err})"
            return CheckResult(name, False, [why])

    return guarded


def _is_stub(fn) -> bool:
    """A function whose body does nothing but return None (``...``, ``pass`` or a
    docstring alone), or a class whose ``forward`` is one: a starter's skeleton."""
    import dis

    if inspect.isclass(fn):  # a layer class whose forward is a skeleton
        return _is_stub(vars(fn).get("forward"))
    if not inspect.isfunction(fn) or fn.__name__ == "<lambda>":
        return False
    ops = [
        (i.opname, i.argval)
        for i in dis.get_instructions(fn)
        if i.opname not in ("RESUME", "NOP", "CACHE")
    ]
    return ops in (
        [("LOAD_CONST", None), ("RETURN_VALUE", None)],
        [("RETURN_CONST", None)],
    )


# ------------------------------------------------------------------ the reader's code
_HERE = os.path.dirname(os.path.abspath(__file__))


def reader_name(role, fn):
    """How reports name the reader's function: ``"your forward (my_forward)"``."""
    name = getattr(fn, "__name__", "")
    return f"your {role}" + (f" ({name})" if name.isidentifier() else "")


def call_reader(who, fn, *args, **kwargs):
    """``fn(*args)``; an exception becomes a failed check naming ``who`` and the line
    of the reader's code that raised."""
    if not callable(fn):
        raise _Fail(
            f"{who} is not callable (got {type(fn).__name__}): pass the function "
            "itself, check(my_function), not check(my_function(...))"
        )
    try:
        return fn(*args, **kwargs)
    except Exception as err:
        mine = [
            f
            for f in traceback.extract_tb(err.__traceback__)
            if not f.filename.startswith(_HERE) and "numpy" not in f.filename
        ]
        at = (
            f", in {mine[-1].name}: `{mine[-1].line}`" if mine and mine[-1].line else ""
        )
        raise _Fail(f"{who} raised {type(err).__name__}: {err}{at}") from None


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


def reader_outputs(result, names, required, who):
    """The reader's outputs as a tuple (a bare array is one output); a _Fail if there
    are fewer than ``required`` or more than ``names``."""
    spec = f"({', '.join(names)})" if len(names) > 1 else names[0]
    if isinstance(result, dict):
        keys = ", ".join(map(str, list(result)[:4]))
        raise _Fail(
            f"{who} returned a dict (keys {keys}); return {spec}, in this order"
        )
    if isinstance(result, (tuple, list)):
        got = tuple(result)
    else:
        got = () if result is None else (result,)
    while len(got) > len(names) and got[-1] is None:
        got = got[:-1]
    if len(got) < required:
        missing = ", ".join(names[len(got) : required])
        raise _Fail(
            f"{who} returned {len(got)} output(s), expected {spec}: {missing} "
            f"{'is' if required - len(got) == 1 else 'are'} missing; return all of "
            "them, in this order"
        )
    if len(got) > len(names):
        raise _Fail(
            f"{who} returned {len(got)} outputs, expected {spec}; return exactly "
            "these, in this order"
        )
    return got


def _as_array(v, name):
    """``v`` as a float array, or a _Fail saying why it is none."""
    if v is None:
        raise _Fail(f"{name} is None: return it (a function without return gives None)")
    try:
        a = np.asarray(v)
    except Exception:
        a = np.asarray(None)
    if a.dtype.kind not in "biuf":
        raise _Fail(f"{name} is not an array of real numbers (got {type(v).__name__})")
    return a if a.dtype.kind == "f" else a.astype(np.float64)


def _rel_err(g, w):
    """Largest difference over largest entry of w; inf for NaN or another shape."""
    if g.shape != np.shape(w) or not np.all(np.isfinite(g)):
        return np.inf
    scale = max(np.max(np.abs(w), initial=0), 1e-12)
    return float(np.max(np.abs(g - w), initial=0) / scale)


# ------------------------------------------------------------------ the cases
#: Case k: (m, n, eps, dtype). Case 0 has one group with a tiny spread (eps matters).
_SPECS = (
    (4, 3, 1e-5, np.float64),
    (6, 5, 1e-3, np.float64),
    (2, 4, 0.1, np.float64),
    (16, 3, 1e-4, np.float32),
)

#: What ``case(kind, k)`` returns, in this order.
CASE_FIELDS = {
    "batchnorm": ("x", "gamma", "beta", "dout", "eps"),
    "batchnorm-eval": ("x", "gamma", "beta", "dout", "eps", "mean", "var"),
    "layernorm": ("x", "gamma", "beta", "dout", "eps"),
    "rmsnorm": ("x", "gamma", "dout", "eps"),
    "instancenorm": ("x", "eps"),
    "layer": ("xs", "douts", "gamma", "beta", "eps", "momentum"),
    "fold": ("W", "b", "gamma", "beta", "mean", "var", "eps"),
    "gradient-change": ("model", "x", "y", "lr"),
}

#: The axes each kind normalizes over, and what the reports call one group.
_GROUPS = {
    "batchnorm": ((0,), "feature"),
    "batchnorm-eval": ((0,), "feature"),
    "layernorm": ((1,), "example"),
    "rmsnorm": ((1,), "example"),
    "instancenorm": ((2,), "(example, channel) pair"),
    "layer": ((0,), "feature"),
}


def _draw(kind, k):
    """Case k of ``kind``: a dict of the fields of :data:`CASE_FIELDS` and k, dtype,
    tiny (the index of the tiny group, or None)."""
    m, n, eps, dtype = _SPECS[k]
    rng = np.random.default_rng(k)
    if kind == "gradient-change":
        from .models import make_mlp

        model = make_mlp([3, 4, 2], "sigmoid", None, rng=k)
        x, y = rng.normal(size=(m, 3)), rng.integers(0, 2, m)
        return dict(k=k, model=model, x=x, y=y, lr=(0.5, 0.1, 1.0)[k], dtype=np.float64)
    shape = (m, n, n + 2) if kind == "instancenorm" else (m, n)
    c = dict(x=rng.normal(1.5, 2.0, shape), dout=rng.normal(size=shape))
    c.update(gamma=rng.uniform(0.5, 2.0, n), beta=rng.normal(size=n))
    c.update(mean=rng.normal(size=n), var=rng.uniform(0.5, 2.0, n))
    c.update(W=rng.normal(size=(n, m)), b=rng.normal(size=n))
    c.update(xs=rng.normal(1.5, 2.0, (4, m, n)), douts=rng.normal(size=(3, m, n)))
    tiny = None
    if k == 0:
        c["var"][0] = 2e-5
        if kind in _GROUPS and kind != "layer":
            axes = _GROUPS[kind][0]
            tiny = tuple(slice(None) if a in axes else 0 for a in range(len(shape)))
            c["x"][tiny] = 1e-3 * rng.normal(size=c["x"][tiny].shape)
    c = {key: v.astype(dtype) for key, v in c.items()}
    return dict(
        c, k=k, eps=eps, momentum=(0.1, 0.2, 0.1, 0.3)[k], dtype=dtype, tiny=tiny
    )


def case(kind, k):
    """The inputs of case ``k`` (0 to 3) of a check, as the tuple ``CASE_FIELDS[kind]``:
    ``x, gamma, beta, dout, eps = bnlib.exercises.case("batchnorm", 2)``."""
    if kind not in CASE_FIELDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {list(CASE_FIELDS)}")
    c = _draw(kind, k)
    return tuple(c[f] for f in CASE_FIELDS[kind])


def _describe(kind, c):
    fields = CASE_FIELDS[kind]
    arrays = [f"{f} {c[f].shape}" for f in fields if isinstance(c[f], np.ndarray)]
    scalars = [f"{f} = {c[f]:g}" for f in ("eps", "momentum", "lr") if f in fields]
    what = ", ".join(arrays + [np.dtype(c["dtype"]).name] + scalars)
    return f"case {c['k']} (seed {c['k']}): {what}"


# ------------------------------------------------------------------ judging outputs
def judge_cases(name, kind, outputs, run, reference, mistakes, doc, compare_with):
    """Run the reader's code on every case of ``kind`` and judge each output.

    outputs: [(name, its expected shape in words)], in return order.
    run(c): the reader's outputs on case c (in its dtype); may raise _Fail.
    reference(c64), mistakes[cause](c64): outputs on the float64 copy of the case (a
    mistake gives None where it says nothing). doc: the checker's docstring, shown
    as the interface.
    """
    ks, seen = range(3) if kind == "gradient-change" else range(len(_SPECS)), []
    for k in ks:
        c = _draw(kind, k)
        seen.append(c)
        c64 = {
            key: v.astype(float) if getattr(v, "dtype", None) == c["dtype"] else v
            for key, v in c.items()
        }
        try:
            got, want = run(c), reference(c64)
            got = [_as_array(g, o[0]) for g, o in zip(got, outputs)]
            got = [
                _fit_shape(g, w, i, outputs, want)
                for i, (g, w) in enumerate(zip(got, want))
            ]
            for i in range(len(got)):
                _judge(
                    i, got, want[i], c, c64, outputs[i][0], mistakes, kind, compare_with
                )
        except _Fail as fail:
            lines = [fail.message, f"on {_describe(kind, c)}."]
            if fail.cause or fail.hint:
                lines.append(
                    ("Most likely cause: " if fail.cause else "Hint: ")
                    + (fail.cause or fail.hint)
                )
            fields = ", ".join(CASE_FIELDS[kind])
            lines.append(f"Recreate it: {fields} = bnlib.exercises.case({kind!r}, {k})")
            interface = re.sub(r":\w+:`([^`]*)`", r"\1", doc).replace("``", "")
            lines.append("Interface: " + " ".join(interface.split()[1:]))
            return CheckResult(name, False, lines, fail.cause)
    lead = next(f for f in CASE_FIELDS[kind] if isinstance(c[f], np.ndarray))
    shapes = ", ".join(str(c[lead].shape) for c in seen)
    eps = ", ".join(f"{c['eps']:g}" for c in seen) if "eps" in c else ""
    f32 = " and float32 (judged at float32 tolerance, 1e-4)" if len(ks) > 3 else ""
    done = f"all {len(outputs)} output(s) match bnlib's on {len(ks)} cases: {lead} "
    done += f"{shapes}{'; eps ' + eps if eps else ''}; float64{f32}."
    return CheckResult(name, True, [done])


def _fit_shape(g, w, i, outputs, want):
    """``g`` in w's shape if they differ by leading 1s only ((1, n) for (n,)), else a
    _Fail that names the output whose shape g has."""

    def strip(s):
        return tuple(s)[next((j for j, d in enumerate(s) if d != 1), len(s)) :]

    if strip(g.shape) == strip(np.shape(w)):
        return g.reshape(np.shape(w))
    name, doc = outputs[i]
    msg = f"{name} has shape {g.shape}, expected {np.shape(w)}: {doc}"
    same = [
        o[0] for o, v in zip(outputs, want) if o[0] != name and np.shape(v) == g.shape
    ]
    if same:
        order = ", ".join(o[0] for o in outputs)
        msg += f"; that is the shape of {same[0]}: return ({order}), in this order"
    raise _Fail(msg)


def _judge(i, got, w, c, c64, name, mistakes, kind, compare_with):
    """Pass output i, or raise a _Fail with the diagnosis (tolerance by precision)."""
    g = got[i]
    narrowed = g.dtype.itemsize < 8 and c["dtype"] == np.float64
    tol = TOL32 if c["dtype"] == np.float32 or narrowed else TOL64
    err = _rel_err(g, w)
    if err <= tol and not narrowed:
        return
    if err <= tol:
        raise _Fail(
            f"{name} is {g.dtype} although the inputs are float64; its values agree "
            "at float32 tolerance, so something casts to float32 (np.float32, astype, "
            "a float32 array): keep the inputs' dtype"
        )
    if np.all(np.isfinite(g)):
        diff = float(np.max(np.abs(g - w)))
        msg = f"{name} is off: largest difference {diff:.3g} ({err:.2g} relative)"
    else:
        msg = f"{name} has NaN or inf in {np.sum(~np.isfinite(g))} of {g.size} entries"
    msg += f" (judged at {tol:.0e}{', float32 tolerance' if tol == TOL32 else ''})"
    if narrowed:
        msg += f"; {name} is {g.dtype} although the inputs are float64"
    cause = _diagnose(i, got, w, c64, mistakes, tol)
    axes, group = _GROUPS.get(kind, (None, ""))
    hint = _pattern(
        name,
        g,
        w,
        axes if g.ndim > 1 else None,
        group,
        c.get("tiny"),
    )
    raise _Fail(msg, cause, None if cause else f"{hint}. {compare_with}")


def _diagnose(i, got, w, c64, mistakes, tol):
    """The first catalogued mistake whose outputs match the reader's on this case (a
    mistake that gives the right output i here, e.g. a hard-coded eps on a case with
    that eps, cannot be what went wrong)."""
    for cause, fn in mistakes.items():
        try:
            mw = fn(c64)
        except Exception:  # this mistake cannot happen on this case
            continue
        if mw[i] is None or _rel_err(np.asarray(mw[i], float), w) <= tol:
            continue
        if all(
            w is None or _rel_err(g, np.asarray(w, float)) <= 10 * tol
            for g, w in zip(got, mw)
        ):
            return cause
    return None


def _pattern(name, g, w, axes, group, tiny):
    """How g differs from w on the failing case, in words, without w's values."""
    if not np.all(np.isfinite(g)):
        return "look for a division by zero or the square root of a negative number"
    if not np.any(g):
        return f"{name} is all zeros: compute it, and return (or store) it"
    atol = 1e-3 * np.max(np.abs(w))
    if np.allclose(g, -w, atol=atol):
        return f"{name} has the wrong sign"
    if axes:  # judged group by group, each at its own scale
        scale = np.max(np.abs(w), axis=axes, keepdims=True)
        near = np.abs(g - w) <= 1e-3 * np.maximum(scale, 1e-12)
        bad = ~np.all(near, axis=axes)
        if not bad.any():
            return f"{name} is off only slightly (under 0.1 %) in every {group}"
        if tiny is not None and bad.sum() == 1 and bad.ravel()[0]:
            return (
                f"only the {group} with a tiny spread (values about 1e-3) is off: look "
                "at how you use eps"
            )
        if bad.sum() < bad.size:
            return f"only {bad.sum()} of the {bad.size} {group}s are off"
        if np.all(np.ptp(g - w, axis=axes, keepdims=True) <= 1e-3 * scale):
            return f"{name} is off by a shift, the same within each {group}"
        f = np.sum(g * w, axis=axes, keepdims=True) / np.sum(
            w * w, axis=axes, keepdims=True
        )
        if np.allclose(g, f * w, atol=atol):
            return f"{name} is off by a factor, the same within each {group}"
    return "no simple pattern"


# ------------------------------------------------------------------ normalization
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


def copy_array(v):
    """A copy of ``v`` if it is an array (the reader's code cannot change a case),
    else ``v`` itself."""
    return v.copy() if isinstance(v, np.ndarray) else v


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


# ------------------------------------------------------------------ numeric answers
# label -> dict(what, tol, rel, any_order, each, right, wrong, also): see answer_key.
# (No doc comment on purpose: the API page must not print the keys.)
# Each chapter module registers its chapter's keys when it is imported.
ANSWERS: dict = {}


def answer_key(label, what, tol, right, wrong=None, also=None, **options):
    """Register the answer key of exercise part ``label``.

    what: the answer in words (shown in every message); tol: the tolerance, absolute,
    or relative with ``rel=True``; ``any_order=True`` compares sorted values;
    ``each=True`` judges every value given against the one right number;
    ``keyed=True`` accepts a dict, its values in order (a row of a chapter's table).
    right: the value, or a function computing it (called when checked).
    wrong: {the mistake it reveals: wrong value}; also: {note: a value also right}.
    """
    opts = dict(rel=False, any_order=False, each=False, keyed=False) | options
    ANSWERS[label] = dict(what=what, tol=tol, right=right, wrong=wrong or {}, **opts)
    ANSWERS[label]["also"] = also or {}


def _value(v):
    return np.asarray(v() if callable(v) else v)


@never_raises
def check_answer(label, value):
    """Judge ``value`` (a number, or a list, tuple or array of numbers; a dict where
    the key says so, e.g. a table row) for the
    exercise part ``label`` of ``ANSWERS``, within the key's stated tolerance; a
    known wrong value is named with the mistake it reveals. The answer is not shown."""
    if not isinstance(label, str) or label not in ANSWERS:
        near = difflib.get_close_matches(str(label), list(ANSWERS), n=3)
        tip = ", ".join(near) if near else "one of bnlib.exercises.ANSWERS"
        chapter = re.match(r"ex-ch(\d)-", str(label))
        if chapter and not near:  # its chapter module registers the keys on import
            tip = f"running the chapter's first cell (it imports ch{chapter[1]})"
        return CheckResult(str(label), False, [f"no answer key {label!r}; try {tip}"])
    key = ANSWERS[label]
    if value is Ellipsis:  # the starter cell, not filled in yet
        return CheckResult(label, False, [f"expected: {key['what']}"], UNANSWERED)
    what, tol, want = key["what"], key["tol"], _value(key["right"])
    is_bool, want = want.dtype == bool, want.astype(float).ravel()
    judged = "exactly" if tol == 0 else f"to ±{tol:g}"
    judged = f"to a relative {tol:.0%}" if key["rel"] else judged
    if isinstance(value, dict) and not key["keyed"]:
        msg = f"give a tuple or list, not a dict, in this order: {key['what']}"
        return CheckResult(label, False, [msg])
    try:
        v = np.asarray(
            list(value.values()) if isinstance(value, dict) else value, float
        )
    except Exception:
        v = np.full(want.size + 1, np.nan)
    v = v.ravel()
    if not (v.size == want.size or key["each"] and v.size) or not np.isfinite(v).all():
        msg = f"expected {want.size} finite number(s): {what}; got {value!r:.60}"
        return CheckResult(label, False, [msg])

    def close(a, b):
        a, b = np.asarray(a, float).ravel(), _value(b).astype(float).ravel()
        b = np.full(a.size, b[0]) if key["each"] and b.size == 1 else b
        if a.shape != b.shape:
            return False
        a, b = (np.sort(a), np.sort(b)) if key["any_order"] else (a, b)
        room = tol * (np.abs(b) if key["rel"] else 1) + 1e-12 * np.abs(b)
        return bool(np.all(np.abs(a - b) <= room))

    right = f"right: {what}, judged {judged}."
    if close(v, want):
        return CheckResult(label, True, [right])
    note = next((note for note, alt in key["also"].items() if close(v, alt)), None)
    if note:
        return CheckResult(label, True, [f"{right} {note}"])
    cause = next((msg for msg, w in key["wrong"].items() if close(v, w)), None)
    hint = (
        ("Most likely cause: " + cause)
        if cause
        else "Hint: " + _answer_hint(v, want, close, what, is_bool, key["any_order"])
    )
    return CheckResult(
        label, False, [f"not right: {what}, judged {judged}.", hint], cause
    )


def _answer_hint(v, want, close, what, is_bool, key_any_order=False):
    """A generic diagnosis of a wrong value that no key names."""
    if np.all(np.abs(want) <= 1) and np.any(want) and close(v / 100, want):
        return "this looks like a percentage; give a fraction (0.5, not 50)"
    if v.size > 1 and not is_bool and close(np.sort(v), np.sort(want)):
        return f"the right numbers in the wrong order; give {what}"
    if np.any(want) and close(-v, want):
        return "the right size with the wrong sign"
    if v.size > 1 and want.size == v.size:
        right = [
            str(i + 1) for i in range(v.size) if close(v[i : i + 1], want[i : i + 1])
        ]
        which = (
            f" (number {', '.join(right)}, counting from 1 in the order given)"
            if right and not is_bool and not key_any_order
            else ""
        )
        return f"{len(right)} of {v.size} values are right{which}"
    return "not one of the common mistakes; rework it from the exercise text"
