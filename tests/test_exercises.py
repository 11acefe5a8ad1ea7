"""bnlib.exercises: each checker accepts the reference and names each catalogued
mistake.

The wrong implementations below are written the way a reader might write them, not
taken from the checkers' own catalogue, so a diagnosis has to be earned.
"""

import numpy as np
import pytest

import bnlib.functional as F
from bnlib import exercises as E


# ------------------------------------------------------------------ reader-style code
def bn_forward(
    x,
    gamma,
    beta,
    eps,
    *,
    ddof=0,
    axis=0,
    eps_outside=False,
    divide_by_var=False,
    affine=True,
    swap=False,
):
    mu = np.mean(x, axis=axis, keepdims=True)
    var = np.var(x, axis=axis, ddof=ddof, keepdims=True)
    if divide_by_var:
        x_hat = (x - mu) / (var + eps)
    elif eps_outside:
        x_hat = (x - mu) / (np.sqrt(var) + eps)
    else:
        x_hat = (x - mu) / np.sqrt(var + eps)
    if not affine:
        return x_hat
    return beta * x_hat + gamma if swap else gamma * x_hat + beta


def bn_forward_with_cache(x, gamma, beta, eps):
    """The reader's own forward, with a cache of their own design (a tuple)."""
    mu = x.mean(axis=0)
    xc = x - mu
    var = (xc**2).mean(axis=0)
    inv = 1.0 / np.sqrt(var + eps)
    x_hat = xc * inv
    return gamma * x_hat + beta, (x_hat, gamma, inv)


def bn_backward(dout, cache, *, mistake=None):
    """Backward node by node from the reader's tuple cache, with an optional mistake."""
    x_hat, gamma, inv = cache
    m = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = (dout * x_hat).sum(axis=0)
    dx_hat = dout if mistake == "no_gamma" else dout * gamma
    xc = x_hat / inv
    dvar = np.sum(dx_hat * xc, axis=0) * -0.5 * inv**3
    dmu = -np.sum(dx_hat * inv, axis=0)
    n_var = m - 1 if mistake == "unbiased" else m
    dx = dx_hat * inv
    if mistake != "no_dvar" and mistake != "constant_stats":
        dx = dx + dvar * 2 * xc / n_var
    if mistake != "no_dmu" and mistake != "constant_stats":
        dx = dx + dmu / m
    if mistake == "swap":
        dgamma, dbeta = dbeta, dgamma
    if mistake == "mean_params":
        dgamma, dbeta = dgamma / m, dbeta / m
    return dx, dgamma, dbeta


def ln_forward(x, gamma, beta, eps, *, axis=1, ddof=0, eps_outside=False):
    mu = x.mean(axis=axis, keepdims=True)
    var = x.var(axis=axis, ddof=ddof, keepdims=True)
    denom = np.sqrt(var) + eps if eps_outside else np.sqrt(var + eps)
    return gamma * (x - mu) / denom + beta


def ln_backward(dout, cache, *, mistake=None):
    """LayerNorm backward from bnlib's cache dict (x, mu, var, ...)."""
    x, gamma, eps = cache["x"], cache["gamma"], cache["eps"]
    n = x.shape[1]
    mu = x.mean(1, keepdims=True)
    xc = x - mu
    var = (xc**2).mean(1, keepdims=True)
    inv = 1 / np.sqrt(var + eps)
    x_hat = xc * inv
    dx_hat = dout * gamma
    dx = dx_hat * inv
    if mistake not in ("no_dmu", "constant_stats"):
        dx = dx - inv * dx_hat.sum(1, keepdims=True) / n
    if mistake not in ("no_dvar", "constant_stats"):
        dx = dx - inv * x_hat * (dx_hat * x_hat).sum(1, keepdims=True) / n
    return dx, (dout * x_hat).sum(0), dout.sum(0)


# ------------------------------------------------------------------ references pass
def test_reference_implementations_pass():
    results = [
        E.check_batchnorm_forward(
            F.batchnorm_forward
        ),  # returns (out, cache): accepted
        E.check_batchnorm_forward(
            lambda x, g, b, eps: F.batchnorm_forward(x, g, b, eps)[0]
        ),
        E.check_batchnorm_forward(bn_forward),
        E.check_batchnorm_backward(F.batchnorm_backward),
        E.check_batchnorm_backward(
            lambda d, c: tuple(
                np.reshape(a, -1) if a.ndim < 2 or a.shape[0] == 1 else a
                for a in F.batchnorm_backward_staged(d, c)
            )
        ),
        E.check_batchnorm_backward(bn_backward, forward=bn_forward_with_cache),
        E.check_layernorm_forward(
            lambda x, g, b, eps: F.layernorm_forward(x, g, b, 1, eps)
        ),
        E.check_layernorm_forward(ln_forward),
        E.check_layernorm_backward(F.layernorm_backward),
        E.check_layernorm_backward(ln_backward),
    ]
    for result in results:
        assert result.passed and bool(result), result.report
        assert (
            "PASSED" in result.report
            and "match the reference on 3 cases" in result.report
        )
        assert result.cause is None


