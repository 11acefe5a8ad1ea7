"""Tests for bnlib.chapters.ch2_gamma_beta (chapter 2: what gamma and beta do)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.stats import norm, skew  # noqa: E402

import bnlib  # noqa: E402
from bnlib.chapters import ch2_gamma_beta as ch2  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ---------------------------------------------------------------- sampler and stages


@pytest.mark.parametrize(
    "mean,spread,sk", [(0.0, 1.0, 0.0), (2.0, 1.5, 1.0), (-3.0, 0.5, -1.5)]
)
def test_sample_skewed_moments(mean, spread, sk):
    x = ch2.sample_skewed(200_000, mean, spread, sk, rng=0)
    assert x.shape == (200_000,)
    np.testing.assert_allclose(x.mean(), mean, atol=0.02 * spread)
    np.testing.assert_allclose(x.std(), spread, rtol=0.02)
    np.testing.assert_allclose(skew(x), sk, atol=0.06)


def test_sample_skewed_is_seeded_and_checks_spread():
    np.testing.assert_array_equal(
        ch2.sample_skewed(10, 1, 2, 1, rng=3), ch2.sample_skewed(10, 1, 2, 1, rng=3)
    )
    with pytest.raises(ValueError, match="spread"):
        ch2.sample_skewed(10, spread=0.0)


@pytest.mark.parametrize(
    "gamma,beta", [(0.5, -1.0), (1.0, 0.0), (3.0, 2.0), (-2.0, 0.5)]
)
def test_bn_stages_mean_is_beta_and_variance_is_gamma_squared(gamma, beta):
    x = ch2.sample_skewed(1000, 4.0, 3.0, 1.0, rng=1)
    st = ch2.bn_stages(x, gamma, beta, "relu", eps=1e-5)
    assert set(st) == {"input", "x_hat", "bn", "activation"}
    np.testing.assert_allclose(st["bn"].mean(), beta, atol=1e-12)
    np.testing.assert_allclose(
        st["bn"].var(), gamma**2 * x.var() / (x.var() + 1e-5), rtol=1e-10
    )
    np.testing.assert_allclose(st["activation"], np.maximum(st["bn"], 0))
    # the module gives the same numbers
    bn = bnlib.BatchNorm1d(1)
    bn.params["weight"][:] = gamma
    bn.params["bias"][:] = beta
    np.testing.assert_allclose(bn(x[:, None])[:, 0], st["bn"], rtol=1e-12, atol=1e-12)


def test_bn_stages_rejects_bad_input():
    with pytest.raises(ValueError, match="nonlinearity"):
        ch2.bn_stages(np.ones(4), 1, 0, "tanhh")
    with pytest.raises(ValueError, match=r"shape \(m,\)"):
        ch2.bn_stages(np.ones((4, 2)), 1, 0)


def test_draw_bn_histograms_returns_the_stats_it_draws():
    x = ch2.sample_skewed(2000, 1.0, 2.0, 0.5, rng=2)
    fig, axes = plt.subplots(1, 3)
    st = ch2.draw_bn_histograms(axes, x, 2.0, -1.0, "sigmoid")
    np.testing.assert_allclose(
        [st["bn_mean"], st["bn_var"]], [-1.0, 4.0], rtol=1e-4, atol=1e-12
    )
    a = ch2.bn_stages(x, 2.0, -1.0)["activation"]
    np.testing.assert_allclose(st["saturated"], np.mean((a < 0.05) | (a > 0.95)))
    assert all(len(ax.patches) >= 1 for ax in axes)


def test_view_and_frames_draw_the_same_panel():
    fig, st = ch2.gamma_beta_view(1.5, 0.5, 2.0, 1.5, 1.0, "relu", n=3000, seed=4)
    x = ch2.sample_skewed(3000, 2.0, 1.5, 1.0, rng=4)
    fig2, draw = ch2.gamma_beta_frames(x, "relu")
    draw((1.0, 0.0))
    assert draw((1.5, 0.5)) == st  # a redraw, not a panel added on top
    assert len(fig2.axes) == 4 and all(len(ax.patches) == 1 for ax in fig2.axes)
    assert "1.50" in fig2._suptitle.get_text()


def test_nonlinearity_panel_shades_the_middle_of_the_bn_outputs():
    z = np.linspace(-2.0, 2.0, 1001)
    fig, ax = plt.subplots()
    ch2.draw_nonlinearity_panel(ax, z, "sigmoid")
    (band,) = ax.patches
    x0, x1 = band.get_x(), band.get_x() + band.get_width()
    np.testing.assert_allclose([x0, x1], [-1.8, 1.8])  # 5th and 95th percentiles
    assert [line.get_ydata()[0] for line in ax.lines[1:]] == [0.05, 0.95]


def test_histograms_leave_out_values_beyond_the_range():
    x = np.concatenate([np.zeros(90), np.full(10, 100.0)])  # 10% far out
    fig, axes = plt.subplots(1, 3)
    ch2.draw_bn_histograms(axes, x, 20.0, 0.0, "sigmoid")
    # BN puts the far values at 20 * 3 = 60, beyond (-12, 12): left out and counted
    assert "10.0% off scale" in axes[1].texts[0].get_text()
    assert "off scale" not in axes[2].texts[0].get_text()


def test_scrubber_over_frames_of_the_chapter():
    x = ch2.sample_skewed(500, 1.0, 1.0, 0.5, rng=0)
    fig, draw = ch2.gamma_beta_frames(x)
    html = bnlib.plotting.scrubber(fig, draw, [(1.0, 0.0), (2.0, 0.0)])
    assert html.data.count("data:image/png") >= 2
    fig, draw = ch2.relu_frames(np.random.default_rng(0).standard_normal(500))
    html = bnlib.plotting.scrubber(fig, draw, [(1.0, -1.0), (1.0, 1.0)])
    assert html.data.count("data:image/png") >= 2


# ---------------------------------------------------------------- widgets


def test_gamma_beta_widget_redraws_when_a_slider_moves():
    w = ch2.gamma_beta_widget(n=2000, seed=0)
    assert set(w.controls) == {
        "gamma",
        "beta",
        "mean",
        "spread",
        "skew",
        "nonlinearity",
    }
    np.testing.assert_allclose(w.last_stats["bn_var"], 1.0, rtol=1e-3)
    png = w.image.value
    w.controls["gamma"].value = 3.0
    np.testing.assert_allclose(w.last_stats["bn_var"], 9.0, rtol=1e-3)
    assert w.image.value != png  # the picture was redrawn
    assert w.image.layout.width == "750px"  # the figure's logical width
    w.controls["beta"].value = -2.0
    np.testing.assert_allclose(w.last_stats["bn_mean"], -2.0, atol=1e-12)
    w.controls["nonlinearity"].value = "relu"
    np.testing.assert_allclose(
        w.last_stats["active"],
        np.mean(
            ch2.bn_stages(ch2.sample_skewed(2000, 2.0, 1.5, 1.0, rng=0), 3.0, -2.0)[
                "bn"
            ]
            > 0
        ),
    )
    before = w.last_stats["input_mean"]
    w.controls["mean"].value = -3.0  # the input moves, the BN output does not
    assert w.last_stats["input_mean"] < before - 4
    np.testing.assert_allclose(w.last_stats["bn_mean"], -2.0, atol=1e-12)


def test_relu_widget_redraws_when_a_slider_moves():
    w = ch2.relu_widget(n=4000, seed=1)
    np.testing.assert_allclose(w.last_stats["active"], 0.5, atol=0.03)
    w.controls["beta"].value = -1.0
    np.testing.assert_allclose(w.last_stats["predicted"], norm.cdf(-1.0))
    np.testing.assert_allclose(w.last_stats["active"], norm.cdf(-1.0), atol=0.03)


# ---------------------------------------------------------------- sigmoid linear regime


@pytest.mark.parametrize("tol", [0.01, 0.05, 0.1, 0.3])
def test_sigmoid_linear_bound_solves_the_ratio(tol):
    z = ch2.sigmoid_linear_bound(tol)
    ratio = (ch2._sigmoid(z) - 0.5) / (z / 4)
    np.testing.assert_allclose(ratio, 1 - tol, rtol=1e-9)
    with pytest.raises(ValueError):
        ch2.sigmoid_linear_bound(1.5)


def test_sigmoid_linear_regime_matches_the_normal_cdf():
    z = np.random.default_rng(0).standard_normal(200_000)
    r = ch2.sigmoid_linear_regime(z, 0.1)
    np.testing.assert_allclose(
        r["fraction"], 2 * norm.cdf(ch2.sigmoid_linear_bound(0.1)) - 1, atol=0.005
    )
    assert r["r2"] > 0.98 and r["saturated"] < 0.01
    big = ch2.sigmoid_linear_regime(8 * z, 0.1)
    assert big["saturated"] > 0.6 and big["r2"] < r["r2"]
    assert ch2.sigmoid_linear_regime(0.01 * z)["r2"] > 0.99999


def test_unit_input_ranges_and_figures():
    data = bnlib.make_gaussian_classes(n_train=200, n_test=50, dim=5, rng=0)
    net = bnlib.make_mlp([5, 8, 6, 3], "sigmoid", "bn", rng=0)
    net.train()
    net(data.x_train)  # fill the running statistics
    r = ch2.unit_input_ranges(net, data.x_train)
    assert [a.shape for a in r] == [(3, 8), (3, 6)]
    assert np.all(r[0][0] <= r[0][1]) and np.all(r[0][1] <= r[0][2])
    fig, ranges = ch2.plot_learned_affine(net, data.x_train)
    assert len(fig.axes) == 3
    fig, table = ch2.plot_sigmoid_regime([0.5, 1.0, 2.0], betas=(0.0,), n=2000)
    assert [t["saturated"] for t in table[0.0]] == sorted(
        t["saturated"] for t in table[0.0]
    )


# ---------------------------------------------------------------- mean-shift experiment


def test_mean_shift_task_and_models():
    x0, t0 = ch2.mean_shift_task(0.0, n=64, d=5, k=3, rng=1)
    x5, t5 = ch2.mean_shift_task(5.0, n=64, d=5, k=3, rng=1)
    np.testing.assert_array_equal(x0, x5)
    np.testing.assert_allclose(t5 - t0, 5.0)
    plain, bn = (
        ch2.mean_shift_model(False, d=5, k=3),
        ch2.mean_shift_model(True, d=5, k=3),
    )
    assert isinstance(bn[-1], bnlib.BatchNorm1d) and "bias" not in bn[-2].params
    assert "bias" in plain[-1].params
    np.testing.assert_array_equal(plain[0].params["weight"], bn[0].params["weight"])


def test_steps_to_target_counts_updates():
    x, t = ch2.mean_shift_task(1.0, n=64, rng=0)
    net = ch2.mean_shift_model(True)
    r = ch2.steps_to_target(
        net, bnlib.SGD(net, lr=0.3), x, t, loss_target=0.0, max_steps=7
    )
    assert r["steps"] is None and len(r["loss"]) == 8 and r["mean"].shape == (8, 2)
    net = ch2.mean_shift_model(True)
    r = ch2.steps_to_target(net, bnlib.SGD(net, lr=1.0), x, t, loss_target=1e9)
    assert r["steps"] == 0


def test_with_bn_a_mean_shift_only_changes_beta():
    nets = []
    for shift in (0.0, 4.0):
        x, t = ch2.mean_shift_task(shift, n=64, rng=0)
        net = ch2.mean_shift_model(True)
        ch2.steps_to_target(
            net, bnlib.SGD(net, lr=0.3), x, t, loss_target=0.0, max_steps=20
        )
        nets.append(net)
    for (m0, k), (m1, _) in zip(nets[0].parameters(), nets[1].parameters()):
        if isinstance(m0, bnlib.BatchNorm1d) and k == "bias":
            # beta's distance to the target mean shrinks by (1 - lr * 2 / k) per step
            np.testing.assert_allclose(
                m1.params[k] - m0.params[k], 4.0 * (1 - 0.7**20), rtol=1e-9
            )
        else:
            np.testing.assert_allclose(m1.params[k], m0.params[k], atol=1e-10)


def _mean_shift_runs():
    """A tiny sweep in the chapter's layout: (name, lr, run) -> steps_to_target dict."""
    setups = {"plain": (False, 2.0, False), "BN, shift 0": (True, 0.0, False)}
    runs = {}
    for name, (b, s, at_mean) in setups.items():
        x, t = ch2.mean_shift_task(s, n=64)
        for lr in (0.3, 1.0):
            for i in range(3):
                net = ch2.mean_shift_model(b, rng=i)
                if at_mean:
                    net[-1].params["bias"][:] = t.mean(axis=0)
                r = ch2.steps_to_target(
                    net, bnlib.SGD(net, lr=lr), x, t, loss_target=0.5, max_steps=30
                )
                runs[name, lr, i] = r | {"target_mean": t.mean(axis=0)}
    return setups, runs


