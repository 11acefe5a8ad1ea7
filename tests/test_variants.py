"""bnlib.variants: Batch Renorm, ghost and noisy BatchNorm, weight norm, the normalized
RNN."""

import copy

import numpy as np
import pytest

import bnlib
from bnlib import (
    BatchRenorm1d,
    GhostBatchNorm1d,
    LastStep,
    NoisyBatchNorm1d,
    NormRNN,
    WeightNormLinear,
    check_module_gradients,
    make_mlp,
    numerical_gradient,
    rel_error,
    rnn_classifier,
)
from bnlib import functional as F

GRAD_TOL = 1e-6


def _batch(rng, n=12, d=5, k=3):
    rng = np.random.default_rng(rng)
    return rng.normal(size=(n, d)), rng.integers(0, k, size=n)


def _randomize(m, rng):
    if "weight" in m.params:
        m.params["weight"][...] = rng.uniform(0.5, 1.5, m.params["weight"].shape)
    m.params["bias"][...] = rng.normal(0.0, 0.3, m.params["bias"].shape)
    return m


def test_renorm_running_std_follows_the_paper():
    rng = np.random.default_rng(6)
    brn = BatchRenorm1d(3, eps=1e-3, momentum=0.2)  # running="std"
    sigma, mu = np.sqrt(1.0 + 1e-3) * np.ones(3), np.zeros(3)
    np.testing.assert_allclose(brn.running_var, 1.0)
    for _ in range(5):
        x = rng.normal(1.0, 2.0, (10, 3))
        brn(x)
        mu = 0.8 * mu + 0.2 * x.mean(axis=0)
        sigma = 0.8 * sigma + 0.2 * np.sqrt(x.var(axis=0) + 1e-3)
    np.testing.assert_allclose(brn.running_mean, mu, rtol=1e-12)
    np.testing.assert_allclose(brn.running_std, sigma, rtol=1e-12)
    np.testing.assert_allclose(brn.running_var, sigma**2 - 1e-3, rtol=1e-12)
    brn.eval()
    x = rng.normal(size=(4, 3))
    expected = brn.params["weight"] * (x - mu) / sigma + brn.params["bias"]
    np.testing.assert_allclose(brn(x), expected, rtol=1e-12)


def test_renorm_unclipped_training_output_equals_eval_output():
    rng = np.random.default_rng(7)
    brn = BatchRenorm1d(3, r_max=100.0, d_max=100.0)
    brn.running_mean, brn.running_var = rng.normal(size=3), rng.uniform(0.5, 2.0, 3)
    brn.params["weight"][:] = rng.uniform(0.5, 2.0, 3)
    x = rng.normal(0.5, 1.5, (6, 3))
    expected = copy.deepcopy(brn).eval()(x)
    np.testing.assert_allclose(brn(x), expected, rtol=1e-10, atol=1e-12)
    assert np.all(brn.last_r != 1.0) and np.all(brn.last_d != 0.0)


def test_renorm_clips_r_and_d():
    brn = BatchRenorm1d(2, r_max=2.0, d_max=0.5)
    brn.running_mean, brn.running_var = np.array([5.0, -5.0]), np.array([100.0, 1e-4])
    brn(np.random.default_rng(8).normal(size=(16, 2)))
    np.testing.assert_allclose(brn.last_r, [0.5, 2.0])
    np.testing.assert_allclose(brn.last_d, [-0.5, 0.5])


