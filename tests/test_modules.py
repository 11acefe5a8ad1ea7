"""bnlib modules: gradient checks, BatchNorm semantics, train/eval, bad input."""

import re

import numpy as np
import pytest

import bnlib
from bnlib import check_module_gradients, numerical_gradient, rel_error

GRAD_TOL = 1e-7


def _randomize_affine(module, rng):
    """Non-trivial weight and bias (not 1 and 0) for normalization layers."""
    if "weight" in module.params:
        module.params["weight"][...] = rng.uniform(
            0.5, 2.0, module.params["weight"].shape
        )
    if "bias" in module.params:
        module.params["bias"][...] = rng.normal(0.0, 1.0, module.params["bias"].shape)
    return module


class FixedMaskDropout(bnlib.Dropout):
    """Dropout that draws the same mask on every forward, so finite differences see one
    fixed function."""

    def forward(self, x):
        self.rng = np.random.default_rng(123)
        return super().forward(x)


def _away_from_zero(rng, shape):
    """Inputs with |x| >= 0.1, so a step of 1e-5 never crosses ReLU's kink."""
    return rng.uniform(0.1, 2.0, shape) * rng.choice([-1.0, 1.0], shape)


def _modules():
    """name -> (module factory(rng), input shape)."""
    return {
        "batchnorm1d_2d": (lambda r: bnlib.BatchNorm1d(4), (6, 4)),
        "batchnorm1d_3d": (lambda r: bnlib.BatchNorm1d(3), (4, 3, 5)),
        "batchnorm1d_eval": (
            lambda r: _eval_bn(bnlib.BatchNorm1d(4), r, (6, 4)),
            (6, 4),
        ),
        "batchnorm2d": (lambda r: bnlib.BatchNorm2d(2), (3, 2, 3, 3)),
        "batchnorm2d_eval": (
            lambda r: _eval_bn(bnlib.BatchNorm2d(2), r, (3, 2, 3, 3)),
            (3, 2, 3, 3),
        ),
        "layernorm": (lambda r: bnlib.LayerNorm(6), (4, 6)),
        "layernorm_2axes": (lambda r: bnlib.LayerNorm((3, 4)), (2, 3, 4)),
        "groupnorm": (lambda r: bnlib.GroupNorm(2, 4), (3, 4, 5)),
        "groupnorm_4d": (lambda r: bnlib.GroupNorm(3, 6), (2, 6, 2, 2)),
        "instancenorm1d": (lambda r: bnlib.InstanceNorm1d(3), (2, 3, 6)),
        "instancenorm1d_affine": (
            lambda r: bnlib.InstanceNorm1d(3, affine=True),
            (2, 3, 6),
        ),
        "rmsnorm": (lambda r: bnlib.RMSNorm(6), (4, 6)),
        "rmsnorm_eps": (lambda r: bnlib.RMSNorm(6, eps=1e-3), (2, 3, 6)),
        "linear": (lambda r: bnlib.Linear(5, 3, rng=r), (4, 5)),
        "linear_3d": (lambda r: bnlib.Linear(5, 3, rng=r), (2, 3, 5)),
        "linear_nobias": (lambda r: bnlib.Linear(5, 3, bias=False, rng=r), (4, 5)),
        "conv1d": (lambda r: bnlib.Conv1d(2, 3, 3, rng=r), (2, 2, 7)),
        "conv1d_stride_padding": (
            lambda r: bnlib.Conv1d(2, 3, 3, stride=2, padding=1, rng=r),
            (2, 2, 8),
        ),
        "conv1d_stride3_padding2": (
            lambda r: bnlib.Conv1d(3, 2, 4, stride=3, padding=2, rng=r),
            (2, 3, 9),
        ),
        "relu": (lambda r: bnlib.ReLU(), (4, 5)),
        "sigmoid": (lambda r: bnlib.Sigmoid(), (4, 5)),
        "tanh": (lambda r: bnlib.Tanh(), (4, 5)),
        "dropout_eval": (lambda r: bnlib.Dropout(0.5, rng=r).eval(), (4, 5)),
        "dropout_fixed_mask": (lambda r: FixedMaskDropout(0.3), (4, 5)),
        "dropout_p0": (lambda r: bnlib.Dropout(0.0), (4, 5)),
        "flatten": (lambda r: bnlib.Flatten(), (2, 3, 4)),
    }


def _eval_bn(bn, rng, shape):
    """A BatchNorm in eval mode with running statistics from a few training batches."""
    for _ in range(3):
        bn(rng.normal(1.0, 2.0, shape))
    return bn.eval()


MODULES = _modules()


@pytest.mark.parametrize("name", MODULES)
def test_module_gradients(name):
    rng = np.random.default_rng(0)
    factory, shape = MODULES[name]
    module = _randomize_affine(factory(rng), rng)
    x = _away_from_zero(rng, shape) if name == "relu" else rng.normal(1.0, 2.0, shape)
    errors = check_module_gradients(module, x, rng=1)
    assert set(errors) == {"x", *module.params}
    assert max(errors.values()) < GRAD_TOL, errors


