"""Losses, optimizers and the training loop."""

import numpy as np
import pytest

import bnlib
from bnlib import numerical_gradient, rel_error


# ------------------------------------------------------------------ losses
def test_softmax_cross_entropy_gradient():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, (6, 4))
    y = rng.integers(0, 4, 6)
    loss, dlogits = bnlib.softmax_cross_entropy(logits, y)
    num = numerical_gradient(lambda: bnlib.softmax_cross_entropy(logits, y)[0], logits)
    assert rel_error(dlogits, num) < 1e-7
    np.testing.assert_allclose(
        dlogits.sum(axis=1), 0.0, atol=1e-15
    )  # softmax sums to one


def test_softmax_cross_entropy_values():
    loss, _ = bnlib.softmax_cross_entropy(np.zeros((3, 5)), np.array([0, 1, 4]))
    assert loss == pytest.approx(np.log(5))
    logits = np.array([[2.0, 0.0], [0.0, 3.0]])
    loss, _ = bnlib.softmax_cross_entropy(logits, np.array([0, 0]))
    expected = 0.5 * (np.log(1 + np.exp(-2.0)) + np.log(1 + np.exp(3.0)))
    assert loss == pytest.approx(expected, rel=1e-12)
    # large logits do not overflow
    loss, d = bnlib.softmax_cross_entropy(np.array([[1000.0, 0.0]]), np.array([1]))
    assert loss == pytest.approx(1000.0) and np.all(np.isfinite(d))
    with pytest.raises(
        ValueError,
        match=r"expected logits \(N, K\) and labels \(N,\), got "
        r"\(3, 5\) and \(2,\)",
    ):
        bnlib.softmax_cross_entropy(np.zeros((3, 5)), np.array([0, 1]))


def test_mse_loss_gradient_and_value():
    rng = np.random.default_rng(1)
    pred, target = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    loss, dpred = bnlib.mse_loss(pred, target)
    assert loss == pytest.approx(np.mean((pred - target) ** 2))
    num = numerical_gradient(lambda: bnlib.mse_loss(pred, target)[0], pred)
    assert rel_error(dpred, num) < 1e-7
    with pytest.raises(
        ValueError, match=r"mse_loss: pred \(5, 3\) and target \(3, 5\) differ"
    ):
        bnlib.mse_loss(pred, target.T)


def test_accuracy():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert bnlib.accuracy(logits, np.array([1, 0, 0])) == pytest.approx(2 / 3)


# ------------------------------------------------------------------ optimizers
def _one_param_module(p0):
    m = bnlib.Linear(2, 1, bias=False)
    m.params["weight"] = np.array([p0], dtype=np.float64)
    return m


def test_sgd_momentum_and_weight_decay_by_hand():
    """lr 0.1, momentum 0.9, weight decay 0.01, from p = [1, -2]:
    step 1, grad [0.5, 0.25]: g = [0.51, 0.23], buf = g, p = [0.949, -2.023];
    step 2, grad [-1, 0.5]: g = [-0.99051, 0.47977], buf = 0.9 * [0.51, 0.23] + g
    = [-0.53151, 0.68677], p = [1.002151, -2.091677]."""
    m = _one_param_module([1.0, -2.0])
    opt = bnlib.SGD(m, lr=0.1, momentum=0.9, weight_decay=0.01)
    m.grads["weight"] = np.array([[0.5, 0.25]])
    opt.step()
    np.testing.assert_allclose(m.params["weight"], [[0.949, -2.023]], rtol=1e-14)
    m.grads["weight"] = np.array([[-1.0, 0.5]])
    opt.step()
    np.testing.assert_allclose(m.params["weight"], [[1.002151, -2.091677]], rtol=1e-14)


def test_plain_sgd_by_hand():
    m = _one_param_module([1.0, -2.0])
    opt = bnlib.SGD(m, lr=0.5)
    for _ in range(2):
        m.grads["weight"] = np.array([[0.5, 0.25]])
        opt.step()
    np.testing.assert_allclose(m.params["weight"], [[0.5, -2.25]], rtol=1e-14)


