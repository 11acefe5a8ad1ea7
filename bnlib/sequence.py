"""Normalization across axes and in recurrent networks (chapter 5).

* :func:`reduction_axes`, :func:`normalized_mask`: which entries of an
  (N, C, *spatial) tensor share one mean and variance under BN, LN, IN, GN, RMSNorm.
* :class:`NormRNN`: an Elman RNN whose summed inputs are normalized at every time
  step, by BatchNorm with per-time-step statistics or by LayerNorm per example,
  with backpropagation through time written out; :class:`LastStep` and
  :func:`rnn_classifier` turn it into a sequence classifier.
* :class:`WeightNormLinear` (Salimans & Kingma 2016) and :func:`invariance_table`,
  the numerical checks behind Table 1 of Ba, Kiros & Hinton (2016).
* :func:`conv1d_net` and :func:`batch_size_sweep`: the small Conv1d network and the
  batch-size experiment of Wu & He (2018), Figure 1.
* :func:`make_drift_task`: a synthetic sequence classification task of any length;
  :func:`drift_test_sets`, :func:`rnn_length_experiment` and
  :func:`plot_rnn_length_experiment`: BN per time step vs LN on lengths seen and unseen
  in training.
"""
from __future__ import annotations

import numpy as np

from . import functional as F
from .modules import (BatchNorm1d, Conv1d, Flatten, GroupNorm, InstanceNorm1d, Linear,
                      Module, ReLU, Sequential)
from .optim import SGD, Adam
from .train import evaluate, fit

__all__ = [
    "reduction_axes", "normalized_mask",
    "NormRNN", "LastStep", "rnn_classifier", "make_drift_task",
    "drift_test_sets", "rnn_length_experiment", "plot_rnn_length_experiment",
    "WeightNormLinear", "TRANSFORMATIONS", "BA2016_TABLE1", "invariance_table",
    "invariance_html",
    "make_norm", "conv1d_net", "batch_size_sweep",
]

# --------------------------------------------------------------------------- axes

def reduction_axes(method: str, ndim: int) -> tuple[int, ...]:
    """Axes a method averages over for an input of rank ``ndim`` laid out (N, C, *spatial).

    ======  ==========================================  ==============================
    method  axes                                         one mean per
    ======  ==========================================  ==============================
    "bn"    (0, 2, ..., ndim-1)                          channel
    "ln"    (1, 2, ..., ndim-1)                          example
    "rms"   (1, 2, ..., ndim-1), no centering            example
    "in"    (2, ..., ndim-1)                             example and channel
    "gn"    (2, 3, ..., ndim) of the *grouped view*      example and group of channels
            (N, G, C/G, *spatial), rank ndim + 1
    ======  ==========================================  ==============================

    For a transformer's (N, T, d) activations LayerNorm is applied per token, over the
    last axis only (``LayerNorm(d)``): that is "ln" with the token axis treated as batch.
    """
    if ndim < 2:
        raise ValueError(f"expected an input of rank >= 2 laid out (N, C, *spatial), got rank {ndim}")
    spatial = tuple(range(2, ndim))
    table = {"bn": (0,) + spatial, "ln": (1,) + spatial, "rms": (1,) + spatial,
             "in": spatial, "gn": tuple(range(2, ndim + 1))}
    if method not in table:
        raise ValueError(f"method must be one of {sorted(table)}, got {method!r}")
    if method == "in" and not spatial:
        raise ValueError("InstanceNorm needs at least one spatial axis (N, C, L, ...); "
                         f"got rank {ndim}")
    return table[method]