def _all_parameter_errors(model, x, rng):
    """Like check_module_gradients, over the parameters of every module in ``model``."""
    r = rng.normal(size=model(x).shape)

    def loss():
        return float(np.sum(model(x) * r))

    model(x)
    dx = model.backward(r)
    errors = {"x": rel_error(dx, numerical_gradient(loss, x))}
    analytic = {(id(m), k): m.grads[k].copy() for m, k in model.parameters()}
    for i, (m, k) in enumerate(model.parameters()):
        errors[f"{i}:{type(m).__name__}.{k}"] = rel_error(
            analytic[id(m), k], numerical_gradient(loss, m.params[k])
        )
    return errors


@pytest.mark.parametrize("act", [bnlib.Sigmoid, bnlib.Tanh])
def test_sequential_gradients(act):
    rng = np.random.default_rng(2)
    # No bias before BatchNorm: its gradient is exactly 0 (see the next test).
    model = bnlib.Sequential(
        bnlib.Linear(5, 6, bias=False, rng=rng),
        _randomize_affine(bnlib.BatchNorm1d(6), rng),
        act(),
        bnlib.Linear(6, 4, rng=rng),
        _randomize_affine(bnlib.LayerNorm(4), rng),
        act(),
        FixedMaskDropout(0.25),
        bnlib.Linear(4, 3, rng=rng),
    )
    x = rng.normal(size=(8, 5))
    errors = _all_parameter_errors(model, x, rng)
    assert len(errors) == 1 + 1 + 2 * 4
    assert max(errors.values()) < GRAD_TOL, errors
    # check_module_gradients on a container checks its input gradient.
    assert check_module_gradients(model, x, rng=3).keys() == {"x"}


def test_bias_before_batchnorm_gets_zero_gradient():
    """beta subsumes a bias before BN: the output, hence the loss, does not depend on
    it."""
    rng = np.random.default_rng(3)
    model = bnlib.Sequential(
        bnlib.Linear(5, 4, rng=rng), bnlib.BatchNorm1d(4), bnlib.Tanh()
    )
    x = rng.normal(size=(8, 5))
    out = model(x)
    model.backward(rng.normal(size=out.shape))
    assert np.max(np.abs(model[0].grads["bias"])) < 1e-12
    model[0].params["bias"] += 10.0
    np.testing.assert_allclose(model(x), out, atol=1e-10)


def test_sequential_conv_gradients():
    rng = np.random.default_rng(4)
    model = bnlib.Sequential(
        bnlib.Conv1d(2, 4, 3, padding=1, bias=False, rng=rng),
        _randomize_affine(bnlib.BatchNorm1d(4), rng),
        bnlib.Tanh(),
        bnlib.Conv1d(4, 4, 3, stride=2, rng=rng),
        _randomize_affine(bnlib.GroupNorm(2, 4), rng),
        bnlib.Sigmoid(),
        bnlib.Flatten(),
        bnlib.Linear(16, 3, rng=rng),
    )
    x = rng.normal(size=(3, 2, 10))
    errors = _all_parameter_errors(model, x, rng)
    assert max(errors.values()) < GRAD_TOL, errors


# ------------------------------------------------------------------ module API
def test_parameters_grads_and_counts():
    model = bnlib.Sequential(
        bnlib.Linear(3, 4, rng=0),
        bnlib.BatchNorm1d(4),
        bnlib.ReLU(),
        bnlib.Linear(4, 2, bias=False, rng=1),
    )
    names = [(type(m).__name__, k) for m, k in model.parameters()]
    assert names == [
        ("Linear", "weight"),
        ("Linear", "bias"),
        ("BatchNorm1d", "weight"),
        ("BatchNorm1d", "bias"),
        ("Linear", "weight"),
    ]
    assert model.num_parameters() == 12 + 4 + 4 + 4 + 8
    assert [type(m).__name__ for m in model.modules()] == [
        "Sequential",
        "Linear",
        "BatchNorm1d",
        "ReLU",
        "Linear",
    ]
    for m, k in model.parameters():
        assert m.grads[k].shape == m.params[k].shape
    assert len(model) == 4 and isinstance(model[1], bnlib.BatchNorm1d)
    assert "BatchNorm1d(4" in repr(model)


def test_linear_and_conv_initialization_is_pytorch_like_and_seeded():
    a, b = bnlib.Linear(50, 20, rng=7), bnlib.Linear(50, 20, rng=7)
    np.testing.assert_array_equal(a.params["weight"], b.params["weight"])
    assert a.params["weight"].shape == (20, 50) and a.params["bias"].shape == (20,)
    assert np.abs(a.params["weight"]).max() <= 1 / np.sqrt(50)
    c = bnlib.Conv1d(3, 5, 4, rng=0)
    assert c.params["weight"].shape == (5, 3, 4)
    assert np.abs(c.params["weight"]).max() <= 1 / np.sqrt(12)


