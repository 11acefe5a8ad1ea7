"""Model builders shared by the chapters, with one convention for normalization.

Every builder takes ``norm=``, one of:

* ``None``: no normalization (the layer before keeps its bias);
* a name: ``"bn"`` BatchNorm1d, ``"ln"`` LayerNorm (as ``GroupNorm(1, C)``, per-channel
  gamma and beta), ``"gn"`` GroupNorm, ``"in"`` InstanceNorm1d, or a name
  a chapter module added with :func:`register_norm` (chapter 4: ``"noisy_bn"``,
  ``"ghost_bn"``);
* a callable ``num_features -> Module``, e.g.
  ``lambda c: BatchNorm1d(c, momentum=0.01)``.

:func:`norm_layer` turns any of them into a layer. When a normalization follows a Linear
or Conv1d, that layer has no bias: beta does its job.
"""

from __future__ import annotations

from collections.abc import Callable

from .modules import (
    BatchNorm1d,
    Conv1d,
    Dropout,
    Flatten,
    GroupNorm,
    InstanceNorm1d,
    Linear,
    Module,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
    as_generator,
)

__all__ = [
    "ACTIVATIONS",
    "NORMS",
    "norm_layer",
    "register_norm",
    "make_mlp",
    "conv1d_net",
]

#: Activation names accepted by :func:`make_mlp` (``"linear"`` means no nonlinearity).
ACTIVATIONS = {"sigmoid": Sigmoid, "tanh": Tanh, "relu": ReLU, "linear": None}

#: Normalization names accepted by every builder's ``norm=``.
NORMS = ("bn", "ln", "gn", "in")

Norm = str | Callable[[int], Module] | None

#: Names added by :func:`register_norm`: name -> factory(num_features, **options).
_REGISTERED: dict[str, Callable[..., Module]] = {}


def register_norm(name: str, factory: Callable[..., Module]):
    """Let every builder's ``norm=`` accept ``name``, for a normalization that one
    chapter studies (its module registers it on import). ``factory(num_features,
    rng=rng, **options)`` builds the layer; ``options`` are the keyword arguments of
    :func:`norm_layer` that it does not use itself."""
    if name in NORMS:
        raise ValueError(f"register_norm: {name!r} is built in")
    _REGISTERED[name] = factory


def norm_layer(
    norm: Norm,
    num_features: int,
    *,
    num_groups: int = 4,
    rng=None,
    **options,
) -> Module | None:
    """The normalization layer ``norm`` names for ``num_features`` channels, or None.

    ``num_groups`` is used by ``"gn"``; ``rng`` and ``options`` go to a name added by
    :func:`register_norm`. Inputs of the layers: (N, C) or (N, C, L).
    """
    if options and norm not in _REGISTERED:
        raise TypeError(f"norm_layer: unexpected {sorted(options)} for norm={norm!r}")
    if norm is None:
        return None
    if callable(norm):
        return norm(num_features)
    if norm == "bn":
        return BatchNorm1d(num_features)
    if norm == "ln":
        return GroupNorm(1, num_features)
    if norm == "gn":
        return GroupNorm(num_groups, num_features)
    if norm == "in":
        return InstanceNorm1d(num_features, affine=True)
    if norm in _REGISTERED:
        return _REGISTERED[norm](num_features, rng=rng, **options)
    names = NORMS + tuple(_REGISTERED)
    raise ValueError(f"norm must be None, a callable or one of {names}, got {norm!r}")


def make_mlp(
    sizes,
    activation="sigmoid",
    norm: Norm = None,
    rng=None,
    *,
    position="before",
    weight_scale=1.0,
    dropout=0.0,
    **norm_options,
) -> Sequential:
    """A fully connected network ``Linear -> [norm] -> activation -> ... -> Linear``.

    Args:
        sizes: layer widths ``[d_in, h_1, ..., h_k, d_out]``: k hidden layers, each
            ``Linear(h_{i-1}, h_i)`` followed by normalization and the activation, then
            a final ``Linear(h_k, d_out)`` giving the logits (N, d_out).
        activation: ``"sigmoid"``, ``"tanh"``, ``"relu"`` or ``"linear"`` (none: a deep
            linear network).
        norm: see the module docstring; ``norm_options`` go to :func:`norm_layer`.
        rng: seed or Generator for the weights (and the noise and dropout streams).
        position: ``"before"`` the nonlinearity (Ioffe & Szegedy's placement; the Linear
            has no bias) or ``"after"`` it (the Linear keeps its bias).
        weight_scale: multiplies every initial weight matrix (PyTorch's
            U(-1/sqrt(fan_in), 1/sqrt(fan_in)) init times this).
        dropout: if > 0, a :class:`~bnlib.Dropout` after each hidden activation (so it
            sits before the next layer's normalization).

    Returns:
        a :class:`~bnlib.Sequential` mapping (N, d_in) to (N, d_out).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"make_mlp: activation must be one of {sorted(ACTIVATIONS)}, "
            f"got {activation!r}"
        )
    if position not in ("before", "after"):
        raise ValueError(
            f"make_mlp: position must be 'before' or 'after', got {position!r}"
        )
    if len(sizes) < 2:
        raise ValueError(
            f"make_mlp: expected at least [d_in, d_out], got sizes={sizes}"
        )
    rng = as_generator(rng)
    act = ACTIVATIONS[activation]
    layers = []
    for d_in, d_out in zip(sizes[:-2], sizes[1:-1]):
        lin = Linear(d_in, d_out, bias=norm is None or position == "after", rng=rng)
        lin.params["weight"] *= weight_scale
        normalize = norm_layer(norm, d_out, rng=rng.spawn(1)[0], **norm_options)
        block = [lin, normalize, act() if act else None]
        if position == "after":
            block[1], block[2] = block[2], block[1]
        layers += [layer for layer in block if layer is not None]
        if dropout:
            layers.append(Dropout(dropout, rng=rng.spawn(1)[0]))
    last = Linear(sizes[-2], sizes[-1], rng=rng)
    last.params["weight"] *= weight_scale
    return Sequential(*layers, last)


def conv1d_net(
    norm: Norm = "bn",
    channels=32,
    num_layers=3,
    num_groups=4,
    length=40,
    in_channels=1,
    num_classes=10,
    kernel_size=5,
    rng=None,
) -> Sequential:
    """Blocks of Conv1d(stride 2) -> norm -> ReLU, then Flatten -> Linear.

    Input (N, in_channels, length) -> logits (N, num_classes). Each block halves the
    length (40 -> 20 -> 10 -> 5 with three blocks).
    """
    rng = as_generator(rng)
    layers, c_in, size = [], in_channels, length
    pad = kernel_size // 2
    for _ in range(num_layers):
        layers.append(
            Conv1d(
                c_in,
                channels,
                kernel_size,
                stride=2,
                padding=pad,
                bias=norm is None,
                rng=rng,
            )
        )
        normalize = norm_layer(norm, channels, num_groups=num_groups)
        layers += ([normalize] if normalize is not None else []) + [ReLU()]
        c_in, size = channels, (size + 2 * pad - kernel_size) // 2 + 1
    return Sequential(*layers, Flatten(), Linear(channels * size, num_classes, rng=rng))