def test_renorm_gradient_check_clipped():
    """Where r and d sit at their clip limits they are locally constant, so the
    stop-gradient backward is the true gradient of the forward."""
    rng = np.random.default_rng(9)
    brn = BatchRenorm1d(
        3, momentum=0.0, r_max=2.0, d_max=0.5
    )  # momentum 0: stats fixed
    brn.running_mean, brn.running_var = (
        np.array([5.0, -5.0, 5.0]),
        np.array([100.0, 100.0, 1e-3]),
    )
    brn.params["weight"][:] = rng.uniform(0.5, 2.0, 3)
    brn.params["bias"][:] = rng.normal(size=3)
    errors = check_module_gradients(brn, rng.normal(size=(6, 3)), rng=1)
    assert brn.last_r[0] == 0.5 and brn.last_d[1] == 0.5
    assert max(errors.values()) < GRAD_TOL, errors


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5)])
def test_renorm_gradient_check_with_r_d_held_constant(shape):
    rng = np.random.default_rng(10)
    brn = BatchRenorm1d(3, momentum=0.0, r_max=10.0, d_max=10.0)
    brn.running_mean, brn.running_var = rng.normal(size=3), rng.uniform(0.5, 2.0, 3)
    gamma, beta = rng.uniform(0.5, 2.0, 3), rng.normal(size=3)
    brn.params["weight"][:], brn.params["bias"][:] = gamma, beta
    x = rng.normal(1.0, 2.0, shape)
    dout = rng.normal(size=shape)
    brn(x)
    r, d = brn.last_r, brn.last_d
    assert np.all(
        (r > 0.1) & (r < 10.0)
    )  # interior: the clip is not what holds them fixed
    dx = brn.backward(dout)

    def loss():
        return float(
            np.sum(F.batchnorm_forward(x, gamma * r, gamma * d + beta)[0] * dout)
        )

    assert rel_error(dx, numerical_gradient(loss, x)) < GRAD_TOL
    assert rel_error(brn.grads["weight"], numerical_gradient(loss, gamma)) < GRAD_TOL
    assert rel_error(brn.grads["bias"], numerical_gradient(loss, beta)) < GRAD_TOL


def test_renorm_eval_gradient_check_and_bad_input():
    rng = np.random.default_rng(11)
    brn = BatchRenorm1d(3)
    brn.running_mean, brn.running_var = rng.normal(size=3), rng.uniform(0.5, 2.0, 3)
    brn.params["weight"][:] = rng.uniform(0.5, 2.0, 3)
    brn.eval()
    assert (
        max(check_module_gradients(brn, rng.normal(size=(4, 3)), rng=2).values())
        < GRAD_TOL
    )
    brn.train()
    with pytest.raises(ValueError, match="more than 1 value"):
        brn(np.ones((1, 3)))
    with pytest.raises(ValueError, match="3 channels"):
        brn(np.ones((4, 2)))
    with pytest.raises(ValueError, match="r_max"):
        BatchRenorm1d(3, r_max=0.5)


@pytest.mark.parametrize("norm", [None, "bn", "noisy_bn"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "linear"])
def test_make_mlp_shapes_and_layers(norm, activation):
    model = make_mlp([5, 7, 6, 3], activation, norm, rng=0)
    x, _ = _batch(0)
    assert model(x).shape == (12, 3)
    linears = [m for m in model.layers if isinstance(m, bnlib.Linear)]
    assert len(linears) == 3
    norms = [m for m in model.layers if isinstance(m, bnlib.BatchNorm1d)]
    assert len(norms) == (0 if norm is None else 2)
    if norm == "noisy_bn":
        assert all(isinstance(m, NoisyBatchNorm1d) for m in norms)
    # BN before the nonlinearity: the hidden Linear layers have no bias
    # (beta replaces it)
    assert all(("bias" in m.params) == (norm is None) for m in linears[:-1])
    assert "bias" in linears[-1].params


def test_noisy_bn_eval_is_plain_bn_and_train_is_noisy():
    x, _ = _batch(2, n=50, d=4)
    noisy, plain = NoisyBatchNorm1d(4, rng=0), bnlib.BatchNorm1d(4)
    y1, y2 = noisy(x), noisy(x)
    assert not np.allclose(y1, y2)  # new noise at every training step
    plain(x), plain(x)  # the same two updates of the statistics
    np.testing.assert_allclose(noisy.running_mean, plain.running_mean)
    np.testing.assert_allclose(noisy.running_var, plain.running_var)
    noisy.eval(), plain.eval()
    np.testing.assert_allclose(noisy(x), plain(x))
    np.testing.assert_allclose(
        noisy.backward(np.ones_like(x)), plain.backward(np.ones_like(x))
    )


