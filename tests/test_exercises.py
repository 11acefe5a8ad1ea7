"""bnlib.exercises: a catalogue of answers a student might give, right and wrong.

Every checker gets at least two right answers written differently (they must pass)
and at least five realistic mistakes (each must be rejected, with its diagnosis
named). The wrong answers are written the way a reader would write them, not taken
from the checkers' own catalogue, so a diagnosis has to be earned. No checker may
raise on any entry, and no report may show the answer.
"""

import re

import numpy as np
import pytest

import bnlib
import bnlib.chapters.ch1_deriving  # noqa: F401  (each registers its answer keys)
import bnlib.chapters.ch2_gamma_beta  # noqa: F401
import bnlib.chapters.ch3_test_time  # noqa: F401
import bnlib.chapters.ch4_why_it_works  # noqa: F401
import bnlib.chapters.ch5_bn_vs_ln  # noqa: F401
import bnlib.functional as F
from bnlib import exercises as E


# ------------------------------------------------------------------ reader-style code
def bn_forward(x, gamma, beta, eps, *, ddof=0, axis=0, den="sqrt", affine=True):
    mu = np.mean(x, axis=axis, keepdims=True)
    var = np.var(x, axis=axis, ddof=ddof, keepdims=True)
    d = {"sqrt": np.sqrt(var + eps), "outside": np.sqrt(var) + eps, "var": var + eps}
    x_hat = (x - mu) / d[den]
    if affine == "swap":
        return beta * x_hat + gamma
    return gamma * x_hat + beta if affine else x_hat


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
    if mistake not in ("no_dvar", "constant_stats"):
        dx = dx + dvar * 2 * xc / n_var
    if mistake not in ("no_dmu", "constant_stats"):
        dx = dx + dmu / m
    if mistake == "swap":
        dgamma, dbeta = dbeta, dgamma
    if mistake == "mean_params":
        dgamma, dbeta = dgamma / m, dbeta / m
    return dx, dgamma, dbeta


def compact_backward(dout, cache, axis=0):
    """The chapter's compact backward on bnlib's cache dict."""
    x_hat, inv_std, m = cache["x_hat"], cache["inv_std"], cache["m"]
    g = dout * cache["gamma"]
    dx = (
        inv_std
        / m
        * (
            m * g
            - g.sum(axis=axis, keepdims=True)
            - x_hat * (g * x_hat).sum(axis=axis, keepdims=True)
        )
    )
    return dx, (dout * x_hat).sum(axis=0), dout.sum(axis=0)


def ln_forward(x, gamma, beta, eps, *, axis=1, ddof=0, den="sqrt", affine=True):
    return bn_forward(x, gamma, beta, eps, axis=axis, ddof=ddof, den=den, affine=affine)


def ln_backward(dout, cache, *, mistake=None):
    """LayerNorm backward from bnlib's cache dict, with an optional mistake."""
    x_hat, inv, gamma = cache["x_hat"], cache["inv_std"], cache["gamma"]
    n = dout.shape[0] if mistake == "batch_m" else cache["m"]
    axis = 0 if mistake == "axis0" else 1
    g = dout if mistake in ("no_gamma", "gamma_out") else dout * gamma
    dx = g * inv
    if mistake not in ("no_dmu", "constant_stats"):
        dx = dx - inv * g.sum(axis, keepdims=True) / n
    if mistake not in ("no_dvar", "constant_stats"):
        dx = dx - inv * x_hat * (g * x_hat).sum(axis, keepdims=True) / n
    if mistake == "gamma_out":
        dx = gamma * dx
    return dx, (dout * x_hat).sum(0), dout.sum(0)


def rms_backward(dout, cache, *, mistake=None):
    """RMSNorm backward as derived in chapter 5, with an optional mistake."""
    x, gamma, eps = cache["x"], cache["gamma"], cache["eps"]
    d = dout.shape[0] if mistake == "batch_m" else x.shape[1]
    axis = 0 if mistake == "axis0" else 1
    r = np.sqrt(
        np.mean(x**2, axis=1, keepdims=True) + (0 if mistake == "no_eps" else eps)
    )
    x_hat, g = x / r, dout if mistake == "no_gamma" else dout * gamma
    inner = d * g
    if mistake not in ("no_projection", "r_constant"):
        inner = inner - x_hat * np.sum(g * x_hat, axis=axis, keepdims=True)
    if mistake == "mean_term":
        inner = inner - np.sum(g, axis=1, keepdims=True)
    return g / r if mistake == "r_constant" else inner / (d * r)


