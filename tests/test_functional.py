"""bnlib.functional and bnlib.fastpath: gradient checks, staged vs compact backward,
bad input, property tests, and the fast path against the formulas.

Property tests run under the Hypothesis profile chosen in conftest.py (derandomized
under CI=true); their arrays come from hypothesis.extra.numpy, so a failure shrinks
to a small example.
"""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import bnlib.functional as F
from bnlib import fastpath, numerical_gradient, rel_error

GRAD_TOL = 1e-7


def _affine(rng, shape):
    """Non-trivial gamma and beta (not 1 and 0), so a wrong backward cannot hide."""
    return rng.uniform(0.5, 2.0, shape), rng.normal(0.0, 1.0, shape)


def _norm_grad_errors(
    x,
    gamma,
    beta,
    axes,
    eps=1e-5,
    stats=None,
    center=True,
    backward=F.norm_backward,
    seed=0,
):
    """Relative errors of ``backward`` against centered differences of
    L = sum(out * r)."""
    rng = np.random.default_rng(seed)
    out, cache = F.norm_forward(x, gamma, beta, axes, eps, stats=stats, center=center)
    r = rng.normal(size=out.shape)
    dx, dgamma, dbeta = backward(r, cache)

    def loss():
        return float(
            np.sum(
                F.norm_forward(x, gamma, beta, axes, eps, stats=stats, center=center)[0]
                * r
            )
        )

    errors = {"x": rel_error(dx, numerical_gradient(loss, x))}
    if gamma is not None:
        errors["gamma"] = rel_error(dgamma, numerical_gradient(loss, gamma))
    if beta is not None:
        errors["beta"] = rel_error(dbeta, numerical_gradient(loss, beta))
    return errors


# name: (x shape, axes, gamma/beta shape, center, use fixed stats)
CASES = {
    "bn_2d": ((8, 4), (0,), (1, 4), True, False),
    "bn_3d": ((4, 3, 5), (0, 2), (1, 3, 1), True, False),
    "bn2d_4d": ((3, 2, 3, 3), (0, 2, 3), (1, 2, 1, 1), True, False),
    "ln": ((4, 6), (1,), (6,), True, False),
    "ln_two_axes": ((3, 4, 5), (-2, -1), (4, 5), True, False),
    "gn": ((2, 2, 3, 4), (2, 3), (1, 2, 3, 1), True, False),
    "in": ((3, 4, 5), (2,), (1, 4, 1), True, False),
    "rms_no_center": ((4, 6), (1,), (6,), False, False),
    "bn_eval_fixed_stats": ((6, 4), (0,), (1, 4), True, True),
    "per_element_gamma": ((5, 3), (0,), (5, 3), True, False),
}


@pytest.mark.parametrize("name", CASES)
def test_norm_backward_gradcheck(name):
    shape, axes, pshape, center, fixed = CASES[name]
    rng = np.random.default_rng(1)
    x = rng.normal(1.5, 2.0, shape)
    gamma, beta = _affine(rng, pshape)
    if not center:
        beta = None
    stats = None
    if fixed:
        stat_shape = tuple(1 if a in axes else n for a, n in enumerate(shape))
        stats = (rng.normal(size=stat_shape), rng.uniform(0.5, 2.0, stat_shape))
    errors = _norm_grad_errors(x, gamma, beta, axes, stats=stats, center=center)
    assert max(errors.values()) < GRAD_TOL, errors


def test_norm_backward_gradcheck_without_affine():
    x = np.random.default_rng(2).normal(size=(6, 3))
    errors = _norm_grad_errors(x, None, None, (0,))
    assert errors["x"] < GRAD_TOL


@pytest.mark.parametrize("name", ["bn_2d", "bn_3d", "bn2d_4d", "ln", "gn"])
def test_staged_backward_gradcheck(name):
    shape, axes, pshape, _, _ = CASES[name]
    rng = np.random.default_rng(3)
    x = rng.normal(-0.5, 3.0, shape)
    gamma, beta = _affine(rng, pshape)
    errors = _norm_grad_errors(
        x, gamma, beta, axes, backward=F.batchnorm_backward_staged
    )
    assert max(errors.values()) < GRAD_TOL, errors


