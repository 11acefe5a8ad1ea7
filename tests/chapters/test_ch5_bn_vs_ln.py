"""Chapter 5's module, section by section: the axes of each normalization and the
live figure, weight norm and the invariance table, the batch-size experiment, the
normalized RNN (BPTT) and the drift task, pre-LN vs post-LN transformers."""

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest

import bnlib
from bnlib import check_module_gradients, numerical_gradient, rel_error
from bnlib import functional as F
from bnlib.chapters import ch5_bn_vs_ln as ch5
from bnlib.chapters.ch5_bn_vs_ln import (
    BA2016_TABLE1,
    TRANSFORMATIONS,
    LastStep,
    NormRNN,
    WeightNormLinear,
    batch_size_sweep,
    drift_test_sets,
    invariance_markdown,
    invariance_table,
    make_drift_task,
    normalized_mask,
    reduction_axes,
    rnn_classifier,
    rnn_length_experiment,
)

GRAD_TOL = 1e-6


# ----------------------- 1. which axes each method normalizes over, and the live figure


def test_reduction_axes_for_images_and_sequences():
    assert reduction_axes("bn", 4) == (0, 2, 3)
    assert reduction_axes("ln", 4) == (1, 2, 3)
    assert reduction_axes("rms", 3) == (1, 2)
    assert reduction_axes("in", 4) == (2, 3)
    assert reduction_axes("gn", 4) == (2, 3, 4)  # of the (N, G, C/G, H, W) view
    assert reduction_axes("bn", 2) == (0,)
    assert reduction_axes("ln", 2) == (1,)
    with pytest.raises(ValueError, match="spatial"):
        reduction_axes("in", 2)
    with pytest.raises(ValueError, match="method"):
        reduction_axes("xx", 3)


def _normalize(method, x, groups):
    if method == "gn":
        return bnlib.GroupNorm(groups, x.shape[1], affine=False)(x)
    return F.norm_forward(
        x, None, None, reduction_axes(method, x.ndim), center=method != "rms"
    )[0]


@pytest.mark.parametrize("method", ["bn", "ln", "in", "gn", "rms"])
def test_normalized_mask_is_the_set_the_kernel_shares(method):
    rng = np.random.default_rng(0)
    shape, index, groups = (3, 4, 5), (1, 2, 3), 2
    mask = normalized_mask(method, shape, index, groups)
    expected_m = {"bn": 15, "ln": 20, "rms": 20, "in": 5, "gn": 10}[method]
    assert mask.shape == shape and mask.sum() == expected_m and mask[index]
    x = rng.normal(size=shape)
    base = _normalize(method, x, groups)[index]
    for pos in [(0, 0, 0), (2, 3, 4), (1, 2, 0), (0, 2, 3), (1, 0, 1)]:
        x2 = x.copy()
        x2[pos] += 1.0
        changed = not np.isclose(_normalize(method, x2, groups)[index], base)
        assert changed == bool(mask[pos]) or pos == index, (method, pos)


def test_normalized_mask_bad_groups():
    with pytest.raises(ValueError, match="divisible"):
        normalized_mask("gn", (2, 5, 3), (0, 0, 0), num_groups=2)


def test_plot_norm_axes_panels_and_masks():
    shape = (4, 6, 5)
    fig = ch5.plot_norm_axes(shape=shape, num_groups=2, index=(0, 1, 0))
    axes = fig.get_axes()
    assert [ax.get_gid() for ax in axes] == [
        "norm-axes:bn",
        "norm-axes:ln",
        "norm-axes:in",
        "norm-axes:gn",
    ]
    sizes = {"bn": 4 * 5, "ln": 6 * 5, "in": 5, "gn": 3 * 5}
    for ax in axes:
        method = ax.get_gid().split(":")[1]
        assert ax.mask.sum() == sizes[method]
        np.testing.assert_array_equal(
            ax.mask, normalized_mask(method, shape, (0, 1, 0), 2)
        )
        assert f"m = {sizes[method]}" in ax.get_title()
        assert ax.get_xlabel() == "C" and ax.get_ylabel() == "N"
    plt.close(fig)


def test_plot_norm_axes_other_methods():
    fig = ch5.plot_norm_axes(methods=("bn", "rms"), shape=(2, 4, 3), index=(1, 0, 2))
    assert len(fig.get_axes()) == 2
    assert fig.get_axes()[1].mask.sum() == 12
    plt.close(fig)