def in_forward(x, eps, *, axes=(2,), ddof=0, den="sqrt", center=True):
    mu = x.mean(axis=axes, keepdims=True) if center else 0
    var = np.var(x - mu if center else x, axis=axes, ddof=ddof, keepdims=True)
    if not center:
        var = np.mean(x**2, axis=axes, keepdims=True)
    d = {"sqrt": np.sqrt(var + eps), "outside": np.sqrt(var) + eps}[den]
    return (x - mu) / d


# ------------------------------------------------------------------ the catalogue
def raises_forward(x, gamma, beta, eps):
    return x + gamma["mu"]  # a typo: a dict key on an array


def _fixed_eps_forward(x, gamma, beta, eps):
    return bn_forward_with_cache(x, gamma, beta, 1e-5)


def bn_staged(dout, cache):
    """The library's staged backward, as the fallback hint points to it."""
    return F.batchnorm_backward_staged(dout, cache, trace={})


RIGHT = {  # checker -> answers written differently that must pass
    "batchnorm forward": [
        lambda x, g, b, eps: bn_forward(x, g, b, eps),
        F.batchnorm_forward,  # returns (out, cache)
        lambda x, g, b, eps: list(F.batchnorm_forward(x, g, b, eps)),  # [out, cache]
        lambda x, g, b, eps: bn_forward_with_cache(x, g, b, eps),  # tuple cache
        lambda x, g, b, eps: (
            g * (x - x.mean(0)) / np.sqrt(x.var(0) + eps) + b
        ).tolist(),
    ],
    "batchnorm backward": [
        F.batchnorm_backward,
        bn_staged,  # dgamma, dbeta of shape (1, n)
        compact_backward,
        lambda d, c: list(compact_backward(d, c)),
    ],
    "batchnorm backward, own forward": [
        bn_backward,
        lambda d, c: list(bn_backward(d, c)),
    ],
    "batchnorm backward (evaluation)": [
        F.batchnorm_backward,
        lambda d, c: (c["gamma"] * d * c["inv_std"], *compact_backward(d, c)[1:]),
    ],
    "layernorm forward": [
        lambda x, g, b, eps: ln_forward(x, g, b, eps),
        lambda x, g, b, eps: F.layernorm_forward(x, g, b, 1, eps),
    ],
    "layernorm backward": [
        ln_backward,
        F.layernorm_backward,
        bn_staged,  # the staged walk works over any axes
        lambda d, c: compact_backward(d, c, axis=1),
    ],
    "rmsnorm backward": [
        rms_backward,
        F.norm_backward,  # (dx, dgamma, None)
        lambda d, c: F.norm_backward(d, c)[:2],
    ],
    "instancenorm forward": [
        in_forward,
        lambda x, eps: bnlib.InstanceNorm1d(x.shape[1], eps=eps)(x),
        lambda x, eps: F.norm_forward(x, None, None, (2,), eps),  # (out, cache)
    ],
}

CHECKS = {
    "batchnorm forward": E.check_batchnorm_forward,
    "batchnorm backward": E.check_batchnorm_backward,
    "batchnorm backward, own forward": lambda a: E.check_batchnorm_backward(
        *(a if isinstance(a, tuple) else (a, bn_forward_with_cache))
    ),
    "batchnorm backward (evaluation)": lambda f: E.check_batchnorm_backward(
        f, training=False
    ),
    "layernorm forward": E.check_layernorm_forward,
    "layernorm backward": E.check_layernorm_backward,
    "rmsnorm backward": E.check_rmsnorm_backward,
    "instancenorm forward": E.check_instancenorm_forward,
}


def _bn(**kw):
    return lambda x, g, b, eps: bn_forward(x, g, b, eps, **kw)


def _bnb(mistake):
    """The reader's backward on bnlib's cache dict, with a mistake."""
    return lambda d, c: bn_backward(
        d, (c["x_hat"], c["gamma"], c["inv_std"]), mistake=mistake
    )


def _own(mistake):
    """The reader's backward on their own forward's tuple cache, with a mistake."""
    return lambda d, c: bn_backward(d, c, mistake=mistake)