def test_noisy_bn_noise_ranges():
    x, _ = _batch(3, n=400, d=30)
    noisy = NoisyBatchNorm1d(30, shift=0.5, scale=(1.0, 1.25), unit_std=0.0, rng=1)
    for _ in range(20):
        y = noisy(x)
        mean, std = y.mean(0), y.std(0)
        np.testing.assert_allclose(
            mean, mean[0], atol=1e-12
        )  # unit_std 0: one shift per layer
        assert -0.5 <= mean[0] <= 0.5
        assert 1.0 - 1e-3 <= std[0] <= 1.25 + 1e-3


def test_noisy_bn_gradients():
    x, _ = _batch(4, n=8, d=3)
    noisy = NoisyBatchNorm1d(3, rng=2)
    noisy.params["weight"][:] = [0.5, 1.5, 2.0]
    noisy.params["bias"][:] = [0.1, -0.2, 0.3]
    state = noisy.rng.bit_generator.state
    r = np.random.default_rng(5).normal(size=(8, 3))

    def loss():  # replay the same noise on every call
        noisy.rng.bit_generator.state = state
        return float(np.sum(noisy(x) * r))

    loss()
    dx = noisy.backward(r)
    analytic = {k: noisy.grads[k].copy() for k in noisy.params}
    assert bnlib.rel_error(dx, bnlib.numerical_gradient(loss, x)) < 1e-7
    for k, p in noisy.params.items():
        assert bnlib.rel_error(analytic[k], bnlib.numerical_gradient(loss, p)) < 1e-7


@pytest.mark.parametrize("shape", [(8, 3), (6, 3, 4)])
def test_noisy_bn_per_sample_gradients(shape):
    x = np.random.default_rng(7).normal(size=shape)
    noisy = NoisyBatchNorm1d(3, rng=3, per_sample=True)
    noisy.params["weight"][:] = [0.5, 1.5, 2.0]
    noisy.params["bias"][:] = [0.1, -0.2, 0.3]
    state = noisy.rng.bit_generator.state
    r = np.random.default_rng(5).normal(size=shape)

    def loss():  # replay the same noise on every call
        noisy.rng.bit_generator.state = state
        return float(np.sum(noisy(x) * r))

    loss()
    dx = noisy.backward(r)
    analytic = {k: noisy.grads[k].copy() for k in noisy.params}
    assert bnlib.rel_error(dx, bnlib.numerical_gradient(loss, x)) < 1e-7
    for k, p in noisy.params.items():
        assert bnlib.rel_error(analytic[k], bnlib.numerical_gradient(loss, p)) < 1e-7


def test_noisy_bn_per_sample_noise_is_iid_per_activation():
    x, _ = _batch(8, n=4000, d=5)
    bn_x = bnlib.BatchNorm1d(5)(x)
    per_unit = NoisyBatchNorm1d(5, unit_std=0.1, rng=4)
    per_sample = NoisyBatchNorm1d(5, unit_std=0.1, rng=4, per_sample=True)
    yu, ys = per_unit(x), per_sample(x)
    assert per_sample.extra_repr().endswith("per_sample=True")
    for j in range(5):
        # per unit: one (s_j, m_j) for the whole column, so y_j is affine in BN(x)_j
        slope, icpt = np.polyfit(bn_x[:, j], yu[:, j], 1)
        np.testing.assert_allclose(yu[:, j], slope * bn_x[:, j] + icpt, atol=1e-10)
        assert 1.0 - 0.5 < slope < 1.25 + 0.5 and -0.5 - 0.5 < icpt < 0.5 + 0.5
        # per sample: a fresh (s_ij, m_ij) for every example; the residual is the noise,
        # std sqrt(0.1^2 + 0.1^2 * E[BN(x)^2]) = 0.1 * sqrt(2) ~ 0.141
        slope, icpt = np.polyfit(bn_x[:, j], ys[:, j], 1)
        resid = ys[:, j] - (slope * bn_x[:, j] + icpt)
        assert 0.12 < resid.std() < 0.16
        assert -0.5 - 0.05 < icpt < 0.5 + 0.05  # the layer's shift mu ~ U(-0.5, 0.5)
    with pytest.raises(ValueError):
        per_sample(x[:1])  # still BatchNorm: a batch of one fails in training