# ------------------------------------------------------------------ mistakes named
FORWARD_MISTAKES = {
    "unbiased": (dict(ddof=1), "used the unbiased variance (divided by m - 1)"),
    "eps_outside": (dict(eps_outside=True), "added eps outside the square root"),
    "divide_by_var": (
        dict(divide_by_var=True),
        "divided by the variance instead of the standard deviation",
    ),
    "no_affine": (dict(affine=False), "returned x_hat without the affine step"),
    "swap": (dict(swap=True), "swapped gamma and beta"),
    "layernorm_axis": (
        dict(axis=1),
        "normalized each example over its features (axis 1, that is LayerNorm)",
    ),
}


@pytest.mark.parametrize("kind", FORWARD_MISTAKES)
def test_batchnorm_forward_mistakes_are_named(kind):
    kwargs, cause = FORWARD_MISTAKES[kind]
    result = E.check_batchnorm_forward(
        lambda x, g, b, eps: bn_forward(x, g, b, eps, **kwargs)
    )
    assert not result.passed and not bool(result)
    assert result.cause is not None and result.cause.startswith(cause), result.report
    assert "FAILED" in result.report and "out is off on case" in result.report
    assert "Most likely cause: " + cause in result.report


BACKWARD_MISTAKES = {
    "no_dmu": "forgot the dmu term",
    "no_dvar": "forgot the dvar term",
    "constant_stats": "treated the mean and variance as constants",
    "no_gamma": "forgot to multiply dout by gamma",
    "unbiased": "used an unbiased (m - 1) variance somewhere in the backward",
    "swap": "swapped dgamma and dbeta",
    "mean_params": "averaged dgamma and dbeta over the batch instead of summing",
}


@pytest.mark.parametrize("kind", BACKWARD_MISTAKES)
def test_batchnorm_backward_mistakes_are_named(kind):
    result = E.check_batchnorm_backward(
        lambda d, c: bn_backward(d, c, mistake=kind), forward=bn_forward_with_cache
    )
    assert not result.passed
    assert result.cause is not None and result.cause.startswith(
        BACKWARD_MISTAKES[kind]
    ), result.report
    off = {"swap": "dgamma", "mean_params": "dgamma"}.get(kind, "dx")
    assert f"{off} is off on case" in result.report


LN_FORWARD_MISTAKES = {
    "batch_axis": (
        dict(axis=0),
        "normalized over the batch (axis 0, that is BatchNorm)",
    ),
    "unbiased": (dict(ddof=1), "used the unbiased variance (divided by n - 1)"),
    "eps_outside": (dict(eps_outside=True), "added eps outside the square root"),
}


@pytest.mark.parametrize("kind", LN_FORWARD_MISTAKES)
def test_layernorm_forward_mistakes_are_named(kind):
    kwargs, cause = LN_FORWARD_MISTAKES[kind]
    result = E.check_layernorm_forward(
        lambda x, g, b, eps: ln_forward(x, g, b, eps, **kwargs)
    )
    assert not result.passed
    assert result.cause is not None and result.cause.startswith(cause), result.report


LN_BACKWARD_MISTAKES = {
    "no_dmu": "forgot the dmu term",
    "no_dvar": "forgot the dvar term",
    "constant_stats": "treated the per-example mean and variance as constants",
}


@pytest.mark.parametrize("kind", LN_BACKWARD_MISTAKES)
def test_layernorm_backward_mistakes_are_named(kind):
    result = E.check_layernorm_backward(lambda d, c: ln_backward(d, c, mistake=kind))
    assert not result.passed
    assert result.cause is not None and result.cause.startswith(
        LN_BACKWARD_MISTAKES[kind]
    ), result.report


# ------------------------------------------------------------------ other failures
def test_unknown_mistake_is_reported_without_a_cause():
    result = E.check_batchnorm_forward(
        lambda x, g, b, eps: 1.01 * bn_forward(x, g, b, eps)
    )
    assert not result.passed and result.cause is None
    assert "none of the common mistakes matches" in result.report
    assert "(relative 0.01)" in result.report


def test_a_function_that_raises_is_reported_not_propagated():
    def broken(x, gamma, beta, eps):
        raise KeyError("mu")

    for check in (E.check_batchnorm_forward, E.check_layernorm_forward):
        result = check(broken)
        assert not result.passed
        assert (
            "your function raised KeyError: 'mu' on the case m=4, n=3" in result.report
        )

    def broken_backward(dout, cache):
        return dout + cache["no such key"]

    for check in (E.check_batchnorm_backward, E.check_layernorm_backward):
        result = check(broken_backward)
        assert not result.passed and "your function raised KeyError" in result.report

    result = E.check_batchnorm_backward(bn_backward, forward=lambda *a: 1 / 0)
    assert not result.passed and "ZeroDivisionError" in result.report


def test_wrong_shape_is_reported():
    result = E.check_batchnorm_forward(lambda x, g, b, eps: bn_forward(x, g, b, eps).T)
    assert (
        not result.passed and "out has shape (3, 4), expected (4, 3)" in result.report
    )
    result = E.check_batchnorm_backward(
        lambda d, c: (F.batchnorm_backward(d, c)[0], np.zeros((1, 3)), np.zeros(3))
    )
    assert (
        not result.passed and "dgamma has shape (1, 3), expected (3,)" in result.report
    )