def test_adam_by_hand():
    """lr 0.1, betas (0.9, 0.999): the first step moves every entry by lr * sign(grad)
    (m_hat = g, v_hat = g^2); the second, with grad [-1, 0.5]: m = [-0.055, 0.0725],
    v = [0.00124975, 0.0003124375], m_hat = m / 0.19, v_hat = v / 0.001999,
    p -= 0.1 * m_hat / sqrt(v_hat)."""
    m = _one_param_module([1.0, -2.0])
    opt = bnlib.Adam(m, lr=0.1)
    m.grads["weight"] = np.array([[0.5, 0.25]])
    opt.step()
    np.testing.assert_allclose(m.params["weight"], [[0.9, -2.1]], atol=1e-8)
    m.grads["weight"] = np.array([[-1.0, 0.5]])
    opt.step()
    np.testing.assert_allclose(
        m.params["weight"], [[0.9366103542, -2.1965182041]], atol=1e-9
    )
    state = opt.state[0]
    assert state["t"] == 2
    np.testing.assert_allclose(state["m"], [[-0.055, 0.0725]], rtol=1e-12)
    np.testing.assert_allclose(state["v"], [[0.00124975, 0.0003124375]], rtol=1e-12)


def test_adam_weight_decay_adds_to_the_gradient():
    a, b = _one_param_module([1.0, -2.0]), _one_param_module([1.0, -2.0])
    opt_a = bnlib.Adam(a, lr=0.01, weight_decay=0.1)
    opt_b = bnlib.Adam(b, lr=0.01)
    for g in ([0.5, 0.25], [-1.0, 0.5]):
        a.grads["weight"] = np.array([g])
        b.grads["weight"] = np.array([g]) + 0.1 * b.params["weight"]
        opt_a.step()
        opt_b.step()
    np.testing.assert_allclose(a.params["weight"], b.params["weight"], rtol=1e-14)


def test_optimizer_on_a_subset_of_parameters():
    model = bnlib.Sequential(bnlib.Linear(3, 4, rng=0), bnlib.BatchNorm1d(4))
    bn_only = [
        (m, k) for m, k in model.parameters() if isinstance(m, bnlib.BatchNorm1d)
    ]
    opt = bnlib.SGD(bn_only, lr=0.1)
    w_before = model[0].params["weight"].copy()
    model(np.random.default_rng(1).normal(size=(8, 3)))
    model.backward(np.ones((8, 4)) * np.arange(4))
    opt.step()
    np.testing.assert_array_equal(model[0].params["weight"], w_before)
    assert not np.array_equal(model[1].params["bias"], np.zeros(4))
    opt.zero_grad()
    assert all(np.all(m.grads[k] == 0) for m, k in bn_only)


def test_optimizer_rejects_bad_learning_rate():
    with pytest.raises(ValueError, match=r"learning rate must be positive, got lr=0"):
        bnlib.SGD(bnlib.Linear(2, 2), lr=0)


# ------------------------------------------------------------------ training loop
def _data(seed=3):
    return bnlib.make_gaussian_classes(
        n_train=240,
        n_test=60,
        dim=4,
        num_classes=4,
        spread=0.7,
        shift=10.0,
        scale=5.0,
        rng=seed,
    )


def _mlp(seed=0, d_in=4, k=4):
    return bnlib.Sequential(
        bnlib.Linear(d_in, 16, rng=seed),
        bnlib.BatchNorm1d(16),
        bnlib.ReLU(),
        bnlib.Linear(16, k, rng=seed + 1),
    )