def test_ghost_bn_with_full_ghost_equals_bn():
    x, _ = _batch(6, n=16, d=4)
    ghost, plain = GhostBatchNorm1d(4, ghost_size=16), bnlib.BatchNorm1d(4)
    np.testing.assert_allclose(ghost(x), plain(x))
    r = np.random.default_rng(0).normal(size=x.shape)
    np.testing.assert_allclose(ghost.backward(r), plain.backward(r))
    np.testing.assert_allclose(ghost.grads["weight"], plain.grads["weight"])
    np.testing.assert_allclose(ghost.running_var, plain.running_var)


def test_ghost_bn_normalizes_each_group_and_gradcheck():
    x, _ = _batch(7, n=12, d=3)
    ghost = GhostBatchNorm1d(3, ghost_size=4)
    ghost.params["weight"][:] = [0.5, 2.0, -1.0]
    y = ghost(x).reshape(3, 4, 3)
    np.testing.assert_allclose(
        y.mean(axis=1), np.zeros((3, 3)) + ghost.params["bias"], atol=1e-12
    )
    errors = bnlib.check_module_gradients(ghost, x, rng=0)
    assert max(errors.values()) < 1e-7
    with pytest.raises(ValueError, match="multiple"):
        ghost(x[:10])


@pytest.mark.parametrize("norm", ["bn", "ln", None])
def test_rnn_bptt_gradients(norm):
    rng = np.random.default_rng(1)
    m = _randomize(NormRNN(3, 5, norm=norm, max_len=6, rng=2), rng)
    errs = check_module_gradients(m, rng.normal(size=(4, 6, 3)), rng=3)
    assert max(errs.values()) < GRAD_TOL, errs


@pytest.mark.parametrize("norm", ["bn", "ln", None])
def test_rnn_bptt_gradients_with_variable_lengths(norm):
    rng = np.random.default_rng(4)
    m = _randomize(NormRNN(2, 4, norm=norm, max_len=7, rng=5), rng)
    x = rng.normal(size=(6, 7, 2))  # at least 3 sequences active at every step
    x[1, 5:] = np.nan
    x[2, 3:] = np.nan
    x[4, 6:] = np.nan
    r = rng.normal(size=(6, 7, 4))

    def loss():
        return float(np.sum(m(x) * r))

    m(x)
    dx = m.backward(r)
    assert np.all(dx[np.isnan(x)] == 0.0)
    active = ~np.isnan(x)
    num_dx = numerical_gradient(loss, x)
    assert rel_error(dx[active], num_dx[active]) < GRAD_TOL
    for k in m.params:
        assert (
            rel_error(m.grads[k], numerical_gradient(loss, m.params[k])) < GRAD_TOL
        ), k


def test_rnn_carries_state_after_the_end_and_ln_is_batch_independent():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(4, 6, 1))
    x[0, 3:] = np.nan
    ln = NormRNN(1, 5, norm="ln", rng=0)
    out = ln(x)
    np.testing.assert_array_equal(out[0, 3:], np.repeat(out[0, 2:3], 3, axis=0))
    alone = ln(x[:1])  # batch of one, training mode: same values
    np.testing.assert_allclose(alone[0], out[0], atol=1e-12)
    np.testing.assert_allclose(ln.eval()(x), out, atol=1e-12)


def test_rnn_bn_per_step_running_statistics():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(8, 4, 2))
    m = NormRNN(2, 3, norm="bn", max_len=5, rng=1)
    out = m(x)
    # step 0 sees x_0 only: its batch mean is the mean of x_0 W_ih^T
    a0 = x[:, 0] @ m.params["weight_ih"].T
    np.testing.assert_allclose(m.running_mean[0], 0.1 * a0.mean(0), atol=1e-12)
    np.testing.assert_allclose(
        m.running_var[0], 0.9 + 0.1 * a0.var(0, ddof=1), atol=1e-12
    )
    assert np.all(m.running_mean[4] == 0) and np.all(m.active_counts == [8, 8, 8, 8, 0])
    assert out.shape == (8, 4, 3)
    m.eval()
    with pytest.raises(ValueError, match="no running statistics for time step 5"):
        m(rng.normal(size=(2, 6, 2)))
    m.extrapolate = "last"
    assert m(rng.normal(size=(2, 6, 2))).shape == (2, 6, 3)


