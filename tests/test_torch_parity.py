"""Parity with PyTorch (2.13 CPU): same weights and inputs, same outputs and gradients,
same state_dict keys.

Skipped where torch is not installed, except under CI=true, where a missing torch
fails the run (requirements-dev.txt pins it). Tolerances: 1e-10 relative in float64,
1e-5 in float32 (relative to the largest entry of the array compared).
"""

import os

import numpy as np
import pytest

import bnlib

IN_CI = os.environ.get("CI", "").lower() == "true"


def _import_torch():
    """torch; where it is missing, skip this module, or fail it under CI=true."""
    try:
        import torch
    except ImportError:
        if IN_CI:
            pytest.fail(
                "CI=true but torch is not installed: the PyTorch parity tests must "
                "run in CI (.venv/bin/pip install -r requirements-dev.txt)",
                pytrace=False,
            )
        pytest.skip(
            "torch is not installed (pip install -r requirements-dev.txt)",
            allow_module_level=True,
        )
    return torch


torch = _import_torch()
nn = torch.nn

torch.set_num_threads(1)

DTYPES = {
    "float32": (np.float32, torch.float32),
    "float64": (np.float64, torch.float64),
}
TOL = {np.float32: 1e-5, np.float64: 1e-10}


def assert_close(ours, theirs, dtype, what=""):
    theirs = (
        theirs.detach().numpy()
        if isinstance(theirs, torch.Tensor)
        else np.asarray(theirs)
    )
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape, what
    tol = TOL[dtype]
    scale = max(float(np.max(np.abs(theirs))), 1e-30) if theirs.size else 1.0
    np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol * scale, err_msg=what)


def copy_params(ours, theirs, rng):
    """Give both modules the same non-trivial parameters (weight, bias not 1 and 0)."""
    for name in ours.params:
        shape = ours.params[name].shape
        value = (
            rng.uniform(0.5, 2.0, shape)
            if name == "weight" and _is_norm(ours)
            else rng.normal(0.0, 1.0, shape)
        )
        ours.params[name][...] = value
        with torch.no_grad():
            getattr(theirs, name).copy_(torch.from_numpy(value))


def _is_norm(module):
    return isinstance(
        module,
        (
            bnlib.BatchNorm1d,
            bnlib.BatchNorm2d,
            bnlib.LayerNorm,
            bnlib.GroupNorm,
            bnlib.RMSNorm,
        ),
    )


def run_both(ours, theirs, x, dy, dtype, what):
    """Forward and backward in both; compare output, dx and every parameter gradient."""
    xt = torch.from_numpy(x).requires_grad_(True)
    theirs.zero_grad()
    out_t = theirs(xt)
    out_t.backward(torch.from_numpy(dy))
    out = ours(x)
    assert out.dtype == dtype
    dx = ours.backward(dy)
    assert dx.dtype == dtype
    assert_close(out, out_t, dtype, f"{what}: output")
    assert_close(dx, xt.grad, dtype, f"{what}: dx")
    for name in ours.params:
        assert_close(
            ours.grads[name], getattr(theirs, name).grad, dtype, f"{what}: d{name}"
        )


# name: (our factory, torch factory, input shape); momentum is passed to BatchNorm only
NORMS = {
    "BatchNorm1d_2d": (
        lambda mo: bnlib.BatchNorm1d(5, momentum=mo),
        lambda mo: nn.BatchNorm1d(5, momentum=mo),
        (16, 5),
    ),
    "BatchNorm1d_3d": (
        lambda mo: bnlib.BatchNorm1d(5, momentum=mo),
        lambda mo: nn.BatchNorm1d(5, momentum=mo),
        (8, 5, 6),
    ),
    "BatchNorm2d": (
        lambda mo: bnlib.BatchNorm2d(3, momentum=mo),
        lambda mo: nn.BatchNorm2d(3, momentum=mo),
        (4, 3, 5, 5),
    ),
    "LayerNorm": (lambda mo: bnlib.LayerNorm(6), lambda mo: nn.LayerNorm(6), (4, 5, 6)),
    "LayerNorm_2axes": (
        lambda mo: bnlib.LayerNorm((5, 6)),
        lambda mo: nn.LayerNorm((5, 6)),
        (4, 5, 6),
    ),
    "GroupNorm": (
        lambda mo: bnlib.GroupNorm(2, 6),
        lambda mo: nn.GroupNorm(2, 6),
        (4, 6, 5),
    ),
    "GroupNorm_4d": (
        lambda mo: bnlib.GroupNorm(3, 6),
        lambda mo: nn.GroupNorm(3, 6),
        (2, 6, 3, 3),
    ),
    "InstanceNorm1d_affine": (
        lambda mo: bnlib.InstanceNorm1d(5, affine=True),
        lambda mo: nn.InstanceNorm1d(5, affine=True),
        (4, 5, 7),
    ),
    "RMSNorm": (lambda mo: bnlib.RMSNorm(6), lambda mo: nn.RMSNorm(6), (4, 3, 6)),
}
BN = [name for name in NORMS if name.startswith("BatchNorm")]
CASES = [
    pytest.param(n, d, mo, id=f"{n}-{d}-momentum={mo}")
    for n in BN
    for d in DTYPES
    for mo in (0.1, 0.5, None)
] + [
    pytest.param(n, d, None, id=f"{n}-{d}")
    for n in NORMS
    if n not in BN
    for d in DTYPES
]


