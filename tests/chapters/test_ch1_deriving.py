"""Tests for bnlib.chapters.ch1_deriving (chapter 1 figures and tables)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import bnlib  # noqa: E402
from bnlib import functional as F  # noqa: E402
from bnlib import make_mlp, numerical_gradient  # noqa: E402
from bnlib.chapters import ch1_deriving as ch1  # noqa: E402
from bnlib.losses import softmax_cross_entropy  # noqa: E402


def _gids(fig, prefix):
    return sorted(
        a.get_gid() for a in fig.findobj() if (a.get_gid() or "").startswith(prefix)
    )


def _staged_example(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(1.0, 2.0, (4, 3))
    _, cache = F.batchnorm_forward(x, rng.uniform(0.5, 2, 3), rng.normal(size=3))
    trace = {}
    F.batchnorm_backward_staged(rng.normal(size=x.shape), cache, trace=trace)
    return cache, trace


def test_graph_has_one_node_per_operation_plus_inputs():
    fig = ch1.draw_bn_graph()
    assert isinstance(fig, Figure)
    nodes = _gids(fig, "node:")
    expected = {"x", "gamma", "beta"} | {name for name, _ in F.STAGED_NODES}
    assert sorted(f"node:{n}" for n in expected) == nodes
    assert len(nodes) == len(F.STAGED_NODES) + 3
    assert len(_gids(fig, "edge:")) == len(ch1.BN_GRAPH_EDGES)
    assert not _gids(fig, "grad:") and not _gids(fig, "value:")
    plt.close(fig)


def test_graph_edges_connect_known_nodes_and_every_node_is_reached():
    names = set(ch1.BN_GRAPH_NODES)
    children = {c for _, c in ch1.BN_GRAPH_EDGES}
    for p, c in ch1.BN_GRAPH_EDGES:
        assert p in names and c in names
    assert children == names - {"x", "gamma", "beta"}


def test_graph_annotations_from_staged_trace():
    cache, trace = _staged_example()
    values = {"x": cache["x"], "mu": cache["mu"], "var": cache["var"]}
    fig = ch1.draw_bn_graph(values=values, grads=trace)
    assert len(_gids(fig, "grad:")) == len(F.STAGED_NODES) + 1  # every node and x
    assert len(_gids(fig, "value:")) == 3
    texts = [a.get_text() for a in fig.findobj() if (a.get_gid() or "") == "grad:out"]
    assert texts[0] == f"{np.linalg.norm(trace['out']):.3g}"
    plt.close(fig)


def test_graph_gamma_beta_gradients_and_legend_line():
    cache, trace = _staged_example()
    grads = dict(trace, gamma=np.array([[0.25]]), beta=np.array([[-1.5]]))
    fig = ch1.draw_bn_graph(grads=grads)
    assert {"grad:gamma", "grad:beta"} <= set(_gids(fig, "grad:"))
    (beta,) = [a for a in fig.findobj() if a.get_gid() == "grad:beta"]
    assert beta.get_text() == "-1.5"
    assert beta.get_position()[1] < ch1._POS["beta"][1]  # below its box
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any(t.startswith("orange: gradient") for t in texts)
    assert not any(t.startswith("grey: forward") for t in texts)
    assert fig.get_size_inches()[0] <= 7.5
    assert min(t.get_fontsize() for t in fig.axes[0].texts) >= 9
    plt.close(fig)


def test_graph_draws_into_given_axes():
    fig, ax = plt.subplots()
    assert ch1.draw_bn_graph(ax=ax) is fig
    plt.close(fig)


def test_gradient_geometry_residual_panel():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 1))
    dy = rng.normal(size=(9, 1)) + x
    _, cache = F.batchnorm_forward(x, np.array([2.0]), np.array([0.5]), eps=0.0)
    dx, _, _ = F.batchnorm_backward(dy, cache)
    fig = ch1.plot_gradient_geometry(
        cache["x_hat"][:, 0], dy[:, 0], dx[:, 0], 2.0, cache["inv_std"].item()
    )
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    (resid,) = [a for a in fig.axes[1].collections if a.get_gid() == "residual"]
    assert len(resid.get_segments()) == 9
    # the rescaled dx is the least-squares residual of dy on x_hat (exact when eps = 0)
    xh = cache["x_hat"][:, 0]
    slope, icpt = np.polyfit(xh, dy[:, 0], 1)
    np.testing.assert_allclose(
        dx[:, 0] / (2.0 * cache["inv_std"].item()),
        dy[:, 0] - icpt - slope * xh,
        atol=1e-10,
    )
    plt.close(fig)


def _sweep(scales=(0.5, 1.0, 2.0), steps=4):
    k = len(scales)
    loss = np.linspace(1.0, 0.5, steps + 1) * np.arange(1, k + 1)[:, None]
    norm = 1.0 + np.linspace(0.0, 0.1, steps + 1) / np.arange(1, k + 1)[:, None]
    return np.array(scales), loss, norm, 0.1 / np.square(scales)


def test_plot_weight_scale_sweep():
    scales, loss, norm, first = _sweep()
    fig = ch1.plot_weight_scale_sweep(scales, loss, norm, first)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    ax_loss, ax_step, ax_norm = fig.axes
    assert len(ax_loss.lines) == 3 and len(ax_norm.lines) == 3
    # every panel has a legend, and the norm panel shows growth from step 1 on
    assert all(ax.get_legend() is not None for ax in fig.axes)
    np.testing.assert_allclose(ax_norm.lines[0].get_ydata(), norm[0, 1:] - 1.0)
    assert ax_norm.get_yscale() == "log"
    # one colour per scale, the same in the loss and the norm panels
    for a, b in zip(ax_loss.lines, ax_norm.lines):
        np.testing.assert_array_equal(a.get_color(), b.get_color())
    assert fig.get_size_inches()[0] <= 7.5
    plt.close(fig)


def test_brief_summaries():
    assert ch1._brief(np.array([[1.23456]])) == "1.23"
    assert ch1._brief(np.ones((4, 3))) == "3.46"


def test_wrap_report_keeps_words_and_width():
    long = "  Most likely cause: " + " ".join(["word"] * 40)
    text = ch1.wrap_report("checker: FAILED\n" + long, width=40)
    lines = text.splitlines()
    assert lines[0] == "checker: FAILED"
    assert all(len(line) <= 40 for line in lines)
    assert lines[2].startswith("      word")  # continuation: 2 + 4 spaces
    assert " ".join(text.split()) == " ".join(("checker: FAILED\n" + long).split())


# --- layer diagnostics -------------------------------------------------------------


def _small_net(norm=None, seed=0):
    return make_mlp([5, 4, 4, 3], "sigmoid", norm, np.random.default_rng(seed))


def _batch(seed=1, n=16):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)), rng.integers(0, 3, size=n)


@pytest.mark.parametrize("norm", [None, "bn"])
def test_record_layers_keeps_outputs_and_their_gradients(norm):
    net = _small_net(norm)
    x, y = _batch()
    acts, grads = ch1.record_layers(net, x, y)
    assert len(acts) == len(grads) == 2  # two hidden sigmoid layers
    sig = [i for i, layer in enumerate(net.layers) if type(layer).__name__ == "Sigmoid"]
    for k, i in enumerate(sig):
        h = x
        for layer in net.layers[: i + 1]:
            h = layer(h)
        np.testing.assert_allclose(acts[k], h, rtol=1e-12)
        # dl/dh by centered differences through the layers above the sigmoid
        hk = h.copy()

        def loss_from_h(i=i, hk=hk):
            out = hk
            for layer in net.layers[i + 1 :]:
                out = layer(out)
            return softmax_cross_entropy(out, y)[0]

        numeric = numerical_gradient(loss_from_h, hk)
        np.testing.assert_allclose(grads[k], numeric, rtol=1e-5, atol=1e-9)


def test_saturated_fraction_is_karpathys_tanh_cut():
    assert ch1.saturated_fraction([0.0, 0.01, 0.5, 0.99, 1.0]) == pytest.approx(0.8)
    assert ch1.saturated_fraction([0.02, 0.5, 0.98]) == 0.0
    assert ch1.saturated_fraction([0.02, 0.98], tol=0.03) == 1.0
    z = np.random.default_rng(2).normal(0.0, 6.0, size=20_000)
    s = 1 / (1 + np.exp(-z))
    # sigmoid(z) = (1 + tanh(z / 2)) / 2: within 0.015 of 0 or 1 <=> |tanh(z/2)| > 0.97
    assert ch1.saturated_fraction(s) == pytest.approx(
        np.mean(np.abs(np.tanh(z / 2)) > 0.97)
    )
    assert ch1.SATURATION_TOL == 0.015


def test_layer_summary_numbers():
    rng = np.random.default_rng(3)
    # unit 0 varies across examples, unit 1 is constant: pooled std > spread
    a = np.column_stack([rng.uniform(0.4, 0.6, 100), np.full(100, 0.995)])
    g = rng.normal(0.0, 2.0, size=(100, 2))
    s = ch1.layer_summary([a, a], [g, 3 * g])
    assert set(s) == {"saturated", "std", "spread", "grad_std"}
    assert all(v.shape == (2,) for v in s.values())
    np.testing.assert_allclose(s["saturated"], 0.5)
    np.testing.assert_allclose(s["std"], a.std())
    np.testing.assert_allclose(s["spread"], np.median(a.std(axis=0)))
    np.testing.assert_allclose(s["grad_std"], [g.std(), 3 * g.std()])


def test_plot_layer_profiles():
    rng = np.random.default_rng(5)
    profiles = {
        "default": (
            "plain",
            10.0 ** rng.normal([-1, -2, -3], 0.1, (4, 3)),
            np.ones((4, 3)),
        ),
        "slope-aware": ("plain", np.ones((4, 3)), np.ones((4, 3))),
        "BN": ("bn", np.full((4, 3), 0.2), np.ones((4, 3))),
    }
    fig = ch1.plot_layer_profiles(profiles)
    assert len(fig.axes) == 2 and fig.get_size_inches()[0] <= 7.5
    lines = _gids(fig, "profile:")
    assert len(lines) == 6 and "profile:grad:BN" in lines
    (first,) = [
        a for a in fig.findobj() if (a.get_gid() or "") == "profile:spread:default"
    ]
    np.testing.assert_allclose(
        first.get_ydata(), np.median(profiles["default"][1], axis=0)
    )
    assert matplotlib.colors.to_hex(first.get_color()) == "#d55e00"
    # two plain networks: two line styles
    styles = {
        a.get_gid(): a.get_linestyle() for a in fig.findobj() if a.get_gid() in lines
    }
    assert styles["profile:spread:default"] != styles["profile:spread:slope-aware"]
    assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)
    assert all(ax.get_yscale() == "log" for ax in fig.axes)
    plt.close(fig)


def test_record_layers_refuses_a_network_without_sigmoids():
    net = make_mlp([4, 3, 2], "tanh", None, rng=0)
    with pytest.raises(ValueError, match="no Sigmoid"):
        ch1.record_layers(net, np.zeros((5, 4)), np.zeros(5, dtype=int))


# ------------------------------------------------------------------ backward geometry
def test_backward_geometry_removes_the_shift_and_the_trend_up_to_eps():
    base = ch1.backward_geometry(m=5, shift=0.0, trend=0.0, noise=0.7, log_eps=-8)
    for shift, trend in [(2.0, 0.0), (0.0, -1.5), (-1.0, 2.0)]:
        g = ch1.backward_geometry(m=5, shift=shift, trend=trend, noise=0.7, log_eps=-8)
        np.testing.assert_allclose(g["passed"], base["passed"], atol=1e-6)
        np.testing.assert_allclose(g["dy"].mean(), shift, atol=1e-12)
        assert abs(g["sum_passed"]) < 1e-12
    for log_eps in (-3.0, 0.0, 1.0):  # eps lets the fraction eps/(var+eps) through
        g = ch1.backward_geometry(m=7, trend=1.3, log_eps=log_eps)
        np.testing.assert_allclose(g["trend_passed"], g["leak"] * 1.3, rtol=1e-9)
        np.testing.assert_allclose(g["leak"], 10**log_eps / (1 + 10**log_eps))
    assert ch1.backward_geometry(m=3)["z"].shape == (3,)


def test_backward_geometry_widget_redraws_and_frames_draw():
    box = ch1.backward_geometry_widget(seed=3)
    before = box.image.value
    box.controls["log_eps"].value = 0.5
    assert box.image.value != before
    assert box.last_stats["leak"] > 0.7
    box.controls["m"].value = 3
    assert box.last_stats["z"].shape == (3,)
    fig, draw = ch1.backward_geometry_frames(seed=3)
    g = draw((1.0, 0.8, 0.6, -1.0))
    np.testing.assert_allclose(g["trend_passed"], 0.8 * g["leak"], rtol=1e-9)
    plt.close(fig)


# ------------------------------------------------------------------ digits


def test_load_digits():
    d = ch1.load_digits()
    assert d.x_train.shape == (1348, 64) and d.x_test.shape == (449, 64)
    assert d.x_train.dtype == np.float64 and d.y_train.dtype == np.int64
    assert 0.0 <= d.x_train.min() and d.x_train.max() == 1.0
    assert d.num_classes == 10
    again = ch1.load_digits()
    np.testing.assert_array_equal(again.x_test, d.x_test)
    other = ch1.load_digits(seed=1, test_fraction=0.5, dtype=np.float32)
    assert other.x_test.shape == (898, 64) and other.x_test.dtype == np.float32
    assert len(np.unique(np.concatenate([d.x_train, d.x_test]), axis=0)) == len(
        np.unique(np.concatenate([other.x_train, other.x_test]), axis=0)
    )


# -------------------------------------------------------------- check_batchnorm_layer
class MyBatchNorm1d(bnlib.Module):
    """The chapter 1 layer, with switches for the mistakes of the catalogue."""

    def __init__(self, n, eps=1e-5, momentum=0.1, mistake=None):
        super().__init__()
        self.eps, self.momentum, self.mistake = eps, momentum, mistake
        self.params = {"weight": np.ones(n), "bias": np.zeros(n)}
        self.grads = {k: np.zeros(n) for k in self.params}
        var0 = 0.0 if mistake == "var0" else 1.0
        self.running_mean, self.running_var = np.zeros(n), np.full(n, var0)

    def forward(self, x):
        gamma, beta = self.params["weight"], self.params["bias"]
        k = 0.1 if self.mistake == "fixed_momentum" else self.momentum
        k = 1 - k if self.mistake == "keras" else k
        if self.training or self.mistake == "eval_updates":
            ddof = 0 if self.mistake == "biased" else 1
            self.running_mean = (1 - k) * self.running_mean + k * x.mean(axis=0)
            self.running_var = (1 - k) * self.running_var + k * x.var(0, ddof=ddof)
        if not self.training and self.mistake != "eval_batch":
            stats = (self.running_mean, self.running_var)
            return F.batchnorm_forward(x, gamma, beta, self.eps, stats=stats)[0]
        out, self.cache = F.batchnorm_forward(x, gamma, beta, self.eps)
        return out

    def backward(self, dout):
        dx, dgamma, dbeta = F.batchnorm_backward(dout, self.cache)
        if self.mistake != "no_grads":
            self.grads["weight"], self.grads["bias"] = dgamma.ravel(), dbeta.ravel()
        return dx


class NoKeywords(MyBatchNorm1d):
    def __init__(self, n):
        super().__init__(n)


LAYER_RIGHT = [MyBatchNorm1d, bnlib.BatchNorm1d]
LAYER_WRONG = [
    (
        lambda n, **kw: MyBatchNorm1d(n, mistake="biased", **kw),
        "running_var stores the biased",
    ),
    (
        lambda n, **kw: MyBatchNorm1d(n, mistake="keras", **kw),
        "used Keras's convention",
    ),
    (
        lambda n, **kw: MyBatchNorm1d(n, mistake="fixed_momentum", **kw),
        "ignored the momentum argument",
    ),
    (
        lambda n, **kw: MyBatchNorm1d(n, mistake="var0", **kw),
        "running_var starts at 0",
    ),
    (
        lambda n, **kw: MyBatchNorm1d(n, mistake="eval_batch", **kw),
        "evaluation mode still normalizes",
    ),
    (
        lambda n, **kw: MyBatchNorm1d(n, mistake="eval_updates", **kw),
        "evaluation mode updates",
    ),
    (
        lambda n, **kw: MyBatchNorm1d(n, mistake="no_grads", **kw),
        "grads['weight'] after training step 1 is all zeros: compute it",
    ),
    (NoKeywords, "raised TypeError"),
]


@pytest.mark.parametrize(
    "answer,named",
    [(a, None) for a in LAYER_RIGHT] + LAYER_WRONG,
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_check_batchnorm_layer_catalogue(answer, named, checker_contract):
    """The layers the catalogue writes as a reader would: the right ones pass, each
    mistake is named."""
    checker_contract.judges(ch1.check_batchnorm_layer(answer), named)
    assert len(LAYER_RIGHT) >= 2 and len(LAYER_WRONG) >= 5


def test_check_batchnorm_layer_never_raises(checker_contract):
    checker_contract.rejects_odd_input(ch1.check_batchnorm_layer)
    checker_contract.rejects_junk_returned(ch1.check_batchnorm_layer)


def test_a_layer_without_eval_is_reported():
    class Plain:
        def __init__(self, n, eps=1e-5, momentum=0.1):
            self.layer = bnlib.BatchNorm1d(n, eps=eps, momentum=momentum)
            self.params, self.grads = self.layer.params, self.layer.grads

        def __call__(self, x):
            return self.layer(x)

        def backward(self, d):
            return self.layer.backward(d)

        running_mean = property(lambda self: self.layer.running_mean)
        running_var = property(lambda self: self.layer.running_var)

    result = ch1.check_batchnorm_layer(Plain)
    assert not result.passed and "Plain.eval() raised AttributeError" in result.report


def test_an_unwritten_layer_is_not_judged():
    class MyLayer(bnlib.Module):
        def forward(self, x): ...

    result = ch1.check_batchnorm_layer(MyLayer)
    assert not result.passed and "NO ANSWER YET" in result.report
