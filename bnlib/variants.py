"""Batch-norm variants and recurrent layers the chapters study, built on the core
layers.

* :class:`BatchRenorm1d`: Batch Renormalization (Ioffe 2017), batch statistics corrected
  towards the running ones by r and d, held constant in the backward pass.
* :class:`GhostBatchNorm1d`: statistics from sub-batches ("ghost batches", Hoffer et al.
  2017), so the noise of the statistics changes without changing the gradient batch.
* :class:`NoisyBatchNorm1d`: BatchNorm followed by random noise redrawn at every
  training step (Santurkar et al. 2018, Section 2.1).
* :class:`WeightNormLinear`: weight normalization (Salimans & Kingma 2016).
* :class:`NormRNN` and :class:`LastStep`: a tanh RNN with BatchNorm (statistics per time
  step, Cooijmans et al. 2017) or LayerNorm (Ba et al. 2016) inside the recurrence.
"""

from __future__ import annotations

import numpy as np

from . import functional as F
from .modules import BatchNorm1d, BatchNormBase, Linear, Module, as_generator

__all__ = [
    "BatchRenorm1d",
    "GhostBatchNorm1d",
    "NoisyBatchNorm1d",
    "WeightNormLinear",
    "NormRNN",
    "LastStep",
]


# ------------------------------------------------------------------------- Batch Renorm


class BatchRenorm1d(BatchNormBase):
    """Batch Renormalization (Ioffe 2017) for (N, C) or (N, C, L) inputs.

    Training, per channel, with batch mean ``mu_B``, ``sigma_B = sqrt(var_B + eps)``
    (biased batch variance) and the running estimates ``mu``, ``sigma``::

        # r, d: constants in the backward (no gradient flows through them)
        r = clip(sigma_B / sigma, 1/r_max, r_max)
        d = clip((mu_B - mu) / sigma, -d_max, d_max)
        x_hat = (x - mu_B) / sigma_B * r + d
        y = gamma * x_hat + beta

    Unclipped, ``x_hat = (x - mu) / sigma``: the training output is the evaluation
    output. With ``r_max = 1, d_max = 0`` it is BatchNorm. Evaluation:
    ``y = gamma (x - mu) / sigma + beta``.

    Running statistics, after r and d are computed (a = momentum, None = cumulative):

    * ``running="std"`` (the paper): ``sigma <- sigma + a (sigma_B - sigma)``, an EMA of
      the batch *standard deviations* (eps included). It is stored as
      ``running_var = sigma**2 - eps``, so that the usual ``sqrt(running_var + eps)`` is
      sigma; ``running_std`` gives sigma directly.
    * ``running="var"``: PyTorch's BatchNorm rule, an EMA of the unbiased batch
      variances, ``sigma = sqrt(running_var + eps)``. Then ``r_max=1, d_max=0``
      reproduces ``BatchNorm1d`` exactly, running statistics included.

    The paper starts with r_max = 1, d_max = 0 and relaxes them during training;
    ``r_max`` and ``d_max`` are plain attributes, so a training loop can change them.
    After a training forward, ``last_r`` and ``last_d`` (shape (C,)) hold the values
    used.
    """

    _ranks = (2, 3)
    _shape_doc = "a 2-D (N, C) or 3-D (N, C, L) input"

    def __init__(
        self,
        num_features,
        eps=1e-5,
        momentum=0.1,
        r_max=3.0,
        d_max=5.0,
        affine=True,
        running="std",
    ):
        if r_max < 1.0 or d_max < 0.0:
            raise ValueError(
                f"BatchRenorm1d: expected r_max >= 1 and d_max >= 0, "
                f"got r_max={r_max}, d_max={d_max}"
            )
        if running not in ("std", "var"):
            raise ValueError(
                f"BatchRenorm1d: running must be 'std' or 'var', got {running!r}"
            )
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(
                f"BatchRenorm1d: expected momentum in [0, 1] (or None), got {momentum}"
            )
        super().__init__(num_features, eps, momentum, affine)
        self.r_max, self.d_max, self.running = float(r_max), float(d_max), running
        self.last_r = self.last_d = None

    @property
    def running_std(self):
        """sigma, the running standard deviation used to normalize:
        ``sqrt(running_var + eps)``."""
        return np.sqrt(self.running_var + self.eps)

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        self._check_input(x)
        m = x.size // x.shape[1]
        if m <= 1:
            raise ValueError(
                f"BatchRenorm1d: expected more than 1 value per channel when "
                f"training, got input of shape {x.shape} (m = {m})"
            )
        axes = F.batch_axes(x.ndim)
        mu_b = x.mean(axis=axes).astype(np.float64)
        sigma_b = np.sqrt(x.var(axis=axes).astype(np.float64) + self.eps)
        sigma = self.running_std
        r = np.clip(sigma_b / sigma, 1.0 / self.r_max, self.r_max)
        d = np.clip((mu_b - self.running_mean) / sigma, -self.d_max, self.d_max)
        gamma, beta = self._affine()
        g = np.ones(self.num_features) if gamma is None else gamma
        b = np.zeros(self.num_features) if beta is None else beta
        # gamma * (x_hat0 * r + d) + beta == (gamma r) * x_hat0 + (gamma d + beta)
        out, cache = F.batchnorm_forward(x, g * r, g * d + b, self.eps)
        self._cache, self.last_r, self.last_d = cache, r, d
        if self.track_running_stats:
            self._update_running(cache)
        return out

    def _update_running(self, cache):
        if self.running == "var":
            return super()._update_running(cache)
        mean = cache["mu"].reshape(-1).astype(np.float64)
        sigma_b = np.sqrt(cache["var"].reshape(-1).astype(np.float64) + self.eps)
        self.num_batches_tracked += 1
        w = 1.0 / self.num_batches_tracked if self.momentum is None else self.momentum
        self.running_mean = (1 - w) * self.running_mean + w * mean
        sigma = (1 - w) * self.running_std + w * sigma_b
        self.running_var = sigma**2 - self.eps

    def backward(self, dout):
        if not self.training:
            return super().backward(dout)
        cache = self._need_cache()
        self._check_dout(dout, cache["x"].shape)
        # r and d are constants: the BatchNorm backward with effective gamma = gamma * r
        dx, dgamma_eff, dbeta = F.batchnorm_backward(dout, cache)
        # d/dgamma of gamma * (r x_hat0 + d) summed:
        # r * sum(dout x_hat0) + d * sum(dout)
        self._store_grads(self.last_r * dgamma_eff + self.last_d * dbeta, dbeta)
        return dx

    def extra_repr(self):
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"r_max={self.r_max}, d_max={self.d_max}, running={self.running!r}"
        )


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


