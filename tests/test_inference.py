"""bnlib.inference: EMA helpers, precise_bn, fold_batchnorm, BatchRenorm1d, covariate_shift."""
import copy

import numpy as np
import pytest

import bnlib
from bnlib import (BatchNorm1d, BatchRenorm1d, Conv1d, Linear, ReLU, Sequential,
                   check_module_gradients, ema, ema_weights, fold_batchnorm, numerical_gradient,
                   precise_bn, rel_error)
from bnlib import functional as F

GRAD_TOL = 1e-7


# ----------------------------------------------------------------------------- EMA

def test_ema_weights_recent_batch_weighs_most_and_sum():
    w = ema_weights(0.1, 20)
    assert w.shape == (20,)
    assert np.argmax(w) == 19 and np.all(np.diff(w) > 0)
    np.testing.assert_allclose(w.sum(), 1 - 0.9**20)
    np.testing.assert_allclose(w[-1], 0.1)
    np.testing.assert_allclose(ema_weights(None, 4), 0.25)


def test_ema_matches_weights_and_batchnorm():
    rng = np.random.default_rng(0)
    xs = rng.normal(2.0, 3.0, (7, 16, 3))
    bn = BatchNorm1d(3, momentum=0.3)
    for x in xs:
        bn(x)
    means = xs.mean(axis=1)
    uvars = xs.var(axis=1, ddof=1)
    np.testing.assert_allclose(ema(means, 0.3, 0.0)[-1], bn.running_mean, rtol=1e-12)
    np.testing.assert_allclose(ema(uvars, 0.3, 1.0)[-1], bn.running_var, rtol=1e-12)
    w = ema_weights(0.3, 7)
    np.testing.assert_allclose(w @ uvars + 0.7**7 * 1.0, bn.running_var, rtol=1e-12)
    bn_cum = BatchNorm1d(3, momentum=None)
    for x in xs:
        bn_cum(x)
    np.testing.assert_allclose(ema(uvars, None, 1.0)[-1], bn_cum.running_var, rtol=1e-12)
    np.testing.assert_allclose(uvars.mean(axis=0), bn_cum.running_var, rtol=1e-12)


def test_momentum_conversion_and_window():
    assert bnlib.keras_to_torch_momentum(0.99) == pytest.approx(0.01)
    assert bnlib.torch_to_keras_momentum(0.1) == pytest.approx(0.9)
    for m in (0.0, 0.3, 1.0):
        assert bnlib.keras_to_torch_momentum(bnlib.torch_to_keras_momentum(m)) == pytest.approx(m)
    with pytest.raises(ValueError, match="momentum"):
        bnlib.keras_to_torch_momentum(1.5)
    k = bnlib.effective_window(0.1)
    np.testing.assert_allclose(1 - 0.9**k, 1 - np.exp(-1))
    assert 9 < k < 10 and bnlib.effective_window(0.01) == pytest.approx(99.5, abs=0.1)


def test_drift_simulation_matches_theory():
    a, s, noise = 0.1, 0.05, 2.0
    sim = bnlib.simulate_drift(a, s, steps=20000, noise=noise, batch_size=4, rng=1)
    err = (sim["ema"] - sim["true"])[200:]
    lag, jitter = bnlib.ema_tracking_error(a, s, noise / 2.0)
    np.testing.assert_allclose(err.mean(), lag, rtol=0.05)
    np.testing.assert_allclose(err.std(), jitter, rtol=0.05)
    np.testing.assert_allclose(lag, -0.45)


# ----------------------------------------------------------------------------- precise_bn

def _mlp(rng, c_in=5, h=6):
    return Sequential(Linear(c_in, h, rng=rng), BatchNorm1d(h), ReLU(),
                      Linear(h, h, rng=rng), BatchNorm1d(h), ReLU(), Linear(h, 3, rng=rng))