# checker -> (answer, what the report must name); named in result.cause when the
# mistake is a value mistake, in the report when it is a matter of form.
WRONG = {
    "batchnorm forward": [
        (_bn(ddof=1), "used the unbiased variance (divided by m - 1)"),
        (_bn(den="outside"), "added eps outside the square root"),
        (_bn(den="var"), "divided by the variance instead of the standard deviation"),
        (_bn(affine=False), "returned x_hat without the affine step"),
        (_bn(affine="swap"), "swapped gamma and beta"),
        (_bn(axis=1), "normalized each example over its features (axis 1"),
        (lambda x, g, b, eps: bn_forward(x, g, b, 1e-5), "ignored the eps argument"),
        (lambda x, g, b, eps: bn_forward(x, g, b, 0.0), "left eps out"),
        (
            lambda x, g, b, eps: bn_forward(x, g, b, eps).astype(np.float32),
            "out is float32 although the inputs are float64",
        ),
        (
            lambda x, g, b, eps: dict(
                zip(("out", "cache"), F.batchnorm_forward(x, g, b, eps))
            ),
            "returned a dict; return out, or the tuple (out, cache)",
        ),
        (
            lambda x, g, b, eps: F.batchnorm_forward(x, g, b, eps)[::-1],
            "returned (cache, out); return (out, cache), out first",
        ),
        (raises_forward, "your forward (raises_forward) raised IndexError"),
        (lambda x, g, b, eps: None, "out is None"),
        (
            lambda x, g, b, eps: bn_forward(x, g, b, eps).T,
            "out has shape (3, 4), expected (4, 3)",
        ),
        (
            lambda x, g, b, eps: np.full_like(x, np.nan),
            "out has NaN or inf in 12 of 12",
        ),
        (lambda x, g, b, eps: "out", "out is not an array of real numbers (got str)"),
    ],
    "batchnorm backward": [
        (_bnb("no_dmu"), "forgot the dmu term"),
        (_bnb("no_dvar"), "forgot the dvar term"),
        (_bnb("constant_stats"), "treated the mean and variance as constants"),
        (_bnb("no_gamma"), "forgot to multiply dout by gamma"),
        (_bnb("unbiased"), "used an unbiased (m - 1) variance"),
        (_bnb("swap"), "swapped dgamma and dbeta"),
        (_bnb("mean_params"), "averaged dgamma (and dbeta) over the batch"),
        (
            lambda d, c: compact_backward(d, c, axis=1),
            "summed over the features (axis 1), not the batch",
        ),
        (
            lambda d, c: dict(
                zip(("dx", "dgamma", "dbeta"), F.batchnorm_backward(d, c))
            ),
            "returned a dict (keys dx, dgamma, dbeta); return (dx, dgamma, dbeta)",
        ),
        (
            lambda d, c: F.batchnorm_backward(d, c)[:2],
            "returned 2 output(s), expected (dx, dgamma, dbeta): dbeta is missing",
        ),
        (
            lambda d, c: (*F.batchnorm_backward(d, c), d),
            "returned 4 outputs, expected (dx, dgamma, dbeta)",
        ),
        (
            lambda d, c: F.batchnorm_backward(d, c)[::-1],
            "that is the shape of dgamma: return (dx, dgamma, dbeta), in this order",
        ),
        (
            lambda d, c: tuple(
                a.astype(np.float32) for a in F.batchnorm_backward(d, c)
            ),
            "dx is float32 although the inputs are float64",
        ),
        (
            lambda d, c: d + c["no such key"],
            "your backward raised KeyError: 'no such key'",
        ),
    ],
    "batchnorm backward, own forward": [
        (_own("no_dmu"), "forgot the dmu term"),
        (_own("no_dvar"), "forgot the dvar term"),
        (_own("swap"), "swapped dgamma and dbeta"),
        (_own("unbiased"), "used an unbiased (m - 1) variance"),
        (_own("no_gamma"), "forgot to multiply dout by gamma"),
        ((bn_backward, _fixed_eps_forward), "ignored the eps argument"),
        (
            (bn_backward, raises_forward),
            "your forward (raises_forward) raised IndexError",
        ),
        ((bn_backward, lambda *a: bn_forward_with_cache(*a)[0]), "returned out alone"),
    ],
    "batchnorm backward (evaluation)": [
        (
            lambda d, c: (
                F.batchnorm_backward(
                    d,
                    F.batchnorm_forward(c["x"], c["gamma"].ravel(), None, c["eps"])[1],
                )[:1]
                + compact_backward(d, c)[1:]
            ),
            "used the training-mode gradient",
        ),
        (lambda d, c: (d * c["inv_std"], *compact_backward(d, c)[1:]), "forgot gamma"),
        (
            lambda d, c: (
                c["gamma"] * d / np.sqrt(c["var"]),
                *compact_backward(d, c)[1:],
            ),
            "left eps out of inv_std",
        ),
        (
            lambda d, c: (
                c["gamma"] * d / np.sqrt(c["var"] + 1e-5),
                *compact_backward(d, c)[1:],
            ),
            "ignored the cache's eps and used 1e-5",
        ),
        (
            lambda d, c: (
                c["gamma"] * d / (c["var"] + c["eps"]),
                *compact_backward(d, c)[1:],
            ),
            "divided by var + eps instead of its square root",
        ),
    ],
    "layernorm forward": [
        (
            lambda x, g, b, eps: ln_forward(x, g, b, eps, axis=0),
            "normalized over the batch (axis 0",
        ),
        (
            lambda x, g, b, eps: ln_forward(x, g, b, eps, ddof=1),
            "used the unbiased variance (divided by n - 1)",
        ),
        (
            lambda x, g, b, eps: ln_forward(x, g, b, eps, den="outside"),
            "added eps outside",
        ),
        (
            lambda x, g, b, eps: ln_forward(x, g, b, eps, affine=False),
            "returned x_hat without",
        ),
        (lambda x, g, b, eps: ln_forward(x, g, b, 1e-5), "ignored the eps argument"),
        (
            lambda x, g, b, eps: ln_forward(x, g, b, eps, den="var"),
            "divided by the variance",
        ),
    ],
    "layernorm backward": [
        (lambda d, c: ln_backward(d, c, mistake="no_dmu"), "forgot the dmu term"),
        (lambda d, c: ln_backward(d, c, mistake="no_dvar"), "forgot the dvar term"),
        (
            lambda d, c: ln_backward(d, c, mistake="constant_stats"),
            "treated the mean and variance",
        ),
        (
            lambda d, c: ln_backward(d, c, mistake="batch_m"),
            "used the batch size for m; here m = n",
        ),
        (
            lambda d, c: ln_backward(d, c, mistake="gamma_out"),
            "took gamma out of the sums",
        ),
        (
            lambda d, c: ln_backward(d, c, mistake="axis0"),
            "summed over the batch (axis 0",
        ),
        (
            lambda d, c: ln_backward(d, c, mistake="no_gamma"),
            "forgot to multiply dout by gamma",
        ),
    ],
    "rmsnorm backward": [
        (
            lambda d, c: rms_backward(d, c, mistake="mean_term"),
            "added LayerNorm's -sum(g) term",
        ),
        (
            lambda d, c: rms_backward(d, c, mistake="no_projection"),
            "forgot the projection term",
        ),
        (
            lambda d, c: rms_backward(d, c, mistake="r_constant"),
            "that is, treated r as a constant",
        ),
        (
            lambda d, c: rms_backward(d, c, mistake="no_gamma"),
            "forgot to multiply dout by gamma",
        ),
        (lambda d, c: rms_backward(d, c, mistake="no_eps"), "left eps out of r"),
        (
            lambda d, c: rms_backward(d, c, mistake="batch_m"),
            "used the batch size for m; here m = d",
        ),
        (
            lambda d, c: rms_backward(d, c, mistake="axis0"),
            "summed over the batch (axis 0",
        ),
    ],
    "instancenorm forward": [
        (
            lambda x, eps: in_forward(x, eps, axes=(0, 2)),
            "(axes 0, 2: that is BatchNorm)",
        ),
        (
            lambda x, eps: in_forward(x, eps, axes=(1, 2)),
            "(axes 1, 2: that is LayerNorm)",
        ),
        (
            lambda x, eps: in_forward(x, eps, axes=(1,)),
            "averaged over the channels (axis 1)",
        ),
        (
            lambda x, eps: in_forward(x, eps, ddof=1),
            "used the unbiased variance (divided by L - 1)",
        ),
        (lambda x, eps: in_forward(x, eps, den="outside"), "added eps outside"),
        (lambda x, eps: in_forward(x, eps, center=False), "did not subtract the mean"),
        (lambda x, eps: in_forward(x, 1e-5), "ignored the eps argument"),
    ],
}

