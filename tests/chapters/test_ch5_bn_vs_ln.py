"""bnlib.sequence: axes of each normalization, the normalized RNN (BPTT), weight norm,
the invariance table, the Conv1d batch-size experiment; RMSNorm and InstanceNorm1d."""

import numpy as np
import pytest

import bnlib
from bnlib import functional as F
from bnlib import rnn_classifier
from bnlib.chapters.ch5_bn_vs_ln import (
    BA2016_TABLE1,
    TRANSFORMATIONS,
    batch_size_sweep,
    drift_test_sets,
    invariance_markdown,
    invariance_table,
    make_drift_task,
    normalized_mask,
    reduction_axes,
    rnn_length_experiment,
)

GRAD_TOL = 1e-6


# ------------------------------------------------------------------ axes


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


# ------------------------------------------------------------------ RNN


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


# ------------------------------------------------------------- weight norm, invariances


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


# ------------------------------------------------------------- batch-size experiment


def test_batch_size_sweep_small():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(64, 1, 8))
    y = (x[:, 0, :4].sum(1) > 0).astype(int)
    data = bnlib.Dataset(x[:48], y[:48], x[48:], y[48:])
    errs = batch_size_sweep(
        data,
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
        batch_size_sweep(data, optimizer="rmsprop")


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