def test_median_steps_and_best_lr():
    runs = {("a", 0.3, i): {"steps": s} for i, s in enumerate([5, None, 9])}
    runs |= {("a", 1.0, i): {"steps": s} for i, s in enumerate([None, None, 2])}
    assert ch2.median_steps(runs, "a", 0.3, 3) == 9
    assert ch2.median_steps(runs, "a", 1.0, 3) == np.inf
    assert ch2.best_lr(runs, "a", [0.3, 1.0], 3) == (9, 0.3)


def test_plot_mean_shift():
    setups, runs = _mean_shift_runs()
    fig, best = ch2.plot_mean_shift(
        runs, setups, [0.3, 1.0], 3, show_lr=0.3, max_steps=30
    )
    assert set(best) == set(setups)
    assert all(lr in (0.3, 1.0) for _, lr in best.values())
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert labels == list(setups)


# ---------------------------------------------------------------- ReLU


def test_relu_active_fraction():
    np.testing.assert_allclose(ch2.relu_active_fraction(1.0, 0.0), 0.5)
    np.testing.assert_allclose(ch2.relu_active_fraction(2.0, -1.0), norm.cdf(-0.5))
    np.testing.assert_allclose(
        ch2.relu_active_fraction(-2.0, -1.0), norm.cdf(-0.5)
    )  # |gamma|
    assert (
        ch2.relu_active_fraction(0.0, 1.0) == 1.0
        and ch2.relu_active_fraction(0.0, -1.0) == 0.0
    )
    out = ch2.relu_active_fraction(np.array([1.0, 2.0]), np.array([0.0, 2.0]))
    np.testing.assert_allclose(out, norm.cdf([0.0, 1.0]))
    x_hat = np.random.default_rng(0).standard_normal(100_000)
    for g, b in [(1.0, -1.0), (0.5, 0.3), (-3.0, 2.0)]:
        np.testing.assert_allclose(
            np.mean(g * x_hat + b > 0), ch2.relu_active_fraction(g, b), atol=0.005
        )