CATALOGUE = [(k, a, None) for k, answers in RIGHT.items() for a in answers] + [
    (k, a, named) for k, wrong in WRONG.items() for a, named in wrong
]


def _id(entry):
    return f"{entry[0]}: {entry[2] or 'right'}"[:70]


@pytest.mark.parametrize("entry", CATALOGUE, ids=_id)
def test_catalogue(entry, checker_contract):
    """Right answers pass; each mistake is rejected with its diagnosis named; no
    checker raises, no report ends in 'could not judge' or shows an answer."""
    kind, answer, named = entry
    checker_contract.judges(CHECKS[kind](answer), named)


def test_catalogue_is_complete():
    for kind in CHECKS:
        assert len(RIGHT[kind]) >= 2 and len(WRONG[kind]) >= 5, kind


# ------------------------------------------------------------------ the contract
def test_value_mistakes_are_named_in_the_cause():
    result = E.check_batchnorm_backward(_own("no_dmu"), forward=bn_forward_with_cache)
    assert result.cause.startswith("forgot the dmu term"), result.report
    assert "dx is off" in result.report


def test_the_staged_backward_of_the_hint_passes():
    """The fallback hint names batchnorm_backward_staged; it passes the checker,
    though its dgamma and dbeta have shape (1, n)."""
    x, gamma, beta, dout, eps = E.case("batchnorm", 0)
    cache = F.batchnorm_forward(x, gamma, beta, eps)[1]
    assert F.batchnorm_backward_staged(dout, cache)[1].shape == (1, 3)
    wrong = E.check_batchnorm_backward(
        lambda d, c: (1.5 * d, *F.batchnorm_backward(d, c)[1:])
    )
    assert "batchnorm_backward_staged" in wrong.report and wrong.cause is None
    assert E.check_batchnorm_backward(bn_staged).passed
    assert E.check_layernorm_backward(bn_staged).passed


