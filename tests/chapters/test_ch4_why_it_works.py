"""Tests for bnlib.chapters.ch4_why_it_works: internal covariate shift, the
loss-landscape probe, the experiment drivers, signal collapse and the figures."""

import numpy as np
import pytest

import bnlib
from bnlib import (
    make_mlp,
    preserved,
)
from bnlib.chapters import ch4_why_it_works as ch4
from bnlib.chapters.ch4_why_it_works import (
    gradient_landscape,
    internal_covariate_shift,
    layer_groups,
    loss_and_gradients,
    percentile_probe,
    probe_every,
    steps_to_accuracy,
)


def _batch(rng, n=12, d=5, k=3):
    rng = np.random.default_rng(rng)
    return rng.normal(size=(n, d)), rng.integers(0, k, size=n)


def _snapshot(model):
    """Everything observable about a model, deep-copied, for equality checks."""
    mods = list(model.modules())
    return (
        [{k: v.copy() for k, v in m.params.items()} for m in mods],
        [
            (m.running_mean.copy(), m.running_var.copy(), m.num_batches_tracked)
            if hasattr(m, "running_mean")
            else None
            for m in mods
        ],
        [m.rng.bit_generator.state if hasattr(m, "rng") else None for m in mods],
        [m.training for m in mods],
    )


def _assert_same(a, b):
    for pa, pb in zip(a[0], b[0]):
        for k in pa:
            np.testing.assert_array_equal(pa[k], pb[k])
    for ra, rb in zip(a[1], b[1]):
        if ra is not None:
            np.testing.assert_array_equal(ra[0], rb[0])
            np.testing.assert_array_equal(ra[1], rb[1])
            assert ra[2] == rb[2]
    assert a[2] == b[2]
    assert a[3] == b[3]


# ------------------------------------------------------------------------- make_mlp


# ------------------------------------------------------------------------- noisy BN


# ------------------------------------------------------------------------- ghost BN


# ------------------------------------------------------------------------- state


def test_preserved_restores_the_model_after_training_and_probes():
    x, y = _batch(8, d=5)
    model = make_mlp([5, 6, 6, 3], "relu", "noisy_bn", rng=0, dropout=0.2)
    before = _snapshot(model)
    with preserved(model):
        bnlib.fit(
            model,
            bnlib.SGD(model, 0.5),
            x,
            y,
            epochs=3,
            batch_size=4,
            progress=False,
            rng=0,
        )
    _assert_same(before, _snapshot(model))
    with preserved(model):
        model.eval()
        loss_and_gradients(model.train(), x, y)
        model[0].params["weight"] += 1.0
    _assert_same(before, _snapshot(model))


# ------------------------------------------------------------------------- ICS


def test_layer_groups_attach_bn_to_its_linear():
    model = make_mlp([5, 6, 6, 3], "relu", "bn", rng=0)
    groups = layer_groups(model)
    assert len(groups) == 3
    assert [k for _, k in groups[0]] == [
        "weight",
        "weight",
        "bias",
    ]  # Linear W, BN gamma, beta
    assert isinstance(groups[0][1][0], bnlib.BatchNorm1d)


@pytest.mark.parametrize("norm", [None, "bn"])
def test_ics_leaves_model_untouched(norm):
    x, y = _batch(9, d=5)
    model = make_mlp([5, 6, 6, 3], "sigmoid", norm, rng=1)
    model(x)
    before = _snapshot(model)
    out = internal_covariate_shift(model, x, y, lr=0.5)
    _assert_same(before, _snapshot(model))
    assert out["l2"].shape == out["cosine"].shape == (3,)


def test_ics_of_one_layer_network_is_zero():
    x, y = _batch(10, d=5)
    model = make_mlp([5, 3], rng=0)  # a single Linear layer
    out = internal_covariate_shift(model, x, y, lr=1.0)
    np.testing.assert_array_equal(out["l2"], [0.0])
    np.testing.assert_array_equal(out["cosine"], [1.0])


def test_ics_zero_learning_rate_gives_zero_shift():
    x, y = _batch(11, d=5)
    model = make_mlp([5, 6, 6, 3], "tanh", "bn", rng=2)
    out = internal_covariate_shift(model, x, y, lr=1e-300)
    np.testing.assert_allclose(out["l2"], 0.0, atol=1e-12)
    np.testing.assert_allclose(out["cosine"], 1.0)


def test_ics_matches_manual_computation():
    x, y = _batch(12, d=4)
    model = make_mlp([4, 5, 5, 3], "sigmoid", None, rng=3)
    lr = 0.7
    out = internal_covariate_shift(model, x, y, lr)
    _, g0 = loss_and_gradients(model, x, y)  # order: W1 b1 W2 b2 W3 b3
    w0 = [m.params[k].copy() for m, k in model.parameters()]
    pairs = model.parameters()
    for p in range(4):  # update layers 1 and 2 only
        np.copyto(pairs[p][0].params[pairs[p][1]], w0[p] - lr * g0[p])
    _, g1 = loss_and_gradients(model, x, y)
    np.testing.assert_allclose(out["l2"][2], np.linalg.norm(g0[4] - g1[4]), rtol=1e-12)
    cos = np.sum(g0[4] * g1[4]) / (np.linalg.norm(g0[4]) * np.linalg.norm(g1[4]))
    np.testing.assert_allclose(out["cosine"][2], cos, rtol=1e-12)