def test_relu_panels():
    x_hat = np.random.default_rng(0).standard_normal(3000)
    fig, draw = ch2.relu_frames(x_hat)
    assert draw((1.0, -1.0)) == np.mean(x_hat > 1.0)
    assert draw((2.0, 0.5)) == np.mean(2 * x_hat + 0.5 > 0)
    assert len(fig.axes[0].patches) == 2  # redrawn, not stacked
    fig, st = ch2.relu_view(1.0, 0.5, n=3000, seed=0)
    np.testing.assert_allclose(st["predicted"], norm.cdf(0.5))


def test_active_fractions_and_dead_units():
    data = bnlib.make_gaussian_classes(n_train=200, n_test=50, dim=5, rng=0)
    net = bnlib.make_mlp([5, 8, 3], "relu", None, rng=0)
    net[0].params["bias"][:3] = -100.0  # three units that never fire
    fr = ch2.active_fractions(net, data.x_train)
    assert len(fr) == 1 and fr[0].shape == (8,)
    assert np.all(fr[0][:3] == 0) and np.all(fr[0][3:] > 0)


def test_dead_unit_census_small():
    data = bnlib.make_gaussian_classes(
        n_train=200, n_test=50, dim=5, num_classes=3, rng=0
    )
    rows = ch2.dead_unit_census(data, [0.05], width=8, epochs=1, batch_size=50)
    assert [r["norm"] for r in rows] == [None, "bn"]
    assert all(len(r["dead"]) == 2 and 0 <= r["test_acc"] <= 1 for r in rows)


