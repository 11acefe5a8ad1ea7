"""Chapter 5's additions: the multi-seed batch-size sweep, the RNN statistics helpers,
pre-LN vs post-LN gradients and the causal leak of BN over tokens."""

import matplotlib.pyplot as plt
import numpy as np
import pytest

import bnlib
from bnlib.chapters import ch5_bn_vs_ln as ch5

# ------------------------------------------------------------------ batch-size sweep


def _tiny_data():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(64, 1, 8))
    y = (x[:, 0, :4].sum(1) > 0).astype(int)
    return bnlib.Dataset(x[:48], y[:48], x[48:], y[48:])


def test_batch_size_sweep_seeds_is_the_same_in_parallel():
    kw = dict(
        norms=("bn", "gn"),
        batch_sizes=(4, 16),
        epochs=1,
        optimizer="sgd",
        channels=4,
        num_layers=1,
        num_classes=2,
    )
    data, seeds = _tiny_data(), ch5.sweep_seeds([0, 6], 3)
    assert seeds == ch5.sweep_seeds([0, 6], 3) and len(set(seeds)) == 3
    serial = ch5.batch_size_sweep_seeds(data, seeds, jobs=1, **kw)
    parallel = ch5.batch_size_sweep_seeds(data, seeds, jobs=2, **kw)
    assert set(serial) == {"bn", "gn"} and serial["bn"].shape == (3, 2)
    for norm in serial:
        np.testing.assert_array_equal(serial[norm], parallel[norm])
    # one row per seed: the single-seed sweep with that seed
    one = ch5.batch_size_sweep(data, rng=seeds[1], **kw)
    np.testing.assert_array_equal(serial["gn"][1], one["gn"])


def test_plot_batch_size_sweep_median_band_and_dots():
    errors = {"bn": np.array([[10.0, 20.0], [30.0, 40.0], [20.0, 25.0]])}
    ax = ch5.plot_batch_size_sweep([2, 32], errors, title="t")
    try:
        median = ax.lines[0]
        np.testing.assert_allclose(median.get_ydata(), [20.0, 25.0])
        assert len(ax.lines) == 1 + 3 and len(ax.collections) == 1
        assert ax.get_ylim()[0] == 0 and ax.xaxis_inverted()
    finally:
        plt.close(ax.figure)


def test_command_line_runs_the_sweep(monkeypatch, capsys):
    import json

    monkeypatch.setattr(bnlib.data, "load_mnist1d", lambda: _tiny_data())
    monkeypatch.setattr(
        ch5,
        "batch_size_sweep_seeds",
        lambda data, seeds, jobs, **kw: {"bn": np.zeros((len(seeds), 1))},
    )
    ch5._main(["--seeds", "2", "--jobs", "1", "--batch-sizes", "4"])
    out = json.loads(capsys.readouterr().out)
    assert out["errors"] == {"bn": [[0.0], [0.0]]} and out["args"]["seeds"] == 2


# ------------------------------------------------------------------ RNN statistics


def test_bayes_accuracy():
    assert ch5.bayes_accuracy([30]) == pytest.approx(0.7943, abs=1e-4)
    assert ch5.bayes_accuracy([60]) == pytest.approx(0.8774, abs=1e-4)
    assert ch5.bayes_accuracy([30, 60]) == pytest.approx((0.7943 + 0.8774) / 2, 1e-3)
    x, y, _ = ch5.make_drift_task(20000, 30, rng=0)
    simulated = np.mean((x[:, :, 0].sum(1) > 0) == y)
    assert abs(simulated - ch5.bayes_accuracy([30])) < 0.01