def test_conv1d_output_length_and_values():
    rng = np.random.default_rng(5)
    conv = bnlib.Conv1d(2, 3, 3, stride=2, padding=1, rng=rng)
    x = rng.normal(size=(2, 2, 8))
    out = conv(x)
    assert out.shape == (2, 3, (8 + 2 - 3) // 2 + 1)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1)))
    w, b = conv.params["weight"], conv.params["bias"]
    expected = np.stack(
        [
            np.einsum("nck,ock->no", xp[:, :, 2 * t : 2 * t + 3], w) + b
            for t in range(out.shape[2])
        ],
        axis=2,
    )
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_activations_and_dropout_values():
    x = np.array([[-30.0, -1.0, 0.0, 2.0, 30.0]])
    np.testing.assert_array_equal(bnlib.ReLU()(x), [[0, 0, 0, 2, 30]])
    np.testing.assert_allclose(bnlib.Sigmoid()(x), 1 / (1 + np.exp(-x)), rtol=1e-12)
    with np.errstate(over="raise"):  # no overflow for large |x|
        np.testing.assert_array_equal(
            bnlib.Sigmoid()(np.array([-1e4, 1e4])), [0.0, 1.0]
        )
    np.testing.assert_allclose(bnlib.Tanh()(x), np.tanh(x))
    d = bnlib.Dropout(0.25, rng=0)
    out = d(np.ones((200, 100)))
    kept = out != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(out[kept], 1 / 0.75)
    assert d.eval()(x) is x
    with pytest.raises(ValueError, match=r"Dropout: expected 0 <= p < 1, got p=1.0"):
        bnlib.Dropout(1.0)


@pytest.mark.parametrize(
    "cls,shape",
    [
        (bnlib.BatchNorm1d, (8, 3)),
        (bnlib.BatchNorm1d, (4, 3, 5)),
        (bnlib.BatchNorm2d, (4, 3, 2, 2)),
        (bnlib.LayerNorm, (4, 3)),
        (bnlib.RMSNorm, (4, 3)),
        (bnlib.Linear, (4, 3)),
        (bnlib.GroupNorm, (4, 3, 5)),
        (bnlib.Sigmoid, (4, 3)),
        (bnlib.Conv1d, (2, 3, 5)),
    ],
)
def test_modules_preserve_float32(cls, shape):
    """float64 parameters do not promote a float32 input."""
    args = {
        bnlib.Linear: (3, 2),
        bnlib.Conv1d: (3, 2, 3),
        bnlib.GroupNorm: (3, 3),
        bnlib.Sigmoid: (),
    }.get(cls, (3,))
    module = cls(*args)
    x = np.random.default_rng(6).normal(size=shape).astype(np.float32)
    out = module(x)
    assert out.dtype == np.float32
    assert module.backward(np.ones_like(out)).dtype == np.float32


# ------------------------------------------------------------------ BatchNorm semantics
def test_running_stats_start_at_zero_and_one():
    for bn in (bnlib.BatchNorm1d(5), bnlib.BatchNorm2d(5)):
        np.testing.assert_array_equal(bn.running_mean, np.zeros(5))
        np.testing.assert_array_equal(bn.running_var, np.ones(5))
        np.testing.assert_array_equal(bn.params["weight"], np.ones(5))
        np.testing.assert_array_equal(bn.params["bias"], np.zeros(5))
        assert bn.num_batches_tracked == 0 and bn.momentum == 0.1 and bn.eps == 1e-5
        assert bn.training


@pytest.mark.parametrize(
    "cls,shape",
    [
        (bnlib.BatchNorm1d, (6, 3)),
        (bnlib.BatchNorm1d, (4, 3, 5)),
        (bnlib.BatchNorm2d, (2, 3, 4, 2)),
    ],
)
@pytest.mark.parametrize("momentum", [0.1, 0.5])
def test_running_stats_momentum_update(cls, shape, momentum):
    rng = np.random.default_rng(7)
    bn = _randomize_affine(cls(3, momentum=momentum), rng)
    axes = (0,) + tuple(range(2, len(shape)))
    m = int(np.prod([shape[a] for a in axes]))
    mean, var = np.zeros(3), np.ones(3)
    for _ in range(3):
        x = rng.normal(2.0, 3.0, shape)
        out = bn(x)
        batch_mean, batch_var = x.mean(axis=axes), x.var(axis=axes)
        # normalization uses the biased variance ...
        c = (1, 3) + (1,) * (len(shape) - 2)
        expected = (x - batch_mean.reshape(c)) / np.sqrt(
            batch_var.reshape(c) + 1e-5
        ) * bn.params["weight"].reshape(c) + bn.params["bias"].reshape(c)
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
        # ... the running variance stores the unbiased one (ddof=1, m / (m - 1)).
        mean = (1 - momentum) * mean + momentum * batch_mean
        var = (1 - momentum) * var + momentum * x.var(axis=axes, ddof=1)
        np.testing.assert_allclose(bn.running_mean, mean, rtol=1e-12)
        np.testing.assert_allclose(bn.running_var, var, rtol=1e-12)
        np.testing.assert_allclose(x.var(axis=axes, ddof=1), batch_var * m / (m - 1))
    assert bn.num_batches_tracked == 3


def test_momentum_none_is_the_cumulative_average():
    rng = np.random.default_rng(8)
    bn = bnlib.BatchNorm1d(4, momentum=None)
    means, variances = [], []
    for k in range(5):
        x = rng.normal(k, 1.0 + k, (10, 4))
        bn(x)
        means.append(x.mean(0))
        variances.append(x.var(0, ddof=1))
        np.testing.assert_allclose(bn.running_mean, np.mean(means, axis=0), rtol=1e-12)
        np.testing.assert_allclose(
            bn.running_var, np.mean(variances, axis=0), rtol=1e-12
        )


def test_eval_uses_running_stats_and_does_not_update_them():
    rng = np.random.default_rng(9)
    bn = _randomize_affine(bnlib.BatchNorm2d(3), rng)
    for _ in range(4):
        bn(rng.normal(1.0, 2.0, (4, 3, 2, 2)))
    rm, rv = bn.running_mean.copy(), bn.running_var.copy()
    assert bn.eval() is bn and not bn.training
    x = rng.normal(size=(1, 3, 1, 1))  # one value per channel is fine in eval mode
    c = (1, 3, 1, 1)
    expected = (x - rm.reshape(c)) / np.sqrt(rv.reshape(c) + bn.eps) * bn.params[
        "weight"
    ].reshape(c) + bn.params["bias"].reshape(c)
    np.testing.assert_allclose(bn(x), expected, rtol=1e-12)
    np.testing.assert_array_equal(bn.running_mean, rm)
    np.testing.assert_array_equal(bn.running_var, rv)
    assert bn.num_batches_tracked == 4
    # eval backward treats the statistics as constants: dx = gamma * dy / sqrt(rv + eps)
    dy = rng.normal(size=x.shape)
    np.testing.assert_allclose(
        bn.backward(dy),
        dy * bn.params["weight"].reshape(c) / np.sqrt(rv.reshape(c) + bn.eps),
        rtol=1e-12,
    )
    assert bn.train() is bn and bn.training


def test_running_stats_can_be_set_and_eval_is_deterministic_per_example():
    bn = bnlib.BatchNorm1d(2).eval()
    bn.running_mean = np.array([1.0, -1.0])
    bn.running_var = np.array([4.0, 0.25])
    x = np.array([[3.0, 0.0], [1.0, -1.0]])
    np.testing.assert_allclose(
        bn(x), (x - bn.running_mean) / np.sqrt(bn.running_var + 1e-5)
    )
    np.testing.assert_allclose(
        bn(x[:1]), bn(x)[:1]
    )  # no dependence on the other examples


def test_train_eval_return_module_and_propagate():
    inner = bnlib.Sequential(bnlib.BatchNorm1d(3), bnlib.Dropout(0.5))
    model = bnlib.Sequential(bnlib.Linear(3, 3, rng=0), inner, bnlib.ReLU())
    assert model.eval() is model
    assert all(not m.training for m in model.modules())
    assert model.train() is model
    assert all(m.training for m in model.modules())
    assert model.train(False) is model and not inner[0].training
    assert inner[0].train() is inner[0] and inner[0].training and not model.training


def test_layer_and_group_norm_same_in_train_and_eval():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(3, 4, 5))
    for module in (
        bnlib.LayerNorm(5),
        bnlib.GroupNorm(2, 4),
        bnlib.InstanceNorm1d(4),
        bnlib.RMSNorm(5),
    ):
        _randomize_affine(module, rng)
        np.testing.assert_array_equal(module.train()(x), module.eval()(x))