# ------------------------------------------------------------------------- landscape


def test_landscape_leaves_model_untouched():
    x, y = _batch(13, d=5)
    model = make_mlp([5, 6, 3], "relu", "bn", rng=0)
    before = _snapshot(model)
    out = gradient_landscape(model, x, y, lr=0.3)
    _assert_same(before, _snapshot(model))
    assert out["loss"].shape == out["grad_change"].shape == (8,)
    np.testing.assert_allclose(out["eta"], 0.3 * np.arange(0.5, 4.01, 0.5))


def _quadratic_model(rng, d=4):
    """A bias-free Linear (1 output) on MSE: L(w) = mean((X w - t)^2), Hessian
    2 X^T X / n."""
    rng = np.random.default_rng(rng)
    model = bnlib.Sequential(bnlib.Linear(d, 1, bias=False, rng=rng))
    x = rng.normal(size=(20, d))
    t = rng.normal(size=(20, 1))
    return model, x, t


def test_beta_smoothness_of_quadratic_is_curvature_along_gradient():
    model, x, t = _quadratic_model(0)
    hess = 2 * x.T @ x / len(x)
    out = gradient_landscape(model, x, t, lr=0.01, loss_fn=bnlib.mse_loss)
    g = (2 * x.T @ (x @ model[0].params["weight"].T - t) / len(x)).ravel()
    # the gradient of a quadratic changes linearly: ||H eta g|| / ||eta g||, any eta
    np.testing.assert_allclose(
        out["beta"], np.linalg.norm(hess @ g) / np.linalg.norm(g), rtol=1e-10
    )
    np.testing.assert_allclose(
        out["grad_change"] / out["eta"], out["beta"] * np.linalg.norm(g), rtol=1e-10
    )
    assert out["beta"] <= np.linalg.eigvalsh(hess).max() * (1 + 1e-12)


def test_beta_smoothness_along_an_eigenvector_equals_its_eigenvalue():
    model, x, t = _quadratic_model(1)
    hess = 2 * x.T @ x / len(x)
    vals, vecs = np.linalg.eigh(hess)
    # choose w so that the gradient H (w - w*) points along the top eigenvector
    w_star = np.linalg.lstsq(x, t, rcond=None)[0].ravel()
    model[0].params["weight"][:] = (w_star + vecs[:, -1]).reshape(1, -1)
    out = gradient_landscape(model, x, t, lr=0.01, loss_fn=bnlib.mse_loss)
    np.testing.assert_allclose(out["beta"], vals[-1], rtol=1e-8)


# ------------------------------------------------------------------------- fit probes


def test_probes_with_fit_percentiles_series_and_steps_to_accuracy():
    data = bnlib.make_gaussian_classes(
        n_train=120, n_test=60, dim=4, num_classes=3, rng=0
    )
    model = make_mlp([4, 8, 3], "sigmoid", "bn", rng=0)
    probes = {
        "pct": probe_every(5, percentile_probe(data.x_test[:30])),
        "all": probe_every(5, percentile_probe(data.x_test[:30], unit=None)),
        "ics": probe_every(
            10,
            lambda m, xb, yb: internal_covariate_shift(m, xb, yb, 0.1),
            data.x_train,
            data.y_train,
            16,
            rng=0,
        ),
    }
    hist = bnlib.fit(
        model,
        bnlib.SGD(model, 0.1),
        data.x_train,
        data.y_train,
        epochs=3,
        batch_size=20,
        test=(data.x_test, data.y_test),
        eval_every=6,
        probes=probes,
        progress=False,
        rng=0,
    )
    steps, p = hist.series("pct")
    np.testing.assert_array_equal(steps, [1, 5, 10, 15])
    assert p.shape == (4, 3) and np.all(np.diff(p, axis=1) >= 0)  # 15th <= 50th <= 85th
    assert hist.series("all")[1].shape == (4, 3, 8)
    steps, l2 = hist.series("ics", "l2")
    np.testing.assert_array_equal(steps, [1, 10])
    assert l2.shape == (2, 2)
    first = steps_to_accuracy(hist, 0.0)
    assert first == hist.eval_step[0]
    assert steps_to_accuracy(hist, 1.01) is None


def test_probe_with_and_without_fit_gives_same_training():
    data = bnlib.make_gaussian_classes(
        n_train=100, n_test=20, dim=3, num_classes=2, rng=1
    )
    finals = []
    for probes in (
        None,
        {
            "land": probe_every(
                3,
                lambda m, xb, yb: gradient_landscape(m, xb, yb, 0.2),
                data.x_train,
                data.y_train,
                10,
                rng=0,
            )
        },
    ):
        model = make_mlp([3, 6, 2], "relu", "noisy_bn", rng=0)
        bnlib.fit(
            model,
            bnlib.SGD(model, 0.2),
            data.x_train,
            data.y_train,
            epochs=2,
            batch_size=10,
            probes=probes,
            progress=False,
            rng=0,
        )
        finals.append(model[0].params["weight"].copy())
    np.testing.assert_array_equal(finals[0], finals[1])