def test_eps_is_varied_and_a_hard_coded_eps_fails():
    eps_values = {E.case("batchnorm", k)[-1] for k in range(4)}
    assert len(eps_values) == 4 and 1e-5 in eps_values
    result = E.check_batchnorm_forward(lambda x, g, b, eps: bn_forward(x, g, b, 1e-5))
    assert not result.passed and "ignored the eps argument" in result.cause


def test_cases_vary_batch_size_and_dtype():
    shapes = [E.case("batchnorm", k)[0].shape for k in range(4)]
    dtypes = {E.case("batchnorm", k)[0].dtype for k in range(4)}
    assert min(s[0] for s in shapes) == 2 and dtypes == {
        np.dtype("float64"),
        np.dtype("float32"),
    }
    result = E.check_batchnorm_forward(bn_forward)
    assert "float32 tolerance" in result.report


def test_float32_answers_are_judged_at_float32_tolerance():
    """A float32 answer on the float32 case passes at float32 tolerance; a wrong one
    fails and the message says float32."""

    def float32_inside(x, g, b, eps):  # float32 stays float32, float64 stays float64
        return bn_forward(x, g.astype(x.dtype), b.astype(x.dtype), x.dtype.type(eps))

    assert E.check_batchnorm_forward(float32_inside).passed

    def wrong_on_float32(x, g, b, eps):
        out = bn_forward(x, g, b, eps)
        return out * 1.01 if x.dtype == np.float32 else out

    result = E.check_batchnorm_forward(wrong_on_float32)
    assert not result.passed and "float32 tolerance" in result.report
    assert "float32" in result.report.split("on case")[1]


def test_errors_are_blamed_on_the_function_that_raised():
    def forward(x, gamma, beta, eps):
        raise ZeroDivisionError("in my forward")

    result = E.check_batchnorm_backward(F.batchnorm_backward, forward=forward)
    assert (
        "your forward (forward) raised ZeroDivisionError: in my forward"
        in result.report
    )
    assert "your backward" not in result.report

    def backward(dout, cache):
        return cache["mu"] + cache["nope"]

    result = E.check_batchnorm_backward(backward, forward=F.batchnorm_forward)
    assert "your backward (backward) raised KeyError: 'nope'" in result.report
    assert '`return cache["mu"] + cache["nope"]`' in result.report  # the line

    result = E.check_batchnorm_backward(F.batchnorm_backward, forward=lambda *a: a[0])
    assert "returned out alone; return (out, cache)" in result.report


