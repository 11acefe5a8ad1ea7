"""Stateful layers built on :mod:`bnlib.functional`, with PyTorch's names and semantics.

Every module has ``params`` and ``grads`` dicts with the same keys, ``forward(x)``
(also ``module(x)``), ``backward(dout) -> dx`` which fills ``grads``, ``train()`` /
``eval()`` which return the module, and ``state_dict()`` / ``load_state_dict()``.
The normalization layers compute through :mod:`bnlib.fastpath` (the formulas of
:mod:`bnlib.functional` with fewer passes over memory).
"""

from __future__ import annotations

import numpy as np

from . import fastpath
from . import functional as F

__all__ = [
    "as_generator",
    "Module",
    "Linear",
    "Conv1d",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Dropout",
    "Flatten",
    "Sequential",
    "NormBase",
    "BatchNormBase",
    "BatchNorm1d",
    "BatchNorm2d",
    "LayerNorm",
    "GroupNorm",
    "InstanceNorm1d",
    "RMSNorm",
]


def as_generator(rng) -> np.random.Generator:
    """``rng`` itself if it is a numpy Generator (so that draws continue its stream),
    else ``np.random.default_rng(rng)`` (a seed, a list of seeds, or None)."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


class Module:
    """Base class: parameter and gradient dicts, train/eval mode, state, checks.

    Attributes:
        params: name -> array, the trainable parameters (writable in place).
        grads: name -> array with the same keys and shapes: the gradients of the
            **last** backward. Unlike PyTorch, where ``.grad`` accumulates (adds up)
            over backward calls until ``zero_grad()``, every ``backward()`` here
            *overwrites* ``grads`` with the gradient of that one pass. So a training
            step needs no ``zero_grad()``; to accumulate over several batches, add the
            grads up yourself after each backward. (A module used twice in one forward
            keeps only the gradient of its last backward.)
        training: True in training mode (the default), False after ``eval()``.

    Subclasses list the non-parameter state they keep (running statistics) in
    :meth:`buffer_names`; :meth:`state_dict` saves it together with the parameters.
    """

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.training = True
        self._cache = None

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def children(self) -> list[Module]:
        return []

    def named_children(self) -> list[tuple[str, Module]]:
        """``(name, child)`` pairs, by default named by position (``"0"``, ``"1"``)."""
        return [(str(i), child) for i, child in enumerate(self.children())]

    def modules(self):
        """This module and every module inside it, depth first."""
        yield self
        for child in self.children():
            yield from child.modules()

    def parameters(self) -> list[tuple[Module, str]]:
        """Every parameter as a ``(module, name)`` pair: ``module.params[name]``."""
        return [(m, k) for m in self.modules() for k in m.params]

    def num_parameters(self) -> int:
        return sum(m.params[k].size for m, k in self.parameters())

    def zero_grad(self):
        for m, k in self.parameters():
            m.grads[k] = np.zeros_like(m.params[k])

    def train(self, mode: bool = True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    # ------------------------------------------------------------ state
    def buffer_names(self) -> tuple[str, ...]:
        """Attributes that are state but not parameters (e.g. running statistics)."""
        return ()

    def _state_entries(self, prefix=""):
        """``(key, module, name, is_param)`` for every parameter and buffer, in the
        order PyTorch uses: a module's parameters, its buffers, then its children."""
        for name in self.params:
            yield prefix + name, self, name, True
        for name in self.buffer_names():
            yield prefix + name, self, name, False
        for child_name, child in self.named_children():
            yield from child._state_entries(f"{prefix}{child_name}.")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, here and in every module inside.

        Keys are PyTorch's: ``"weight"``, ``"running_mean"``, and for children
        ``"<child name>.<key>"`` (``"0.weight"``, ``"1.running_var"`` in a Sequential).
        Values are copies (``num_batches_tracked`` a 0-d int64 array), so training
        after the call does not change the dict.
        """
        return {
            key: np.array(m.params[name] if is_param else getattr(m, name), copy=True)
            for key, m, name, is_param in self._state_entries()
        }

    def load_state_dict(self, state):
        """Copy the values of ``state`` (as from :meth:`state_dict`) into this module.

        Keys and shapes must match exactly; otherwise a ValueError lists every missing,
        unexpected and mismatched key, and nothing is changed. Parameters are written
        in place (keeping their dtype); buffers are replaced by copies. Values may be
        anything ``np.asarray`` accepts (a PyTorch state dict works too).
        """
        entries = {
            key: (m, name, is_param) for key, m, name, is_param in self._state_entries()
        }
        _check_state(type(self).__name__, entries, state)
        for key, (m, name, is_param) in entries.items():
            value = np.asarray(state[key])
            if is_param:
                np.copyto(m.params[name], value)
            else:
                setattr(m, name, _like(getattr(m, name), value))

    # ------------------------------------------------------------ checks
    def _need_cache(self):
        if self._cache is None:
            raise ValueError(
                f"{type(self).__name__}.backward called before any forward "
                "(expected a forward pass in this mode first)"
            )
        return self._cache

    def _check_dout(self, dout, shape):
        name = type(self).__name__
        F.check_float_array(dout, f"{name}.backward: dout")
        if np.shape(dout) != tuple(shape):
            raise ValueError(
                f"{name}.backward: expected dout of shape {tuple(shape)} "
                f"(the last forward's output), got {np.shape(dout)}"
            )

    def _check_float(self, x):
        """``x`` if it is a float numpy array; else a TypeError naming this module."""
        return F.check_float_array(x, f"{type(self).__name__} input")

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"


def _check_state(owner, entries, state):
    """Raise one ValueError listing every key or shape of ``state`` that does not
    match ``entries``."""
    missing = [k for k in entries if k not in state]
    unexpected = [k for k in state if k not in entries]
    mismatched = []
    for key in entries.keys() & state.keys():
        m, name, is_param = entries[key]
        want = np.shape(m.params[name] if is_param else getattr(m, name))
        got = np.shape(state[key])
        if want != got:
            mismatched.append(f"{key}: expected shape {want}, got {got}")
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if mismatched:
        problems.append("shape mismatch for " + "; ".join(sorted(mismatched)))
    if problems:
        raise ValueError(
            f"{owner}.load_state_dict: " + "; ".join(problems) + " (nothing was loaded)"
        )


def _like(current, value):
    """A copy of ``value`` with the type (and dtype) of the buffer it replaces."""
    if isinstance(current, np.ndarray):
        return np.array(value, dtype=current.dtype, copy=True)
    return type(current)(value.item())


def _check_rank(module, x, ranks, what):
    if x.ndim not in ranks:
        raise ValueError(
            f"{type(module).__name__}: expected {what}, got a "
            f"{x.ndim}-D input of shape {x.shape}"
        )


def _check_size(module, x, axis, expected, what):
    if x.shape[axis] != expected:
        raise ValueError(
            f"{type(module).__name__}: expected {expected} {what} "
            f"(axis {axis}), got input of shape {x.shape}"
        )


def _init_uniform(module, shape, fan_in, bias, rng):
    """PyTorch's default initialization of a Linear or Conv1d: weight of ``shape`` and
    bias (shape[0],) from U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound, rng = 1.0 / np.sqrt(fan_in), as_generator(rng)
    module.params["weight"] = rng.uniform(-bound, bound, shape)
    if bias:
        module.params["bias"] = rng.uniform(-bound, bound, shape[0])
    module.zero_grad()