@pytest.mark.parametrize(
    "name",
    ["bn_2d", "bn_3d", "bn2d_4d", "ln", "ln_two_axes", "gn", "in", "per_element_gamma"],
)
def test_staged_and_compact_backward_agree(name):
    shape, axes, pshape, _, _ = CASES[name]
    rng = np.random.default_rng(4)
    x = rng.normal(2.0, 0.5, shape)
    gamma, beta = _affine(rng, pshape)
    dout = rng.normal(size=shape)
    _, cache = F.norm_forward(x, gamma, beta, axes)
    compact = F.norm_backward(dout, cache)
    staged = F.batchnorm_backward_staged(dout, cache)
    for a, b in zip(compact, staged, strict=True):
        assert a.shape == b.shape
        assert rel_error(a, b) < 1e-10


def test_staged_trace_fills_every_node():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 3))
    gamma, beta = _affine(rng, (1, 3))
    dout = rng.normal(size=x.shape)
    _, cache = F.norm_forward(x, gamma, beta, (0,))
    trace = {}
    dx, _, _ = F.batchnorm_backward_staged(dout, cache, trace=trace)
    names = [name for name, _ in F.STAGED_NODES]
    assert names == [
        "mu",
        "xc",
        "sq",
        "var",
        "std",
        "inv_std",
        "x_hat",
        "scaled",
        "out",
    ]
    assert set(names) | {"x"} <= set(trace)
    for name in names + ["x"]:
        value = np.asarray(trace[name])
        assert np.all(np.isfinite(value)), name
        np.broadcast_shapes(
            value.shape, x.shape
        )  # each gradient lives on its node's shape
    # Per-group nodes (mean, variance, std) carry one gradient per channel.
    for name in ("mu", "var", "std", "inv_std"):
        assert np.shape(trace[name]) == (1, 3), name
    np.testing.assert_array_equal(trace["x"], dx)
    np.testing.assert_array_equal(trace["out"], dout)
    np.testing.assert_allclose(trace["x_hat"], dout * gamma)
    # dL/dinv_std = sum over the batch of dL/dx_hat * xc (x_hat = xc * inv_std).
    np.testing.assert_allclose(
        trace["inv_std"], np.sum(dout * gamma * (x - x.mean(0)), 0, keepdims=True)
    )


def test_staged_backward_rejects_fixed_stats_and_no_centering():
    x = np.random.default_rng(6).normal(size=(4, 3))
    _, cache = F.norm_forward(
        x, None, None, (0,), stats=(np.zeros((1, 3)), np.ones((1, 3)))
    )
    with pytest.raises(ValueError, match="staged backward expects batch statistics"):
        F.batchnorm_backward_staged(x, cache)
    _, cache = F.norm_forward(x, None, None, (1,), center=False)
    with pytest.raises(ValueError, match="center=False"):
        F.batchnorm_backward_staged(x, cache)


def test_backward_rejects_dout_of_wrong_shape():
    x = np.random.default_rng(7).normal(size=(4, 3))
    _, cache = F.norm_forward(x, None, None, (0,))
    for backward in (F.norm_backward, F.batchnorm_backward_staged):
        with pytest.raises(
            ValueError,
            match=r"dout must have the shape of the forward output "
            r"\(4, 3\), got \(3, 4\)",
        ):
            backward(np.zeros((3, 4)), cache)


def test_eps_correction_to_orthogonality():
    """With eps > 0, sum(dx * x_hat) is not 0 but
    inv_std * sum(g * x_hat) * eps / (var + eps)."""
    rng = np.random.default_rng(8)
    x = rng.normal(0.0, 0.01, (5, 3))  # small variance, so eps matters
    gamma, beta = _affine(rng, (1, 3))
    dout = rng.normal(size=x.shape)
    eps = 1e-5
    _, cache = F.norm_forward(x, gamma, beta, (0,), eps)
    dx, _, _ = F.norm_backward(dout, cache)
    x_hat, var = cache["x_hat"], cache["var"]
    expected = (
        cache["inv_std"]
        * np.sum(dout * gamma * x_hat, 0, keepdims=True)
        * eps
        / (var + eps)
    )
    np.testing.assert_allclose(
        np.sum(dx * x_hat, 0, keepdims=True), expected, rtol=1e-8
    )
    np.testing.assert_allclose(
        np.var(x_hat, 0), (var / (var + eps)).ravel(), rtol=1e-12
    )