def test_the_failing_case_can_be_recreated():
    result = E.check_batchnorm_forward(_bn(ddof=1))
    k = int(re.search(r"case\('batchnorm', (\d)\)", result.report).group(1))
    x, gamma, beta, dout, eps = E.case("batchnorm", k)
    assert f"x {x.shape}" in result.report and f"eps = {eps:g}" in result.report
    mine = bn_forward(x, gamma, beta, eps, ddof=1)
    assert not np.allclose(mine, F.batchnorm_forward(x, gamma, beta, eps)[0])
    for kind, fields in E.CASE_FIELDS.items():
        assert len(E.case(kind, 0)) == len(fields)
    with pytest.raises(ValueError, match="unknown kind"):
        E.case("batch_norm", 0)


@pytest.mark.parametrize(
    "answer,hint",
    [
        (
            lambda x, g, b, eps: bn_forward(x, g, b, eps) + np.array([1.0, 2.0, 3.0]),
            "out is off by a shift, the same within each feature",
        ),
        (
            lambda x, g, b, eps: bn_forward(x, g, b, eps) * np.array([2.0, 3.0, 4.0]),
            "out is off by a factor, the same within each feature",
        ),
        (lambda x, g, b, eps: np.zeros_like(x), "out is all zeros"),
        (lambda x, g, b, eps: -bn_forward(x, g, b, eps), "out has the wrong sign"),
    ],
)
def test_an_unnamed_mistake_gets_a_hint_on_the_failing_case(answer, hint):
    result = E.check_batchnorm_forward(answer)
    assert not result.passed and result.cause is None
    assert "Hint: " + hint in result.report, result.report
    assert "Recreate the case and compare your mu, var, x_hat" in result.report


def test_rmsnorm_with_the_readers_forward():
    def forward(x, gamma, eps, center=False):
        xc = x - x.mean(1, keepdims=True) if center else x
        r = np.sqrt(np.mean(xc**2, axis=1, keepdims=True) + eps)
        return gamma * xc / r, dict(
            x=x, x_hat=xc / r, inv_std=1 / r, gamma=gamma, eps=eps, m=x.shape[1]
        )

    assert E.check_rmsnorm_backward(rms_backward, forward=forward).passed
    centered = E.check_rmsnorm_backward(
        rms_backward, forward=lambda *a: forward(*a, center=True)
    )
    assert "subtracted the mean (that is LayerNorm)" in centered.cause


def test_layernorm_messages_speak_of_layernorm():
    result = E.check_layernorm_backward(
        lambda d, c: ln_backward(d, c, mistake="no_dmu")
    )
    assert "sums over each example's features" in result.cause
    assert (
        "the cache's m is the size of each normalized group, here the n features"
        in result.report
    )
    assert "sums over the batch" not in result.report


def test_not_a_function_is_reported():
    result = E.check_batchnorm_forward(bn_forward(*E.case("batchnorm", 0)[:3], 1e-5))
    assert "is not callable (got ndarray): pass the function itself" in result.report


@pytest.mark.parametrize("check", list(CHECKS.values()))
def test_no_checker_raises_on_odd_input(check, checker_contract):
    checker_contract.rejects_odd_input(check)


@pytest.mark.parametrize("kind", CHECKS)
def test_no_checker_raises_on_junk_returned(kind, checker_contract):
    checker_contract.rejects_junk_returned(CHECKS[kind])


