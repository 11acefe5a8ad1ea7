"""bnlib.surgery: finding BN layers, precise BN, capturing inputs, restoring a model."""

import copy

import numpy as np
import pytest

import bnlib
from bnlib import (
    BatchNorm1d,
    Linear,
    ReLU,
    Sequential,
    capture_inputs,
    make_mlp,
    precise_bn,
)


def _mlp(rng, c_in=5, h=6):
    return Sequential(
        Linear(c_in, h, rng=rng),
        BatchNorm1d(h),
        ReLU(),
        Linear(h, h, rng=rng),
        BatchNorm1d(h),
        ReLU(),
        Linear(h, 3, rng=rng),
    )


def _batch(rng, n=12, d=5, k=3):
    rng = np.random.default_rng(rng)
    return rng.normal(size=(n, d)), rng.integers(0, k, size=n)


def test_precise_bn_single_layer_equals_full_data_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (200, 4)) * np.array([1.0, 10.0, 0.1, 1e3])
    bn = BatchNorm1d(4)
    bn.params["weight"][:] = 2.0
    weight = bn.params["weight"].copy()
    bn.eval()
    batches = [x[i : i + 25] for i in range(0, 200, 25)]
    precise_bn(bn, batches, variance="population")
    np.testing.assert_allclose(bn.running_mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, x.var(axis=0), rtol=1e-12)
    assert not bn.training and bn.num_batches_tracked == 8
    np.testing.assert_array_equal(bn.params["weight"], weight)
    # unequal batch sizes, (x, y) pairs and a generator are fine
    sizes = [7, 50, 3, 140]
    pairs = ((b, None) for b in np.split(x, np.cumsum(sizes)[:-1]))
    precise_bn(bn, pairs, variance="population")
    np.testing.assert_allclose(bn.running_var, x.var(axis=0), rtol=1e-12)
    # Algorithm 2: the mean of per-batch unbiased variances, the mean of per-batch means
    precise_bn(bn, batches, variance="batch_mean")
    xb = x.reshape(8, 25, 4)
    np.testing.assert_allclose(
        bn.running_mean, xb.mean(axis=1).mean(axis=0), rtol=1e-12
    )
    np.testing.assert_allclose(
        bn.running_var, xb.var(axis=1, ddof=1).mean(axis=0), rtol=1e-12
    )


def test_precise_bn_3d_input_counts_every_position():
    rng = np.random.default_rng(1)
    x = rng.normal(1.0, 2.0, (12, 3, 5))
    bn = BatchNorm1d(3)
    precise_bn(bn, [x[:4], x[4:]], variance="population")
    np.testing.assert_allclose(bn.running_mean, x.mean(axis=(0, 2)), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, x.var(axis=(0, 2)), rtol=1e-12)


def test_precise_bn_deep_model_matches_manual_train_mode_pass():
    rng = np.random.default_rng(2)
    model = _mlp(rng)
    x = rng.normal(size=(60, 5))
    batches = [x[i : i + 20] for i in range(0, 60, 20)]
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
    precise_bn(model, batches, variance="population")
    for i, hs in inputs.items():
        h = np.concatenate(hs)
        np.testing.assert_allclose(
            model[i].running_mean, h.mean(axis=0), rtol=1e-10, atol=1e-12
        )
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


def test_precise_bn_parity_with_torch():
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


def test_bn_mlp_hidden_output_invariant_to_weight_scale():
    # scaling the weights that feed a BN layer changes nothing (up to BN's eps, which is
    # negligible once the pre-activations are large: compare scales 100 and 1000)
    x, _ = _batch(1)
    hidden = []
    for scale in (100.0, 1000.0):
        model = make_mlp([5, 6, 6, 2], "sigmoid", "bn", rng=4)
        for m in model.layers[:-1]:
            if isinstance(m, bnlib.Linear):
                m.params["weight"] *= scale
        hidden.append(capture_inputs(model, x, bnlib.Linear, mode="train")[-1])
    np.testing.assert_allclose(hidden[0], hidden[1], rtol=1e-5)