# ------------------------------------------------------------------ named wrappers
def test_batchnorm_wrappers_gradcheck_and_shapes():
    rng = np.random.default_rng(9)
    for shape in [(6, 3), (4, 3, 2), (3, 3, 2, 2)]:
        x = rng.normal(1.0, 2.0, shape)
        gamma, beta = _affine(rng, (3,))
        r = rng.normal(size=shape)
        out, cache = F.batchnorm_forward(x, gamma, beta)
        dx, dgamma, dbeta = F.batchnorm_backward(r, cache)
        assert out.shape == shape and dgamma.shape == (3,) and dbeta.shape == (3,)

        def loss(x=x, gamma=gamma, beta=beta, r=r):
            return float(np.sum(F.batchnorm_forward(x, gamma, beta)[0] * r))

        assert rel_error(dx, numerical_gradient(loss, x)) < GRAD_TOL
        assert rel_error(dgamma, numerical_gradient(loss, gamma)) < GRAD_TOL
        assert rel_error(dbeta, numerical_gradient(loss, beta)) < GRAD_TOL


def test_batchnorm_forward_with_per_channel_stats():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(4, 3, 5))
    gamma, beta = _affine(rng, (3,))
    mean, var = rng.normal(size=3), rng.uniform(0.5, 2.0, 3)
    out, _ = F.batchnorm_forward(x, gamma, beta, eps=1e-3, stats=(mean, var))
    c = (1, 3, 1)
    expected = gamma.reshape(c) * (x - mean.reshape(c)) / np.sqrt(
        var.reshape(c) + 1e-3
    ) + beta.reshape(c)
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_layernorm_and_rmsnorm_wrappers():
    rng = np.random.default_rng(11)
    x = rng.normal(1.0, 2.0, (3, 4, 5))
    gamma, beta = _affine(rng, (4, 5))
    out, cache = F.layernorm_forward(x, gamma, beta, normalized_ndim=2)
    mu = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(
        out, gamma * (x - mu) / np.sqrt(var + 1e-5) + beta, rtol=1e-12
    )
    r = rng.normal(size=x.shape)
    dx, dgamma, dbeta = F.layernorm_backward(r, cache)
    assert dgamma.shape == (4, 5) and dbeta.shape == (4, 5)
    loss = lambda: float(np.sum(F.layernorm_forward(x, gamma, beta, 2)[0] * r))  # noqa: E731
    assert rel_error(dx, numerical_gradient(loss, x)) < GRAD_TOL

    g = gamma[0]
    out, cache = F.rmsnorm_forward(x, g, eps=1e-6)
    np.testing.assert_allclose(
        out, x / np.sqrt(np.mean(x**2, -1, keepdims=True) + 1e-6) * g, rtol=1e-12
    )


def test_sum_to_shape_and_batch_axes():
    g = np.ones((2, 3, 4))
    np.testing.assert_array_equal(F.sum_to_shape(g, (1, 3, 1)), np.full((1, 3, 1), 8.0))
    np.testing.assert_array_equal(F.sum_to_shape(g, (4,)), np.full((4,), 6.0))
    np.testing.assert_array_equal(F.sum_to_shape(g, (2, 3, 4)), g)
    assert F.batch_axes(2) == (0,)
    assert F.batch_axes(4) == (0, 2, 3)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.bool_])
@pytest.mark.parametrize("forward", ["norm", "batchnorm", "layernorm", "fast"])
def test_integer_and_bool_input_is_refused(forward, dtype):
    x = np.arange(32).reshape(8, 4).astype(dtype)
    run = {
        "norm": lambda: F.norm_forward(x, None, None, (0,)),
        "batchnorm": lambda: F.batchnorm_forward(x, None, None),
        "layernorm": lambda: F.layernorm_forward(x, None, None),
        "fast": lambda: fastpath.norm_forward(x, None, None, (0,)),
    }[forward]
    name = np.dtype(dtype).name
    with pytest.raises(
        TypeError,
        match=rf"x has dtype {name}, expected a floating-point "
        r"array .* convert it to float first",
    ):
        run()


def test_integer_dout_is_refused():
    x = np.random.default_rng(0).normal(size=(8, 4))
    for forward, backward in [
        (F.norm_forward, F.norm_backward),
        (fastpath.norm_forward, fastpath.norm_backward),
        (F.norm_forward, F.batchnorm_backward_staged),
    ]:
        _, cache = forward(x, None, None, (0,))
        with pytest.raises(TypeError, match="dout has dtype int64"):
            backward(np.ones((8, 4), np.int64), cache)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_input_keeps_its_dtype(dtype):
    x = np.arange(32).reshape(8, 4).astype(dtype)
    for forward in (F.norm_forward, fastpath.norm_forward):
        out, cache = forward(x, np.ones(4), np.zeros(4), (0,))
        assert out.dtype == dtype
        np.testing.assert_allclose(
            out[:, 0], (x[:, 0] - 14.0) / np.sqrt(84.0 + 1e-5), rtol=1e-6
        )
        assert forward(x, None, None, (0,))[0].dtype == dtype


