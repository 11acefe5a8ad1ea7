"""bnlib.models: the model builders and their one norm= convention."""

import numpy as np
import pytest

import bnlib
from bnlib import check_module_gradients, conv1d_net, make_mlp, norm_layer

GRAD_TOL = 1e-6


def test_make_mlp_position_after_keeps_bias_and_order():
    model = make_mlp([4, 5, 2], "relu", "bn", rng=0, position="after")
    kinds = [type(m).__name__ for m in model.layers]
    assert kinds == ["Linear", "ReLU", "BatchNorm1d", "Linear"]
    assert "bias" in model[0].params


def test_make_mlp_weight_scale_and_dropout():
    a = make_mlp([4, 5, 2], "sigmoid", None, rng=3)
    b = make_mlp([4, 5, 2], "sigmoid", None, rng=3, weight_scale=10.0)
    np.testing.assert_allclose(b[0].params["weight"], 10 * a[0].params["weight"])
    c = make_mlp([4, 5, 5, 2], "relu", "bn", rng=0, dropout=0.5)
    assert sum(isinstance(m, bnlib.Dropout) for m in c.layers) == 2


def test_make_mlp_bad_arguments():
    with pytest.raises(ValueError, match="activation"):
        make_mlp([3, 2], "softplus")
    with pytest.raises(ValueError, match="norm"):
        make_mlp([3, 4, 2], norm="layer")
    with pytest.raises(ValueError, match="position"):
        make_mlp([3, 4, 2], norm="bn", position="middle")
    with pytest.raises(ValueError, match="sizes"):
        make_mlp([3])


def test_norm_layer_kinds():
    assert isinstance(norm_layer("bn", 8), bnlib.BatchNorm1d)
    ln = norm_layer("ln", 8)
    assert isinstance(ln, bnlib.GroupNorm) and ln.num_groups == 1
    assert norm_layer("gn", 8, num_groups=4).num_groups == 4
    assert isinstance(norm_layer("in", 8), bnlib.InstanceNorm1d)
    assert norm_layer(None, 8) is None
    assert isinstance(norm_layer(lambda c: bnlib.LayerNorm(c), 8), bnlib.LayerNorm)
    with pytest.raises(ValueError, match="norm must be"):
        norm_layer("batch", 8)


def test_a_registered_norm_is_built_by_every_builder(monkeypatch):
    monkeypatch.setattr(bnlib.models, "_REGISTERED", {})
    built = []

    def factory(c, rng=None, scale=1.0):
        built.append((c, scale, rng is not None))
        return bnlib.BatchNorm1d(c)

    bnlib.register_norm("my_bn", factory)
    net = make_mlp([4, 6, 5, 2], "relu", "my_bn", rng=0, scale=2.0)
    assert isinstance(net[1], bnlib.BatchNorm1d)
    assert built == [(6, 2.0, True), (5, 2.0, True)]
    assert isinstance(
        conv1d_net("my_bn", channels=3, num_layers=1)[1], bnlib.BatchNorm1d
    )
    with pytest.raises(ValueError, match="built in"):
        bnlib.register_norm("bn", factory)
    with pytest.raises(TypeError, match="unexpected"):
        make_mlp([4, 6, 2], "relu", "bn", scale=2.0)
    with pytest.raises(ValueError, match="my_bn"):
        norm_layer("batch", 8)


@pytest.mark.parametrize("norm", ["bn", "ln", "gn", "in", None])
def test_conv1d_net_shapes_and_gradients(norm):
    rng = np.random.default_rng(11)
    model = conv1d_net(norm, channels=4, num_layers=2, length=12, rng=0)
    assert model(rng.normal(size=(3, 1, 12))).shape == (3, 10)
    x = rng.uniform(0.1, 1.0, (3, 1, 12))
    errs = check_module_gradients(model, x, rng=1)
    assert errs["x"] < GRAD_TOL, errs
    n_norm = sum(
        isinstance(m, (bnlib.BatchNorm1d, bnlib.GroupNorm)) for m in model.modules()
    )
    assert n_norm == (0 if norm is None else 2)


def test_layernorm_over_channels_and_length_parity_with_torch_groupnorm_one_group():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(17)
    x = rng.normal(size=(3, 4, 5))
    ours = norm_layer("ln", 4)
    theirs = torch.nn.GroupNorm(1, 4, dtype=torch.float64)
    np.testing.assert_allclose(
        ours(x), theirs(torch.from_numpy(x)).detach().numpy(), atol=1e-12
    )