# ------------------------------------------------------------------ experiment drivers


def _data(seed=0, n=120, d=6, k=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.integers(0, k, size=n)


def test_ics_and_landscape_probes_match_direct_calls():
    x, y = _data()
    model = make_mlp([6, 8, 8, 3], "sigmoid", "bn", rng=0)
    p_ics = ch4.ics_probe(1, 0.1, x, y, 16, rng=5)
    p_land = ch4.landscape_probe(1, 0.1, x, y, 16, rng=5)
    idx = np.random.default_rng(5).choice(len(x), size=16, replace=False)
    want_ics = internal_covariate_shift(model, x[idx], y[idx], 0.1)
    want_land = gradient_landscape(model, x[idx], y[idx], 0.1)
    got_ics, got_land = p_ics(model), p_land(model)
    for k in want_ics:
        np.testing.assert_array_equal(got_ics[k], want_ics[k])
    np.testing.assert_array_equal(got_land["loss"], want_land["loss"])
    assert got_land["beta"] == want_land["beta"]


def test_first_weight_sq_norm():
    model = make_mlp([4, 5, 2], "relu", None, rng=1)
    w = model[0].params["weight"]  # (5, 4)
    assert ch4.first_weight_sq_norm(model) == pytest.approx(float((w**2).sum()))


def test_train_mlps_matches_a_hand_written_loop():
    x, y = _data()
    kw = dict(
        epochs=3, max_steps=10, batch_size=20, test=(x[:40], y[:40]), eval_every=5
    )
    runs, models = ch4.train_mlps(
        [("plain", None), ("bn", "bn")],
        [6, 8, 3],
        "relu",
        x,
        y,
        0.1,
        init=3,
        order=4,
        probes=lambda: {"w2": ch4.first_weight_sq_norm},
        mlp={"weight_scale": 2.0},
        **kw,
    )
    assert list(runs) == list(models) == ["plain", "bn"]
    for key, norm in [("plain", None), ("bn", "bn")]:
        model = make_mlp([6, 8, 3], "relu", norm, rng=3, weight_scale=2.0)
        h = bnlib.fit(
            model,
            bnlib.SGD(model, 0.1),
            x,
            y,
            rng=4,
            progress=False,
            probes={"w2": ch4.first_weight_sq_norm},
            **kw,
        )
        np.testing.assert_array_equal(runs[key].loss, h.loss)
        np.testing.assert_array_equal(runs[key].test_acc, h.test_acc)
        assert runs[key].probes["w2"] == h.probes["w2"]
        np.testing.assert_array_equal(
            models[key][0].params["weight"], model[0].params["weight"]
        )


def test_lr_sweep_records_losses_divergence_and_landscape():
    x, y = _data()
    rates = np.array([0.01, 0.1, 1e200])
    sweep = ch4.lr_sweep(
        rates,
        [6, 8, 3],
        "relu",
        x,
        y,
        init=0,
        order=1,
        steps=8,
        batch_size=20,
        land_rates=(rates[1],),
        land_every=4,
        land_seed=2,
    )
    assert list(sweep) == ["plain", "bn"]
    for runs in sweep.values():
        assert [r["lr"] for r in runs] == list(rates)
        assert all(len(r["hist"].probes["w2"]) == len(r["hist"].step) for r in runs)
        assert "land" in runs[1]["hist"].probes and "land" not in runs[0]["hist"].probes
        assert np.isfinite(runs[0]["loss"]) and np.isfinite(runs[1]["loss"])
    assert sweep["plain"][2]["loss"] == np.inf and sweep["plain"][2]["hist"].diverged
    # the final loss is the training loss of the trained network
    model = make_mlp([6, 8, 3], "relu", None, rng=0)
    bnlib.fit(
        model,
        bnlib.SGD(model, 0.1),
        x,
        y,
        epochs=100,
        max_steps=8,
        batch_size=20,
        rng=1,
        progress=False,
    )
    assert sweep["plain"][1]["loss"] == bnlib.evaluate(model, x, y)[0]


def test_weight_grad_norms_leaves_model_untouched():
    x, y = _data()
    model = make_mlp([6, 8, 8, 3], "sigmoid", "bn", rng=0)
    before = _snapshot(model)
    norms = ch4.weight_grad_norms(model, x[:20], y[:20])
    _assert_same(before, _snapshot(model))
    assert norms.shape == (3,)
    _, grads = loss_and_gradients(model, x[:20], y[:20])
    lin = [
        j
        for j, (m, k) in enumerate(model.parameters())
        if isinstance(m, bnlib.Linear) and k == "weight"
    ]
    np.testing.assert_allclose(norms, [np.linalg.norm(grads[j]) for j in lin])


def test_mean_ics_averages_after_the_first_checkpoint():
    h = bnlib.History()
    h.step = [1, 2, 3]
    h.probes["ics"] = [
        {"l2": np.array([9.0, 9.0])},
        {"l2": np.array([1.0, 2.0])},
        {"l2": np.array([3.0, 4.0])},
    ]
    out = ch4.mean_ics(h, quantities=("l2",))
    np.testing.assert_allclose(out["l2"], [2.0, 3.0])


def test_train_and_score():
    x, y = _data()
    model = make_mlp([6, 8, 3], "relu", "bn", rng=0)
    r = ch4.train_and_score(
        model, 0.1, x[:80], y[:80], (x[80:], y[80:]), epochs=2, batch_size=20, rng=0
    )
    assert (r["train_loss"], r["train_acc"]) == bnlib.evaluate(model, x[:80], y[:80])
    assert (r["test_loss"], r["test_acc"]) == bnlib.evaluate(model, x[80:], y[80:])
    assert r["gap"] == pytest.approx(r["train_acc"] - r["test_acc"])


def test_figures_draw_and_summarize():
    import matplotlib.pyplot as plt

    x, y = _data()
    kw = dict(epochs=3, max_steps=8, batch_size=20, test=(x[:40], y[:40]), eval_every=4)
    runs, _ = ch4.train_mlps(
        [("plain", None), ("bn", "bn")],
        [6, 8, 3],
        "sigmoid",
        x,
        y,
        0.1,
        init=0,
        order=1,
        probes=lambda: {
            "land": ch4.landscape_probe(4, 0.1, x, y, 20, rng=2),
            "pct": probe_every(4, percentile_probe(x[:30], unit=None)),
        },
        **kw,
    )
    fig, axes = ch4.plot_depth(
        runs, {"plain": np.array([1e-3, 1.0]), "bn": np.array([0.5, 1.0])}
    )
    assert axes.shape == (2,)
    plt.close(fig)
    pct = {k: h.series("pct") for k, h in runs.items()}  # (T,), (T, 3, 8)
    move = {k: p.max(0).mean(0) - p.min(0).mean(0) for k, (s, p) in pct.items()}
    fig, axes = ch4.plot_noisy_bn(runs, pct, move, unit=1, compare=("plain", "bn"))
    assert len(axes) == 3
    plt.close(fig)
    land = {}  # two runs per network, each with its own seeds
    specs = [
        ch4.Run(
            key=k,
            sizes=[6, 8, 3],
            activation="relu",
            norm=n,
            lr=0.1,
            init=r,
            order=r + 1,
            steps=8,
            batch_size=20,
            land_every=4,
            land_seed=r + 2,
            land_rescaled=n == "bn",
        )
        for r in (0, 1)
        for k, n in (("plain", None), ("bn", "bn"))
    ]
    for spec, h in zip(specs, ch4.train_runs(specs, x, y)):
        land.setdefault(("a", spec.key), []).append(h)
    fig, axes = ch4.plot_landscape(land)
    assert axes.shape == (3, 1)
    dashed = [ln for ln in axes[2, 0].get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1  # BN rescaled to its initial weight lengths
    # top panel: the median line over the two runs of the loss range, per checkpoint
    ranges = [
        (lambda L: L.max(1) - L.min(1))(h.series("land", "loss")[1])
        for h in land["a", "bn"]
    ]
    bn_line = [ln for ln in axes[0, 0].get_lines() if ln.get_label() == "BatchNorm"]
    np.testing.assert_allclose(bn_line[0].get_ydata(), np.median(ranges, 0))
    plt.close(fig)
    sweep = ch4.lr_sweep(
        [0.01, 0.1], [6, 8, 3], "relu", x, y, init=0, order=1, steps=5, batch_size=20
    )
    fig, eff = ch4.plot_effective_lr(sweep["bn"], rows=8)
    _, w2 = sweep["bn"][1]["hist"].series("w2")
    assert eff[0.1] == pytest.approx(0.1 / (w2[-1] / 8))
    plt.close(fig)


def test_spread_across_examples_collapses_without_bn_and_is_one_with_it():
    x = np.random.default_rng(0).normal(size=(200, 40))
    plain = bnlib.make_mlp([40, 100, 100, 100, 10], "sigmoid", None, rng=1)
    bn = bnlib.make_mlp([40, 100, 100, 100, 10], "sigmoid", "bn", rng=1)
    s_plain = ch4.spread_across_examples(plain, x)
    s_bn = ch4.spread_across_examples(bn, x)
    assert s_plain.shape == s_bn.shape == (3,)
    # PyTorch's init and the sigmoid's slope (<= 1/4) shrink the spread every layer
    assert np.all(np.diff(s_plain) < 0) and s_plain[-1] < 0.05 * s_plain[0]
    np.testing.assert_allclose(s_bn, 1.0, rtol=1e-3)  # BN: unit variance by design
    before = [p.copy() for p in plain.state_dict().values()]
    ch4.spread_across_examples(plain, x)
    assert all(
        np.array_equal(a, b) for a, b in zip(before, plain.state_dict().values())
    )


def test_plot_figure1_four_panels():
    import matplotlib.pyplot as plt

    x, y = _data()
    runs, _ = ch4.train_mlps(
        [("plain", None), ("bn", "bn")],
        [6, 8, 3],
        "sigmoid",
        x,
        y,
        0.1,
        init=0,
        order=1,
        probes=lambda: {"pct": probe_every(2, percentile_probe(x[:30], unit=None))},
        epochs=1,
        max_steps=6,
        batch_size=20,
        test=(x, y),
        eval_every=2,
    )
    pct = {k: h.series("pct") for k, h in runs.items()}
    fig, axes = ch4.plot_figure1(runs, pct, unit=1)
    assert axes.shape == (2, 2)
    plt.close(fig)


def test_train_run_matches_train_mlps():
    x, y = _data()
    spec = ch4.Run(
        key="bn",
        sizes=[6, 8, 3],
        activation="sigmoid",
        norm="bn",
        lr=0.1,
        init=3,
        order=4,
        steps=10,
        batch_size=20,
        eval_every=5,
        land_every=4,
        land_seed=5,
        mlp={"weight_scale": 2.0},
    )
    h = ch4.train_run(spec, x, y, test=(x[:40], y[:40]))
    runs, _ = ch4.train_mlps(
        [("bn", "bn")],
        [6, 8, 3],
        "sigmoid",
        x,
        y,
        0.1,
        init=3,
        order=4,
        probes=lambda: {"land": ch4.landscape_probe(4, 0.1, x, y, 20, rng=5)},
        mlp={"weight_scale": 2.0},
        epochs=100,
        max_steps=10,
        batch_size=20,
        test=(x[:40], y[:40]),
        eval_every=5,
    )
    np.testing.assert_array_equal(h.loss, runs["bn"].loss)
    np.testing.assert_array_equal(h.test_acc, runs["bn"].test_acc)
    np.testing.assert_array_equal(
        h.series("land", "loss")[1], runs["bn"].series("land", "loss")[1]
    )
    assert len(h.probes["w2"]) == 10  # the squared norm of W1 after every step


def test_train_run_optional_probes():
    x, y = _data()
    spec = ch4.Run(
        sizes=[6, 8, 3],
        activation="relu",
        norm="bn",
        lr=0.1,
        init=0,
        order=1,
        steps=6,
        batch_size=20,
        loss_every=3,
        pct_every=2,
        pct_x=x[:30],
        ics_every=3,
        ics_seed=4,
    )
    h, trained = ch4.train_run(spec, x, y, return_model=True)
    steps, loss = h.series("train_loss")
    assert list(steps) == [1, 3, 6]
    assert "land" not in h.probes and h.eval_step == []
    steps, pct = h.series("pct")
    assert list(steps) == [1, 2, 4, 6] and pct.shape == (4, 3, 8)
    model = make_mlp([6, 8, 3], "relu", "bn", rng=0)
    bnlib.fit(
        model,
        bnlib.SGD(model, 0.1),
        x,
        y,
        epochs=9,
        max_steps=6,
        batch_size=20,
        rng=1,
        progress=False,
    )
    assert loss[-1] == bnlib.evaluate(model, x, y)[0]
    np.testing.assert_array_equal(
        trained[0].params["weight"], model[0].params["weight"]
    )
    # the ICS probe: what ch4.ics_probe measures, on the same batches
    probe = ch4.ics_probe(3, 0.1, x, y, 20, rng=4)
    model = make_mlp([6, 8, 3], "relu", "bn", rng=0)
    want = bnlib.fit(
        model,
        bnlib.SGD(model, 0.1),
        x,
        y,
        epochs=9,
        max_steps=6,
        batch_size=20,
        rng=1,
        progress=False,
        probes={"ics": probe},
    )
    np.testing.assert_array_equal(h.series("ics", "l2")[1], want.series("ics", "l2")[1])
    pairs = ch4.train_runs([spec, spec], x, y, return_models=True)
    assert all(isinstance(m, bnlib.Sequential) for _, m in pairs)


def test_train_runs_and_lr_sweep_same_in_one_or_two_processes():
    x, y = _data()
    specs = [
        ch4.Run(
            sizes=[6, 8, 3],
            activation="sigmoid",
            norm=norm,
            lr=0.2,
            init=r,
            order=10 + r,
            steps=8,
            batch_size=20,
            eval_every=4,
            land_every=4,
            land_seed=20 + r,
            mlp=mlp,
        )
        for r in (0, 1)
        for norm, mlp in ((None, {}), ("noisy_bn", {"noise": {"per_sample": True}}))
    ]
    one = ch4.train_runs(specs, x, y, test=(x, y), jobs=1)
    two = ch4.train_runs(specs, x, y, test=(x, y), jobs=2)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a.loss, b.loss)
        np.testing.assert_array_equal(a.test_acc, b.test_acc)
        np.testing.assert_array_equal(
            a.series("land", "grad_change")[1], b.series("land", "grad_change")[1]
        )
        assert a.probes["w2"] == b.probes["w2"]
    assert not np.array_equal(one[1].loss, one[3].loss)  # noisy BN differs by seed
    kw = dict(
        init=0,
        order=1,
        steps=5,
        batch_size=20,
        land_rates=(0.1,),
        land_every=2,
        land_seed=3,
    )
    s1 = ch4.lr_sweep([0.01, 0.1, 1e200], [6, 8, 3], "relu", x, y, jobs=1, **kw)
    s2 = ch4.lr_sweep([0.01, 0.1, 1e200], [6, 8, 3], "relu", x, y, jobs=2, **kw)
    for key in s1:
        for r1, r2 in zip(s1[key], s2[key], strict=True):
            assert r1["lr"] == r2["lr"] and r1["loss"] == r2["loss"]
            assert r1["hist"].probes["w2"] == r2["hist"].probes["w2"]
    assert s2["plain"][2]["hist"].diverged
    assert "land" in s2["bn"][1]["hist"].probes


def test_summarize_landscape():
    h = bnlib.History()
    h.step = [1, 2, 3]
    h.probes["land"] = [
        {
            "loss": np.array([1.0, 3.0]),
            "grad_change": np.array([1.0, 2.0]),
            "beta": 4.0,
        },
        None,
        {
            "loss": np.array([2.0, 3.0]),
            "grad_change": np.array([5.0, 1.0]),
            "beta": 2.0,
        },
    ]
    assert ch4.summarize_landscape(h) == (1.5, 3.5, 3.0)
    assert ch4.summarize_landscape(h, until=2) == (2.0, 2.0, 4.0)
    h.probes["other"] = h.probes.pop("land")
    assert ch4.summarize_landscape(h, probe="other") == (1.5, 3.5, 3.0)


def test_with_row_norms_keeps_the_function_and_sets_the_lengths():
    net = bnlib.make_mlp([5, 7, 6, 3], "relu", "bn", rng=0)
    x = np.random.default_rng(1).standard_normal((16, 5))
    assert len(ch4.scale_invariant_layers(net)) == 2  # the two hidden Linear layers
    norms = [np.full(7, 0.5), np.arange(1.0, 7.0)]
    copy_ = ch4.with_row_norms(net, norms)
    net.eval(), copy_.eval()  # the running statistics are rescaled too
    np.testing.assert_allclose(copy_(x), net(x), rtol=1e-4, atol=1e-4)  # up to eps
    net.train(), copy_.train()
    np.testing.assert_allclose(copy_(x), net(x), rtol=1e-3, atol=1e-3)  # up to eps
    for got, want in zip(ch4.row_norms(copy_), norms):
        np.testing.assert_allclose(got, want)
    assert not np.allclose(ch4.row_norms(net)[0], 0.5)  # the original is untouched


def test_lr_smoothness_grid_widget_and_frames():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(60, 6)), rng.integers(0, 3, size=60)
    rates = [0.01, 0.1, 1.0]
    sweep = ch4.lr_sweep(
        rates,
        [6, 8, 3],
        "relu",
        x,
        y,
        init=0,
        order=1,
        steps=6,
        batch_size=20,
        land_rates=rates,
        land_every=3,
        land_seed=2,
    )
    grid = ch4.lr_smoothness_grid(sweep, rows=8)
    assert set(grid) == {"plain", "bn"} and len(grid["bn"]) == 3
    e = grid["bn"][1]
    np.testing.assert_array_equal(e["land_steps"], [1, 3, 6])
    assert e["mult"][0] == 0 and e["along"].shape == (3, len(e["mult"]))
    assert np.all(e["along"][:, 0] == 0)  # L(w) - L(w) at c = 0
    # the first curve is the landscape probe at step 1, relative to L(w)
    land = sweep["bn"][1]["hist"].series("land")[1][0]
    np.testing.assert_allclose(e["along"][0, 1:], land["loss"] - land["loss0"])
    np.testing.assert_allclose(e["mult"][1:], land["eta"] / 0.1)
    _, w2 = sweep["bn"][1]["hist"].series("w2")
    np.testing.assert_allclose(e["eff"], 0.1 / (w2 / 8))
    # the widget redraws from the grid; the slider moves between the rates
    box = ch4.lr_smoothness_widget(grid)
    before = box.image.value
    assert box.controls["log_lr"].description == "log10 lr"
    assert box.last_stats["bn"]["lr"] == pytest.approx(0.1)  # nearest to 10**-0.5
    box.controls["log_lr"].value = -2.0
    assert box.image.value != before
    assert box.last_stats["bn"]["lr"] == pytest.approx(0.01)
    fig, draw = ch4.lr_smoothness_frames(grid)
    stats = draw(0.0)
    assert stats["plain"]["lr"] == pytest.approx(1.0)
    assert stats["bn"]["eff_last"] == pytest.approx(grid["bn"][2]["eff"][-1])
    plt.close(fig)