@pytest.mark.parametrize("name,dtype_name,momentum", CASES)
def test_norm_layer_parity(name, dtype_name, momentum):
    dtype, tdtype = DTYPES[dtype_name]
    make_ours, make_theirs, shape = NORMS[name]
    rng = np.random.default_rng(0)
    ours, theirs = make_ours(momentum), make_theirs(momentum).to(tdtype)
    copy_params(ours, theirs, rng)
    is_bn = name in BN
    for step in range(
        4
    ):  # several training steps: batch statistics and running averages
        x = rng.normal(1.5, 2.0, shape).astype(dtype)
        dy = rng.normal(size=shape).astype(dtype)
        run_both(ours, theirs, x, dy, dtype, f"{name} step {step}")
        if is_bn:
            assert_close(ours.running_mean, theirs.running_mean, dtype, "running_mean")
            assert_close(ours.running_var, theirs.running_var, dtype, "running_var")
            assert ours.num_batches_tracked == int(theirs.num_batches_tracked)
    ours.eval()
    theirs.eval()
    x = rng.normal(1.5, 2.0, shape).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    run_both(ours, theirs, x, dy, dtype, f"{name} eval")
    if is_bn:  # eval leaves the running statistics alone, in both
        assert_close(
            ours.running_mean, theirs.running_mean, dtype, "running_mean after eval"
        )


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_batchnorm_bad_batch_raises_in_both(dtype_name):
    dtype, tdtype = DTYPES[dtype_name]
    x = np.ones((1, 3), dtype)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3).to(tdtype)(torch.from_numpy(x))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bnlib.BatchNorm1d(3)(x)


LINEAR_CASES = {
    "linear_2d": (lambda: bnlib.Linear(7, 4), lambda: nn.Linear(7, 4), (5, 7)),
    "linear_3d": (lambda: bnlib.Linear(7, 4), lambda: nn.Linear(7, 4), (2, 3, 7)),
    "linear_nobias": (
        lambda: bnlib.Linear(7, 4, bias=False),
        lambda: nn.Linear(7, 4, bias=False),
        (5, 7),
    ),
    "conv1d": (lambda: bnlib.Conv1d(3, 4, 3), lambda: nn.Conv1d(3, 4, 3), (2, 3, 9)),
    "conv1d_stride2_pad1": (
        lambda: bnlib.Conv1d(3, 4, 3, stride=2, padding=1),
        lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1),
        (2, 3, 10),
    ),
    "conv1d_stride3_pad2_k4": (
        lambda: bnlib.Conv1d(2, 5, 4, stride=3, padding=2),
        lambda: nn.Conv1d(2, 5, 4, stride=3, padding=2),
        (3, 2, 11),
    ),
    "conv1d_nobias_k1": (
        lambda: bnlib.Conv1d(3, 2, 1, bias=False),
        lambda: nn.Conv1d(3, 2, 1, bias=False),
        (2, 3, 4),
    ),
}


@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("name", LINEAR_CASES)
def test_linear_and_conv_parity(name, dtype_name):
    dtype, tdtype = DTYPES[dtype_name]
    make_ours, make_theirs, shape = LINEAR_CASES[name]
    rng = np.random.default_rng(1)
    ours, theirs = make_ours(), make_theirs().to(tdtype)
    copy_params(ours, theirs, rng)
    x = rng.normal(size=shape).astype(dtype)
    dy = rng.normal(size=theirs(torch.from_numpy(x)).shape).astype(dtype)
    run_both(ours, theirs, x, dy, dtype, name)


@pytest.mark.parametrize(
    "cls,tcls",
    [(bnlib.ReLU, nn.ReLU), (bnlib.Sigmoid, nn.Sigmoid), (bnlib.Tanh, nn.Tanh)],
)
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_activation_parity(cls, tcls, dtype_name):
    dtype, _ = DTYPES[dtype_name]
    rng = np.random.default_rng(2)
    x = rng.normal(0.0, 3.0, (6, 5)).astype(dtype)
    run_both(
        cls(), tcls(), x, rng.normal(size=x.shape).astype(dtype), dtype, cls.__name__
    )