# ------------------------------------------------------------------ numeric answers
#: The values the notebooks' solutions state (typed from their text), in the form
#: the keys expect: each must pass its key.
SOLUTIONS = {
    "ex-ch1-m2": [0.845154, -0.845154],
    "ex-ch1-bessel": [0.187044, -0.280566, 0.093522],
    "ex-ch1-projection": [0, 0.5, 1, 1],
    "ex-ch1-saturation": 8,
    "ex-ch1-saturation-layer": 1,
    "ex-ch2-predict": (-1, 0.25),
    "ex-ch2-predict-sigmoid": 0.27,
    "ex-ch2-step-line": 0.159,
    "ex-ch2-count": 9810,
    "ex-ch2-count-bn": 300,
    "ex-ch2-count-buffers": 300,
    "ex-ch2-adam": 1000,
    "ex-ch2-bound-b": 9.95,
    "ex-ch2-bound-p": 0.13,
    "ex-ch3-ema": [0.2, 0.58, 1.122],
    "ex-ch3-ema-weights": [0.081, 0.09, 0.1],
    "ex-ch3-ema-start": 0.729,
    "ex-ch3-momentum-a": 0.05,
    "ex-ch3-momentum-b": 0.99,
    "ex-ch3-fold-W": [[1, 2], [-2, 0]],
    "ex-ch3-fold-b": [-1, 3],
    "ex-ch3-nan": 63.2,
    "ex-ch3-port-eps": 1e-3,
    "ex-ch3-port-momentum": 0.01,
    "ex-ch3-port-error": 1.85,
    "ex-ch3-precise-m": 512,
    "ex-ch4-tanh": (0.25, 1),
    "ex-ch4-collapse-sigmoid": [0.135, 0.136],
    "ex-ch4-collapse-tanh": [0.468, 0.505],
    "ex-ch4-collapse-scale": 6.93,
    "ex-ch5-axes-bn": (1568, 32),
    "ex-ch5-axes-ln": (6272, 8),
    "ex-ch5-axes-in": (196, 256),
    "ex-ch5-axes-gn": (784, 64),
    "ex-ch5-axes-tln": (512, 1024),
    "ex-ch5-axes-tbn": (1024, 512),
    "ex-ch5-instance": [True, False, True, True, True, True],
    "ex-ch5-ema-a": [-1, 1],
    "ex-ch5-ema-b": [0.32, 0.04],
    "ex-ch5-bayes-b": [0.794, 0.877, 0.727],
    "ex-ch5-bayes-d": 20,
}


def test_every_key_has_a_solution_and_the_solutions_pass():
    assert set(SOLUTIONS) == set(E.ANSWERS)
    for label, value in SOLUTIONS.items():
        result = E.check_answer(label, value)
        assert result.passed and result.report.startswith(f"{label}: PASSED"), (
            result.report
        )


def test_answers_written_other_ways_pass():
    assert E.check_answer("ex-ch3-ema", np.array([[0.2, 0.58, 1.122]])).passed
    assert E.check_answer("ex-ch3-momentum-a", "0.05").passed
    assert E.check_answer("ex-ch3-momentum-a", np.float32(0.05)).passed
    assert E.check_answer("ex-ch5-axes-bn", np.array([1568, 32])).passed
    assert E.check_answer(
        "ex-ch5-instance", dict(zip("abcdef", SOLUTIONS["ex-ch5-instance"]))
    ).passed
    assert E.check_answer("ex-ch1-projection", [1, 0.5, 1, 0]).passed  # any order
    assert E.check_answer("ex-ch4-collapse-sigmoid", 0.14).passed  # one value
    assert E.check_answer("ex-ch3-momentum-b", "0.99").passed  # a numeric string
    result = E.check_answer("ex-ch2-count-buffers", 302)  # with num_batches_tracked
    assert result.passed and "num_batches_tracked" in result.report


def test_every_known_wrong_value_is_named():
    for label, key in E.ANSWERS.items():
        assert key["wrong"], label
        for mistake, value in key["wrong"].items():
            result = E.check_answer(label, value() if callable(value) else value)
            assert not result.passed and result.cause == mistake, (label, result.report)


def test_the_issue_example_names_the_oldest_batch():
    result = E.check_answer("ex-ch3-ema-weights", [0.1, 0.09, 0.081])
    assert "oldest batch the largest weight" in result.cause


@pytest.mark.parametrize(
    "label,value,hint",
    [
        ("ex-ch2-step-line", 15.9, "this looks like a percentage"),
        ("ex-ch5-axes-ln", (8, 6272), "the right numbers in the wrong order"),
        ("ex-ch3-fold-b", [1, -3], "the right size with the wrong sign"),
        (
            "ex-ch5-bayes-b",
            [0.794, 0.877, 0.6],
            "2 of 3 values are right (number 1, 2, counting from 1",
        ),
        ("ex-ch5-instance", [1, 1, 1, 1, 1, 0], "4 of 6 values are right"),
        ("ex-ch3-nan", 7.0, "not one of the common mistakes"),
    ],
)
def test_unknown_wrong_values_get_a_generic_hint(label, value, hint):
    result = E.check_answer(label, value)
    assert not result.passed and result.cause is None
    assert "Hint: " + hint in result.report, result.report