def test_instance_norm_is_groupnorm_with_one_channel_per_group():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(2, 3, 6))
    out = bnlib.InstanceNorm1d(3)(x)
    expected = (x - x.mean(2, keepdims=True)) / np.sqrt(x.var(2, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    assert bnlib.InstanceNorm1d(3).params == {}  # affine=False by default, as PyTorch


def test_rmsnorm_default_eps_is_machine_epsilon():
    x = np.zeros((2, 3), np.float32)
    x[0] = 1e-5
    out = bnlib.RMSNorm(3)(x)
    np.testing.assert_allclose(
        out[0], 1e-5 / np.sqrt(1e-10 + np.finfo(np.float32).eps), rtol=1e-5
    )
    assert bnlib.RMSNorm(3).params.keys() == {"weight"}


# ------------------------------------------------------------------ bad input
def _bn1d():
    return bnlib.BatchNorm1d(3)


def _bn2d():
    return bnlib.BatchNorm2d(3)


BAD_RANK = [
    (
        _bn1d,
        (4,),
        r"BatchNorm1d: expected a 2-D \(N, C\) or 3-D \(N, C, L\) input, got a 1-D "
        r"input of shape \(4,\)",
    ),
    (
        _bn1d,
        (2, 3, 4, 5),
        r"BatchNorm1d: expected a 2-D .* got a 4-D input of shape "
        r"\(2, 3, 4, 5\)",
    ),
    (
        _bn2d,
        (4, 3),
        r"BatchNorm2d: expected a 4-D \(N, C, H, W\) input, got a 2-D input of "
        r"shape \(4, 3\)",
    ),
    (_bn2d, (4, 3, 5), r"BatchNorm2d: expected a 4-D .* got a 3-D input"),
    (
        lambda: bnlib.GroupNorm(1, 3),
        (3,),
        r"GroupNorm: expected an input \(N, C, \*spatial\), "
        r"got a 1-D input of shape \(3,\)",
    ),
    (
        lambda: bnlib.InstanceNorm1d(3),
        (4, 3),
        r"InstanceNorm1d: expected a 3-D input "
        r"\(N, C, L\), got a 2-D input",
    ),
    (
        lambda: bnlib.Conv1d(3, 2, 2),
        (4, 3),
        r"Conv1d: expected a 3-D input \(N, C, L\), got a "
        r"2-D input of shape \(4, 3\)",
    ),
    (
        lambda: bnlib.Linear(3, 2),
        (),
        r"Linear: expected an input \(..., in_features\), got a "
        r"0-D input",
    ),
]


@pytest.mark.parametrize("factory,shape,message", BAD_RANK)
def test_wrong_rank(factory, shape, message):
    with pytest.raises(ValueError, match=message):
        factory()(np.ones(shape))


BAD_SIZE = [
    (
        _bn1d,
        (4, 5),
        r"BatchNorm1d: expected 3 channels \(axis 1\), got input of shape \(4, 5\)",
    ),
    (
        _bn1d,
        (4, 2, 6),
        r"BatchNorm1d: expected 3 channels \(axis 1\), got input of shape "
        r"\(4, 2, 6\)",
    ),
    (
        _bn2d,
        (2, 4, 3, 3),
        r"BatchNorm2d: expected 3 channels \(axis 1\), got input of shape "
        r"\(2, 4, 3, 3\)",
    ),
    (
        lambda: bnlib.GroupNorm(2, 4),
        (2, 6, 3),
        r"GroupNorm: expected 4 channels \(axis 1\)",
    ),
    (
        lambda: bnlib.InstanceNorm1d(4),
        (2, 3, 5),
        r"InstanceNorm1d: expected 4 channels",
    ),
    (
        lambda: bnlib.Conv1d(3, 2, 2),
        (2, 4, 5),
        r"Conv1d: expected 3 input channels \(axis 1\), "
        r"got input of shape \(2, 4, 5\)",
    ),
    (
        lambda: bnlib.Linear(3, 2),
        (4, 5),
        r"Linear: expected 3 input features \(axis -1\), got "
        r"input of shape \(4, 5\)",
    ),
    (
        lambda: bnlib.LayerNorm(5),
        (4, 6),
        r"LayerNorm: expected input ending in \(5,\), got "
        r"shape \(4, 6\)",
    ),
    (
        lambda: bnlib.LayerNorm((2, 5)),
        (5,),
        r"LayerNorm: expected input ending in \(2, 5\), "
        r"got shape \(5,\)",
    ),
    (
        lambda: bnlib.RMSNorm(5),
        (4, 6),
        r"RMSNorm: expected input ending in \(5,\), got shape "
        r"\(4, 6\)",
    ),
    (
        lambda: bnlib.Conv1d(2, 2, 5),
        (1, 2, 3),
        r"Conv1d: input length 3 is shorter than the "
        r"kernel \(5\) after padding 0",
    ),
]


@pytest.mark.parametrize("factory,shape,message", BAD_SIZE)
def test_wrong_channel_or_feature_count(factory, shape, message):
    with pytest.raises(ValueError, match=message):
        factory()(np.ones(shape))


def test_groupnorm_channels_not_divisible():
    with pytest.raises(
        ValueError,
        match=r"GroupNorm: num_channels \(5\) must be divisible by "
        r"num_groups \(2\)",
    ):
        bnlib.GroupNorm(2, 5)


# Modules that keep what backward needs, with a valid input shape for each.
BACKWARD_MODULES = {
    "BatchNorm1d": (_bn1d, (4, 3)),
    "BatchNorm2d": (_bn2d, (2, 3, 2, 2)),
    "LayerNorm": (lambda: bnlib.LayerNorm(3), (4, 3)),
    "GroupNorm": (lambda: bnlib.GroupNorm(1, 3), (4, 3, 2)),
    "InstanceNorm1d": (lambda: bnlib.InstanceNorm1d(3), (4, 3, 2)),
    "RMSNorm": (lambda: bnlib.RMSNorm(3), (4, 3)),
    "Linear": (lambda: bnlib.Linear(3, 2), (4, 3)),
    "Conv1d": (lambda: bnlib.Conv1d(3, 2, 2), (4, 3, 5)),
    "ReLU": (bnlib.ReLU, (4, 3)),
    "Sigmoid": (bnlib.Sigmoid, (4, 3)),
    "Tanh": (bnlib.Tanh, (4, 3)),
    "Dropout": (lambda: bnlib.Dropout(0.5, rng=0), (4, 3)),
    "Dropout_eval": (lambda: bnlib.Dropout(0.5, rng=0).eval(), (4, 3)),
    "BatchNorm1d_eval": (lambda: _bn1d().eval(), (4, 3)),
    "Flatten": (bnlib.Flatten, (4, 3, 2)),
}


@pytest.mark.parametrize("name", BACKWARD_MODULES)
def test_dout_shape_must_match_last_forward_output(name):
    factory, shape = BACKWARD_MODULES[name]
    module = factory()
    out = module(np.random.default_rng(12).normal(size=shape))
    bad = np.ones(out.shape[:-1] + (out.shape[-1] + 1,))
    cls = name.split("_")[0]
    message = (
        f"{cls}.backward: expected dout of shape {tuple(out.shape)} (the last "
        f"forward's output), got {bad.shape}"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        module.backward(bad)
    module.backward(np.ones(out.shape))  # the right shape works


@pytest.mark.parametrize("name", BACKWARD_MODULES)
def test_backward_before_forward(name):
    factory, shape = BACKWARD_MODULES[name]
    cls = name.split("_")[0]
    with pytest.raises(ValueError, match=rf"{cls}.backward called before any forward"):
        factory().backward(np.ones(shape))


def test_sequential_backward_before_forward_names_the_layer():
    model = bnlib.Sequential(bnlib.Linear(3, 2), bnlib.Sigmoid())
    with pytest.raises(ValueError, match=r"Sigmoid.backward called before any forward"):
        model.backward(np.ones((4, 2)))


@pytest.mark.parametrize(
    "factory,shape", [(_bn1d, (1, 3)), (_bn1d, (1, 3, 1)), (_bn2d, (1, 3, 1, 1))]
)
def test_one_value_per_channel_in_training(factory, shape):
    bn = factory()
    cls = type(bn).__name__
    shape_str = str(shape).replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(
        ValueError,
        match=rf"{cls}: expected more than 1 value per channel when "
        rf"training, got input of shape {shape_str} \(m = 1\)",
    ):
        bn(np.ones(shape))
    assert bn.num_batches_tracked == 0  # nothing was updated
    bn.eval()(np.ones(shape))  # fine with running statistics


def test_instance_norm_needs_more_than_one_position():
    for module in (
        bnlib.InstanceNorm1d(3),
        bnlib.InstanceNorm1d(3).eval(),
    ):  # as PyTorch
        with pytest.raises(
            ValueError,
            match=r"InstanceNorm1d: expected more than 1 value per "
            r"channel \(length L > 1\), got input of shape "
            r"\(4, 3, 1\)",
        ):
            module(np.ones((4, 3, 1)))


# ----------------------------------------------------------------- input type and dtype
NORM_LAYERS = {
    "BatchNorm1d": (lambda: bnlib.BatchNorm1d(4), (8, 4)),
    "BatchNorm1d_eval": (lambda: bnlib.BatchNorm1d(4).eval(), (8, 4)),
    "BatchNorm2d": (lambda: bnlib.BatchNorm2d(4), (2, 4, 2, 2)),
    "LayerNorm": (lambda: bnlib.LayerNorm(4), (8, 4)),
    "GroupNorm": (lambda: bnlib.GroupNorm(2, 4), (2, 4, 4)),
    "InstanceNorm1d": (lambda: bnlib.InstanceNorm1d(4), (2, 4, 4)),
    "RMSNorm": (lambda: bnlib.RMSNorm(4), (8, 4)),
}
OTHER_LAYERS = {
    "Linear": (lambda: bnlib.Linear(4, 2), (8, 4)),
    "Conv1d": (lambda: bnlib.Conv1d(4, 2, 3), (2, 4, 4)),
    "ReLU": (bnlib.ReLU, (8, 4)),
    "Sigmoid": (bnlib.Sigmoid, (8, 4)),
    "Tanh": (bnlib.Tanh, (8, 4)),
    "Dropout": (lambda: bnlib.Dropout(0.5, rng=0), (8, 4)),
}


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.bool_])
@pytest.mark.parametrize("name", list(NORM_LAYERS) + list(OTHER_LAYERS))
def test_integer_and_bool_input_is_refused(name, dtype):
    """BatchNorm1d(4)(np.arange(32).reshape(8, 4)) used to return integers."""
    factory, shape = {**NORM_LAYERS, **OTHER_LAYERS}[name]
    x = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
    cls = name.split("_")[0]
    with pytest.raises(
        TypeError,
        match=rf"{cls} input has dtype {np.dtype(dtype).name}, "
        r"expected a floating-point array \(float32 or "
        r"float64\).*convert it to float first",
    ):
        factory()(x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NORM_LAYERS)
def test_norm_layers_keep_the_float_dtype(name, dtype):
    factory, shape = NORM_LAYERS[name]
    module = factory()
    x = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
    out = module(x)
    assert out.dtype == dtype and out.shape == shape
    assert module.backward(np.ones_like(out)).dtype == dtype
    if name == "BatchNorm1d":
        np.testing.assert_allclose(
            out[:, 0], (x[:, 0] - 14) / np.sqrt(84 + 1e-5), rtol=1e-6
        )


@pytest.mark.parametrize("name", list(NORM_LAYERS) + list(OTHER_LAYERS))
def test_a_list_input_gets_a_type_error(name):
    factory, shape = {**NORM_LAYERS, **OTHER_LAYERS}[name]
    rows = np.ones(shape).tolist()
    cls = name.split("_")[0]
    with pytest.raises(
        TypeError,
        match=rf"{cls} input must be a numpy array, got list; "
        r"convert it first, e\.g\. np\.asarray",
    ):
        factory()(rows)
    with pytest.raises(
        TypeError, match=r"Flatten input must be a numpy array, got list"
    ):
        bnlib.Flatten()(rows)


@pytest.mark.parametrize(
    "factory,shape,bad,expected",
    [
        (lambda: bnlib.BatchNorm1d(4), (8, 4), ("weight", (5,)), (4,)),
        (lambda: bnlib.BatchNorm2d(4), (2, 4, 2, 2), ("bias", (1, 4)), (4,)),
        (lambda: bnlib.LayerNorm((2, 4)), (3, 2, 4), ("weight", (4,)), (2, 4)),
        (lambda: bnlib.GroupNorm(2, 4), (2, 4, 3), ("bias", (2,)), (4,)),
        (lambda: bnlib.RMSNorm(4), (8, 4), ("weight", (3,)), (4,)),
    ],
)
def test_a_parameter_of_the_wrong_shape_is_named(factory, shape, bad, expected):
    module = factory()
    name, bad_shape = bad
    module.params[name] = np.ones(bad_shape)
    cls = type(module).__name__
    with pytest.raises(
        ValueError,
        match=rf"{cls}: params\['{name}'\] has shape "
        rf"{re.escape(str(bad_shape))}, expected "
        rf"{re.escape(str(expected))}",
    ):
        module(np.random.default_rng(0).normal(size=shape))


def test_integer_dout_is_refused():
    for module, x in [
        (bnlib.BatchNorm1d(3), np.ones((4, 3))),
        (bnlib.Linear(3, 2), np.ones((4, 3))),
    ]:
        out = module(x + np.arange(12).reshape(4, 3))
        with pytest.raises(
            TypeError,
            match=rf"{type(module).__name__}.backward: dout has "
            r"dtype int64",
        ):
            module.backward(np.ones(out.shape, np.int64))


# ----------------------------------------------------------------- ReLU at the extremes
def test_relu_at_infinity_and_nan():
    x = np.array([[-np.inf, -1.0, 0.0, 2.0, np.inf, np.nan]])
    relu = bnlib.ReLU()
    with np.errstate(invalid="raise"):  # no inf * 0 anywhere
        out = relu(x)
        np.testing.assert_array_equal(out, [[0.0, 0.0, 0.0, 2.0, np.inf, np.nan]])
        dx = relu.backward(np.full(x.shape, 3.0))
        np.testing.assert_array_equal(dx, [[0.0, 0.0, 0.0, 3.0, 3.0, 0.0]])
        # an infinite upstream gradient where x <= 0 is blocked, not turned into NaN
        dx = relu.backward(np.full(x.shape, np.inf))
        np.testing.assert_array_equal(dx, [[0.0, 0.0, 0.0, np.inf, np.inf, 0.0]])
    assert relu(x.astype(np.float32)).dtype == np.float32
    assert relu.backward(np.ones(x.shape, np.float32)).dtype == np.float32


# ---------------------------------------------------------------- grads are overwritten
def test_backward_overwrites_grads_it_does_not_accumulate():
    """Unlike PyTorch's .grad, grads hold the last backward's gradient only (the
    training loops rely on this: no zero_grad() between steps)."""
    rng = np.random.default_rng(20)
    model = bnlib.Sequential(bnlib.Linear(3, 4, rng=rng), bnlib.BatchNorm1d(4))
    x1, x2 = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    dy1, dy2 = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    model(x2)
    model.backward(dy2)
    alone = {(id(m), k): m.grads[k].copy() for m, k in model.parameters()}
    model(x1)
    model.backward(dy1)
    model(x2)
    model.backward(dy2)
    for m, k in model.parameters():
        np.testing.assert_array_equal(m.grads[k], alone[id(m), k])  # not first + second
    model.zero_grad()
    assert all(np.all(m.grads[k] == 0) for m, k in model.parameters())


# ---------------------------------------------------------------- the fast path is used
def test_norm_layers_compute_through_the_fast_path():
    x = np.random.default_rng(21).normal(size=(4, 3, 5))
    for module in (
        bnlib.BatchNorm1d(3),
        bnlib.BatchNorm1d(3).eval(),
        bnlib.InstanceNorm1d(3),
        bnlib.GroupNorm(3, 3),
        bnlib.LayerNorm(5, elementwise_affine=False),
    ):
        module(x)
        assert "layout" in module._cache, module
    for module in (bnlib.LayerNorm(5), bnlib.RMSNorm(5), bnlib.GroupNorm(1, 3)):
        module(
            x
        )  # per-element affine or no centering: the formulas of bnlib.functional
        assert "layout" not in module._cache, module


# ------------------------------------------------------------------ state_dict
def _model(rng=0):
    return bnlib.Sequential(
        bnlib.Linear(3, 4, rng=rng),
        bnlib.BatchNorm1d(4),
        bnlib.ReLU(),
        bnlib.Sequential(bnlib.Linear(4, 2, bias=False, rng=rng), bnlib.LayerNorm(2)),
    )


def test_state_dict_keys_and_values():
    model = _model()
    state = model.state_dict()
    assert list(state) == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
        "3.0.weight",
        "3.1.weight",
        "3.1.bias",
    ]
    np.testing.assert_array_equal(state["0.weight"], model[0].params["weight"])
    np.testing.assert_array_equal(state["1.running_var"], np.ones(4))
    assert (
        state["1.num_batches_tracked"].shape == ()
        and state["1.num_batches_tracked"] == 0
    )
    assert list(bnlib.BatchNorm1d(2, track_running_stats=False).state_dict()) == [
        "weight",
        "bias",
    ]
    assert bnlib.ReLU().state_dict() == {}


