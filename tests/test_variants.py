"""bnlib.variants: ghost and noisy BatchNorm, and make_mlp with them."""

import numpy as np
import pytest

import bnlib
from bnlib import (
    GhostBatchNorm1d,
    NoisyBatchNorm1d,
    make_mlp,
)

GRAD_TOL = 1e-6


def _batch(rng, n=12, d=5, k=3):
    rng = np.random.default_rng(rng)
    return rng.normal(size=(n, d)), rng.integers(0, k, size=n)


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