def test_check_answer_never_raises(checker_contract):
    for value in checker_contract.ODD + [1j, [1] * 100, np.inf, "0.1.2", {"a": "b"}]:
        for label in ("ex-ch3-ema", "ex-ch2-count", "ex-ch5-instance"):
            result = E.check_answer(label, value)
            assert not result.passed and "could not judge" not in result.report, (
                result.report
            )
        result = E.check_answer(value if isinstance(value, str) else "ex-ch3-emma", 1)
        assert not result.passed and "no answer key" in result.report


def _answer_strings(key):
    """How the right value could appear in a message, for values that would not
    appear by chance (more than two digits)."""
    want = np.ravel(E.answers._value(key["right"])).astype(float)
    out = set()
    for v in want:
        for s in (f"{v:g}", f"{v:.3g}", f"{v:.2f}", f"{v:.3f}"):
            if len(re.sub(r"[^0-9]", "", s).strip("0")) > 2:
                out.add(s)
    return out


def test_no_answer_message_shows_the_answer():
    for label, key in E.ANSWERS.items():
        shown = _answer_strings(key)
        tries = [*key["wrong"].values(), 123.456, [7] * 6, None]
        for value in tries:
            report = E.check_answer(label, value() if callable(value) else value).report
            assert not any(s in report for s in shown), (label, report)


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
    """dx = dx_hat * inv_std + DMU_TERM + DVAR_TERM, each as the hints write it; the
    catalogued 'forgot the term' hints quote exactly these strings."""
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
    assert np.all(np.abs(dmu) > 1e-3) and np.all(np.abs(dvar) > 1e-6)
    check = (
        E.check_batchnorm_backward
        if kind == "batchnorm"
        else E.check_layernorm_backward
    )
    for term, mistake, constant in (
        ("dmu", "no_dmu", E.DMU_TERM),
        ("dvar", "no_dvar", E.DVAR_TERM),
    ):
        if kind == "batchnorm":
            result = check(_own(mistake), forward=bn_forward_with_cache)
        else:
            result = check(lambda d, c, k=mistake: ln_backward(d, c, mistake=k))
        assert (
            result.cause.startswith(f"forgot the {term} term")
            and constant in result.cause
        )


def test_an_unfilled_starter_says_so():
    result = E.check_answer("ex-ch1-m2", ...)
    assert not result.passed and "ex-ch1-m2: NO ANSWER YET" in result.report


def test_an_unwritten_skeleton_is_not_judged():
    def my_forward(x, gamma, beta, eps):
        """x (m, n) -> out (m, n)."""
        ...

    def written(x, gamma, beta, eps):
        out = gamma * x + beta  # written, without a return: judged  # noqa: F841

    result = E.check_batchnorm_forward(my_forward)
    assert not result.passed and "NO ANSWER YET" in result.report
    assert "FAILED" in E.check_batchnorm_forward(written).report


def test_hints_a_learner_found_misleading_are_fixed():
    def m_minus_1_backward(dout, cache):  # not catalogued: every feature is off
        xh, inv, m, g = cache["x_hat"], cache["inv_std"], cache["m"], cache["gamma"]
        dx = (
            g * inv / (m - 1) * ((m - 1) * dout - dout.sum(0) - xh * (dout * xh).sum(0))
        )
        return dx, (dout * xh).sum(0), dout.sum(0)

    report = E.check_batchnorm_backward(m_minus_1_backward).report
    assert "FAILED" in report and "tiny spread" not in report
    # a near miss is not blamed on a mistake that gives the right output on this case
    rounded = E.check_batchnorm_forward(
        lambda x, g, b, eps: np.round(F.batchnorm_forward(x, g, b, eps)[0], 5)
    )
    assert not rounded.passed and "ignored the eps" not in rounded.report
    # dicts: keys are not order, so only a table row is accepted as a dict
    keyed = E.check_answer("ex-ch2-predict", {"var": 0.25, "mean": -1})
    assert not keyed.passed and "not a dict" in keyed.report
    # the union bound and "exactly one" are named, not accepted
    p = 1 - 0.9986501019683699
    for near_miss in (100 * p, 100 * p * (1 - p) ** 99):
        result = E.check_answer("ex-ch2-bound-p", near_miss)
        assert not result.passed and result.cause