def test_fit_records_history():
    d = _data()
    model = _mlp()
    calls = []
    probes = {
        "w_norm": lambda m: float(np.linalg.norm(m[0].params["weight"])),
        "count": lambda m: calls.append(1) or len(calls),
    }
    hist = bnlib.fit(
        model,
        bnlib.SGD(model, 0.05, momentum=0.9),
        d.x_train,
        d.y_train,
        epochs=2,
        batch_size=32,
        test=(d.x_test, d.y_test),
        eval_every=5,
        probes=probes,
        rng=0,
        progress=False,
    )
    steps = 2 * (240 // 32)  # the last incomplete batch of each epoch is dropped
    assert hist.step == list(range(1, steps + 1))
    assert len(hist.loss) == len(hist.acc) == steps
    assert all(np.isfinite(hist.loss)) and all(0 <= a <= 1 for a in hist.acc)
    assert hist.eval_step == [5, 10, steps]
    assert len(hist.test_loss) == len(hist.test_acc) == 3
    assert hist.probes["count"] == list(range(1, steps + 1))
    assert len(hist.probes["w_norm"]) == steps
    assert hist.stopped is None and not hist.diverged
    assert model.training  # fit leaves the model in training mode
    # the recorded test metrics are what evaluate() gives for the final model
    assert (hist.test_loss[-1], hist.test_acc[-1]) == pytest.approx(
        bnlib.evaluate(model, d.x_test, d.y_test)
    )


def test_fit_is_deterministic_and_respects_max_steps():
    d = _data()
    runs = []
    for _ in range(2):
        model = _mlp()
        runs.append(
            bnlib.fit(
                model,
                bnlib.SGD(model, 0.05),
                d.x_train,
                d.y_train,
                epochs=3,
                batch_size=32,
                rng=7,
                progress=False,
                max_steps=10,
            )
        )
    assert runs[0].step == list(range(1, 11))
    assert runs[0].loss == runs[1].loss
    assert runs[0].eval_step == []  # no test set given


def test_fit_with_progress_false_prints_nothing(capsys):
    d = _data()
    model = _mlp()
    bnlib.fit(
        model,
        bnlib.SGD(model, 0.05),
        d.x_train,
        d.y_train,
        epochs=1,
        batch_size=32,
        test=(d.x_test, d.y_test),
        progress=False,
    )
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_fit_bad_arguments():
    d = _data()
    model = _mlp()
    with pytest.raises(
        ValueError, match=r"on_nonfinite must be 'raise' or 'stop', got 'skip'"
    ):
        bnlib.fit(
            model, bnlib.SGD(model, 0.1), d.x_train, d.y_train, on_nonfinite="skip"
        )
    with pytest.raises(
        ValueError, match=r"batch_size 1000 is larger than the data set \(240\)"
    ):
        bnlib.fit(model, bnlib.SGD(model, 0.1), d.x_train, d.y_train, batch_size=1000)


class NaNOnCall:
    """A loss that turns NaN on its ``k``-th call (1-based): a divergence at a known
    step."""

    def __init__(self, k):
        self.k, self.calls = k, 0

    def __call__(self, out, y):
        self.calls += 1
        loss, dout = bnlib.softmax_cross_entropy(out, y)
        return (float("nan") if self.calls == self.k else loss), dout


def test_nonfinite_loss_raises_naming_the_step():
    d = _data()
    model = _mlp()
    with pytest.raises(
        bnlib.NonFiniteLossError,
        match=r"loss became nan at step 4 \(epoch 0\); training stopped before "
        r"applying that update\. Try a smaller learning rate \(lr=0\.05\)",
    ):
        bnlib.fit(
            model,
            bnlib.SGD(model, 0.05),
            d.x_train,
            d.y_train,
            batch_size=32,
            loss_fn=NaNOnCall(4),
            progress=False,
        )
    assert issubclass(bnlib.NonFiniteLossError, FloatingPointError)


def test_nonfinite_loss_stop_records_it_and_skips_the_update():
    d = _data()
    model = _mlp()
    snapshots = []
    hist = bnlib.fit(
        model,
        bnlib.SGD(model, 0.05),
        d.x_train,
        d.y_train,
        epochs=2,
        batch_size=32,
        loss_fn=NaNOnCall(9),
        on_nonfinite="stop",
        progress=False,
        probes={"w": lambda m: snapshots.append(m[0].params["weight"].copy())},
    )
    assert hist.diverged
    assert "loss became nan at step 9 (epoch 1)" in hist.stopped
    assert hist.step == list(range(1, 9)) and len(hist.loss) == 8
    # the NaN step applied no update: the weights are those after step 8
    np.testing.assert_array_equal(model[0].params["weight"], snapshots[-1])


def test_real_divergence_is_caught():
    d = _data()
    x = d.x_train.copy()
    x[:] = np.nan
    model = _mlp()
    with pytest.raises(bnlib.NonFiniteLossError, match=r"at step 1 "):
        bnlib.fit(
            model, bnlib.SGD(model, 0.1), x, d.y_train, batch_size=32, progress=False
        )


def test_evaluate_restores_mode_and_does_not_touch_running_stats():
    d = _data()
    model = _mlp()
    model(d.x_train[:32])
    rm = model[1].running_mean.copy()
    loss, acc = bnlib.evaluate(model, d.x_test, d.y_test, batch_size=7)
    assert model.training and np.isfinite(loss) and 0 <= acc <= 1
    np.testing.assert_array_equal(model[1].running_mean, rm)
    model.eval()
    bnlib.evaluate(model, d.x_test, d.y_test)
    assert not model.training


def test_train_step_updates_and_returns_loss():
    d = _data()
    model = _mlp()
    opt = bnlib.SGD(model, 0.1)
    w = model[0].params["weight"].copy()
    loss, out = bnlib.train_step(model, opt, d.x_train[:32], d.y_train[:32])
    assert out.shape == (32, 4) and np.isfinite(loss)
    assert not np.array_equal(model[0].params["weight"], w)


def test_mlp_with_batchnorm_learns_gaussian_classes():
    """Inputs far from zero mean and unit variance (shift 10, scale 5); BN copes."""
    d = bnlib.make_gaussian_classes(
        n_train=600,
        n_test=300,
        dim=4,
        num_classes=4,
        spread=0.7,
        shift=10.0,
        scale=5.0,
        rng=3,
    )
    model = bnlib.Sequential(
        bnlib.Linear(4, 32, rng=3),
        bnlib.BatchNorm1d(32),
        bnlib.ReLU(),
        bnlib.Linear(32, 4, rng=4),
    )
    hist = bnlib.fit(
        model,
        bnlib.SGD(model, 0.1, momentum=0.9),
        d.x_train,
        d.y_train,
        epochs=10,
        batch_size=32,
        test=(d.x_test, d.y_test),
        rng=0,
        progress=False,
    )
    assert hist.test_acc[-1] >= 0.97
    assert np.mean(hist.loss[-10:]) < 0.2 * np.mean(hist.loss[:10])


# ------------------------------------------------------------------ parallel runs
def _short_run(seed):
    """One small, seeded training run (module level, so worker processes find it)."""
    data = bnlib.make_gaussian_classes(120, 3, dim=4, rng=[seed, 0])
    x, y = data.x_train, data.y_train
    model = bnlib.make_mlp([4, 8, 3], "relu", "bn", rng=[seed, 1])
    hist = bnlib.fit(
        model,
        bnlib.SGD(model, 0.1),
        x,
        y,
        epochs=2,
        batch_size=20,
        rng=[seed, 2],
        progress=False,
    )
    return np.array(hist.loss), model[0].params["weight"].copy()


def test_parallel_map_same_results_in_one_or_two_processes():
    seeds = [3, 1, 4, 1, 5]
    serial = bnlib.parallel_map(_short_run, seeds, jobs=1)
    parallel = bnlib.parallel_map(_short_run, seeds, jobs=2)
    assert len(parallel) == len(seeds)
    for (loss_a, w_a), (loss_b, w_b) in zip(serial, parallel):
        np.testing.assert_array_equal(loss_a, loss_b)  # bit for bit, in task order
        np.testing.assert_array_equal(w_a, w_b)
    # equal seeds give equal runs, different seeds different ones
    np.testing.assert_array_equal(parallel[1][0], parallel[3][0])
    assert not np.array_equal(parallel[0][0], parallel[1][0])
    assert bnlib.parallel_map(_short_run, [], jobs=2) == []


def test_parallel_map_bad_jobs():
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        bnlib.parallel_map(abs, [1], jobs=0)


def test_history_series_skips_missing_probe_values():
    h = bnlib.History(step=[0, 1, 2, 3])
    h.probes["norm"] = [1.0, None, 3.0, 4.0]
    h.probes["d"] = [{"a": 1}, {"a": 2}, None, {"a": 4}]
    steps, vals = h.series("norm")
    np.testing.assert_array_equal(steps, [0, 2, 3])
    np.testing.assert_array_equal(vals, [1.0, 3.0, 4.0])
    steps, vals = h.series("d", "a")
    np.testing.assert_array_equal(steps, [0, 1, 3])
    np.testing.assert_array_equal(vals, [1, 2, 4])