def test_entry_statistics_batch_dependence():
    pool = ch5.statistics_pool(size=40, shape=(4, 3), seed=1)
    assert pool.shape == (40, 4, 3)
    for method in ("ln", "in", "gn"):
        mu, sigma = ch5.entry_statistics(pool, method, 4, num_groups=2, num_batches=5)
        assert np.ptp(mu) < 1e-12 and np.ptp(sigma) < 1e-12
    # the LN statistics are example 0's own mean and std over all its values
    mu, sigma = ch5.entry_statistics(pool, "ln", 3, num_batches=2)
    np.testing.assert_allclose(mu, pool[0].mean(), atol=1e-12)
    np.testing.assert_allclose(sigma, pool[0].std(), atol=1e-12)
    # GN: channels 0 and 1 of example 0
    mu, _ = ch5.entry_statistics(pool, "gn", 3, num_groups=2, num_batches=2)
    np.testing.assert_allclose(mu, pool[0, :2].mean(), atol=1e-12)
    # BN: channel 0 over the batch, which changes from batch to batch
    mu, _ = ch5.entry_statistics(pool, "bn", 2, num_batches=50, seed=3)
    assert np.std(mu) > 0.1
    wide, _ = ch5.entry_statistics(pool, "bn", 16, num_batches=50, seed=3)
    assert np.std(wide) < np.std(mu)


def test_which_axes_view_and_frames():
    fig, stats = ch5.which_axes_view("gn", batch_size=3, num_groups=4, seed=0)
    assert stats["m"] == 2 * 4  # 8 channels in 4 groups, 4 positions
    assert stats["bn"] > 0.05 and max(stats["ln"], stats["in"], stats["gn"]) < 1e-9
    plt.close(fig)
    fig, draw = ch5.which_axes_frames(seed=0)
    assert draw(("bn", 2, 2))["m"] == 2 * 4
    assert draw(("ln", 5, 2))["m"] == 8 * 4
    plt.close(fig)


def test_which_axes_widget_redraws():
    box = ch5.which_axes_widget(seed=0)
    before = box.image.value
    assert box.last_stats["m"] == 4 * 4
    box.controls["batch_size"].value = 9
    assert box.last_stats["m"] == 9 * 4 and box.image.value != before
    box.controls["method"].value = "in"
    assert box.last_stats["m"] == 4


# --------------------------------- 2. invariances: weight norm and the invariance table


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


def test_invariance_table_matches_ba_kiros_hinton_table_1():
    table, changes = invariance_table(return_changes=True)
    assert table == BA2016_TABLE1
    for method, row in changes.items():
        for name, change in row.items():
            assert change < 1e-9 or change > 1e-2, (method, name, change)  # clear-cut


def test_invariance_table_instance_norm_and_rms():
    table = invariance_table(methods=("in", "rms", "gn"), length=6)
    assert table["in"] == {
        name: name != "weight matrix re-centering" for name in TRANSFORMATIONS
    }
    assert (
        table["rms"]["weight matrix re-scaling"]
        and not table["rms"]["weight matrix re-centering"]
    )
    assert table["rms"]["single training case re-scaling"]
    md = invariance_markdown(table, labels={"in": "InstanceNorm"})
    lines = md.splitlines()
    assert lines[0].startswith("| invariant? |") and len(lines) == 2 + len(table)
    assert lines[2].startswith("| InstanceNorm | **yes** | no |")


# ------ 3. batch size: the sweep over seeds, its figure, GN with weight standardization


def _tiny_data():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(64, 1, 8))
    y = (x[:, 0, :4].sum(1) > 0).astype(int)
    return bnlib.Dataset(x[:48], y[:48], x[48:], y[48:])


def test_batch_size_sweep_small():
    errs = batch_size_sweep(
        _tiny_data(),
        norms=("bn", "gn"),
        batch_sizes=(4, 16),
        epochs=1,
        channels=4,
        num_layers=1,
        num_classes=2,
        rng=0,
    )
    assert set(errs) == {"bn", "gn"} and errs["bn"].shape == (2,)
    assert np.all((errs["gn"] >= 0) & (errs["gn"] <= 100))
    with pytest.raises(ValueError, match="optimizer"):
        batch_size_sweep(_tiny_data(), optimizer="rmsprop")


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

    monkeypatch.setattr(bnlib.data, "load_mnist1d", lambda: _tiny_data())
    monkeypatch.setattr(
        ch5,
        "batch_size_sweep_seeds",
        lambda data, seeds, jobs, **kw: {"bn": np.zeros((len(seeds), 1))},
    )
    ch5._main(["--seeds", "2", "--jobs", "1", "--batch-sizes", "4"])
    out = json.loads(capsys.readouterr().out)
    assert out["errors"] == {"bn": [[0.0], [0.0]]} and out["args"]["seeds"] == 2


def test_ws_conv_standardizes_and_its_gradients_match():
    from bnlib.chapters.ch5_bn_vs_ln import WSConv1d, weight_standardize

    rng = np.random.default_rng(0)
    net = weight_standardize(bnlib.conv1d_net("gn", num_layers=1, length=8, rng=1))
    conv = net.layers[0]
    assert isinstance(conv, WSConv1d)
    conv.params["weight"][...] = rng.normal(0.5, 2.0, conv.params["weight"].shape)
    x = rng.normal(size=(3, 1, 8))
    # the same as a plain Conv1d with standardized weights
    v = conv.params["weight"]
    w_hat = (v - v.mean(axis=(1, 2), keepdims=True)) / np.sqrt(
        v.var(axis=(1, 2), keepdims=True) + conv.ws_eps
    )
    plain = bnlib.Conv1d(1, v.shape[0], v.shape[2], stride=2, padding=2, bias=False)
    plain.params["weight"][...] = w_hat
    np.testing.assert_allclose(conv(x), plain(x), atol=1e-12)
    assert conv.params["weight"] is v  # the raw weights stay in place
    errors = bnlib.check_module_gradients(conv, x, rng=rng)
    assert max(errors.values()) < 1e-6, errors