def test_state_dict_values_are_copies():
    rng = np.random.default_rng(22)
    model = _model()
    state = model.state_dict()
    saved = {k: v.copy() for k, v in state.items()}
    opt = bnlib.SGD(model, lr=0.5)
    for _ in range(3):  # training changes parameters in place and running statistics
        bnlib.train_step(model, opt, rng.normal(size=(8, 3)), rng.integers(0, 2, 8))
    assert model[1].num_batches_tracked == 3
    assert not np.array_equal(model[0].params["weight"], saved["0.weight"])
    for key, value in saved.items():
        np.testing.assert_array_equal(state[key], value, err_msg=key)


def test_load_state_dict_round_trip():
    rng = np.random.default_rng(23)
    trained, fresh = _model(rng=1), _model(rng=2)
    opt = bnlib.SGD(trained, lr=0.5)
    for _ in range(3):
        bnlib.train_step(trained, opt, rng.normal(size=(8, 3)), rng.integers(0, 2, 8))
    weight = fresh[0].params["weight"]
    fresh.load_state_dict(trained.state_dict())
    assert fresh[0].params["weight"] is weight  # written in place, as PyTorch does
    assert fresh[1].num_batches_tracked == 3 and isinstance(
        fresh[1].num_batches_tracked, int
    )
    for key, value in trained.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key], value, err_msg=key)
    x = rng.normal(size=(5, 3))
    np.testing.assert_array_equal(fresh.eval()(x), trained.eval()(x))
    # the loaded values are copies too: changing the source afterwards changes nothing
    state = trained.state_dict()
    fresh.load_state_dict(state)
    state["1.running_mean"][...] = 100.0
    assert np.all(fresh[1].running_mean != 100.0)