def _grads_sequence(rng, shapes, steps):
    return [[rng.normal(size=s) for s in shapes] for _ in range(steps)]


@pytest.mark.parametrize("opt", ["sgd", "sgd_momentum_wd", "adam", "adam_wd"])
def test_optimizer_parity(opt):
    rng = np.random.default_rng(3)
    ours = bnlib.Sequential(bnlib.Linear(4, 3), bnlib.BatchNorm1d(3))
    theirs = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).double()
    for a, b in zip(ours.layers, theirs, strict=True):
        copy_params(a, b, rng)
    make = {
        "sgd": (lambda p: bnlib.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
        "sgd_momentum_wd": (
            lambda p: bnlib.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2),
            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2),
        ),
        "adam": (
            lambda p: bnlib.Adam(p, lr=1e-2),
            lambda p: torch.optim.Adam(p, lr=1e-2),
        ),
        "adam_wd": (
            lambda p: bnlib.Adam(p, lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2),
            lambda p: torch.optim.Adam(
                p, lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2
            ),
        ),
    }[opt]
    opt_ours, opt_theirs = make[0](ours), make[1](theirs.parameters())
    pairs = list(zip(ours.parameters(), theirs.parameters(), strict=True))
    for grads in _grads_sequence(rng, [p.shape for p in theirs.parameters()], 5):
        for ((m, k), p), g in zip(pairs, grads, strict=True):
            m.grads[k] = g.copy()
            p.grad = torch.from_numpy(g.copy())
        opt_ours.step()
        opt_theirs.step()
        for (m, k), p in pairs:
            assert_close(m.params[k], p, np.float64, f"{opt}: {k}")


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_training_a_sigmoid_mlp_with_bn_matches(dtype_name):
    """A few SGD steps of Linear-BN-Sigmoid x2 - Linear with softmax cross-entropy."""
    dtype, tdtype = DTYPES[dtype_name]
    rng = np.random.default_rng(4)
    ours = bnlib.Sequential(
        bnlib.Linear(8, 16),
        bnlib.BatchNorm1d(16),
        bnlib.Sigmoid(),
        bnlib.Linear(16, 16),
        bnlib.BatchNorm1d(16),
        bnlib.Sigmoid(),
        bnlib.Linear(16, 3),
    )
    theirs = nn.Sequential(
        nn.Linear(8, 16),
        nn.BatchNorm1d(16),
        nn.Sigmoid(),
        nn.Linear(16, 16),
        nn.BatchNorm1d(16),
        nn.Sigmoid(),
        nn.Linear(16, 3),
    ).to(tdtype)
    for a, b in zip(ours.layers, theirs, strict=True):
        copy_params(a, b, rng)
    opt_ours = bnlib.SGD(ours, lr=0.5, momentum=0.9)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=0.5, momentum=0.9)
    for step in range(5):
        x = rng.normal(size=(12, 8)).astype(dtype)
        y = rng.integers(0, 3, 12)
        loss, _ = bnlib.train_step(ours, opt_ours, x, y)
        opt_theirs.zero_grad()
        loss_t = nn.functional.cross_entropy(
            theirs(torch.from_numpy(x)), torch.from_numpy(y)
        )
        loss_t.backward()
        opt_theirs.step()
        assert_close(loss, loss_t, dtype, f"loss at step {step}")
    for (m, k), p in zip(ours.parameters(), theirs.parameters(), strict=True):
        # parameters are float64 in bnlib; after float32 training compare loosely
        tol = TOL[dtype] * 10
        np.testing.assert_allclose(
            m.params[k],
            p.detach().double().numpy(),
            rtol=tol,
            atol=tol * float(p.detach().abs().max()),
        )
    ours.eval()
    theirs.eval()
    x = rng.normal(size=(5, 8)).astype(dtype)
    assert_close(ours(x), theirs(torch.from_numpy(x)), dtype, "eval output")


# -------------------------------------------------------------- RMSNorm, InstanceNorm1d
def test_rmsnorm_parity_with_torch():
    rng = np.random.default_rng(15)
    x = rng.normal(size=(4, 3, 6))
    w = rng.uniform(0.5, 2.0, 6)
    dout = rng.normal(size=x.shape)
    for eps in (None, 1e-5):
        ours = bnlib.RMSNorm(6, eps=eps)
        ours.params["weight"][...] = w
        theirs = torch.nn.RMSNorm(6, eps=eps, dtype=torch.float64)
        with torch.no_grad():
            theirs.weight.copy_(torch.from_numpy(w))
        xt = torch.from_numpy(x).requires_grad_(True)
        yt = theirs(xt)
        yt.backward(torch.from_numpy(dout))
        np.testing.assert_allclose(ours(x), yt.detach().numpy(), atol=1e-12)
        np.testing.assert_allclose(ours.backward(dout), xt.grad.numpy(), atol=1e-12)
        np.testing.assert_allclose(
            ours.grads["weight"], theirs.weight.grad.numpy(), atol=1e-12
        )