def test_nan_output_fails():
    result = E.check_batchnorm_forward(lambda x, g, b, eps: np.full_like(x, np.nan))
    assert not result.passed and "out is off" in result.report


def test_result_repr_is_the_report():
    result = E.check_batchnorm_forward(bn_forward)
    assert repr(result) == result.report
    assert result.report.startswith("batchnorm forward: PASSED")


# ------------------------------------------------------------------ missing outputs
@pytest.mark.parametrize(
    "check,reference",
    [
        (E.check_batchnorm_backward, F.batchnorm_backward),
        (E.check_layernorm_backward, F.layernorm_backward),
    ],
)
def test_a_backward_with_too_few_or_too_many_outputs_fails(check, reference):
    """zip() used to stop at the shorter list, so (dx, dgamma) passed."""
    result = check(lambda d, c: reference(d, c)[:2])
    assert not result.passed
    assert (
        "your function returned 2 output(s), expected 3 (dx, dgamma, dbeta): dbeta is "
        "missing"
    ) in result.report
    result = check(lambda d, c: reference(d, c)[0])  # dx alone, not a tuple
    assert not result.passed
    assert (
        "returned 1 output(s), expected 3 (dx, dgamma, dbeta): "
        "dgamma, dbeta are missing" in result.report
    )
    result = check(lambda d, c: None)
    assert not result.passed and "returned 0 output(s)" in result.report
    result = check(lambda d, c: (*reference(d, c), np.zeros(3)))
    assert not result.passed
    assert (
        "returned 4 outputs, expected 3 (dx, dgamma, dbeta); return exactly these"
        in result.report
    )


# ------------------------------------------------------------------ the hints' formulas
def _evaluate(term, dout, gamma, x_hat, inv_std, axis):
    """The value of a hint's formula; sums run over the normalized groups (``axis``)."""
    names = {
        "inv_std": inv_std,
        "x_hat": x_hat,
        "dx_hat": dout * gamma,
        "m": x_hat.shape[axis],
        "sum": lambda a: np.sum(a, axis=axis, keepdims=True),
    }
    return eval(term, {"__builtins__": {}}, names)  # the two constant strings of E


@pytest.mark.parametrize("kind,axis", [("batchnorm", 0), ("layernorm", 1)])
def test_hint_formulas_are_the_terms_of_dx(kind, axis):
    """dx = dx_hat * inv_std + DMU_TERM + DVAR_TERM, each as the hints write it; and
    leaving one out gives exactly the gradient of that catalogued mistake."""
    rng = np.random.default_rng(7)
    x = rng.normal(1.5, 2.0, (6, 4))
    gamma, beta = rng.uniform(0.5, 2.0, 4), rng.normal(size=4)
    dout = rng.normal(size=x.shape)
    forward = F.batchnorm_forward if kind == "batchnorm" else F.layernorm_forward
    _, cache = forward(x, gamma, beta)
    dx = F.norm_backward(dout, cache)[0]
    x_hat, inv_std = cache["x_hat"], cache["inv_std"]
    dmu, dvar = (
        _evaluate(t, dout, gamma, x_hat, inv_std, axis)
        for t in (E.DMU_TERM, E.DVAR_TERM)
    )
    np.testing.assert_allclose(
        dout * gamma * inv_std + dmu + dvar, dx, rtol=1e-12, atol=1e-12
    )
    assert np.all(np.abs(dmu) > 1e-3) and np.all(
        np.abs(dvar) > 1e-6
    )  # both matter here
    # the mistakes named by these hints leave out exactly these terms
    check = (
        E.check_batchnorm_backward
        if kind == "batchnorm"
        else E.check_layernorm_backward
    )
    hints = _causes(check)
    for term, mistake, missing in (("dmu", "no_dmu", dmu), ("dvar", "no_dvar", dvar)):
        if kind == "batchnorm":
            _, own_cache = bn_forward_with_cache(x, gamma, beta, 1e-5)
            dx_wrong = bn_backward(dout, own_cache, mistake=mistake)[0]
        else:
            dx_wrong = ln_backward(dout, cache, mistake=mistake)[0]
        np.testing.assert_allclose(
            dx - dx_wrong, np.broadcast_to(missing, dx.shape), rtol=1e-9, atol=1e-12
        )
        hint = next(h for h in hints if h.startswith(f"forgot the {term} term"))
        assert (E.DMU_TERM if term == "dmu" else E.DVAR_TERM) in hint


def _causes(check):
    """The hint texts a checker can give, from a run of each catalogued mistake."""
    kinds = ("no_dmu", "no_dvar")
    if check is E.check_batchnorm_backward:
        runs = [
            check(
                lambda d, c, k=k: bn_backward(d, c, mistake=k),
                forward=bn_forward_with_cache,
            )
            for k in kinds
        ]
    else:
        runs = [check(lambda d, c, k=k: ln_backward(d, c, mistake=k)) for k in kinds]
    return [r.cause for r in runs]