def test_train_run_curve_probe_evaluates_train_and_test():
    x, y = _data()
    spec = ch4.Run(
        sizes=[6, 8, 3],
        activation="relu",
        norm="bn",
        lr=0.1,
        init=0,
        order=1,
        steps=6,
        batch_size=20,
        curve_every=3,
    )
    test = (x[:15], y[:15])
    h, trained = ch4.train_run(spec, x, y, test=test, return_model=True)
    assert h.eval_step == []  # no eval_every: the test set only feeds the curve
    steps, curve = h.series("curve")
    assert list(steps) == [1, 3, 6] and curve.shape == (3, 4)
    want = [*bnlib.evaluate(trained, x, y), *bnlib.evaluate(trained, *test)]
    np.testing.assert_allclose(curve[-1], want)


# ------------------------------------------------------------------ residual networks
@pytest.mark.parametrize(
    "norm, skipinit, rescale",
    [
        (False, False, False),
        (True, False, False),
        (False, True, False),
        (False, False, True),
    ],
)
def test_residual_block_gradients(norm, skipinit, rescale):
    rng = np.random.default_rng(0)
    block = ch4.ResidualBlock(5, norm=norm, skipinit=skipinit, rescale=rescale, rng=rng)
    if skipinit:
        block.params["alpha"][:] = 0.7  # at 0 the branch would get no gradient
    x = rng.normal(size=(8, 5))
    errors = bnlib.check_module_gradients(block, x, rng=1)
    assert max(errors.values()) < 1e-6, errors
    r = np.random.default_rng(2).normal(size=(8, 5))
    block(x)
    block.backward(r)
    lin = block.branch[-1]  # the branch's last Linear, a child's parameter
    want = bnlib.numerical_gradient(
        lambda: float(np.sum(block(x) * r)), lin.params["weight"]
    )
    assert bnlib.rel_error(lin.grads["weight"], want) < 1e-6