# ------------------------------------------------------------------------- recurrent


class NormRNN(Module):
    """Elman RNN with the summed inputs normalized at every time step.

    For x of shape (N, T, D) and h_0 = 0, at each step t::

        a_t = x_t W_ih^T + h_{t-1} W_hh^T         (N, H)   summed inputs
        z_t = gamma * norm_t(a_t) + beta                    (no norm: z_t = a_t + beta)
        h_t = tanh(z_t)

    ``norm="ln"``: LayerNorm over the H units of each example (Ba et al. 2016), the same
    computation at every step, in training and evaluation. ``norm="bn"``: BatchNorm over
    the examples of the batch, *separately for each time step*, with one pair of running
    statistics per step (Cooijmans et al. 2017), each of shape (max_len, H); gamma and
    beta are shared by all steps. In evaluation a step ``t >= max_len`` has no
    statistics: ``extrapolate="error"`` raises, ``"last"`` reuses those of step
    ``max_len - 1``.

    Variable lengths: a sequence that has ended is padded with NaN. From its first NaN
    step on it is *inactive*: its hidden state is carried unchanged (so the last output
    is the state after its own last step) and it takes no part in the step's BatchNorm
    statistics. A step with a single active sequence in training normalizes it with its
    own statistics (x_hat = 0: its information is erased; PyTorch's BatchNorm would
    refuse) and does not update the running statistics.

    Parameters: ``weight_ih`` (H, D), ``weight_hh`` (H, H), ``weight`` (gamma, (H,),
    absent without a norm), ``bias`` (beta, (H,)). Output: all hidden states, (N, T, H).
    """

    def __init__(
        self,
        input_size,
        hidden_size,
        norm="ln",
        max_len=None,
        eps=1e-5,
        momentum=0.1,
        extrapolate="error",
        gamma_init=1.0,
        rng=None,
    ):
        super().__init__()
        if norm not in ("bn", "ln", None):
            raise ValueError(f"norm must be 'bn', 'ln' or None, got {norm!r}")
        if norm == "bn" and not max_len:
            raise ValueError("norm='bn' keeps statistics per time step: give max_len")
        if extrapolate not in ("error", "last"):
            raise ValueError(
                f"extrapolate must be 'error' or 'last', got {extrapolate!r}"
            )
        rng = np.random.default_rng(rng)
        self.input_size, self.hidden_size, self.norm = input_size, hidden_size, norm
        self.max_len, self.eps, self.momentum, self.extrapolate = (
            max_len,
            eps,
            momentum,
            extrapolate,
        )
        bound = 1.0 / np.sqrt(input_size)
        self.params["weight_ih"] = rng.uniform(-bound, bound, (hidden_size, input_size))
        q, r = np.linalg.qr(rng.normal(size=(hidden_size, hidden_size)))
        self.params["weight_hh"] = q * np.sign(np.diag(r))  # orthogonal
        if norm is not None:
            self.params["weight"] = np.full(hidden_size, float(gamma_init))
        self.params["bias"] = np.zeros(hidden_size)
        self.zero_grad()
        if norm == "bn":
            self.running_mean = np.zeros((max_len, hidden_size))
            self.running_var = np.ones((max_len, hidden_size))
            self.active_counts = np.zeros(max_len, dtype=np.int64)  # seen per step

    def buffer_names(self):
        if self.norm != "bn":
            return ()
        return ("running_mean", "running_var", "active_counts")

    def _stats(self, t):
        if t >= self.max_len:
            if self.extrapolate == "error":
                raise ValueError(
                    f"NormRNN(norm='bn'): no running statistics for time step {t}; "
                    f"they exist for steps 0..{self.max_len - 1} "
                    f"(max_len={self.max_len}). "
                    "Use extrapolate='last' to reuse the last step's statistics"
                )
            t = self.max_len - 1
        return self.running_mean[t], self.running_var[t]

    def _normalize(self, a, t):
        gamma, beta = self.params.get("weight"), self.params["bias"]
        if self.norm is None:
            return a + beta, None
        if self.norm == "ln":
            return F.norm_forward(a, gamma, beta, (1,), self.eps)
        stats = None if self.training else self._stats(t)
        z, cache = F.norm_forward(a, gamma, beta, (0,), self.eps, stats=stats)
        if self.training:
            self._update_running(t, cache["mu"][0], cache["var"][0], len(a))
        return z, cache

    def _update_running(self, t, mu, var, n):
        """Step t's running statistics after a training batch of n active sequences
        (none from a single one: it has no variance to estimate)."""
        if n > 1:
            mom = self.momentum
            self.running_mean[t] = (1 - mom) * self.running_mean[t] + mom * mu
            self.running_var[t] = (1 - mom) * self.running_var[t] + mom * var * n / (
                n - 1
            )
        self.active_counts[t] += n

    def _active_steps(self, x):
        """Check x (N, T, D) and return which steps each sequence takes part in,
        a boolean array (N, T): False from its first NaN (padding) on."""
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(
                f"NormRNN: expected input (N, T, {self.input_size}), got {x.shape}"
            )
        n, steps, _ = x.shape
        if self.norm == "bn" and self.training:
            if steps > self.max_len:
                raise ValueError(
                    f"NormRNN(norm='bn'): training sequence of {steps} steps is "
                    f"longer than max_len={self.max_len}"
                )
            if n < 2:
                raise ValueError(
                    f"NormRNN(norm='bn'): expected more than 1 example per batch "
                    f"when training, got N={n}"
                )
        active = ~np.isnan(x).any(axis=2)
        if np.any(active[:, 1:] & ~active[:, :-1]):
            raise ValueError(
                "NormRNN: NaN padding must come after a sequence's last step"
            )
        return active

    def forward(self, x):
        active = self._active_steps(x)
        n, steps, _ = x.shape
        w_ih, w_hh = self.params["weight_ih"], self.params["weight_hh"]
        h = np.zeros((n, self.hidden_size), dtype=x.dtype)
        out = np.empty((n, steps, self.hidden_size), dtype=x.dtype)
        caches = []
        for t in range(steps):
            idx = np.flatnonzero(active[:, t])
            full = len(idx) == n  # no sequence has ended: no row selection
            x_t, h_prev = (x[:, t], h) if full else (x[idx, t], h[idx])
            if len(idx):
                z, nc = self._normalize(x_t @ w_ih.T + h_prev @ w_hh.T, t)
                h_act = np.tanh(z)
                h = h_act if full else h.copy()
                if not full:
                    h[idx] = h_act
            else:
                nc, h_act = None, h_prev
            out[:, t] = h
            caches.append((None if full else idx, x_t, h_prev, nc, h_act))
        self._cache = caches
        return out

    def backward(self, dout):
        """Backpropagation through time. dout: dL/dh_t for every step, (N, T, H).
        Fills ``grads`` and returns dL/dx, (N, T, D) (zero at padded steps)."""
        caches = self._need_cache()
        n, steps = dout.shape[0], len(caches)
        self._check_dout(dout, (n, steps, self.hidden_size))
        w_ih, w_hh = self.params["weight_ih"], self.params["weight_hh"]
        grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        dx = np.zeros((n, steps, self.input_size), dtype=dout.dtype)
        dh = np.zeros((n, self.hidden_size), dtype=dout.dtype)  # from later steps
        for t in reversed(range(steps)):
            idx, x_t, h_prev, nc, h_act = caches[t]
            dh = dh + dout[:, t]
            if len(x_t) == 0:
                continue  # nobody active: h passes through
            dh_act = dh if idx is None else dh[idx]
            dz = dh_act * (1.0 - h_act**2)  # through tanh
            if self.norm is None:
                da = dz
                grads["bias"] += dz.sum(axis=0)
            else:
                da, dgamma, dbeta = F.norm_backward(dz, nc)  # through the normalization
                grads["weight"] += dgamma
                grads["bias"] += dbeta
            grads["weight_ih"] += da.T @ x_t
            grads["weight_hh"] += da.T @ h_prev
            dh_prev = da @ w_hh  # to the previous step
            if idx is None:
                dx[:, t] = da @ w_ih
                dh = dh_prev
            else:
                dx[idx, t] = da @ w_ih
                dh = dh.copy()
                dh[idx] = dh_prev  # inactive rows: carried as is
        self.grads = grads
        return dx

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, norm={self.norm!r}" + (
            f", max_len={self.max_len}" if self.norm == "bn" else ""
        )


