"""ch5.plot_norm_axes: the chapter 5 figure of normalized sets."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bnlib.chapters import ch5_bn_vs_ln as ch5
from bnlib.chapters.ch5_bn_vs_ln import normalized_mask  # noqa: E402


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