def normalized_mask(method: str, shape: tuple, index: tuple, num_groups: int = 2) -> np.ndarray:
    """Boolean mask (shape ``shape``) of the entries that share statistics with ``index``.

    ``shape`` is (N, C, *spatial); the mask marks the set one mean and one variance are
    computed over when normalizing the entry at ``index`` ("bn", "ln", "rms", "in" or
    "gn" with ``num_groups`` groups). Its sum is the group size m.
    """
    shape, index = tuple(shape), tuple(index)
    n, c = shape[:2]
    if method == "gn" and c % num_groups:
        raise ValueError(f"num_channels ({c}) must be divisible by num_groups ({num_groups})")
    nn, cc = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")
    per = {"bn": (cc,), "ln": (nn,), "rms": (nn,), "in": (nn, cc),
           "gn": (nn, cc // max(c // num_groups, 1))}
    if method not in per:
        raise ValueError(f"method must be one of {sorted(per)}, got {method!r}")
    same = np.ones((n, c), dtype=bool)
    for key in per[method]:
        same &= key == key[index[0], index[1]]
    return np.broadcast_to(same.reshape((n, c) + (1,) * (len(shape) - 2)), shape).copy()


# --------------------------------------------------------------------------- recurrent

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
    beta are shared by all steps. In evaluation a step ``t >= max_len`` has no statistics:
    ``extrapolate="error"`` raises, ``"last"`` reuses those of step ``max_len - 1``.

    Variable lengths: a sequence that has ended is padded with NaN. From its first NaN
    step on it is *inactive*: its hidden state is carried unchanged (so the last output
    is the state after its own last step) and it takes no part in the step's BatchNorm
    statistics. A step with a single active sequence in training normalizes it with its
    own statistics (x_hat = 0: its information is erased; PyTorch's BatchNorm would
    refuse) and does not update the running statistics.

    Parameters: ``weight_ih`` (H, D), ``weight_hh`` (H, H), ``weight`` (gamma, (H,), absent
    without a norm), ``bias`` (beta, (H,)). Output: all hidden states, (N, T, H).
    """

    def __init__(self, input_size, hidden_size, norm="ln", max_len=None, eps=1e-5,
                 momentum=0.1, extrapolate="error", gamma_init=1.0, rng=None):
        super().__init__()
        if norm not in ("bn", "ln", None):
            raise ValueError(f"norm must be 'bn', 'ln' or None, got {norm!r}")
        if norm == "bn" and not max_len:
            raise ValueError("norm='bn' keeps statistics per time step: give max_len")
        if extrapolate not in ("error", "last"):
            raise ValueError(f"extrapolate must be 'error' or 'last', got {extrapolate!r}")
        rng = np.random.default_rng(rng)
        self.input_size, self.hidden_size, self.norm = input_size, hidden_size, norm
        self.max_len, self.eps, self.momentum, self.extrapolate = max_len, eps, momentum, extrapolate
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
            self.active_counts = np.zeros(max_len, dtype=np.int64)  # sequences seen per step

    def _stats(self, t):
        if t >= self.max_len:
            if self.extrapolate == "error":
                raise ValueError(f"NormRNN(norm='bn'): no running statistics for time step {t}; "
                                 f"they exist for steps 0..{self.max_len - 1} (max_len={self.max_len}). "
                                 "Use extrapolate='last' to reuse the last step's statistics")
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
        n = a.shape[0]
        if self.training and n > 1:
            mom = self.momentum
            self.running_mean[t] = (1 - mom) * self.running_mean[t] + mom * cache["mu"][0]
            self.running_var[t] = ((1 - mom) * self.running_var[t]
                                   + mom * cache["var"][0] * n / (n - 1))
        if self.training:
            self.active_counts[t] += n
        return z, cache

    def forward(self, x):
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"NormRNN: expected input (N, T, {self.input_size}), got {x.shape}")
        n, steps, _ = x.shape
        if self.norm == "bn" and self.training:
            if steps > self.max_len:
                raise ValueError(f"NormRNN(norm='bn'): training sequence of {steps} steps is "
                                 f"longer than max_len={self.max_len}")
            if n < 2:
                raise ValueError(f"NormRNN(norm='bn'): expected more than 1 example per batch "
                                 f"when training, got N={n}")
        active = ~np.isnan(x).any(axis=2)                     # (N, T)
        if np.any(active[:, 1:] & ~active[:, :-1]):
            raise ValueError("NormRNN: NaN padding must come after a sequence's last step")
        w_ih, w_hh = self.params["weight_ih"], self.params["weight_hh"]
        h = np.zeros((n, self.hidden_size), dtype=x.dtype)
        out = np.empty((n, steps, self.hidden_size), dtype=x.dtype)
        caches = []
        for t in range(steps):
            idx = np.flatnonzero(active[:, t])
            full = len(idx) == n
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
        dh = np.zeros((n, self.hidden_size), dtype=dout.dtype)   # dL/dh_t from later steps
        for t in reversed(range(steps)):
            idx, x_t, h_prev, nc, h_act = caches[t]
            dh = dh + dout[:, t]
            if len(x_t) == 0:
                continue                                       # nobody active: h passes through
            dh_act = dh if idx is None else dh[idx]
            dz = dh_act * (1.0 - h_act**2)                     # through tanh
            if self.norm is None:
                da = dz
                grads["bias"] += dz.sum(axis=0)
            else:
                da, dgamma, dbeta = F.norm_backward(dz, nc)    # through the normalization
                grads["weight"] += dgamma
                grads["bias"] += dbeta
            grads["weight_ih"] += da.T @ x_t
            grads["weight_hh"] += da.T @ h_prev
            dh_prev = da @ w_hh                                # to the previous step
            if idx is None:
                dx[:, t] = da @ w_ih
                dh = dh_prev
            else:
                dx[idx, t] = da @ w_ih
                dh = dh.copy()
                dh[idx] = dh_prev                              # inactive rows: carried as is
        self.grads = grads
        return dx

    def extra_repr(self):
        return (f"{self.input_size}, {self.hidden_size}, norm={self.norm!r}"
                + (f", max_len={self.max_len}" if self.norm == "bn" else ""))


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


def rnn_classifier(input_size, hidden_size, num_classes, norm="ln", max_len=None, rng=None,
                   **rnn_kwargs):
    """``Sequential(NormRNN, LastStep, Linear)``: (N, T, D) -> logits (N, num_classes)."""
    rng = np.random.default_rng(rng)
    return Sequential(NormRNN(input_size, hidden_size, norm=norm, max_len=max_len, rng=rng,
                              **rnn_kwargs),
                      LastStep(), Linear(hidden_size, num_classes, rng=rng))


def make_drift_task(num_samples, length, rng=None, drift=0.15, noise=1.0, min_length=None):
    """Sequences whose class is the sign of a hidden drift: x_t = s * drift + noise * e_t.

    s = +1 (class 1) or -1 (class 0), e_t standard normal, one input feature. The
    evidence grows with the length, so a model that integrates over time does better on
    longer sequences. With ``min_length``, each sequence gets its own length drawn
    uniformly from min_length..length and is padded with NaN after its end.

    Returns x (num_samples, length, 1), y (num_samples,) int, lengths (num_samples,) int.
    """
    rng = np.random.default_rng(rng)
    y = rng.integers(0, 2, num_samples)
    x = (2 * y - 1)[:, None] * drift + noise * rng.normal(size=(num_samples, length))
    lengths = np.full(num_samples, length)
    if min_length is not None:
        lengths = rng.integers(min_length, length + 1, num_samples)
        x[np.arange(length)[None, :] >= lengths[:, None]] = np.nan
    return x[:, :, None], y, lengths


def drift_test_sets(max_len=30, num_samples=2000, min_length=5, rng=None):
    """Three test sets of :func:`make_drift_task`, drawn in this order from ``rng``.

    Returns ``{name: (x, y)}`` with x of shape (num_samples, T, 1) and y (num_samples,):

    * ``"lengths {min_length}-{max_len}"``: random lengths, NaN-padded to T = max_len;
    * ``"length {max_len}"``: every sequence has T = max_len steps;
    * ``"length {2 * max_len}"``: every sequence has T = 2 * max_len steps.
    """
    rng = np.random.default_rng(rng)
    return {f"lengths {min_length}-{max_len}":
                make_drift_task(num_samples, max_len, rng=rng, min_length=min_length)[:2],
            f"length {max_len}": make_drift_task(num_samples, max_len, rng=rng)[:2],
            f"length {2 * max_len}": make_drift_task(num_samples, 2 * max_len, rng=rng)[:2]}


def rnn_length_experiment(runs, tests, seeds=3, max_len=30, hidden=16, train_size=1500,
                          min_length=5, epochs=3, batch_size=16, lr=0.003, rng=None):
    """Train :func:`rnn_classifier` networks on the drift task and test them on ``tests``.

    ``runs`` maps a run name to ``(norm, variable)``: norm "bn" or "ln", and whether its
    training sequences have random lengths min_length..max_len (``True``, NaN-padded) or
    all max_len steps (``False``). ``tests`` maps a test name to ``(x, y)``, x of shape
    (N, T, 1) (e.g. from :func:`drift_test_sets`). Each of the ``seeds`` repetitions
    draws two new training sets of ``train_size`` sequences (variable, then fixed
    lengths) and, for every run in order, new initial weights and a new shuffling, all
    from ``rng``; BN falls back to the last step's statistics beyond ``max_len``
    (``extrapolate="last"``). Training: Adam(lr), ``epochs`` epochs, ``batch_size``.

    Returns ``(acc, models)``: ``acc[run][test]`` the test accuracy averaged over the
    repetitions (float), ``models[run]`` the network of the last repetition.
    """
    rng = np.random.default_rng(rng)
    models, acc = {}, {name: {t: [] for t in tests} for name in runs}
    for _ in range(seeds):
        train_sets = {True: make_drift_task(train_size, max_len, rng=rng,
                                            min_length=min_length)[:2],
                      False: make_drift_task(train_size, max_len, rng=rng)[:2]}
        for name, (norm, variable) in runs.items():
            model = rnn_classifier(1, hidden, 2, norm=norm, max_len=max_len,
                                   extrapolate="last", rng=rng)
            fit(model, Adam(model, lr=lr), *train_sets[variable],
                epochs=epochs, batch_size=batch_size, rng=rng, progress=False)
            models[name] = model
            for t, data_t in tests.items():
                acc[name][t].append(evaluate(model, *data_t)[1])
    acc = {name: {t: float(np.mean(v)) for t, v in a.items()} for name, a in acc.items()}
    return acc, models


def plot_rnn_length_experiment(models, acc, runs, num_batches, num_runs=3,
                               variable="BN, lengths 5-30", fixed="BN, all length 30",
                               figsize=(10.0, 3.2)):
    """Three panels on the outcome of :func:`rnn_length_experiment`.

    Left: ``active_counts / num_batches`` of the BN layers of runs ``variable`` and
    ``fixed`` (sequences per batch behind each step's statistics, shape (max_len,)),
    with a dotted line at 2. Middle: their running variance per step, averaged over the
    hidden units ((max_len, H) -> (max_len,)). Right: bars of ``acc[run][test]`` for
    every run of ``runs`` (colour of its norm; hatched white for fixed-length training),
    grouped by test. Line labels are the run names after their first ", ".
    Returns the Figure.
    """
    import matplotlib.pyplot as plt

    from .plotting import COLORS

    rnn_var, rnn_fix = models[variable][0], models[fixed][0]
    steps = np.arange(len(rnn_var.active_counts))
    label_var, label_fix = variable.split(", ", 1)[-1], fixed.split(", ", 1)[-1]
    fig, (a0, a1, a2) = plt.subplots(1, 3, figsize=figsize)
    fixed_style = dict(color=COLORS["reference"], ls="--", label=label_fix)
    a0.plot(steps, rnn_var.active_counts / num_batches, color=COLORS["bn"],
            label=label_var)
    a0.plot(steps, rnn_fix.active_counts / num_batches, **fixed_style)
    a0.axhline(2, color="k", lw=0.8, ls=":")
    a0.set_xlabel("time step t")
    a0.set_ylabel("sequences per batch at step t")
    a0.set_title("who contributes to BN's statistics")
    a0.legend(fontsize=8)
    a1.plot(steps, rnn_var.running_var.mean(axis=1), color=COLORS["bn"],
            label=label_var)
    a1.plot(steps, rnn_fix.running_var.mean(axis=1), **fixed_style)
    a1.set_xlabel("time step t")
    a1.set_ylabel("running variance of $a_t$")
    a1.set_title("per-step statistics")
    a1.legend(fontsize=8)
    tests = list(next(iter(acc.values())))
    width = 0.27
    for k, (name, (norm, variable_lengths)) in enumerate(runs.items()):
        style = (dict(color=COLORS[norm]) if variable_lengths else
                 dict(color="white", edgecolor=COLORS[norm], hatch="///"))
        a2.bar(np.arange(len(tests)) + (k - (len(runs) - 1) / 2) * width,
               [acc[name][t] for t in tests], width, label=name, **style)
    a2.set_xticks(np.arange(len(tests)),
                  ["test {}\n{}".format(*t.split(" ", 1)) for t in tests])
    a2.set_ylim(0.5, 0.9)
    a2.set_ylabel("test accuracy")
    a2.set_title(f"mean accuracy over {num_runs} runs")
    a2.legend(fontsize=7, loc="upper left")
    return fig


# --------------------------------------------------------------------------- invariances

class WeightNormLinear(Module):
    """Weight-normalized linear layer (Salimans & Kingma 2016): ``y = x W^T + b`` with
    each row ``W_i = g_i v_i / ||v_i||``.

    Parameters ``v`` (out, in), ``g`` (out,), ``bias`` (out,); input (..., in) ->
    output (..., out). The output does not change when a row of v is rescaled.
    """

    def __init__(self, in_features, out_features, bias=True, rng=None):
        super().__init__()
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

    def forward(self, x):
        if x.shape[-1] != self.in_features:
            raise ValueError(f"WeightNormLinear: expected input (..., {self.in_features}), "
                             f"got {x.shape}")
        out = x @ self.weight().T
        if "bias" in self.params:
            out = out + self.params["bias"]
        self._cache = x
        return out

    def backward(self, dout):
        x = self._need_cache()
        self._check_dout(dout, x.shape[:-1] + (self.out_features,))
        x2, d2 = x.reshape(-1, self.in_features), dout.reshape(-1, self.out_features)
        dw = d2.T @ x2                                          # dL/dW, (out, in)
        v, g = self.params["v"], self.params["g"]
        norm = np.linalg.norm(v, axis=1, keepdims=True)
        v_hat = v / norm
        dg = np.sum(dw * v_hat, axis=1)                         # dL/dg_i = dW_i . v_i/||v_i||
        self.grads["g"] = dg
        self.grads["v"] = g[:, None] / norm * (dw - dg[:, None] * v_hat)
        if "bias" in self.params:
            self.grads["bias"] = d2.sum(axis=0)
        return dout @ self.weight()


def _transform(name, w, x, rng):
    """Apply one of :data:`TRANSFORMATIONS` to the weights (C, D) and data (N, D, L)."""
    c, d = w.shape
    if name == "weight matrix re-scaling":
        return 2.7 * w, x
    if name == "weight matrix re-centering":
        return w + rng.normal(size=(1, d)), x             # the same vector added to every row
    if name == "weight vector re-scaling":
        return w * rng.uniform(0.3, 3.0, size=(c, 1)), x  # each row its own factor
    if name == "dataset re-scaling":
        return w, 2.7 * x
    if name == "dataset re-centering":
        return w, x + rng.normal(size=(1, d, 1))          # the same shift for every example
    if name == "single training case re-scaling":
        return w, x * rng.uniform(0.3, 3.0, size=(x.shape[0], 1, 1))
    raise ValueError(f"unknown transformation {name!r}; expected one of {TRANSFORMATIONS}")


#: The six transformations of Ba, Kiros & Hinton (2016), Table 1, in its column order.
TRANSFORMATIONS = ("weight matrix re-scaling", "weight matrix re-centering",
                   "weight vector re-scaling", "dataset re-scaling", "dataset re-centering",
                   "single training case re-scaling")

#: Ba, Kiros & Hinton (2016), Table 1: True = invariant.
BA2016_TABLE1 = {
    "bn": dict(zip(TRANSFORMATIONS, (True, False, True, True, True, False))),
    "wn": dict(zip(TRANSFORMATIONS, (True, False, True, False, False, False))),
    "ln": dict(zip(TRANSFORMATIONS, (True, True, False, True, False, True))),
}


def _normalized_layer(method, w, x, eps, num_groups):
    """Normalized summed inputs of a linear layer applied at every position.

    w: (C, D); x: (N, D, L). Returns (N, C, L): a = W x per position, then the method's
    normalization ("bn", "ln", "in", "gn", "rms") or weight normalization ("wn").
    """
    a = np.einsum("cd,ndl->ncl", w, x)
    if method == "wn":
        return a / np.linalg.norm(w, axis=1)[None, :, None]
    if method == "gn":
        n, c, length = a.shape
        out, _ = F.norm_forward(a.reshape(n, num_groups, c // num_groups, length), None, None,
                                (2, 3), eps)
        return out.reshape(a.shape)
    out, _ = F.norm_forward(a, None, None, reduction_axes(method, 3), eps,
                            center=method != "rms")
    return out


def invariance_table(methods=("bn", "wn", "ln"), length=1, num_examples=16, in_features=6,
                     out_features=8, num_groups=2, eps=1e-12, tol=1e-6, rng=0,
                     return_changes=False):
    """Check numerically which transformation leaves each method's output unchanged.

    A linear layer with weights W (out_features, in_features) is applied at each of
    ``length`` positions of data x (num_examples, in_features, length) (length 1 is the
    fully connected case of Ba et al. 2016), then normalized by each method. For every
    transformation in :data:`TRANSFORMATIONS`, the layer's normalized output before and
    after is compared: invariant means a relative change below ``tol`` (eps is tiny so
    that it does not blur the answer).

    Returns ``{method: {transformation: bool}}`` (and, with ``return_changes=True``, also
    the relative changes in the same layout).
    """
    rng = np.random.default_rng(rng)
    w = rng.normal(size=(out_features, in_features))
    x = rng.normal(size=(num_examples, in_features, length)) + rng.normal(size=(1, in_features, 1))
    table, changes = {}, {}
    for method in methods:
        base = _normalized_layer(method, w, x, eps, num_groups)
        table[method], changes[method] = {}, {}
        for k, name in enumerate(TRANSFORMATIONS):
            w2, x2 = _transform(name, w, x, np.random.default_rng([k, 7]))
            new = _normalized_layer(method, w2, x2, eps, num_groups)
            change = float(np.linalg.norm(new - base) / np.linalg.norm(base))
            changes[method][name] = change
            table[method][name] = change < tol
    return (table, changes) if return_changes else table


def invariance_html(table, labels=None):
    """An HTML table (str) of ``{method: {transformation: bool}}``: one row per method, one
    column per transformation, cells "yes" (invariant) or "no". ``labels`` maps method
    keys to row names."""
    labels = labels or {}
    cols = list(next(iter(table.values())))
    head = "".join(f"<th>{c}</th>" for c in cols)
    rows = []
    for method, row in table.items():
        cells = "".join(f"<td>{'<b>yes</b>' if row[c] else 'no'}</td>" for c in cols)
        rows.append(f"<tr><td>{labels.get(method, method)}</td>{cells}</tr>")
    return (f"<table class=\"table\"><thead><tr><th>invariant?</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


# --------------------------------------------------------------------------- batch size

def make_norm(kind, channels, num_groups=4):
    """A normalization layer for (N, C, L) activations, or None for ``"none"``.

    ``"bn"`` BatchNorm1d(C) (statistics over N and L); ``"ln"`` GroupNorm(1, C), i.e.
    LayerNorm over (C, L) with per-channel gamma and beta, as in Wu & He (2018);
    ``"gn"`` GroupNorm(num_groups, C); ``"in"`` InstanceNorm1d(C, affine=True).
    """
    if kind == "bn":
        return BatchNorm1d(channels)
    if kind == "ln":
        return GroupNorm(1, channels)
    if kind == "gn":
        return GroupNorm(num_groups, channels)
    if kind == "in":
        return InstanceNorm1d(channels, affine=True)
    if kind == "none":
        return None
    raise ValueError(f"norm must be 'bn', 'ln', 'gn', 'in' or 'none', got {kind!r}")


def conv1d_net(norm="bn", channels=32, num_layers=3, num_groups=4, length=40, in_channels=1,
               num_classes=10, kernel_size=5, rng=None):
    """Blocks of Conv1d(stride 2) -> norm -> ReLU, then Flatten -> Linear.

    Input (N, in_channels, length) -> logits (N, num_classes). Each block halves the
    length (40 -> 20 -> 10 -> 5 with three blocks). The convolutions have no bias when a
    normalization follows (its beta does that job). "ln" and "gn" are GroupNorm layers
    (see :func:`make_norm`).
    """
    rng = np.random.default_rng(rng)
    layers, c_in, size = [], in_channels, length
    for _ in range(num_layers):
        layers.append(Conv1d(c_in, channels, kernel_size, stride=2, padding=kernel_size // 2,
                             bias=norm == "none", rng=rng))
        layer = make_norm(norm, channels, num_groups)
        if layer is not None:
            layers.append(layer)
        layers.append(ReLU())
        c_in, size = channels, (size + 2 * (kernel_size // 2) - kernel_size) // 2 + 1
    layers += [Flatten(), Linear(channels * size, num_classes, rng=rng)]
    return Sequential(*layers)


def batch_size_sweep(data, norms=("bn", "ln", "gn"), batch_sizes=(2, 4, 8, 16, 32, 64),
                     epochs=1, optimizer="adam", lr=0.01, ref_batch=32, train_size=None, rng=0,
                     **net_kwargs):
    """Train :func:`conv1d_net` for each norm and batch size; return test errors.

    Every run sees the same number of epochs over the same (first ``train_size``)
    training examples and starts from the same seed. The learning rate is scaled with
    the batch size b: ``lr * b / ref_batch`` for ``optimizer="sgd"`` (momentum 0.9, the
    linear scaling rule of Wu & He 2018) and ``lr * sqrt(b / ref_batch)`` for ``"adam"``.
    ``data`` is a :class:`bnlib.Dataset` with x of shape (N, C, L).

    Returns ``{norm: np.array of test errors in %, one per batch size}``.
    """
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    xs, ys = data.x_train[:train_size], data.y_train[:train_size]
    errors = {}
    for norm in norms:
        errs = []
        for b in batch_sizes:
            model = conv1d_net(norm, length=xs.shape[-1], in_channels=xs.shape[1], rng=rng,
                               **net_kwargs)
            if optimizer == "sgd":
                opt = SGD(model, lr=lr * b / ref_batch, momentum=0.9)
            else:
                opt = Adam(model, lr=lr * np.sqrt(b / ref_batch))
            fit(model, opt, xs, ys, epochs=epochs, batch_size=b, rng=rng, progress=False)
            errs.append(100.0 * (1.0 - evaluate(model, data.x_test, data.y_test)[1]))
        errors[norm] = np.array(errs)
    return errors