def test_instancenorm1d_parity_with_torch():
    rng = np.random.default_rng(16)
    x = rng.normal(size=(4, 3, 7)) * 2 + 1
    dout = rng.normal(size=x.shape)
    for affine in (False, True):
        ours = bnlib.InstanceNorm1d(3, affine=affine)
        theirs = torch.nn.InstanceNorm1d(3, affine=affine, dtype=torch.float64)
        if affine:
            w, b = rng.uniform(0.5, 2.0, 3), rng.normal(size=3)
            ours.params["weight"][...], ours.params["bias"][...] = w, b
            with torch.no_grad():
                theirs.weight.copy_(torch.from_numpy(w))
                theirs.bias.copy_(torch.from_numpy(b))
        xt = torch.from_numpy(x).requires_grad_(True)
        yt = theirs(xt)
        yt.backward(torch.from_numpy(dout))
        np.testing.assert_allclose(ours(x), yt.detach().numpy(), atol=1e-12)
        np.testing.assert_allclose(ours.backward(dout), xt.grad.numpy(), atol=1e-12)
        if affine:
            np.testing.assert_allclose(
                ours.grads["weight"], theirs.weight.grad.numpy(), atol=1e-12
            )
            np.testing.assert_allclose(
                ours.grads["bias"], theirs.bias.grad.numpy(), atol=1e-12
            )
        # the same computation in eval mode: no running statistics
        np.testing.assert_allclose(
            ours.eval()(x), theirs.eval()(xt).detach().numpy(), atol=1e-12
        )


# ------------------------------------------------------------------ state_dict
def _twin_models():
    """The same architecture in both libraries, every kind of module with state."""
    ours = bnlib.Sequential(
        bnlib.Conv1d(2, 4, 3, padding=1),
        bnlib.BatchNorm1d(4),
        bnlib.ReLU(),
        bnlib.GroupNorm(2, 4),
        bnlib.InstanceNorm1d(4, affine=True),
        bnlib.Flatten(),
        bnlib.Linear(24, 8),
        bnlib.LayerNorm(8),
        bnlib.Tanh(),
        bnlib.RMSNorm(8),
        bnlib.Dropout(0.1),
        bnlib.Linear(8, 3, bias=False),
        bnlib.Sequential(bnlib.Linear(3, 3), bnlib.BatchNorm1d(3, affine=False)),
    )
    theirs = nn.Sequential(
        nn.Conv1d(2, 4, 3, padding=1),
        nn.BatchNorm1d(4),
        nn.ReLU(),
        nn.GroupNorm(2, 4),
        nn.InstanceNorm1d(4, affine=True),
        nn.Flatten(),
        nn.Linear(24, 8),
        nn.LayerNorm(8),
        nn.Tanh(),
        nn.RMSNorm(8),
        nn.Dropout(0.1),
        nn.Linear(8, 3, bias=False),
        nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3, affine=False)),
    ).double()
    return ours, theirs


def test_state_dict_keys_and_shapes_match_torch():
    ours, theirs = _twin_models()
    state, tstate = ours.state_dict(), theirs.state_dict()
    assert list(state) == list(tstate)  # same keys, in the same order
    for key, value in tstate.items():
        assert state[key].shape == tuple(value.shape), key
    assert state["1.num_batches_tracked"].dtype == np.int64
    bn = bnlib.BatchNorm1d(3, track_running_stats=False)
    assert list(bn.state_dict()) == list(
        nn.BatchNorm1d(3, track_running_stats=False).state_dict()
    )


def test_load_state_dict_from_torch_gives_the_same_model():
    rng = np.random.default_rng(18)
    ours, theirs = _twin_models()
    theirs.train()
    with (
        torch.no_grad()
    ):  # non-trivial weights, and running statistics from a few batches
        for p in theirs.parameters():
            p.copy_(torch.from_numpy(rng.normal(1.0, 0.5, tuple(p.shape))))
        for _ in range(3):
            theirs(torch.from_numpy(rng.normal(1.0, 2.0, (5, 2, 6))))
    ours.load_state_dict(theirs.state_dict())
    assert ours[1].num_batches_tracked == 3
    ours.eval()
    theirs.eval()
    x = rng.normal(size=(5, 2, 6))
    np.testing.assert_allclose(
        ours(x), theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-10, atol=1e-10
    )