# --------------------------- 5. sequences: the normalized RNN (BPTT) and the drift task


def _randomize(m, rng):
    if "weight" in m.params:
        m.params["weight"][...] = rng.uniform(0.5, 1.5, m.params["weight"].shape)
    m.params["bias"][...] = rng.normal(0.0, 0.3, m.params["bias"].shape)
    return m


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


def test_make_drift_task():
    x, y, lengths = make_drift_task(50, 12, rng=0, min_length=4)
    assert x.shape == (50, 12, 1) and y.shape == (50,) and set(np.unique(y)) <= {0, 1}
    assert lengths.min() >= 4 and lengths.max() <= 12
    np.testing.assert_array_equal((~np.isnan(x[:, :, 0])).sum(1), lengths)
    x, _, lengths = make_drift_task(10, 5, rng=0)
    assert not np.isnan(x).any() and np.all(lengths == 5)


def test_rnn_learns_the_drift_task():
    x, y, _ = make_drift_task(400, 10, rng=0, drift=0.5)
    xt, yt, _ = make_drift_task(400, 10, rng=1, drift=0.5)
    for norm in ("bn", "ln"):
        model = rnn_classifier(1, 8, 2, norm=norm, max_len=10, rng=0)
        bnlib.fit(
            model,
            bnlib.Adam(model, lr=0.01),
            x,
            y,
            epochs=3,
            batch_size=20,
            rng=0,
            progress=False,
        )
        assert bnlib.evaluate(model, xt, yt)[1] > 0.8, norm


def test_drift_test_sets_draw_in_order():
    tests = drift_test_sets(6, num_samples=20, min_length=2, rng=3)
    assert list(tests) == ["lengths 2-6", "length 6", "length 12"]
    rng = np.random.default_rng(3)
    for (x, y), length, min_length in zip(tests.values(), (6, 6, 12), (2, None, None)):
        assert x.shape == (20, length, 1) and y.shape == (20,)
        x_ref, y_ref, _ = make_drift_task(20, length, rng=rng, min_length=min_length)
        np.testing.assert_array_equal(x, x_ref)
        np.testing.assert_array_equal(y, y_ref)
    assert (
        np.isnan(tests["lengths 2-6"][0]).any()
        and not np.isnan(tests["length 12"][0]).any()
    )


def test_rnn_length_experiment_matches_the_loop_it_replaces():
    runs = {
        "BN, lengths 2-6": ("bn", True),
        "LN, lengths 2-6": ("ln", True),
        "BN, all length 6": ("bn", False),
    }
    kw = dict(
        max_len=6,
        hidden=3,
        train_size=24,
        min_length=2,
        epochs=1,
        batch_size=8,
        lr=0.01,
    )
    tests = drift_test_sets(6, num_samples=30, min_length=2, rng=0)
    seeds = [11, 12, 13]
    acc = rnn_length_experiment(runs, tests, seeds=seeds, **kw)
    # the same draws written out: per repetition its own generator draws two
    # training sets, then per run the initial weights and the shuffling
    expected = {name: {t: [] for t in tests} for name in runs}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        train = {
            True: make_drift_task(24, 6, rng=rng, min_length=2)[:2],
            False: make_drift_task(24, 6, rng=rng)[:2],
        }
        for name, (norm, variable) in runs.items():
            model = rnn_classifier(
                1, 3, 2, norm=norm, max_len=6, extrapolate="last", rng=rng
            )
            bnlib.fit(
                model,
                bnlib.Adam(model, lr=0.01),
                *train[variable],
                epochs=1,
                batch_size=8,
                rng=rng,
                progress=False,
            )
            for t, (xt, yt) in tests.items():
                expected[name][t].append(bnlib.evaluate(model, xt, yt)[1])
    assert list(acc) == list(runs) and all(list(a) == list(tests) for a in acc.values())
    for name in runs:
        for t in tests:
            assert acc[name][t].shape == (3,), (name, t)
            np.testing.assert_array_equal(acc[name][t], expected[name][t])
    # the repetitions are independent: the same in two processes, and each one is
    # the experiment with that seed alone
    parallel = rnn_length_experiment(runs, tests, seeds=seeds, jobs=2, **kw)
    one = rnn_length_experiment(runs, tests, seeds=seeds[1:2], **kw)
    for name in runs:
        for t in tests:
            np.testing.assert_array_equal(parallel[name][t], acc[name][t])
            assert one[name][t][0] == acc[name][t][1]


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


# ---------------- 6. transformers: pre-LN vs post-LN, the causal leak of BN over tokens


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
