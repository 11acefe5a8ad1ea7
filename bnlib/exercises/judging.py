"""Judging a reader's code: the checker's contract (:func:`never_raises`), calling the
reader's function (:func:`call_reader`, :func:`reader_outputs`) and comparing its
outputs with bnlib's case by case, naming the likely mistake (:func:`judge_cases`)."""

from __future__ import annotations

import functools
import inspect
import os
import re
import traceback
from dataclasses import dataclass, field

import numpy as np

from .cases import _GROUPS, _SPECS, CASE_FIELDS, _describe, _draw

__all__ = [
    "CheckResult",
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
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # bnlib/


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


def copy_array(v):
    """A copy of ``v`` if it is an array (the reader's code cannot change a case),
    else ``v`` itself."""
    return v.copy() if isinstance(v, np.ndarray) else v


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