def test_a_list_is_refused_with_a_type_error():
    rows = [[1.0, 2.0], [3.0, 5.0]]
    for call in (
        lambda: F.norm_forward(rows, None, None, (0,)),
        lambda: F.batchnorm_forward(rows, None, None),
        lambda: fastpath.norm_forward(rows, None, None, (0,)),
    ):
        with pytest.raises(
            TypeError,
            match=r"x must be a numpy array, got list; convert "
            r"it first, e\.g\. np\.asarray",
        ):
            call()


@pytest.mark.parametrize("forward", [F.norm_forward, fastpath.norm_forward])
def test_axes_out_of_range_empty_or_repeated(forward):
    x = np.random.default_rng(1).normal(size=(8, 4))
    with pytest.raises(
        ValueError,
        match=r"axes \(2,\): axis 2 is out of range for a 2-D "
        r"input \(valid axes are -2 to 1\)",
    ):
        forward(x, None, None, (2,))
    with pytest.raises(ValueError, match=r"axis -3 is out of range for a 2-D input"):
        forward(x, None, None, (-3,))
    with pytest.raises(ValueError, match=r"axes is empty: name at least one axis"):
        forward(x, None, None, ())
    with pytest.raises(
        ValueError, match=r"axes \(0, -2\) name the same axis more than once"
    ):
        forward(x, None, None, (0, -2))


@pytest.mark.parametrize("forward", [F.norm_forward, fastpath.norm_forward])
def test_parameter_that_does_not_fit_the_input(forward):
    x = np.random.default_rng(2).normal(size=(8, 4))
    with pytest.raises(
        ValueError,
        match=r"gamma of shape \(5,\) does not broadcast to the "
        r"input's shape \(8, 4\)",
    ):
        forward(x, np.ones(5), None, (0,))
    with pytest.raises(
        ValueError, match=r"beta of shape \(2, 8, 4\) does not broadcast"
    ):
        forward(x, None, np.zeros((2, 8, 4)), (0,))  # would broadcast x to (2, 8, 4)
    with pytest.raises(
        ValueError, match=r"stats var of shape \(1, 3\) does not broadcast"
    ):
        forward(x, None, None, (0,), stats=(np.zeros((1, 4)), np.ones((1, 3))))


def test_named_wrappers_check_per_channel_shapes():
    x = np.random.default_rng(3).normal(size=(8, 4, 3))
    with pytest.raises(
        ValueError,
        match=r"gamma must have shape \(C,\) = \(4,\) for an "
        r"input of shape \(8, 4, 3\), got shape \(5,\)",
    ):
        F.batchnorm_forward(x, np.ones(5), np.zeros(4))
    with pytest.raises(ValueError, match=r"var must have shape \(C,\) = \(4,\)"):
        F.batchnorm_forward(x, None, None, stats=(np.zeros(4), np.ones((1, 4))))
    with pytest.raises(
        ValueError,
        match=r"expected an input \(N, C, \*spatial\) of at least "
        r"2 dimensions, got shape \(8,\)",
    ):
        F.batchnorm_forward(x[:, 0, 0], None, None)


# ------------------------------------------------------------------ property tests
def floats(low, high):
    """Finite floats in [low, high]; values below 1e-6 in magnitude become 0, so that no
    product reaches the subnormal range (float32 included), where rounding is not
    relative any more."""
    finite = st.floats(low, high, allow_nan=False, allow_infinity=False)
    return finite.map(lambda v: 0.0 if abs(v) < 1e-6 else v)


def float_arrays(shape, low, high):
    """float64 arrays whose every entry is drawn (no fill value), so they shrink."""
    return arrays(np.float64, shape, elements=floats(low, high), fill=st.nothing())


def well_spread(x, axes):
    """Every normalized group has a spread that is not tiny against its values, so that
    x_hat is well defined with eps = 0 and rounding stays small."""
    std = np.std(x, axis=axes)
    return bool(
        np.all(std >= 1e-2 * np.max(np.abs(x), axis=axes)) and np.all(std >= 1e-3)
    )


