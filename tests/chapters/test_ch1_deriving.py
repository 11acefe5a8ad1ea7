"""Tests for bnlib.chapters.ch1_deriving (chapter 1 figures and tables)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bnlib import functional as F  # noqa: E402
from bnlib.chapters import ch1_deriving as ch1  # noqa: E402


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


def test_markdown_table():
    text = ch1.markdown_table(["a", "b"], [[1, "x"], ["2.50", "y"]])
    assert text.splitlines() == [
        "| a | b |",
        "| --- | --- |",
        "| 1 | x |",
        "| 2.50 | y |",
    ]
    with pytest.raises(ValueError, match="expected 2"):
        ch1.markdown_table(["a", "b"], [[1]])


def test_wrap_report_keeps_words_and_width():
    long = "  Most likely cause: " + " ".join(["word"] * 40)
    text = ch1.wrap_report("checker: FAILED\n" + long, width=40)
    lines = text.splitlines()
    assert lines[0] == "checker: FAILED"
    assert all(len(line) <= 40 for line in lines)
    assert lines[2].startswith("      word")  # continuation: 2 + 4 spaces
    assert " ".join(text.split()) == " ".join(("checker: FAILED\n" + long).split())
