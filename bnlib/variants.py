"""Batch-norm variants that :func:`~bnlib.make_mlp` builds by name (``norm="ghost_bn"``,
``"noisy_bn"``), built on the core layers.

* :class:`GhostBatchNorm1d`: statistics from sub-batches ("ghost batches", Hoffer et al.
  2017), so the noise of the statistics changes without changing the gradient batch.
* :class:`NoisyBatchNorm1d`: BatchNorm followed by random noise redrawn at every
  training step (Santurkar et al. 2018, Section 2.1).
"""

from __future__ import annotations

from . import functional as F
from .modules import BatchNorm1d, as_generator

__all__ = [
    "GhostBatchNorm1d",
    "NoisyBatchNorm1d",
]


class NoisyBatchNorm1d(BatchNorm1d):
    """BatchNorm1d followed by a random scale and shift, redrawn at every training
    forward pass: Santurkar et al.'s "noisy BatchNorm".

    At each training step, for the whole layer, a mean ``mu ~ U(-shift, shift)`` and a
    scale ``s ~ U(scale[0], scale[1])`` are drawn. Then

    * ``per_sample=False`` (default): each unit j gets its own ``m_j ~ N(mu,
      unit_std**2)`` and ``s_j ~ N(s, unit_std**2)``, shared by every example of the
      batch, and the output is ``s_j * BN(x)_j + m_j`` (a random jitter of gamma and
      beta at each step);
    * ``per_sample=True``: every activation of every example gets its own i.i.d.
      ``m_ij ~ N(mu, unit_std**2)`` and ``s_ij ~ N(s, unit_std**2)``, and the output is
      ``s_ij * BN(x)_ij + m_ij``: noise with non-zero mean and non-unit variance, drawn
      independently per sample, as Santurkar et al. (2018, Section 2.1) describe it.

    Either way the next layer sees inputs whose mean and variance jump from step to
    step, although BN itself normalized them. In evaluation mode the noise is off
    (plain BatchNorm with running statistics). The noise has its own ``rng``.

    Input (N, C) or (N, C, L), output the same shape.
    """

    def __init__(
        self,
        num_features,
        shift=0.5,
        scale=(1.0, 1.25),
        unit_std=0.1,
        rng=None,
        eps=1e-5,
        momentum=0.1,
        per_sample=False,
    ):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.shift, self.scale, self.unit_std = shift, tuple(scale), unit_std
        self.per_sample = bool(per_sample)
        self.rng = as_generator(rng)
        self._noise = None

    def forward(self, x):
        out = super().forward(x)
        if not self.training:
            self._noise = None
            return out
        c = self.num_features
        mu = self.rng.uniform(-self.shift, self.shift)
        s = self.rng.uniform(*self.scale)
        if self.per_sample:  # one draw per activation: shape of x
            shape = x.shape
            m = mu + self.unit_std * self.rng.standard_normal(shape)
            sc = s + self.unit_std * self.rng.standard_normal(shape)
        else:  # one draw per unit, broadcast over the batch (and length)
            shape = (1, c) + (1,) * (x.ndim - 2)
            m = (mu + self.unit_std * self.rng.standard_normal(c)).reshape(shape)
            sc = (s + self.unit_std * self.rng.standard_normal(c)).reshape(shape)
        self._noise = (sc.astype(x.dtype), m.astype(x.dtype))
        return out * self._noise[0] + self._noise[1]

    def backward(self, dout):
        if self._noise is not None:
            dout = dout * self._noise[0]
        return super().backward(dout)

    def extra_repr(self):
        return (
            f"{self.num_features}, shift={self.shift}, scale={self.scale}, "
            f"unit_std={self.unit_std}, per_sample={self.per_sample}"
        )


class GhostBatchNorm1d(BatchNorm1d):
    """BatchNorm1d whose training statistics come from "ghost" batches: the batch (N, C)
    is split into N / ghost_size consecutive groups and each group is normalized with
    its own mean and variance (Hoffer et al. 2017). The gradient batch stays N, so only
    the noise of the statistics changes with ``ghost_size``. Running statistics average
    the groups' statistics; evaluation is plain BatchNorm. Input and output (N, C).
    """

    def __init__(self, num_features, ghost_size, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps=eps, momentum=momentum)
        if ghost_size < 2:
            raise ValueError(
                f"GhostBatchNorm1d: ghost_size must be >= 2, got {ghost_size}"
            )
        self.ghost_size = ghost_size

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        self._check_input(x)
        n, c = x.shape[0], self.num_features
        g = self.ghost_size
        if x.ndim != 2 or n % g:
            raise ValueError(
                f"GhostBatchNorm1d: expected an (N, C) input with N a multiple of "
                f"ghost_size={g}, got shape {x.shape}"
            )
        gamma = self.params["weight"].reshape(1, 1, c)
        beta = self.params["bias"].reshape(1, 1, c)
        out, cache = F.norm_forward(
            x.reshape(n // g, g, c), gamma, beta, (1,), self.eps
        )
        self._update_running(
            {"m": g, "mu": cache["mu"].mean(axis=0), "var": cache["var"].mean(axis=0)}
        )
        self._cache = cache
        return out.reshape(n, c)

    def backward(self, dout):
        cache = self._need_cache()
        if cache["x"].ndim == 2:  # evaluation-mode forward
            return super().backward(dout)
        k, g, c = cache["x"].shape
        self._check_dout(dout, (k * g, c))
        dx, dgamma, dbeta = F.norm_backward(dout.reshape(k, g, c), cache)
        self._store_grads(dgamma, dbeta)
        return dx.reshape(k * g, c)

    def extra_repr(self):
        return f"{self.num_features}, ghost_size={self.ghost_size}"