def test_skipinit_starts_as_identity_and_bn_stream_grows_linearly():
    x = np.random.default_rng(0).normal(size=(256, 40))
    skip = ch4.residual_mlp(8, "skipinit", width=32, rng=1)
    h = skip[0](x)
    np.testing.assert_array_equal(_blocks(skip, h), h)  # every alpha is 0
    stream, branch = ch4.residual_stream(ch4.residual_mlp(32, "bn", width=64, rng=2), x)
    assert stream.shape == (33,) and branch.shape == (32,)
    np.testing.assert_allclose(
        branch, 1.0, rtol=0.15
    )  # BN: each branch has variance ~1
    # ... and adds it: linear growth, not exponential
    np.testing.assert_allclose(stream[-1] - stream[0], branch.sum(), rtol=0.2)
    stream, _ = ch4.residual_stream(ch4.residual_mlp(16, "plain", rng=3), x)
    assert np.all(stream[1:] / stream[:-1] > 1.5)  # no normalization: about doubles
    stream, branch = ch4.residual_stream(ch4.residual_mlp(32, "rescaled", rng=4), x)
    # /sqrt(2): the stream's variance wanders but stays within a factor of 20 of the
    # stem's (2**32 without it), and no block is near the identity
    assert np.all(np.abs(np.log(stream / stream[0])) < np.log(20))
    assert np.all(branch / stream[:-1] > 0.3)
    with pytest.raises(ValueError, match="variant must be one of"):
        ch4.residual_mlp(4, "ln")