def test_precise_bn_single_layer_equals_full_data_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (200, 4)) * np.array([1.0, 10.0, 0.1, 1e3])
    bn = BatchNorm1d(4)
    bn.params["weight"][:] = 2.0
    weight = bn.params["weight"].copy()
    bn.eval()
    batches = [x[i:i + 25] for i in range(0, 200, 25)]
    precise_bn(bn, batches)
    np.testing.assert_allclose(bn.running_mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, x.var(axis=0), rtol=1e-12)
    assert not bn.training and bn.num_batches_tracked == 8
    np.testing.assert_array_equal(bn.params["weight"], weight)
    # unequal batch sizes, (x, y) pairs and a generator are fine
    sizes = [7, 50, 3, 140]
    pairs = ((b, None) for b in np.split(x, np.cumsum(sizes)[:-1]))
    precise_bn(bn, pairs)
    np.testing.assert_allclose(bn.running_var, x.var(axis=0), rtol=1e-12)
    # Algorithm 2: the mean of per-batch unbiased variances, the mean of per-batch means
    precise_bn(bn, batches, variance="batch_mean")
    xb = x.reshape(8, 25, 4)
    np.testing.assert_allclose(bn.running_mean, xb.mean(axis=1).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, xb.var(axis=1, ddof=1).mean(axis=0), rtol=1e-12)


def test_precise_bn_3d_input_counts_every_position():
    rng = np.random.default_rng(1)
    x = rng.normal(1.0, 2.0, (12, 3, 5))
    bn = BatchNorm1d(3)
    precise_bn(bn, [x[:4], x[4:]])
    np.testing.assert_allclose(bn.running_mean, x.mean(axis=(0, 2)), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, x.var(axis=(0, 2)), rtol=1e-12)