def test_load_state_dict_keeps_parameter_dtype():
    bn = bnlib.BatchNorm1d(3)
    bn.params["weight"] = bn.params["weight"].astype(np.float32)
    bn.load_state_dict({**bn.state_dict(), "weight": np.array([1.0, 2.0, 3.0])})
    assert bn.params["weight"].dtype == np.float32
    np.testing.assert_array_equal(bn.params["weight"], [1.0, 2.0, 3.0])


def test_load_state_dict_reports_every_mismatch_and_changes_nothing():
    model = _model()
    good = model.state_dict()
    bad = dict(good)
    del bad["1.running_var"]
    bad["1.running_avg"] = np.zeros(4)
    bad["0.bias"] = np.zeros(5)
    bad["1.num_batches_tracked"] = np.zeros(2)
    before = model.state_dict()
    with pytest.raises(ValueError) as err:
        model.load_state_dict(bad)
    message = str(err.value)
    assert message.startswith(
        "Sequential.load_state_dict: missing keys ['1.running_var']; "
        "unexpected keys ['1.running_avg']; shape mismatch for "
    )
    assert "0.bias: expected shape (4,), got (5,)" in message
    assert "1.num_batches_tracked: expected shape (), got (2,)" in message
    assert message.endswith("(nothing was loaded)")
    for key, value in before.items():
        np.testing.assert_array_equal(model.state_dict()[key], value, err_msg=key)
    with pytest.raises(
        ValueError,
        match=r"BatchNorm1d.load_state_dict: shape mismatch for "
        r"running_mean: expected shape \(4,\), got \(3,\)",
    ):
        bnlib.BatchNorm1d(4).load_state_dict(
            bnlib.BatchNorm1d(3).state_dict()
            | {"weight": np.ones(4), "bias": np.zeros(4), "running_var": np.ones(4)}
        )


def test_rmsnorm_backward_matches_its_closed_form():
    rng = np.random.default_rng(13)
    m = bnlib.RMSNorm(6, eps=1e-6)
    m.params["weight"][...] = rng.uniform(0.5, 2.0, 6)
    x = rng.normal(size=(4, 6)) + 0.7
    # dx = r / d * (d g - x_hat * sum(g * x_hat)), g = dout * gamma, r = 1 / rms
    dout = rng.normal(size=x.shape)
    m(x)
    dx = m.backward(dout)
    r = 1.0 / np.sqrt(np.mean(x**2, axis=1, keepdims=True) + 1e-6)
    x_hat, g = x * r, dout * m.params["weight"]
    expected = r / 6 * (6 * g - x_hat * np.sum(g * x_hat, axis=1, keepdims=True))
    np.testing.assert_allclose(dx, expected, atol=1e-12)