class LastStep(Module):
    """(N, T, H) -> (N, H): the hidden state after the last step; backward puts the
    gradient at that step and zeros elsewhere."""

    def forward(self, x):
        self._cache = x.shape
        return x[:, -1]

    def backward(self, dout):
        shape = self._need_cache()
        dx = np.zeros(shape, dtype=dout.dtype)
        dx[:, -1] = dout
        return dx


# ------------------------------------------------------------------------- invariances


class WeightNormLinear(Linear):
    """Weight-normalized linear layer (Salimans & Kingma 2016): ``y = x W^T + b`` with
    each row ``W_i = g_i v_i / ||v_i||``.

    Parameters ``v`` (out, in), ``g`` (out,), ``bias`` (out,); input (..., in) ->
    output (..., out). The output does not change when a row of v is rescaled.
    """

    def __init__(self, in_features, out_features, bias=True, rng=None):
        Module.__init__(self)
        bound = 1.0 / np.sqrt(in_features)
        rng = np.random.default_rng(rng)
        v = rng.uniform(-bound, bound, (out_features, in_features))
        self.params["v"] = v
        self.params["g"] = np.linalg.norm(v, axis=1)  # starts equal to the plain layer
        if bias:
            self.params["bias"] = np.zeros(out_features)
        self.in_features, self.out_features = in_features, out_features
        self.zero_grad()

    def weight(self):
        """The effective weight matrix W, shape (out, in)."""
        v = self.params["v"]
        return self.params["g"][:, None] * v / np.linalg.norm(v, axis=1, keepdims=True)

    _weight = weight

    def _store_weight_grad(self, dw):
        """``dL/dg_i = dW_i . v_i / ||v_i||`` and
        ``dL/dv_i = g_i / ||v_i|| (dW_i - dL/dg_i v_hat_i)``: the part of dW_i
        orthogonal to v_i, scaled."""
        v, g = self.params["v"], self.params["g"]
        norm = np.linalg.norm(v, axis=1, keepdims=True)
        v_hat = v / norm
        dg = np.sum(dw * v_hat, axis=1)
        self.grads["g"] = dg
        self.grads["v"] = g[:, None] / norm * (dw - dg[:, None] * v_hat)