def test_rnn_bn_alone_at_a_step_is_erased():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(3, 5, 1))
    x[1:, 3:] = np.nan  # only sequence 0 runs in steps 3 and 4
    m = _randomize(NormRNN(1, 4, norm="bn", max_len=5, rng=2), rng)
    out = m(x)
    np.testing.assert_allclose(out[0, 3], np.tanh(m.params["bias"]), atol=1e-12)
    x2 = x.copy()
    x2[0, :] += 5.0
    np.testing.assert_allclose(m(x2)[0, -1], out[0, -1], atol=1e-12)


def test_rnn_bad_input():
    m = NormRNN(2, 3, norm="bn", max_len=4, rng=0)
    with pytest.raises(ValueError, match="expected input"):
        m(np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match="longer than max_len"):
        m(np.zeros((2, 5, 2)))
    with pytest.raises(ValueError, match="more than 1 example"):
        m(np.zeros((1, 4, 2)))
    x = np.zeros((2, 4, 2))
    x[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN padding"):
        m(x)
    with pytest.raises(ValueError, match="max_len"):
        NormRNN(2, 3, norm="bn")
    with pytest.raises(ValueError, match="norm"):
        NormRNN(2, 3, norm="gn")


def test_last_step_and_classifier():
    rng = np.random.default_rng(9)
    h = rng.normal(size=(2, 3, 4))
    ls = LastStep()
    np.testing.assert_array_equal(ls(h), h[:, -1])
    d = ls.backward(np.ones((2, 4)))
    assert d[:, -1].sum() == 8 and d[:, :-1].sum() == 0
    model = rnn_classifier(1, 6, 2, norm="ln", rng=0)
    assert model(rng.normal(size=(5, 7, 1))).shape == (5, 2)
    errs = check_module_gradients(model, rng.normal(size=(3, 4, 1)), rng=1)
    assert errs["x"] < GRAD_TOL


def test_weight_norm_gradients_and_row_scale_invariance():
    rng = np.random.default_rng(10)
    m = WeightNormLinear(4, 3, rng=0)
    m.params["g"][...] = rng.uniform(0.5, 2.0, 3)
    m.params["bias"][...] = rng.normal(size=3)
    x = rng.normal(size=(5, 4))
    errs = check_module_gradients(m, x, rng=1)
    assert max(errs.values()) < GRAD_TOL, errs
    out = m(x)
    m.params["v"] *= np.array([[2.0], [0.1], [7.0]])
    np.testing.assert_allclose(m(x), out, atol=1e-12)
    with pytest.raises(ValueError, match="expected 4 input features"):
        m(np.zeros((2, 3)))


@pytest.mark.parametrize("norm", ["bn", "ln", None])
def test_norm_rnn_state_dict_round_trip_carries_per_step_statistics(norm):
    """A BN recurrent cell's state is its per-step running statistics too: a model
    loaded from the state dict gives the trained model's eval-mode outputs."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(6, 5, 2))
    trained = NormRNN(2, 3, norm=norm, max_len=5, rng=0)
    for _ in range(3):
        trained(rng.normal(size=(6, 5, 2)))
    state = trained.state_dict()
    expected = {"weight_ih", "weight_hh", "bias"} | ({"weight"} if norm else set())
    if norm == "bn":
        expected |= {"running_mean", "running_var", "active_counts"}
    assert set(state) == expected

    fresh = NormRNN(2, 3, norm=norm, max_len=5, rng=1)
    fresh.load_state_dict(state)
    trained.eval()
    fresh.eval()
    np.testing.assert_array_equal(fresh(x), trained(x))