def test_rnn_length_experiment_returns_every_run_and_plots_their_medians():
    runs = {"LN, lengths 2-6": ("ln", True), "BN, all length 6": ("bn", False)}
    tests = ch5.drift_test_sets(6, num_samples=16, min_length=2, rng=0)
    kw = dict(max_len=6, hidden=3, train_size=16, min_length=2, epochs=1, batch_size=8)
    acc = ch5.rnn_length_experiment(runs, tests, seeds=[1, 2], **kw)
    again = ch5.rnn_length_experiment(runs, tests, seeds=[1, 2], **kw)
    for name in runs:
        for t in tests:
            assert acc[name][t].shape == (2,)
            assert np.all((0.0 <= acc[name][t]) & (acc[name][t] <= 1.0))
            np.testing.assert_array_equal(acc[name][t], again[name][t])
    bayes = {t: 0.8 for t in tests}
    fig = ch5.plot_rnn_accuracies(acc, runs, bayes)
    try:
        ax = fig.axes[0]
        assert len(ax.patches) == 6 and ax.get_ylim() == (0.0, 1.0)
        np.testing.assert_allclose(
            [p.get_height() for p in ax.patches[:3]],
            [np.median(acc["LN, lengths 2-6"][t]) for t in tests],
        )
    finally:
        plt.close(fig)


# ------------------------------------------------------------------ transformers


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_residual_stack_backward_matches_finite_differences(placement):
    rng = np.random.default_rng(3)
    stack = ch5.ResidualStack(d=4, depth=3, placement=placement, rng=rng)
    for ln in stack.ln:  # non-trivial gamma and beta
        ln.params["weight"][...] = rng.uniform(0.5, 1.5, 4)
        ln.params["bias"][...] = rng.normal(0.0, 0.3, 4)
    x, r = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    stack.forward(x)
    dx = stack.backward(r)
    grads = [f.layers[k].grads["weight"].copy() for f in stack.ffn for k in (0, 2)]
    weights = [f.layers[k].params["weight"] for f in stack.ffn for k in (0, 2)]

    def loss():
        return float(np.sum(stack.forward(x) * r))

    for w, g in zip(weights, grads):
        assert bnlib.rel_error(g, bnlib.numerical_gradient(loss, w)) < 1e-6
    x_var = x.copy()

    def loss_x():
        return float(np.sum(stack.forward(x_var) * r))

    assert bnlib.rel_error(dx, bnlib.numerical_gradient(loss_x, x_var)) < 1e-6
    with pytest.raises(ValueError, match="placement"):
        ch5.ResidualStack(placement="middle")


def test_layer_gradient_norms_and_figure():
    g = {p: ch5.layer_gradient_norms(p, depth=6, d=8, rng=0) for p in ("pre", "post")}
    assert g["pre"].shape == (6,) and np.all(g["post"] > 0)
    fig = ch5.plot_layer_gradients(
        {p: np.stack([v, v]) for p, v in g.items()},
        (3, 6),
        {p: np.ones((2, 2)) for p in g},
    )
    try:
        a0, a1 = fig.axes
        np.testing.assert_allclose(a0.lines[0].get_ydata(), g["pre"])
        assert [ln.get_label() for ln in a1.lines] == ["pre-LN", "post-LN"]
    finally:
        plt.close(fig)


def test_causal_mean_and_the_leak_through_bn_statistics():
    x = np.random.default_rng(5).normal(size=(3, 6, 4))
    h = ch5.causal_mean(x)
    np.testing.assert_allclose(h[:, 3], x[:, :4].mean(axis=1))
    ln, bn = ch5.influence_matrix("ln", x), ch5.influence_matrix("bn", x)
    assert ln.shape == (6, 6)
    assert np.all(np.triu(ln, 1) == 0) and np.all(ln[np.tril_indices(6)] > 0)
    assert np.all(bn > 0)  # every output depends on every position
    np.testing.assert_allclose(
        ch5.normalize_tokens(h, "ln"), bnlib.LayerNorm(4)(h), atol=1e-12
    )
    fig = ch5.plot_influence({"ln": ln, "bn": bn})
    try:
        assert len(fig.axes) == 3  # two panels and the colour bar
    finally:
        plt.close(fig)