@st.composite
def problems(draw, max_ndim=4):
    """A shape (every size >= 2, so each group has m >= 2 values), a non-empty set of
    axes to reduce over (sometimes negative), and arrays x, gamma, beta, dout; gamma and
    beta have a broadcastable shape (size 1 or full along each axis)."""
    ndim = draw(st.integers(1, max_ndim))
    shape = tuple(draw(st.lists(st.integers(2, 4), min_size=ndim, max_size=ndim)))
    axes = sorted(draw(st.sets(st.integers(0, ndim - 1), min_size=1)))
    x = draw(float_arrays(shape, -100, 100))
    assume(well_spread(x, tuple(axes)))
    if draw(st.booleans()):
        axes = [a - ndim for a in axes]
    pshape = tuple(n if draw(st.booleans()) else 1 for n in shape)
    gamma = draw(float_arrays(pshape, 0.5, 2.0))
    beta = draw(float_arrays(pshape, -1.0, 1.0))
    dout = draw(float_arrays(shape, -1.0, 1.0))
    return dict(shape=shape, axes=tuple(axes), x=x, gamma=gamma, beta=beta, dout=dout)


@given(problems(), st.sampled_from([0.0, 1e-5]))
def test_property_normalized_groups_have_mean0_var1(p, eps):
    x, axes = p["x"], p["axes"]
    _, cache = F.norm_forward(x, p["gamma"], p["beta"], axes, eps)
    plain, _ = F.norm_forward(x, None, None, axes, eps)
    x_hat = cache["x_hat"]
    np.testing.assert_allclose(plain, x_hat, rtol=1e-13, atol=1e-13)  # no affine: x_hat
    np.testing.assert_allclose(x_hat.mean(axis=axes), 0.0, atol=1e-12)
    var = np.var(x, axis=axes)
    # Exactly var / (var + eps): 1 when eps = 0, slightly less otherwise.
    np.testing.assert_allclose(x_hat.var(axis=axes), var / (var + eps), rtol=1e-10)
    if eps == 0:
        np.testing.assert_allclose(x_hat.var(axis=axes), 1.0, rtol=1e-10)
    # The affine step gives each group's values mean beta and std gamma where they are
    # constant over the group.
    out, _ = F.norm_forward(x, 2.0, -3.0, axes, eps=0.0)
    np.testing.assert_allclose(out.mean(axis=axes), -3.0, rtol=1e-12)
    np.testing.assert_allclose(out.std(axis=axes), 2.0, rtol=1e-10)


@given(problems(), st.booleans())
def test_property_dx_sums_to_zero_and_is_orthogonal_to_x_hat(p, center):
    x, axes, gamma, dout = p["x"], p["axes"], p["gamma"], p["dout"]
    _, cache = F.norm_forward(x, gamma, p["beta"], axes, eps=0.0, center=center)
    dx, _, _ = F.norm_backward(dout, cache)
    # The size of the terms that cancel: |dx| <= 3 * inv_std * sum|g| over the group.
    # (For m = 2 and eps = 0, x_hat = +-1 whatever x is, so dx is exactly 0 and only
    # rounding remains; a tolerance relative to dx itself would be meaningless there.)
    terms = cache["inv_std"] * np.sum(np.abs(dout * gamma), axis=axes, keepdims=True)
    tol = 1e-12 * np.sqrt(cache["m"]) * np.squeeze(terms, axis=axes) + 1e-300
    if center:  # moving a whole group by a constant does not change its x_hat
        assert np.all(np.abs(np.sum(dx, axis=axes)) <= tol)
    # scaling a whole group does not change its x_hat (for RMSNorm too)
    assert np.all(
        np.abs(np.sum(dx * cache["x_hat"], axis=axes)) <= tol * np.sqrt(cache["m"])
    )
    if center:
        dx_staged, _, _ = F.batchnorm_backward_staged(dout, cache)
        assert np.all(np.abs(dx - dx_staged) <= 1e-12 * terms)