# ---------------------------------------------------------------- training a subset


def _net():
    return bnlib.make_mlp([5, 8, 6, 3], "relu", "bn", rng=0)


def test_bn_affine_parameters():
    pairs = ch2.bn_affine_parameters(_net())
    assert [(type(m).__name__, k) for m, k in pairs] == [
        ("BatchNorm1d", "weight"),
        ("BatchNorm1d", "bias"),
    ] * 2
    assert sum(m.params[k].size for m, k in pairs) == 2 * (8 + 6)


# ---------------------------------------------------------------- helpers of the chapte


def _tiny_data():
    return bnlib.make_gaussian_classes(
        n_train=200, n_test=50, dim=5, num_classes=3, rng=0
    )


def test_train_mlp_matches_make_mlp_and_fit():
    data = _tiny_data()
    net, hist = ch2.train_mlp(
        data,
        "sigmoid",
        "bn",
        width=8,
        depth=2,
        lr=1e-2,
        epochs=2,
        batch_size=50,
        rng=3,
        fit_rng=4,
    )
    ref = bnlib.make_mlp([5, 8, 8, 3], "sigmoid", "bn", rng=3)
    ref_hist = bnlib.fit(
        ref,
        bnlib.Adam(ref, lr=1e-2),
        data.x_train,
        data.y_train,
        epochs=2,
        batch_size=50,
        test=(data.x_test, data.y_test),
        rng=4,
        progress=False,
    )
    for (m, k), (r, _) in zip(net.parameters(), ref.parameters()):
        np.testing.assert_array_equal(m.params[k], r.params[k])
    assert hist.test_acc == ref_hist.test_acc and len(hist.test_acc) == 2


