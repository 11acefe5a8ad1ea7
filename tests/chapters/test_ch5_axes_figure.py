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