def test_precise_bn_deep_model_matches_manual_train_mode_pass():
    rng = np.random.default_rng(2)
    model = _mlp(rng)
    x = rng.normal(size=(60, 5))
    batches = [x[i:i + 20] for i in range(0, 60, 20)]
    reference = copy.deepcopy(model).train()
    inputs = {1: [], 4: []}  # layer index -> its inputs over the batches
    for xb in batches:
        h = xb
        for i, layer in enumerate(reference.layers):
            if i in inputs:
                inputs[i].append(h)
            h = layer(h)
    params = {(id(m), k): m.params[k].copy() for m, k in model.parameters()}
    model.eval()
    model[4].train()  # a mixed mode is restored too
    precise_bn(model, batches)
    for i, hs in inputs.items():
        h = np.concatenate(hs)
        np.testing.assert_allclose(model[i].running_mean, h.mean(axis=0), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(model[i].running_var, h.var(axis=0), rtol=1e-10)
    assert [m.training for m in model.layers] == [False] * 4 + [True] + [False] * 2
    for m, k in model.parameters():
        np.testing.assert_array_equal(m.params[k], params[(id(m), k)])


def test_precise_bn_bad_input():
    with pytest.raises(ValueError, match="no BatchNorm"):
        precise_bn(Sequential(Linear(3, 2, rng=0)), [np.ones((4, 3))])
    bn = BatchNorm1d(2)
    before = bn.running_var.copy()
    with pytest.raises(ValueError, match="empty"):
        precise_bn(bn, [])
    np.testing.assert_array_equal(bn.running_var, before)
    with pytest.raises(ValueError, match="variance"):
        precise_bn(bn, [np.ones((4, 2))], variance="unbiased")


# ----------------------------------------------------------------------------- folding

@pytest.mark.parametrize("bias", [True, False])
def test_fold_linear_matches_unfolded_pair_float32(bias):
    rng = np.random.default_rng(3)
    lin = Linear(10, 6, bias=bias, rng=rng)
    bn = BatchNorm1d(6)
    bn.params["weight"][:] = rng.uniform(0.5, 2.0, 6)
    bn.params["bias"][:] = rng.normal(size=6)
    bn.running_mean = rng.normal(size=6)
    bn.running_var = rng.uniform(0.2, 3.0, 6)
    bn.eval()
    folded = fold_batchnorm(lin, bn)
    assert isinstance(folded, Linear) and folded is not lin and "bias" in folded.params
    x = rng.normal(size=(32, 10)).astype(np.float32)
    ref = bn(lin(x))
    out = folded(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(folded(x.astype(np.float64)), bn(lin(x.astype(np.float64))),
                               rtol=1e-12, atol=1e-12)
    assert ("bias" in lin.params) == bias  # the original layer is unchanged


def test_fold_conv1d_matches_unfolded_pair():
    rng = np.random.default_rng(4)
    conv = Conv1d(3, 4, 5, stride=2, padding=1, rng=rng)
    bn = BatchNorm1d(4)
    bn.params["weight"][:] = rng.uniform(0.5, 2.0, 4)
    bn.params["bias"][:] = rng.normal(size=4)
    x = rng.normal(size=(8, 3, 20))
    for _ in range(3):  # real running statistics from a few training batches
        bn(conv(x + rng.normal(size=x.shape)))
    bn.eval()
    folded = fold_batchnorm(conv, bn)
    assert isinstance(folded, Conv1d) and (folded.stride, folded.padding) == (2, 1)
    np.testing.assert_allclose(folded(x), bn(conv(x)), rtol=1e-12, atol=1e-12)
    x32 = x.astype(np.float32)
    np.testing.assert_allclose(folded(x32), bn(conv(x32)), rtol=1e-6, atol=1e-6)


def test_fold_bad_input():
    with pytest.raises(ValueError, match="4 outputs"):
        fold_batchnorm(Linear(3, 4, rng=0), BatchNorm1d(5))
    with pytest.raises(ValueError, match="Linear or Conv1d"):
        fold_batchnorm(ReLU(), BatchNorm1d(5))
    with pytest.raises(ValueError, match="BatchNorm"):
        fold_batchnorm(Linear(3, 4, rng=0), Linear(4, 4, rng=0))


# ----------------------------------------------------------------------------- Batch Renorm

def _affine_pair(num_features, rng):
    bn, brn = BatchNorm1d(num_features), BatchRenorm1d(num_features, r_max=1.0, d_max=0.0,
                                                       running="var")
    gamma, beta = rng.uniform(0.5, 2.0, num_features), rng.normal(size=num_features)
    for layer in (bn, brn):
        layer.params["weight"][:] = gamma
        layer.params["bias"][:] = beta
    return bn, brn


@pytest.mark.parametrize("shape", [(8, 4), (5, 4, 3)])
def test_renorm_reduces_to_batchnorm(shape):
    rng = np.random.default_rng(5)
    bn, brn = _affine_pair(4, rng)
    for step in range(4):
        x = rng.normal(2.0, 3.0, shape)
        np.testing.assert_allclose(brn(x), bn(x), rtol=1e-12, atol=1e-12)
        dout = rng.normal(size=shape)
        np.testing.assert_allclose(brn.backward(dout), bn.backward(dout), rtol=1e-12, atol=1e-12)
        for k in ("weight", "bias"):
            np.testing.assert_allclose(brn.grads[k], bn.grads[k], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(brn.running_mean, bn.running_mean, rtol=1e-12)
        np.testing.assert_allclose(brn.running_var, bn.running_var, rtol=1e-12)
    bn.eval(), brn.eval()
    x = rng.normal(size=shape)
    np.testing.assert_allclose(brn(x), bn(x), rtol=1e-12, atol=1e-12)


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
    brn = BatchRenorm1d(3, momentum=0.0, r_max=2.0, d_max=0.5)  # momentum 0: stats fixed
    brn.running_mean, brn.running_var = np.array([5.0, -5.0, 5.0]), np.array([100.0, 100.0, 1e-3])
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
    assert np.all((r > 0.1) & (r < 10.0))  # interior: the clip is not what holds them fixed
    dx = brn.backward(dout)

    def loss():
        return float(np.sum(F.batchnorm_forward(x, gamma * r, gamma * d + beta)[0] * dout))

    assert rel_error(dx, numerical_gradient(loss, x)) < GRAD_TOL
    assert rel_error(brn.grads["weight"], numerical_gradient(loss, gamma)) < GRAD_TOL
    assert rel_error(brn.grads["bias"], numerical_gradient(loss, beta)) < GRAD_TOL


def test_renorm_eval_gradient_check_and_bad_input():
    rng = np.random.default_rng(11)
    brn = BatchRenorm1d(3)
    brn.running_mean, brn.running_var = rng.normal(size=3), rng.uniform(0.5, 2.0, 3)
    brn.params["weight"][:] = rng.uniform(0.5, 2.0, 3)
    brn.eval()
    assert max(check_module_gradients(brn, rng.normal(size=(4, 3)), rng=2).values()) < GRAD_TOL
    brn.train()
    with pytest.raises(ValueError, match="more than 1 value"):
        brn(np.ones((1, 3)))
    with pytest.raises(ValueError, match="3 channels"):
        brn(np.ones((4, 2)))
    with pytest.raises(ValueError, match="r_max"):
        BatchRenorm1d(3, r_max=0.5)


def test_renorm_float32_and_precise_bn():
    rng = np.random.default_rng(12)
    model = Sequential(Linear(4, 3, rng=rng), BatchRenorm1d(3), ReLU())
    x = rng.normal(size=(40, 4)).astype(np.float32)
    assert model(x).dtype == np.float32
    precise_bn(model, [x[:20], x[20:]])
    h = model[0](x.astype(np.float64))
    np.testing.assert_allclose(model[1].running_mean, h.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model[1].running_var, h.var(axis=0), rtol=1e-5)


# ----------------------------------------------------------------------------- shift

def test_covariate_shift():
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(bnlib.covariate_shift(x, gain=2.0, offset=1.0), 2 * x + 1)
    a = bnlib.covariate_shift(x, noise=0.5, rng=3)
    np.testing.assert_allclose(a, bnlib.covariate_shift(x, noise=0.5, rng=3))
    assert a.shape == x.shape and not np.allclose(a, x)
    assert bnlib.covariate_shift(x.astype(np.float32), gain=2.0).dtype == np.float32


# ----------------------------------------------------------------------------- PyTorch parity

def test_renorm_and_precise_bn_parity_with_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(13)
    xs = rng.normal(1.0, 2.0, (5, 8, 3))
    tbn = torch.nn.BatchNorm1d(3, momentum=None, dtype=torch.float64)
    for x in xs:
        tbn(torch.from_numpy(x))
    bn = BatchNorm1d(3)
    precise_bn(bn, list(xs), variance="batch_mean")  # momentum=None is Algorithm 2
    np.testing.assert_allclose(bn.running_mean, tbn.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, tbn.running_var.numpy(), rtol=1e-12)
    lin = torch.nn.Linear(3, 2, dtype=torch.float64)
    tbn2 = torch.nn.BatchNorm1d(2, dtype=torch.float64)
    with torch.no_grad():
        tbn2.running_mean[:] = torch.tensor([0.3, -1.0])
        tbn2.running_var[:] = torch.tensor([2.0, 0.5])
        tbn2.weight[:] = torch.tensor([1.5, 0.7])
        tbn2.bias[:] = torch.tensor([0.1, 0.2])
    tbn2.eval()
    ours_lin = Linear(3, 2, rng=0)
    ours_lin.params["weight"] = lin.weight.detach().numpy().copy()
    ours_lin.params["bias"] = lin.bias.detach().numpy().copy()
    ours_bn = BatchNorm1d(2)
    ours_bn.running_mean = tbn2.running_mean.numpy().copy()
    ours_bn.running_var = tbn2.running_var.numpy().copy()
    ours_bn.params["weight"] = tbn2.weight.detach().numpy().copy()
    ours_bn.params["bias"] = tbn2.bias.detach().numpy().copy()
    x = rng.normal(size=(5, 3))
    with torch.no_grad():
        ref = tbn2(lin(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(fold_batchnorm(ours_lin, ours_bn)(x), ref, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- figures

def test_drawing_helpers():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2)
    batch = np.array([-1.0, 0.0, 0.5, 2.0])
    train_out, eval_out = bnlib.draw_batch_dependence(a1, batch, 10.0)
    np.testing.assert_allclose(train_out.mean(), 0.0, atol=1e-12)
    np.testing.assert_allclose(eval_out[:3], (batch[:3] - batch.mean()) / np.sqrt(batch.var() + 1e-5))
    assert len(a1.lines) == 4
    sim = bnlib.simulate_drift(0.1, 0.02, steps=50, rng=0)
    bnlib.draw_drift(a2, sim, 0.1, 0.02, batch_noise=0.25)
    assert len(a2.lines) == 3 and "lag 9 steps" in a2.get_title()
    plt.close(fig)


def test_ema_edge_cases_and_bn_mlp():
    v = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    np.testing.assert_allclose(ema(v, 0.5, init=[0.0, 10.0]), [[0.5, 6.0], [1.75, 5.0], [3.375, 5.5]])
    np.testing.assert_allclose(ema(v, None), [[1, 2], [2, 3], [3, 4]])
    np.testing.assert_allclose(ema(v, 1.0, init=7.0), v)
    np.testing.assert_allclose(ema(v, 0.0, init=7.0), 7.0)
    model = bnlib.bn_mlp(6, 5, 3, depth=3, rng=0)
    assert len(bnlib.batchnorm_layers(model)) == 3 and model(np.ones((4, 6))).shape == (4, 3)
    renorm = bnlib.bn_mlp(6, 5, 3, norm=lambda c: BatchRenorm1d(c), rng=0)
    assert isinstance(renorm[1], BatchRenorm1d)


# ----------------------------------------------------------------------------- experiments

def _tiny_data(seed=0, n_train=96, n_test=48, d=40):
    return bnlib.make_gaussian_classes(n_train, n_test, dim=d, num_classes=10, rng=seed)


def test_class_probabilities_and_predictions_in_random_batches():
    logits = np.array([[1000.0, 1000.0, -np.inf], [0.0, np.log(3.0), 0.0]])
    np.testing.assert_allclose(bnlib.class_probabilities(logits), [[0.5, 0.5, 0], [0.2, 0.6, 0.2]])
    model = bnlib.bn_mlp(6, 8, 3, rng=0)
    x = np.random.default_rng(1).normal(size=(30, 6))
    model(x)  # running statistics away from their start values
    model.eval()
    probe = copy.deepcopy(model).train()
    p_train, p_eval = bnlib.predictions_in_random_batches(probe, model, x[:1], x[1:],
                                                          n_batches=5, batch_size=4, rng=2)
    assert p_train.shape == p_eval.shape == (5, 3)
    np.testing.assert_allclose(p_train.sum(axis=1), 1.0)
    alone = bnlib.class_probabilities(model(x[:1])[0])
    np.testing.assert_allclose(p_eval, np.broadcast_to(alone, (5, 3)), atol=1e-12)
    assert np.ptp(p_train[:, 0]) > 0
    # the same draws as a hand-written loop with the same generator
    rng = np.random.default_rng(2)
    mates = x[1:][rng.choice(29, 3, replace=False)]
    np.testing.assert_allclose(p_train[0], bnlib.class_probabilities(
        copy.deepcopy(model).train()(np.concatenate([x[:1], mates]))[0]))


def test_tracking_error_sweep_matches_theory_and_advances_rng():
    grid = np.array([0.05, 0.2, 0.5])
    rng = np.random.default_rng(3)
    rmse, theory = bnlib.tracking_error_sweep(grid, 0.01, steps=4000, rng=rng)
    assert rmse.shape == theory.shape == (3,)
    np.testing.assert_allclose(rmse, theory, rtol=0.2)
    lag, jitter = bnlib.ema_tracking_error(0.2, 0.01, 0.25)
    np.testing.assert_allclose(theory[1], np.hypot(lag, jitter))
    again = np.random.default_rng(3)
    seed = int(again.integers(2**31))
    assert rng.integers(2**31) == again.integers(2**31)  # exactly one draw was used
    sim = bnlib.simulate_drift(0.5, 0.01, steps=4000, batch_size=16, rng=seed)
    np.testing.assert_allclose(rmse[2], np.sqrt(np.mean((sim["ema"] - sim["true"])[2000:] ** 2)))


def test_running_mean_distance():
    a, b = bnlib.bn_mlp(4, 3, 2, rng=0), bnlib.bn_mlp(4, 3, 2, rng=0)
    assert bnlib.running_mean_distance(a, b) == 0.0
    for layer in bnlib.batchnorm_layers(b):
        layer.running_var = np.full(3, 4.0)
    bnlib.batchnorm_layers(a)[0].running_mean = np.full(3, 1.0)
    np.testing.assert_allclose(bnlib.running_mean_distance(a, b), (0.5 + 0.0) / 2)


def test_ema_vs_precise_small():
    data = _tiny_data()
    run = bnlib.ema_vs_precise(data, epochs=2, momenta=(0.1, 0.01), lr=0.1, batch_size=32,
                               rng=np.random.default_rng(4))
    assert list(run["acc"]) == ["ema 0.1", "ema 0.01", "precise"]
    assert list(run["err"]) == ["ema 0.1", "ema 0.01"]
    assert all(v.shape == (2,) for v in [*run["acc"].values(), *run["err"].values()])
    net_a, net_b = run["nets"]
    for (ma, ka), (mb, kb) in zip(net_a.parameters(), net_b.parameters()):
        np.testing.assert_array_equal(ma.params[ka], mb.params[kb])
    assert net_a[1].momentum == 0.1 and net_b[1].momentum == 0.01
    assert np.all(run["err"]["ema 0.01"] > 0)


def test_train_mode_accuracy_and_batches_of():
    model = bnlib.bn_mlp(5, 6, 3, rng=0).eval()
    x = np.random.default_rng(5).normal(size=(10, 5))
    y = model(x).argmax(axis=1)
    assert bnlib.train_mode_accuracy(model, x, y, 4) == 1.0  # eval mode: as evaluate
    train = copy.deepcopy(model).train()
    before = train[1].running_mean.copy()
    bnlib.train_mode_accuracy(train, x, y, 5)
    assert not np.allclose(train[1].running_mean, before)  # it updated the statistics
    assert [b.shape[0] for b in bnlib.batches_of(x, 4)] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(list(bnlib.batches_of(x, 3))), x)


def test_tiny_batch_runs_small():
    data = _tiny_data(1)
    runs = bnlib.tiny_batch_runs(data, batch_sizes=(2,), init_seed=0, shuffle_seed=1,
                                 max_steps=10, last=5)
    assert list(runs) == [("bn", 2), ("renorm", 2)]
    for train_acc, test_acc in runs.values():
        assert 0.0 <= train_acc <= 1.0 and 0.0 <= test_acc <= 1.0


def test_adabn_under_shift_undoes_an_affine_shift():
    data = _tiny_data(2)
    model = bnlib.bn_mlp(40, 16, 10, rng=0)
    bnlib.fit(model, bnlib.SGD(model, lr=0.1), data.x_train, data.y_train, epochs=3,
              batch_size=16, rng=0, progress=False)
    model.eval()
    before = copy.deepcopy(model[1].running_mean)
    shifts = {"affine": dict(gain=3.0, offset=-2.0), "noise": dict(noise=0.1)}
    results = bnlib.adabn_under_shift(model, data.x_train, data.x_test, data.y_test, shifts,
                                      batch_size=32, rng=0)
    np.testing.assert_array_equal(model[1].running_mean, before)  # the model is untouched
    assert list(results) == ["affine", "noise"]
    precise = bnlib.precise_bn(copy.deepcopy(model), bnlib.batches_of(data.x_train, 32))
    clean = bnlib.evaluate(precise, data.x_test, data.y_test)[1]
    np.testing.assert_allclose(results["affine"][1], clean, atol=0.03)


def test_experiment_figures():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, outputs = bnlib.draw_batch_dependence_sweep(np.array([-1.0, 0.0, 0.5, 2.0]), [0.0, 3.0])
    assert set(outputs) == {0.0, 3.0} and fig.axes[0].get_title() == "x_4 = 0"
    plt.close(fig)
    fig, ax = plt.subplots()
    grid = np.array([0.1, 0.5])
    bnlib.draw_tracking_error(ax, grid, {0.0: (grid, grid), 0.01: (grid, 2 * grid)})
    assert len(ax.lines) == 4 and ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()][0] == "drift 0.0/step (theory)"
    plt.close(fig)
    acc = {"ema 0.1": np.array([0.5, 0.6]), "ema 0.01": np.array([0.2, 0.5]),
           "precise": np.array([0.5, 0.6])}
    err = {"ema 0.1": np.array([0.1, 0.1]), "ema 0.01": np.array([0.5, 0.3])}
    fig = bnlib.draw_ema_vs_precise(acc, err)
    labels = fig.axes[-1].get_legend().get_texts()
    assert [t.get_text() for t in labels] == [
        "EMA, momentum 0.1 (PyTorch default)", "EMA, momentum 0.01 (Keras 0.99)",
        "precise BN (recomputed)"]
    plt.close(fig)
    fig, ax = plt.subplots()
    bnlib.draw_shift_accuracy(ax, {"a": (0.2, 0.5), "b": (0.4, 0.4)}, 0.6)
    assert len(ax.patches) == 4 and [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    plt.close(fig)