def test_linear_regime_shares():
    net = bnlib.make_mlp([5, 8, 6, 3], "sigmoid", "bn", rng=0)
    x = np.random.default_rng(0).standard_normal((300, 5))
    shares = ch2.linear_regime_shares(net, x, 1.0)
    assert [s.shape for s in shares] == [(8,), (6,)]
    zs = bnlib.capture_inputs(net, x, bnlib.Sigmoid, mode="eval")
    for s, z in zip(shares, zs):
        np.testing.assert_array_equal(s, np.mean(np.abs(z) <= 1.0, axis=0))
    assert 0 < shares[0].min() < 1
    assert all(np.all(s == 1.0) for s in ch2.linear_regime_shares(net, x, 1e6))


def test_mean_shift_table():
    runs = {
        (name, lr, i): {"steps": None, "diverged": False}
        for name in ("plain", "BN")
        for lr in (0.3, 1.0)
        for i in range(3)
    }
    for i, s in enumerate([12, 30, None]):
        runs["BN", 0.3, i]["steps"] = s
    runs["plain", 1.0, 0]["steps"] = 7
    setups = {"plain": (False, 3.0, False), "BN": (True, 3.0, False)}
    lines = ch2.mean_shift_table(runs, setups, [0.3, 1.0], 3, max_steps=50).split("\n")
    assert lines[0] == "| output layer, task | lr 0.3 | lr 1 |"
    assert lines[2] == "| plain | >50 (0/3) | >50 (1/3) |"
    assert lines[3] == "| BN | 30 (2/3) | >50 (0/3) |"
    assert len(lines) == 4


@pytest.mark.parametrize("bn", [True, False])
def test_mean_shift_pair(bn):
    pair = ch2.mean_shift_pair(bn, 0.0, 4.0, steps=20, lr=0.3, rng=0)
    a, b = pair["models"]
    assert len(pair["diffs"]) == len(a.parameters())
    assert len(pair["saturated"]) == 2 and all(0 <= s <= 1 for s in pair["saturated"])
    np.testing.assert_allclose(
        pair["bias_change"], b[-1].params["bias"] - a[-1].params["bias"]
    )
    np.testing.assert_allclose(pair["bias"][1] - pair["bias"][0], pair["bias_change"])
    assert all(0 <= f <= s for f, s in zip(pair["floor"], pair["saturated"]))
    if bn:  # same path but beta, as in test_with_bn_a_mean_shift_only_changes_beta
        assert max(pair["diffs"][:-1]) < 1e-10
        np.testing.assert_allclose(pair["bias_change"], 4.0 * (1 - 0.7**20), rtol=1e-9)
        assert pair["saturated"][0] == pair["saturated"][1]
    else:
        assert min(pair["diffs"]) > 0


