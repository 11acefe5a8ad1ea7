"""Checkers for the reader's own implementations.

Each checker runs the reader's function on a few seeded test cases, compares every
output with bnlib's reference and returns a :class:`CheckResult` that says plainly
whether it matches and, if not, which output is off, by how much, and the most
likely cause (found by comparing against a catalogue of common mistakes).

    >>> result = check_batchnorm_forward(my_batchnorm_forward)
    >>> result            # prints the report
    >>> assert result.passed
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import functional as F

__all__ = [
    "CheckResult",
    "check_batchnorm_forward",
    "check_batchnorm_backward",
    "check_layernorm_forward",
    "check_layernorm_backward",
    "DMU_TERM",
    "DVAR_TERM",
]

TOL = 1e-6


@dataclass
class CheckResult:
    """Outcome of a checker: ``passed`` and a human-readable ``report``."""

    name: str
    passed: bool
    lines: list = field(default_factory=list)
    cause: str | None = None

    @property
    def report(self) -> str:
        mark = "PASSED" if self.passed else "FAILED"
        return "\n".join([f"{self.name}: {mark}"] + ["  " + s for s in self.lines])

    def __bool__(self):
        return self.passed

    def __repr__(self):
        return self.report


def _cases(rng_seed=0):
    """Small float64 cases with non-trivial gamma and beta; one feature has a tiny
    spread so that eps matters, and m is small so that m vs m-1 matters."""
    rng = np.random.default_rng(rng_seed)
    cases = []
    for m, n in [(4, 3), (8, 5), (16, 2)]:
        x = rng.normal(1.5, 2.0, (m, n))
        x[:, 0] = 0.3 + 1e-3 * rng.normal(size=m)
        gamma = rng.uniform(0.5, 2.0, n)
        beta = rng.normal(0.0, 1.0, n)
        dout = rng.normal(size=(m, n))
        cases.append(
            dict(
                label=f"m={m}, n={n}", x=x, gamma=gamma, beta=beta, dout=dout, eps=1e-5
            )
        )
    return cases


def _as_tuple(result, k):
    """Accept ``out`` or ``(out, cache)`` from a forward (k = 1); from a backward, the
    outputs as a tuple (a single array counts as one output, so that a missing output
    is reported rather than the rows of dx taken for outputs)."""
    if k == 1:
        return (result[0],) if isinstance(result, tuple) else (result,)
    if result is None or isinstance(result, np.ndarray):
        return () if result is None else (result,)
    return tuple(result)


def _count_problem(names, got):
    """A sentence saying which outputs are missing or extra; None if none are."""
    if len(got) == len(names):
        return None
    expected = f"expected {len(names)} ({', '.join(names)})"
    if len(got) < len(names):
        missing = ", ".join(names[len(got) :])
        return (
            f"your function returned {len(got)} output(s), {expected}: {missing} "
            f"{'is' if len(names) - len(got) == 1 else 'are'} missing; return all of "
            f"them, in this order"
        )
    return (
        f"your function returned {len(got)} outputs, {expected}; return exactly these, "
        f"in this order"
    )


_FALLBACK_HINT = {
    True: "compare your mu, var and x_hat with the cache of "
    "bnlib.functional.norm_forward(x, gamma, beta, axes) on the failing case.",
    False: "compare your intermediate values with "
    "bnlib.functional.batchnorm_backward_staged(dout, cache, trace={}).",
}


def _compare(name, names, run_candidate, run_reference, mistakes):
    lines, worst = [], 0.0
    for case in _cases():
        try:
            got = run_candidate(case)
        except Exception as err:  # the reader's code raised: report it plainly
            return CheckResult(
                name,
                False,
                [
                    f"your function raised {type(err).__name__}: {err} "
                    f"on the case {case['label']}"
                ],
            )
        problem = _count_problem(names, got)
        if problem:
            return CheckResult(name, False, [problem])
        want = run_reference(case)
        for label, g, w in zip(names, got, want, strict=True):
            g = np.asarray(g, dtype=np.float64)
            if g.shape != w.shape:
                return CheckResult(
                    name,
                    False,
                    [
                        f"{label} has shape {g.shape}, expected {w.shape} "
                        f"(case {case['label']})"
                    ],
                )
            err = float(np.max(np.abs(g - w)) / max(np.max(np.abs(w)), 1e-12))
            worst = max(worst, err)
            if not np.isfinite(err) or err > TOL:
                lines.append(
                    f"{label} is off on case {case['label']}: max abs difference "
                    f"{np.max(np.abs(g - w)):.3g} (relative {err:.3g})."
                )
                cause = _diagnose(case, got, names, mistakes)
                lines.append(
                    "Most likely cause: "
                    + (
                        cause
                        or "none of the common mistakes matches; "
                        + _FALLBACK_HINT[names[0] == "out"]
                    )
                )
                return CheckResult(name, False, lines, cause)
    lines.append(
        f"all {len(names)} output(s) match the reference on {len(_cases())} cases "
        f"(max relative error {worst:.1e})."
    )
    return CheckResult(name, True, lines)


def _diagnose(case, got, names, mistakes):
    for cause, fn in mistakes.items():
        want = fn(case)
        if all(
            np.allclose(g, w, rtol=1e-6, atol=1e-9)
            for g, w in zip(got, want, strict=True)
            if w is not None
        ):
            return cause
    return None


# ---------------------------------------------------------------- forward mistakes
def _bn_variant(
    axis=0, ddof=0, eps_outside=False, divide_by_var=False, affine=True, swap=False
):
    def run(c):
        x, g, b, eps = c["x"], c["gamma"], c["beta"], c["eps"]
        mu = x.mean(axis=axis, keepdims=True)
        var = x.var(axis=axis, ddof=ddof, keepdims=True)
        if divide_by_var:
            x_hat = (x - mu) / (var + eps)
        elif eps_outside:
            x_hat = (x - mu) / (np.sqrt(var) + eps)
        else:
            x_hat = (x - mu) / np.sqrt(var + eps)
        if not affine:
            return (x_hat,)
        return ((b * x_hat + g) if swap else (g * x_hat + b),)

    return run


_FORWARD_MISTAKES = {
    "used the unbiased variance (divided by m - 1); normalize with the biased "
    "variance (divide by m), as the paper and PyTorch do": _bn_variant(ddof=1),
    "added eps outside the square root; use sqrt(var + eps)": _bn_variant(
        eps_outside=True
    ),
    "divided by the variance instead of the standard deviation "
    "sqrt(var + eps)": _bn_variant(divide_by_var=True),
    "returned x_hat without the affine step gamma * x_hat + beta": _bn_variant(
        affine=False
    ),
    "swapped gamma and beta": _bn_variant(swap=True),
}


def check_batchnorm_forward(fn):
    """Check ``fn(x, gamma, beta, eps) -> out`` (or ``(out, cache)``) for x (m, n),
    gamma and beta (n,), against training-mode BatchNorm."""
    mistakes = dict(_FORWARD_MISTAKES)
    mistakes[
        "normalized each example over its features (axis 1, that is LayerNorm); "
        "batch norm averages over the batch, axis 0"
    ] = _bn_variant(axis=1)

    def cand(c):
        return _as_tuple(
            fn(c["x"].copy(), c["gamma"].copy(), c["beta"].copy(), c["eps"]), 1
        )

    def ref(c):
        return (F.batchnorm_forward(c["x"], c["gamma"], c["beta"], c["eps"])[0],)

    return _compare("batchnorm forward", ["out"], cand, ref, mistakes)


def check_layernorm_forward(fn):
    """Check ``fn(x, gamma, beta, eps) -> out`` for x (m, n), gamma and beta (n,),
    against LayerNorm over the last axis."""

    def ln_variant(axis=1, ddof=0, eps_outside=False):
        def run(c):
            x, g, b, eps = c["x"], c["gamma"], c["beta"], c["eps"]
            mu = x.mean(axis=axis, keepdims=True)
            var = x.var(axis=axis, ddof=ddof, keepdims=True)
            denom = np.sqrt(var) + eps if eps_outside else np.sqrt(var + eps)
            return (g * (x - mu) / denom + b,)

        return run

    mistakes = {
        "normalized over the batch (axis 0, that is BatchNorm); layer norm "
        "normalizes each example over its features, axis -1": ln_variant(axis=0),
        "used the unbiased variance (divided by n - 1); "
        "use the biased variance": ln_variant(ddof=1),
        "added eps outside the square root; use sqrt(var + eps)": ln_variant(
            eps_outside=True
        ),
    }

    def cand(c):
        return _as_tuple(
            fn(c["x"].copy(), c["gamma"].copy(), c["beta"].copy(), c["eps"]), 1
        )

    def ref(c):
        return (F.layernorm_forward(c["x"], c["gamma"], c["beta"], 1, c["eps"])[0],)

    return _compare("layernorm forward", ["out"], cand, ref, mistakes)


# ---------------------------------------------------------------- backward mistakes
#: The two terms of dx that exist because x also feeds the batch mean and variance,
#: as the hints write them: dx = dx_hat * inv_std + DMU_TERM + DVAR_TERM, where
#: dx_hat = dout * gamma, inv_std = 1 / sqrt(var + eps), sums run over each
#: normalized group (the batch for BatchNorm, the features for LayerNorm) and m is
#: its size.
DMU_TERM = "-inv_std * sum(dx_hat) / m"
DVAR_TERM = "-inv_std * x_hat * sum(dx_hat * x_hat) / m"


def _bwd_variant(kind, axis=0):
    """Reference gradients with one deliberate mistake, for the diagnosis."""

    def run(c):
        x, g, dy, eps = c["x"], c["gamma"], c["dout"], c["eps"]
        m = x.shape[axis]
        mu = x.mean(axis=axis, keepdims=True)
        var = x.var(axis=axis, keepdims=True)
        inv = 1.0 / np.sqrt(var + eps)
        x_hat = (x - mu) * inv
        red = 0 if axis == 0 else None  # parameter gradients always sum over the batch
        dgamma, dbeta = (dy * x_hat).sum(axis=red), dy.sum(axis=red)
        gd = dy * g
        s1 = gd.sum(axis=axis, keepdims=True)
        s2 = (gd * x_hat).sum(axis=axis, keepdims=True)
        d1 = dy.sum(axis, keepdims=True)  # the sums again, without gamma
        d2 = (dy * x_hat).sum(axis, keepdims=True)
        dx = {
            "no_dmu": inv / m * (m * gd - x_hat * s2),
            "no_dvar": inv / m * (m * gd - s1),
            "constant_stats": gd * inv,
            "no_gamma": inv / m * (m * dy - d1 - x_hat * d2),
            "unbiased": inv / m * (m * gd - s1 - x_hat * s2 * m / (m - 1)),
        }.get(kind)
        if kind == "swap":
            return None, dbeta, dgamma
        if kind == "mean_params":
            return None, dgamma / m, dbeta / m
        return dx, None, None

    return run


_BACKWARD_MISTAKES = {
    f"forgot the dmu term: x feeds the mean too, which adds {DMU_TERM} to every "
    "entry (inv_std = 1 / sqrt(var + eps), dx_hat = dout * gamma, sums over the "
    "batch)": _bwd_variant("no_dmu"),
    f"forgot the dvar term: x feeds the variance too, which adds {DVAR_TERM} "
    "(sums over the batch)": _bwd_variant("no_dvar"),
    "treated the mean and variance as constants (that is the eval-mode gradient, "
    "dx = gamma * dout / sqrt(var + eps))": _bwd_variant("constant_stats"),
    "forgot to multiply dout by gamma before back-propagating into x_hat": _bwd_variant(
        "no_gamma"
    ),
    "used an unbiased (m - 1) variance somewhere in the backward": _bwd_variant(
        "unbiased"
    ),
    "swapped dgamma and dbeta (dgamma = sum(dout * x_hat), "
    "dbeta = sum(dout))": _bwd_variant("swap"),
    "averaged dgamma and dbeta over the batch instead of summing": _bwd_variant(
        "mean_params"
    ),
}


def check_batchnorm_backward(backward, forward=None):
    """Check a BatchNorm backward ``backward(dout, cache) -> (dx, dgamma, dbeta)``.

    The cache comes from ``forward(x, gamma, beta, eps) -> (out, cache)`` if given
    (the reader's own forward), else from :func:`bnlib.functional.batchnorm_forward`,
    whose cache is a dict with keys ``x, mu, var, inv_std, x_hat, gamma, eps, m``.
    Shapes: x, dout (m, n); gamma, beta, dgamma, dbeta (n,).
    """

    def cand(c):
        fwd = forward or F.batchnorm_forward
        _, cache = fwd(c["x"].copy(), c["gamma"].copy(), c["beta"].copy(), c["eps"])
        return _as_tuple(backward(c["dout"].copy(), cache), 3)

    def ref(c):
        _, cache = F.batchnorm_forward(c["x"], c["gamma"], c["beta"], c["eps"])
        return F.batchnorm_backward(c["dout"], cache)

    return _compare(
        "batchnorm backward", ["dx", "dgamma", "dbeta"], cand, ref, _BACKWARD_MISTAKES
    )


def check_layernorm_backward(backward, forward=None):
    """Check a LayerNorm backward ``backward(dout, cache) -> (dx, dgamma, dbeta)`` for
    x (m, n) normalized over its last axis; the cache as in
    :func:`check_batchnorm_backward` (by default from
    :func:`bnlib.functional.layernorm_forward`).
    """

    def ln_mistake(kind):
        def run(c):
            x, g, dy, eps = c["x"], c["gamma"], c["dout"], c["eps"]
            mu, var = x.mean(1, keepdims=True), x.var(1, keepdims=True)
            inv = 1 / np.sqrt(var + eps)
            x_hat = (x - mu) * inv
            gd = dy * g
            n = x.shape[1]
            s1, s2 = gd.sum(1, keepdims=True), (gd * x_hat).sum(1, keepdims=True)
            dx = {
                "no_dmu": inv / n * (n * gd - x_hat * s2),
                "no_dvar": inv / n * (n * gd - s1),
                "constant_stats": gd * inv,
            }[kind]
            return dx, None, None

        return run

    features = "sums over that example's features, m = the number of features"
    mistakes = {
        f"forgot the dmu term: x feeds each example's mean too, which adds "
        f"{DMU_TERM} ({features})": ln_mistake("no_dmu"),
        f"forgot the dvar term: x feeds each example's variance too, which adds "
        f"{DVAR_TERM} ({features})": ln_mistake("no_dvar"),
        "treated the per-example mean and variance as constants": ln_mistake(
            "constant_stats"
        ),
    }

    def cand(c):
        fwd = forward or (lambda x, g, b, eps: F.layernorm_forward(x, g, b, 1, eps))
        _, cache = fwd(c["x"].copy(), c["gamma"].copy(), c["beta"].copy(), c["eps"])
        return _as_tuple(backward(c["dout"].copy(), cache), 3)

    def ref(c):
        _, cache = F.layernorm_forward(c["x"], c["gamma"], c["beta"], 1, c["eps"])
        return F.layernorm_backward(c["dout"], cache)

    return _compare(
        "layernorm backward", ["dx", "dgamma", "dbeta"], cand, ref, mistakes
    )