def _blocks(model, h):
    for block in model.layers[1:-2]:
        h = block(h)
    return h


def test_run_needs_named_fields():
    with pytest.raises(TypeError):
        ch4.Run([6, 8, 3], "relu", None, 0.1, 0, 1, 8, 20)  # positional: refused
    with pytest.raises(TypeError):
        ch4.Run(
            sizes=[6, 3],
            activation="relu",
            norm=None,
            lr=0.1,
            init=0,
            order=1,
            steps=8,
            batch_size=20,
            land_evry=4,
        )  # a misspelt probe: refused


# ------------------------------------------------------------------ exercise checkers
def gradient_change(model, x, y, lr, *, mistake=None):
    """ICS by hand: G2 before and after an SGD step on the first Linear."""
    lin1, lin2 = model[0], model[2]

    def g2():
        loss, dout = bnlib.softmax_cross_entropy(model(x), y)
        model.backward(dout)
        return lin2.grads["weight"].copy()

    before = g2()
    if mistake == "first_layer":
        before = lin1.grads["weight"].copy()
    step = 0.5 if mistake == "fixed_lr" else lr
    sign = 1 if mistake == "ascent" else -1
    layers = [lin1, lin2] if mistake == "both" else [lin1]
    keys = ("weight",) if mistake == "no_bias" else ("weight", "bias")
    if mistake != "no_step":
        for layer in layers:
            for k in keys:
                layer.params[k] += sign * step * layer.grads[k]
    return before, g2()