def test_census_table():
    census = [
        {"norm": None, "lr": 0.1, "dead": [0, 3], "test_acc": 0.5},
        {"norm": "bn", "lr": 1.0, "dead": [1, 2], "test_acc": 0.25},
    ]
    assert ch2.census_table(census, width=8).split("\n")[2:] == [
        "| none | 0.1 | 0, 3 of 8 | 0.500 |",
        "| BN | 1.0 | 1, 2 of 8 | 0.250 |",
    ]


def test_mean_shift_pair_with_the_output_bias_at_the_target_mean():
    """The plain network whose output bias starts at the targets' mean follows the
    same path at every shift; only that bias differs, by the shift."""
    pair = ch2.mean_shift_pair(
        False, 0.0, 4.0, steps=20, lr=0.3, rng=0, bias_at_mean=True
    )
    assert max(pair["diffs"][:-1]) < 1e-9
    np.testing.assert_allclose(pair["bias_change"], 4.0, rtol=1e-9)


def test_dead_unit_profile_and_active_share_gap():
    net = bnlib.make_mlp([5, 8, 6, 3], "relu", "bn", rng=0)
    x = np.random.default_rng(1).standard_normal((400, 5))
    bl = [m for m in net.modules() if isinstance(m, bnlib.BatchNorm1d)][1]
    bl.params["bias"][:2] = -50.0  # two units that never fire
    bl.params["weight"][:2] = 0.5
    p = ch2.dead_unit_profile(net, x, layer=1)
    assert p["n_provable"] is None
    # ratio -100 < -sqrt(m - 1) for m = 100, not for m = 20000
    assert ch2.dead_unit_profile(net, x, layer=1, batch_size=100)["n_provable"] == 2
    assert ch2.dead_unit_profile(net, x, 1, batch_size=20_000)["n_provable"] == 0
    assert p["n_dead"] == 2 and np.array_equal(p["dead"], np.arange(6) < 2)
    np.testing.assert_allclose(
        p["ratio"], bl.params["bias"] / np.abs(bl.params["weight"])
    )
    assert p["ratio_dead"] == p["ratio_dead_max"] == -100.0 and p["gamma_dead"] == 0.5
    assert p["ratio_live"] == 0.0 and p["gamma_live"] == 1.0
    assert p["active_live"] == np.median(p["active"][2:]) > 0
    # the first layer's inputs are zero-mean: Phi(beta/|gamma|) = 1/2 predicts its share
    assert ch2.active_share_gap(net, x, layer=0) < 0.1
    frac = ch2.active_fractions(net, x)[1]
    expected = np.mean(
        np.abs(frac - ch2.relu_active_fraction(bl.params["weight"], bl.params["bias"]))
    )
    np.testing.assert_allclose(ch2.active_share_gap(net, x, layer=1), expected)


def test_active_fractions_in_training_use_each_batchs_statistics():
    data = bnlib.make_gaussian_classes(n_train=200, n_test=50, dim=5, rng=0)
    net = bnlib.make_mlp([5, 8, 3], "relu", "bn", rng=0)
    bn = bnlib.batchnorm_layers(net)[0]
    bn.params["bias"][:] = 0.0
    bn.params["bias"][0] = -20.0  # below -sqrt(m - 1) = -7: off in every batch
    state = {k: v.copy() for k, v in net.state_dict().items()}
    (frac,) = ch2.active_fractions_in_training(net, data.x_train, 50, passes=2, rng=0)
    assert frac[0] == 0.0
    # beta = 0: active on about half of each batch, whatever the running statistics
    assert np.all(np.abs(frac[1:] - 0.5) < 0.15)
    assert all(np.array_equal(v, net.state_dict()[k]) for k, v in state.items())