class Linear(Module):
    """``y = x W^T + b`` on (..., in_features); weight (out, in), bias (out,).

    Initialized as in PyTorch: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
    """

    def __init__(self, in_features, out_features, bias=True, rng=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        _init_uniform(self, (out_features, in_features), in_features, bias, rng)

    def forward(self, x):
        x = self._check_float(x)
        _check_rank(self, x, range(1, 64), "an input (..., in_features)")
        _check_size(self, x, -1, self.in_features, "input features")
        w = self._weight().astype(x.dtype, copy=False)
        out = x @ w.T
        if "bias" in self.params:
            out += self.params["bias"].astype(x.dtype, copy=False)
        self._cache = x
        return out

    def backward(self, dout):
        x = self._need_cache()
        self._check_dout(dout, x.shape[:-1] + (self.out_features,))
        x2, d2 = x.reshape(-1, self.in_features), dout.reshape(-1, self.out_features)
        w = self._weight()
        self._store_weight_grad(d2.T @ x2)
        if "bias" in self.params:
            self.grads["bias"] = d2.sum(axis=0).astype(self.params["bias"].dtype)
        return dout @ w.astype(dout.dtype, copy=False)

    def _weight(self):
        """The weight matrix W, shape (out, in) (a subclass may compute it)."""
        return self.params["weight"]

    def _store_weight_grad(self, dw):
        """Store dL/dW, shape (out, in), as the gradients of the parameters."""
        self.grads["weight"] = dw.astype(self.params["weight"].dtype)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={'bias' in self.params}"


class Conv1d(Module):
    """1-D convolution (cross-correlation, as PyTorch): (N, C_in, L) to
    (N, C_out, L_out).

    weight (C_out, C_in, K), bias (C_out,);
    ``L_out = (L + 2*padding - K) // stride + 1``.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        bias=True,
        rng=None,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        shape = (out_channels, in_channels, kernel_size)
        _init_uniform(self, shape, in_channels * kernel_size, bias, rng)

    def _columns(self, x):
        """(N, C, L) -> windows (N, L_out, C, K), a strided view of the padded input."""
        p, k, s = self.padding, self.kernel_size, self.stride
        xp = np.pad(x, ((0, 0), (0, 0), (p, p))) if p else x
        win = np.lib.stride_tricks.sliding_window_view(xp, k, axis=2)  # (N, C, L', K)
        return xp, win[:, :, ::s].transpose(0, 2, 1, 3)

    def forward(self, x):
        x = self._check_float(x)
        _check_rank(self, x, (3,), "a 3-D input (N, C, L)")
        _check_size(self, x, 1, self.in_channels, "input channels")
        if x.shape[2] + 2 * self.padding < self.kernel_size:
            raise ValueError(
                f"Conv1d: input length {x.shape[2]} is shorter than the kernel "
                f"({self.kernel_size}) after padding {self.padding}"
            )
        xp, cols = self._columns(x)
        w = self.params["weight"].astype(x.dtype, copy=False)
        out = np.tensordot(cols, w, axes=([2, 3], [1, 2]))  # (N, L_out, C_out)
        if "bias" in self.params:
            out += self.params["bias"].astype(x.dtype, copy=False)
        self._cache = (x.shape, xp.shape, cols)
        return np.ascontiguousarray(out.transpose(0, 2, 1))

    def backward(self, dout):
        x_shape, xp_shape, cols = self._need_cache()
        n, l_out = x_shape[0], cols.shape[1]
        self._check_dout(dout, (n, self.out_channels, l_out))
        d = dout.transpose(0, 2, 1)  # (N, L_out, C_out)
        self.grads["weight"] = np.tensordot(d, cols, axes=([0, 1], [0, 1])).astype(
            self.params["weight"].dtype
        )
        if "bias" in self.params:
            self.grads["bias"] = d.sum(axis=(0, 1)).astype(self.params["bias"].dtype)
        w = self.params["weight"].astype(dout.dtype, copy=False)
        dcols = np.tensordot(d, w, axes=([2], [0]))  # (N, L_out, C_in, K)
        dxp = np.zeros(xp_shape, dtype=dout.dtype)
        s, k = self.stride, self.kernel_size
        for j in range(k):  # scatter each kernel tap back to its input positions
            dxp[:, :, j : j + s * (l_out - 1) + 1 : s] += dcols[:, :, :, j].transpose(
                0, 2, 1
            )
        p = self.padding
        return dxp[:, :, p : xp_shape[2] - p] if p else dxp

    def extra_repr(self):
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}"
        )


class ReLU(Module):
    """``max(x, 0)``, elementwise, as ``np.maximum``: -inf gives 0, +inf stays, NaN
    stays NaN (as in PyTorch).

    The backward passes ``dout`` where ``x > 0`` and 0 elsewhere (0 at x = 0 and at
    NaN, as PyTorch), selected rather than multiplied by a mask, so an infinite
    ``dout`` where x <= 0 gives 0, not NaN.
    """

    def forward(self, x):
        x = self._check_float(x)
        self._cache = x > 0
        return np.maximum(x, 0)

    def backward(self, dout):
        mask = self._need_cache()
        self._check_dout(dout, mask.shape)
        return np.where(mask, dout, 0)


class Sigmoid(Module):
    """1 / (1 + exp(-x)), elementwise (computed without overflow)."""

    def forward(self, x):
        x = self._check_float(x)
        e = np.exp(-np.abs(x))
        out = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(
            x.dtype, copy=False
        )
        self._cache = out
        return out

    def backward(self, dout):
        out = self._need_cache()
        self._check_dout(dout, out.shape)
        return dout * out * (1.0 - out)


class Tanh(Module):
    """tanh(x), elementwise."""

    def forward(self, x):
        self._cache = np.tanh(self._check_float(x))
        return self._cache

    def backward(self, dout):
        out = self._need_cache()
        self._check_dout(dout, out.shape)
        return dout * (1.0 - out**2)


class Dropout(Module):
    """Inverted dropout: in training zero each value with probability p and scale the
    rest by 1/(1-p); identity in evaluation.
    """

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: expected 0 <= p < 1, got p={p}")
        self.p, self.rng = p, as_generator(rng)

    def forward(self, x):
        x = self._check_float(x)
        if not self.training or self.p == 0.0:
            self._cache = np.broadcast_to(
                np.ones((), x.dtype), x.shape
            )  # identity mask, no copy
            return x
        mask = (self.rng.random(x.shape) >= self.p).astype(x.dtype) / x.dtype.type(
            1 - self.p
        )
        self._cache = mask
        return x * mask

    def backward(self, dout):
        mask = self._need_cache()
        self._check_dout(dout, mask.shape)
        return dout * mask

    def extra_repr(self):
        return f"p={self.p}"


class Flatten(Module):
    """(N, ...) -> (N, prod(...))."""

    def forward(self, x):
        if not isinstance(x, np.ndarray):
            raise TypeError(
                f"Flatten input must be a numpy array, got {type(x).__name__}"
            )
        self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        shape = self._need_cache()
        self._check_dout(dout, (shape[0], int(np.prod(shape[1:]))))
        return dout.reshape(shape)


class Sequential(Module):
    """Modules applied in order; backward runs them in reverse. Index it like a list."""

    def __init__(self, *layers):
        super().__init__()
        self.layers = list(layers)

    def children(self):
        return self.layers

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def backward(self, dout):
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def __repr__(self):
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"


class NormBase(Module):
    """Shared bookkeeping for normalization layers with an affine (weight, bias) pair.

    ``weight`` and ``bias`` keep the shape set at construction (``_param_shape``);
    ``_affine()`` checks it on every forward, so a replaced parameter of the wrong
    shape gives a clear error rather than a broadcasting one.
    """

    _param_shape: tuple = ()

    def _init_affine(self, shape, affine, bias=True):
        self._param_shape = tuple(shape)
        if affine:
            self.params["weight"] = np.ones(shape)
            if bias:
                self.params["bias"] = np.zeros(shape)
        self.zero_grad()

    def _affine(self):
        """(weight, bias), each None where absent, after checking their shapes."""
        for name, p in self.params.items():
            if np.shape(p) != self._param_shape:
                raise ValueError(
                    f"{type(self).__name__}: params['{name}'] has shape "
                    f"{np.shape(p)}, expected {self._param_shape}"
                )
        return self.params.get("weight"), self.params.get("bias")

    def _store_grads(self, dgamma, dbeta):
        for name, g in (("weight", dgamma), ("bias", dbeta)):
            if name in self.params:
                p = self.params[name]
                self.grads[name] = g.reshape(p.shape).astype(p.dtype, copy=False)

    # The backward of every normalization here: the closed form over the cached axes.
    _backward_kernel = staticmethod(fastpath.norm_backward)

    def backward(self, dout):
        """dL/dx for the last forward; fills ``grads`` with dL/dweight, dL/dbias. A
        layer whose forward reshaped x (GroupNorm) caches ``input_shape``."""
        cache = self._need_cache()
        shape = cache.get("input_shape", cache["x"].shape)
        self._check_dout(dout, shape)
        dx, dgamma, dbeta = self._backward_kernel(dout.reshape(cache["x"].shape), cache)
        self._store_grads(dgamma, dbeta)
        return dx.reshape(shape)


class BatchNormBase(NormBase):
    """BatchNorm with PyTorch semantics.

    Training: normalize with the batch mean and *biased* variance; update
    ``running = (1 - momentum) * running + momentum * batch`` where the variance
    stored is the *unbiased* one (m / (m - 1)); ``momentum=None`` gives the
    cumulative average over all batches seen. Evaluation: normalize with the
    running statistics. Running mean starts at 0, running variance at 1.

    ``backward(dout)`` returns dL/dx and *overwrites* ``grads["weight"]`` and
    ``grads["bias"]`` with this pass's dL/dgamma and dL/dbeta; PyTorch would add
    them to the gradients already there (see :class:`Module`).

    State (``state_dict()``): ``weight``, ``bias``, ``running_mean``, ``running_var``,
    ``num_batches_tracked`` (the last three only with ``track_running_stats``).
    Input: a float32 or float64 array; the output has its dtype.
    """

    _ranks: tuple = ()
    _shape_doc = ""

    def __init__(
        self,
        num_features,
        eps=1e-5,
        momentum=0.1,
        affine=True,
        track_running_stats=True,
    ):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.track_running_stats = track_running_stats
        self._init_affine((num_features,), affine)
        self.reset_running_stats()

    def reset_running_stats(self):
        self.running_mean = np.zeros(self.num_features)
        self.running_var = np.ones(self.num_features)
        self.num_batches_tracked = 0

    def buffer_names(self):
        if not self.track_running_stats:
            return ()
        return ("running_mean", "running_var", "num_batches_tracked")

    def _check_input(self, x):
        x = self._check_float(x)
        _check_rank(self, x, self._ranks, self._shape_doc)
        _check_size(self, x, 1, self.num_features, "channels")
        return x

    def forward(self, x):
        x = self._check_input(x)
        stats = None
        if self.training or not self.track_running_stats:
            m = x.size // x.shape[1]
            if m <= 1:
                raise ValueError(
                    f"{type(self).__name__}: expected more than 1 value per "
                    f"channel when training, got input of shape {x.shape} "
                    f"(m = {m}); use a larger batch, or call eval() to use "
                    "running statistics"
                )
        else:
            stats = (self.running_mean, self.running_var)
        gamma, beta = self._affine()
        out, cache = fastpath.batchnorm_forward(x, gamma, beta, self.eps, stats=stats)
        if self.training and self.track_running_stats:
            self._update_running(cache)
        self._cache = cache
        return out

    def _update_running(self, cache):
        """``running = (1 - w) * running + w * batch`` with w = momentum (or 1/n, the
        cumulative average); the variance stored is the unbiased one, m / (m - 1)
        times the batch variance."""
        m = cache["m"]
        self.num_batches_tracked += 1
        w = 1.0 / self.num_batches_tracked if self.momentum is None else self.momentum
        mean = cache["mu"].reshape(-1).astype(np.float64)
        var = cache["var"].reshape(-1).astype(np.float64)
        self.running_mean = (1 - w) * self.running_mean + w * mean
        self.running_var = (1 - w) * self.running_var + (w * m / (m - 1)) * var

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm1d(BatchNormBase):
    """BatchNorm over (N, C) or (N, C, L): per-channel statistics over N (and L)."""

    _ranks = (2, 3)
    _shape_doc = "a 2-D (N, C) or 3-D (N, C, L) input"


class BatchNorm2d(BatchNormBase):
    """BatchNorm over (N, C, H, W): per-channel statistics over N, H, W (m = N*H*W)."""

    _ranks = (4,)
    _shape_doc = "a 4-D (N, C, H, W) input"


def _check_trailing(module, x, shape):
    """ValueError unless x's last axes have ``shape``; returns the axes they occupy."""
    k = len(shape)
    if x.ndim < k or x.shape[x.ndim - k :] != shape:
        raise ValueError(
            f"{type(module).__name__}: expected input ending in {shape}, "
            f"got shape {x.shape}"
        )
    return tuple(range(x.ndim - k, x.ndim))


class LayerNorm(NormBase):
    """Normalize each example over its last ``len(normalized_shape)`` axes.

    weight and bias have shape ``normalized_shape``. No running statistics: the same
    computation in training and evaluation.
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True):
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape, self.eps = tuple(normalized_shape), eps
        self._init_affine(self.normalized_shape, elementwise_affine)

    def forward(self, x):
        x = self._check_float(x)
        axes = _check_trailing(self, x, self.normalized_shape)
        gamma, beta = self._affine()
        out, self._cache = fastpath.norm_forward(x, gamma, beta, axes, self.eps)
        return out

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"


class RMSNorm(NormBase):
    """``x / sqrt(mean(x**2) + eps) * weight`` over the last axes: LayerNorm without
    centering and without bias (Zhang & Sennrich 2019). ``eps=None`` uses the machine
    epsilon of the input dtype, as PyTorch does.
    """

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True):
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape, self.eps = tuple(normalized_shape), eps
        self._init_affine(self.normalized_shape, elementwise_affine, bias=False)

    def forward(self, x):
        x = self._check_float(x)
        _check_trailing(self, x, self.normalized_shape)
        eps = np.finfo(x.dtype).eps if self.eps is None else self.eps
        gamma, _ = self._affine()
        out, self._cache = F.rmsnorm_forward(x, gamma, len(self.normalized_shape), eps)
        return out

    _backward_kernel = staticmethod(F.norm_backward)  # the cache of rmsnorm_forward


class GroupNorm(NormBase):
    """Normalize each example over groups of ``num_channels / num_groups`` channels
    (and all spatial positions) of an ``(N, C, *spatial)`` input; per-channel weight
    and bias.
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(
                f"GroupNorm: num_channels ({num_channels}) must be divisible "
                f"by num_groups ({num_groups})"
            )
        self.num_groups, self.num_channels, self.eps = num_groups, num_channels, eps
        self._init_affine((num_channels,), affine)

    def forward(self, x):
        x = self._check_float(x)
        _check_rank(self, x, range(2, 64), "an input (N, C, *spatial)")
        _check_size(self, x, 1, self.num_channels, "channels")
        n, c, g = x.shape[0], x.shape[1], self.num_groups
        split = (1, g, c // g, 1)  # (N, C, *spatial) viewed as (N, G, C/G, positions)
        gamma, beta = (None if p is None else p.reshape(split) for p in self._affine())
        out, cache = fastpath.norm_forward(
            x.reshape(n, g, c // g, -1), gamma, beta, (2, 3), self.eps
        )
        cache["input_shape"] = x.shape
        self._cache = cache
        return out.reshape(x.shape)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}"


class InstanceNorm1d(GroupNorm):
    """Normalize each example and channel over its length axis: (N, C, L).

    GroupNorm with one channel per group. As in PyTorch, ``affine`` defaults to False
    and no running statistics are kept.
    """

    def __init__(self, num_features, eps=1e-5, affine=False):
        super().__init__(num_features, num_features, eps, affine)

    def forward(self, x):
        x = self._check_float(x)
        _check_rank(self, x, (3,), "a 3-D input (N, C, L)")
        if x.shape[2] <= 1:
            raise ValueError(
                f"InstanceNorm1d: expected more than 1 value per channel "
                f"(length L > 1), got input of shape {x.shape}"
            )
        return super().forward(x)

    def extra_repr(self):
        return f"{self.num_channels}, eps={self.eps}"