def test_precise_bn_default_pools_and_large_batches_make_estimators_agree():
    # Pooled (the default, as in Wu & Johnson's appendix and fvcore) and the average of
    # unbiased per-batch variances differ at small m after the first BN layer; which
    # one is closer depends on the network. With large batches both match evaluation.
    x = np.random.default_rng(3).normal(size=(4096, 8))
    model = make_mlp([8, 16, 16, 2], "relu", "bn", rng=0)
    default = precise_bn(copy.deepcopy(model), x, batch_size=4)
    pooled = precise_bn(copy.deepcopy(model), x, variance="population", batch_size=4)
    np.testing.assert_array_equal(default[4].running_var, pooled[4].running_var)
    ratio = {}
    for variance in ("population", "batch_mean"):
        for m in (4, 256):
            net = precise_bn(copy.deepcopy(model), x, variance=variance, batch_size=m)
            seen = capture_inputs(net, x, BatchNorm1d, mode="eval")[1].var(axis=0)
            ratio[variance, m] = np.median(net[4].running_var / seen)
    assert abs(ratio["population", 4] - ratio["batch_mean", 4]) > 0.05
    for variance in ("population", "batch_mean"):  # large batches: both agree
        assert 0.95 < ratio[variance, 256] < 1.05, ratio


def test_capture_inputs_and_bad_mode():
    x, _ = _batch(14, d=5)
    model = make_mlp([5, 6, 6, 3], "sigmoid", "bn", rng=0)
    found = capture_inputs(model, x, bnlib.Sigmoid, mode="train")
    assert len(found) == 2 and found[0].shape == (12, 6)
    np.testing.assert_allclose(found[0].mean(0), 0.0, atol=1e-12)  # BN output, beta = 0
    with pytest.raises(ValueError, match="mode"):
        capture_inputs(model, x, bnlib.Sigmoid, mode="test")


def test_precise_bn_uses_dropout_free_statistics():
    data = bnlib.make_gaussian_classes(
        n_train=200, n_test=20, dim=4, num_classes=2, rng=2
    )
    model = make_mlp([4, 16, 16, 2], "relu", "bn", rng=0, dropout=0.5)
    bnlib.fit(
        model,
        bnlib.SGD(model, 0.1),
        data.x_train,
        data.y_train,
        epochs=3,
        batch_size=20,
        progress=False,
        rng=0,
    )
    momentum = [m.momentum for m in model.modules() if isinstance(m, bnlib.BatchNorm1d)]
    model.train()
    precise_bn(model, data.x_train, batch_size=200)
    assert all(m.training for m in model.modules())  # modes are restored
    model.eval()
    assert momentum == [
        m.momentum for m in model.modules() if isinstance(m, bnlib.BatchNorm1d)
    ]
    bn2 = [m for m in model.layers if isinstance(m, bnlib.BatchNorm1d)][1]
    z = capture_inputs(model, data.x_train, bnlib.BatchNorm1d, mode="eval")[1]
    # close, not equal: while recalibrating, the first BN normalizes with the batch's
    # biased variance, in evaluation with its running (unbiased) variance
    np.testing.assert_allclose(bn2.running_mean, z.mean(0), rtol=0.02, atol=1e-3)
    np.testing.assert_allclose(bn2.running_var, z.var(0, ddof=1), rtol=0.02)
    # the dropout-free variance is smaller than the one stored in training
    trained = make_mlp([4, 16, 16, 2], "relu", "bn", rng=0, dropout=0.5)
    bnlib.fit(
        trained,
        bnlib.SGD(trained, 0.1),
        data.x_train,
        data.y_train,
        epochs=3,
        batch_size=20,
        progress=False,
        rng=0,
    )
    stored = [m for m in trained.layers if isinstance(m, bnlib.BatchNorm1d)][
        1
    ].running_var
    assert np.median(bn2.running_var / stored) < 1.0