def weight_runs(wds=(0.0, 5e-3), layer=0, steps=40):
    """||W||^2 of ``model[layer]`` after every step of a small BN ReLU network, one
    series per weight decay in ``wds`` (the exercise's probe, on a tiny problem)."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(64, 8)), rng.integers(0, 4, 64)
    runs = []
    for wd in wds:
        model = bnlib.make_mlp([8, 16, 16, 4], "relu", "bn", rng=0)
        opt = bnlib.SGD(model, 0.3, weight_decay=wd)
        series = []
        for _ in range(steps):
            model.backward(bnlib.softmax_cross_entropy(model(x), y)[1])
            opt.step()
            series.append(float(np.sum(model[layer].params["weight"] ** 2)))
        runs.append(series)
    return runs


GRADIENT_CHANGE_RIGHT = [
    gradient_change,
    lambda model, x, y, lr: list(gradient_change(model, x, y, lr)),
]
GRADIENT_CHANGE_WRONG = [
    (lambda *a: gradient_change(*a, mistake="no_step"), "G2_after equals G2"),
    (lambda *a: gradient_change(*a, mistake="both"), "stepped both Linear layers"),
    (lambda *a: gradient_change(*a, mistake="ascent"), "stepped up the gradient"),
    (lambda *a: gradient_change(*a, mistake="no_bias"), "but not its bias"),
    (lambda *a: gradient_change(*a, mistake="fixed_lr"), "ignored the lr argument"),
    (
        lambda *a: gradient_change(*a, mistake="first_layer"),
        "G2 has shape (4, 3), expected (2, 4)",
    ),
]


@pytest.mark.parametrize(
    "answer,named",
    [(a, None) for a in GRADIENT_CHANGE_RIGHT] + GRADIENT_CHANGE_WRONG,
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_check_gradient_change_catalogue(answer, named, checker_contract):
    """ICS by hand as a reader would write it: right ones pass, each mistake named."""
    checker_contract.judges(ch4.check_gradient_change(answer), named)
    assert len(GRADIENT_CHANGE_RIGHT) >= 2 and len(GRADIENT_CHANGE_WRONG) >= 5


def test_checkers_never_raise(checker_contract):
    checker_contract.rejects_odd_input(ch4.check_gradient_change)
    checker_contract.rejects_junk_returned(ch4.check_gradient_change)
    checker_contract.rejects_odd_input(lambda a: ch4.check_weight_decay_runs(a, a))
    result = ch4.check_weight_decay_runs(..., ...)  # the starter, as it comes
    assert not result.passed and "NO ANSWER YET" in result.report


def test_weight_decay_runs():
    plain, decayed = weight_runs()
    assert ch4.check_weight_decay_runs(plain, decayed).passed
    assert ch4.check_weight_decay_runs(np.array(plain), tuple(decayed)).passed
    wrong = {
        "the plain run's ||W1||^2 fell": weight_runs(wds=(5e-2, 1e-1)),
        "are the two runs swapped?": [decayed, plain],
        "the two series are identical": [plain, plain],
        "record both runs for the same number of steps": [plain, decayed[:-1]],
        "pass ||W1||^2 after every step, a 1-D sequence": [plain[0], decayed[0]],
        "did the run diverge?": [plain[:-1] + [np.nan], decayed],
        "does the probe read model[0].params['weight']": weight_runs(layer=-1),
        "1-D sequence": [np.stack([np.arange(len(plain)), plain]), decayed],
    }
    for named, (p, d) in wrong.items():
        result = ch4.check_weight_decay_runs(p, d)
        assert not result.passed and named in result.report, (named, result.report)


# ------------------------------------------------------------------ noisy and ghost BN
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
        assert all(isinstance(m, ch4.NoisyBatchNorm1d) for m in norms)
    # BN before the nonlinearity: the hidden Linear layers have no bias
    # (beta replaces it)
    assert all(("bias" in m.params) == (norm is None) for m in linears[:-1])
    assert "bias" in linears[-1].params


def test_noisy_bn_eval_is_plain_bn_and_train_is_noisy():
    x, _ = _batch(2, n=50, d=4)
    noisy, plain = ch4.NoisyBatchNorm1d(4, rng=0), bnlib.BatchNorm1d(4)
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
    noisy = ch4.NoisyBatchNorm1d(30, shift=0.5, scale=(1.0, 1.25), unit_std=0.0, rng=1)
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
    noisy = ch4.NoisyBatchNorm1d(3, rng=2)
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
    noisy = ch4.NoisyBatchNorm1d(3, rng=3, per_sample=True)
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
    per_unit = ch4.NoisyBatchNorm1d(5, unit_std=0.1, rng=4)
    per_sample = ch4.NoisyBatchNorm1d(5, unit_std=0.1, rng=4, per_sample=True)
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
    ghost, plain = ch4.GhostBatchNorm1d(4, ghost_size=16), bnlib.BatchNorm1d(4)
    np.testing.assert_allclose(ghost(x), plain(x))
    r = np.random.default_rng(0).normal(size=x.shape)
    np.testing.assert_allclose(ghost.backward(r), plain.backward(r))
    np.testing.assert_allclose(ghost.grads["weight"], plain.grads["weight"])
    np.testing.assert_allclose(ghost.running_var, plain.running_var)


def test_ghost_bn_normalizes_each_group_and_gradcheck():
    x, _ = _batch(7, n=12, d=3)
    ghost = ch4.GhostBatchNorm1d(3, ghost_size=4)
    ghost.params["weight"][:] = [0.5, 2.0, -1.0]
    y = ghost(x).reshape(3, 4, 3)
    np.testing.assert_allclose(
        y.mean(axis=1), np.zeros((3, 3)) + ghost.params["bias"], atol=1e-12
    )
    errors = bnlib.check_module_gradients(ghost, x, rng=0)
    assert max(errors.values()) < 1e-7
    with pytest.raises(ValueError, match="multiple"):
        ghost(x[:10])