@st.composite
def linear_bn_problems(draw):
    """u (n, d_in), w (d_out, d_in), gamma, beta (d_out,), dout (n, d_out), a > 0."""
    n, d_in, d_out = (
        draw(st.integers(2, 16)),
        draw(st.integers(1, 6)),
        draw(st.integers(1, 5)),
    )
    u = draw(float_arrays((n, d_in), -3.0, 3.0))
    w = draw(float_arrays((d_out, d_in), -3.0, 3.0))
    assume(well_spread(u @ w.T, (0,)))
    return dict(
        u=u,
        w=w,
        gamma=draw(float_arrays((d_out,), 0.5, 2.0)),
        beta=draw(float_arrays((d_out,), -1.0, 1.0)),
        dout=draw(float_arrays((n, d_out), -1.0, 1.0)),
        a=draw(floats(1e-2, 1e2)),
    )


@given(linear_bn_problems())
def test_property_bn_is_invariant_to_weight_scale(p):
    """BN((a W) u) == BN(W u) for a > 0; so is du, while dW scales by 1/a
    (Ioffe & Szegedy)."""
    u, w, a = p["u"], p["w"], p["a"]
    results = []
    for weight in (w, a * w):
        z = u @ weight.T
        out, cache = F.batchnorm_forward(z, p["gamma"], p["beta"], eps=0.0)
        dz, dgamma, dbeta = F.batchnorm_backward(p["dout"], cache)
        results.append((out, dz @ weight, dz.T @ u, dgamma, dbeta))
    (out1, du1, dw1, dg1, db1), (out2, du2, dw2, dg2, db2) = results
    np.testing.assert_allclose(out2, out1, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(du2, du1, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(a * dw2, dw1, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(dg2, dg1, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(db2, db1, rtol=1e-12)


def test_bn_scale_invariance_with_default_eps_is_approximate():
    """With eps = 1e-5 the invariance holds up to a relative error of about
    eps / var."""
    rng = np.random.default_rng(13)
    u, w = rng.normal(size=(32, 5)), rng.normal(size=(4, 5))
    out1, _ = F.batchnorm_forward(u @ w.T, None, None)
    out2, _ = F.batchnorm_forward(u @ (3.0 * w).T, None, None)
    var = np.var(u @ w.T, axis=0)
    assert np.max(np.abs(out2 - out1)) <= np.max(1e-5 / var) * np.max(np.abs(out1))


@given(problems(), st.sampled_from([np.float32, np.float64]), st.booleans())
def test_property_dtype_is_preserved(p, dtype, fixed):
    shape, axes = p["shape"], p["axes"]
    x, dout = p["x"].astype(dtype), p["dout"].astype(dtype)
    stats = None
    if fixed:  # float64 statistics (as the modules store them) on a float32 input
        stat_shape = tuple(
            1 if a in {b % len(shape) for b in axes} else s for a, s in enumerate(shape)
        )
        stats = (np.zeros(stat_shape), np.ones(stat_shape))
    for forward, backward in (
        (F.norm_forward, F.norm_backward),
        (fastpath.norm_forward, fastpath.norm_backward),
    ):
        out, cache = forward(
            x, p["gamma"], p["beta"], axes, stats=stats
        )  # float64 params
        assert out.dtype == dtype
        dx, dgamma, dbeta = backward(dout, cache)
        assert dx.dtype == dtype and dgamma.dtype == dtype and dbeta.dtype == dtype
        if not fixed:
            dx_staged, _, _ = F.batchnorm_backward_staged(dout, cache)
            assert dx_staged.dtype == dtype


# ------------------------------------------------------------------ fast path
# Where the kept axes are one block and gamma, beta are constant over the reduced axes
# (BatchNorm, InstanceNorm, LayerNorm without affine), bnlib.fastpath computes the same
# thing as the formulas with fewer passes over memory. Both must agree.
FAST_CASES = {
    "bn_2d": ((64, 5), (0,), (1, 5)),
    "bn_3d": ((6, 4, 7), (0, 2), (1, 4, 1)),
    "bn2d_4d": ((5, 3, 4, 6), (0, 2, 3), (1, 3, 1, 1)),
    "in": ((3, 4, 9), (2,), (1, 4, 1)),
    "ln_scalar_affine": ((4, 3, 6), (1, 2), ()),
    "gamma_over_kept_axes_only_partly": ((6, 4, 5), (0,), (1, 1, 5)),
}


def _assert_fast_matches_plain(x, gamma, beta, axes, dout, stats=None):
    """Forward outputs, statistics and gradients of both routes agree (and the staged
    backward accepts the fast cache)."""
    dtype = x.dtype
    tol = 1e-12 if dtype == np.float64 else 2e-5
    out, cache = fastpath.norm_forward(x, gamma, beta, axes, stats=stats)
    assert "layout" in cache  # the fast route was taken
    out_ref, ref = F.norm_forward(x, gamma, beta, axes, stats=stats)
    assert out.dtype == dtype and out.shape == x.shape
    np.testing.assert_allclose(out, out_ref, rtol=tol, atol=tol * np.abs(out_ref).max())
    for key in ("mu", "var", "inv_std"):
        assert cache[key].shape == np.shape(ref[key]) or stats is not None, key
        np.testing.assert_allclose(
            np.broadcast_to(cache[key], ref["inv_std"].shape),
            np.broadcast_to(ref[key], ref["inv_std"].shape),
            rtol=tol,
            atol=tol,
            err_msg=key,
        )
    np.testing.assert_allclose(
        cache["xc"] * cache["inv_std"],
        ref["x_hat"],
        rtol=tol,
        atol=tol * np.abs(ref["x_hat"]).max(),
    )
    grads = fastpath.norm_backward(dout, cache)
    grads_ref = F.norm_backward(dout, ref)
    # Tolerances relative to the size of the terms that cancel in each sum, not to the
    # result, which can be tiny (e.g. dx when dout is almost linear in x_hat).
    g_dx = np.abs(dout * ref["inv_std"] * (1.0 if gamma is None else gamma))
    terms = {
        "dx": g_dx.max() * (1 + np.abs(ref["x_hat"]).max()),
        "dgamma": np.sum(np.abs(dout * ref["x_hat"])),
        "dbeta": np.sum(np.abs(dout)),
    }
    for name, g, g_ref in zip(("dx", "dgamma", "dbeta"), grads, grads_ref, strict=True):
        if g_ref is None:
            assert g is None, name
            continue
        assert g.dtype == dtype and g.shape == g_ref.shape, name
        np.testing.assert_allclose(
            g, g_ref, rtol=tol, atol=tol * terms[name], err_msg=name
        )
    if stats is None:
        staged = F.batchnorm_backward_staged(dout, cache)
        np.testing.assert_allclose(
            staged[0], grads_ref[0], rtol=10 * tol, atol=10 * tol * terms["dx"]
        )


@pytest.mark.parametrize("chunk_bytes", [None, 64])
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", FAST_CASES)
def test_fast_path_agrees_with_the_formulas(
    name, dtype, mode, chunk_bytes, monkeypatch
):
    if chunk_bytes is not None:  # many small chunks, to exercise the chunk boundaries
        monkeypatch.setattr(fastpath, "CHUNK_BYTES", chunk_bytes)
    shape, axes, pshape = FAST_CASES[name]
    rng = np.random.default_rng(14)
    x = rng.normal(3.0, 2.0, shape).astype(dtype)
    dout = rng.normal(size=shape).astype(dtype)
    gamma, beta = _affine(rng, pshape)
    stats = None
    if mode == "eval":  # fixed statistics per group, float64 as the modules keep them
        kd = tuple(1 if a in axes else n for a, n in enumerate(shape))
        stats = (rng.normal(3.0, 1.0, kd), rng.uniform(1.0, 5.0, kd))
    _assert_fast_matches_plain(x, gamma, beta, axes, dout, stats)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(64, 5), (6, 4, 7), (5, 3, 4, 6)])
def test_fast_batchnorm_entry_agrees_with_the_formulas(shape, dtype, mode):
    """fastpath.batchnorm_forward (what the BatchNorm layers call, with (C,) parameters
    and statistics) against functional.batchnorm_forward and its backward."""
    rng = np.random.default_rng(17)
    c = shape[1]
    x = rng.normal(3.0, 2.0, shape).astype(dtype)
    dout = rng.normal(size=shape).astype(dtype)
    gamma, beta = _affine(rng, (c,))
    stats = None if mode == "train" else (rng.normal(3, 1, c), rng.uniform(1, 5, c))
    out, cache = fastpath.batchnorm_forward(x, gamma, beta, stats=stats)
    out_ref, ref = F.batchnorm_forward(x, gamma, beta, stats=stats)
    assert "layout" in cache and out.dtype == dtype
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(out, out_ref, rtol=tol, atol=tol * np.abs(out_ref).max())
    dx, dgamma, dbeta = fastpath.norm_backward(dout, cache)
    dx_ref, dgamma_ref, dbeta_ref = F.batchnorm_backward(dout, ref)
    scale = np.abs(dout).sum()
    np.testing.assert_allclose(dx, dx_ref, rtol=tol, atol=tol * np.abs(dx_ref).max())
    np.testing.assert_allclose(
        dgamma.reshape(c), dgamma_ref, rtol=tol, atol=tol * scale
    )
    np.testing.assert_allclose(dbeta.reshape(c), dbeta_ref, rtol=tol, atol=tol * scale)


def test_fast_batchnorm_entry_falls_back_for_float16():
    x = np.random.default_rng(18).normal(size=(8, 3)).astype(np.float16)
    out, cache = fastpath.batchnorm_forward(x, np.ones(3), np.zeros(3))
    assert "layout" not in cache and out.dtype == np.float16
    np.testing.assert_array_equal(
        out, F.batchnorm_forward(x, np.ones(3), np.zeros(3))[0]
    )


def test_fast_path_without_affine_and_noncontiguous_input():
    rng = np.random.default_rng(15)
    x = rng.normal(size=(6, 8, 5)).transpose(0, 2, 1)  # a non-contiguous (6, 5, 8) view
    out, cache = fastpath.norm_forward(x, None, None, (0, 2))
    assert "layout" in cache and out.shape == (6, 5, 8)
    np.testing.assert_allclose(out.mean(axis=(0, 2)), 0, atol=1e-12)
    dout = rng.normal(size=out.shape)
    dx, dgamma, dbeta = fastpath.norm_backward(dout, cache)
    assert dgamma is None and dbeta is None
    assert rel_error(dx, F.batchnorm_backward_staged(dout, cache)[0]) < 1e-10


FALLBACK_CASES = {
    "per_element_gamma": (np.float64, (5, 3), (0,), (5, 3), True),
    "layernorm_affine": (np.float64, (4, 6), (1,), (6,), True),
    "kept_axes_not_one_block": (np.float64, (3, 4, 5), (1,), (3, 1, 5), True),
    "rmsnorm": (np.float64, (4, 6), (1,), (6,), False),
    "float16": (np.float16, (8, 3), (0,), (1, 3), True),
}


@pytest.mark.parametrize("name", FALLBACK_CASES)
def test_fast_path_falls_back_to_the_formulas(name):
    dtype, shape, axes, pshape, center = FALLBACK_CASES[name]
    rng = np.random.default_rng(16)
    x, dout = rng.normal(size=shape).astype(dtype), rng.normal(size=shape).astype(dtype)
    gamma, beta = _affine(rng, pshape)
    beta = beta if center else None
    out, cache = fastpath.norm_forward(x, gamma, beta, axes, center=center)
    assert "layout" not in cache
    out_ref, ref = F.norm_forward(x, gamma, beta, axes, center=center)
    np.testing.assert_array_equal(out, out_ref)
    assert out.dtype == dtype
    for g, g_ref in zip(
        fastpath.norm_backward(dout, cache), F.norm_backward(dout, ref), strict=True
    ):
        np.testing.assert_array_equal(g, g_ref)


@st.composite
def fast_problems(draw):
    """A shape (A..., K..., B...) whose kept axes K form one block, float32 or float64
    data, per-group gamma and beta, and train or eval statistics."""
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(2, 4), min_size=ndim, max_size=ndim)))
    first = draw(st.integers(0, ndim - 1))
    last = draw(st.integers(first, ndim - 1))
    axes = tuple(a for a in range(ndim) if not first <= a <= last)
    assume(axes)
    kd = tuple(1 if a in axes else n for a, n in enumerate(shape))
    x = draw(float_arrays(shape, -100, 100))
    assume(well_spread(x, axes))
    stats = None
    if draw(st.booleans()):
        stats = (draw(float_arrays(kd, -10, 10)), draw(float_arrays(kd, 0.5, 10)))
    return dict(
        x=x.astype(draw(st.sampled_from([np.float32, np.float64]))),
        axes=axes,
        gamma=draw(float_arrays(kd, 0.5, 2.0)),
        beta=draw(float_arrays(kd, -1, 1)),
        dout=draw(float_arrays(shape, -1, 1)),
        stats=stats,
    )


@given(fast_problems())
def test_property_fast_path_agrees_with_the_formulas(p):
    x = p["x"]
    _assert_fast_matches_plain(
        x, p["gamma"], p["beta"], p["axes"], p["dout"].astype(x.dtype), p["stats"]
    )
