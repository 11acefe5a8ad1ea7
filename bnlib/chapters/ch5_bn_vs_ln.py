"""Normalization across axes and in recurrent networks (chapter 5).

* :func:`reduction_axes`, :func:`normalized_mask`, :func:`plot_norm_axes`: which
  entries of an ``(N, C, *spatial)`` tensor share one mean and variance under BN, LN,
  IN, GN, RMSNorm.
* :func:`invariance_table`: the numerical checks behind Table 1 of Ba, Kiros & Hinton
  (2016), with :class:`WeightNormLinear`.
* :func:`statistics_pool`, :func:`entry_statistics`, :func:`which_axes_view`,
  :func:`which_axes_frames`, :func:`which_axes_widget`: the live "which axes" figure
  (one value's statistics across random batches).
* :func:`batch_size_sweep`: the batch-size experiment of Wu & He (2018), Figure 1, on
  :func:`bnlib.conv1d_net`; :class:`WSConv1d`, :func:`ws_gn_run`: GN with Weight
  Standardization.
* :func:`make_drift_task`: a synthetic sequence classification task of any length;
  :func:`drift_test_sets`, :func:`rnn_length_experiment`: BN per time step vs LN
  (:class:`NormRNN`, :class:`LastStep`,
  :func:`rnn_classifier`) on lengths seen and unseen in training;
  :func:`bayes_accuracy` (the best possible accuracy) and their figure.
* :func:`batch_size_sweep_seeds` runs :func:`batch_size_sweep` over several seeds in
  parallel processes; ``python -m bnlib.chapters.ch5_bn_vs_ln --help`` runs it from the
  command line.
* Transformers: :class:`ResidualStack` and :func:`layer_gradient_norms` (pre-LN vs
  post-LN at initialization), :func:`influence_matrix` (BN over tokens leaks the future
  into a causal layer).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import matplotlib.pyplot as plt
import numpy as np

from .. import functional as F
from ..exercises import answer_key
from ..models import conv1d_net
from ..modules import Conv1d, Linear, Module, Sequential, as_generator
from ..optim import SGD, Adam
from ..plotting import COLORS, LABELS, markdown_table
from ..train import evaluate, fit, parallel_map

__all__ = [
    "NormRNN",
    "LastStep",
    "rnn_classifier",
    "WeightNormLinear",
    "plot_norm_axes",
    "statistics_pool",
    "entry_statistics",
    "which_axes_view",
    "which_axes_frames",
    "which_axes_widget",
    "reduction_axes",
    "normalized_mask",
    "make_drift_task",
    "drift_test_sets",
    "rnn_length_experiment",
    "TRANSFORMATIONS",
    "BA2016_TABLE1",
    "invariance_table",
    "invariance_markdown",
    "batch_size_sweep",
    "WSConv1d",
    "weight_standardize",
    "ws_gn_run",
    "sweep_seeds",
    "batch_size_sweep_seeds",
    "plot_batch_size_sweep",
    "bayes_accuracy",
    "plot_rnn_accuracies",
    "ResidualStack",
    "layer_gradient_norms",
    "plot_layer_gradients",
    "causal_mean",
    "normalize_tokens",
    "influence_matrix",
    "plot_influence",
]

# ------------------------------------------------------------ normalized axes


def plot_norm_axes(
    methods=("bn", "ln", "in", "gn"),
    shape=(4, 6, 5),
    num_groups=2,
    index=(1, 1, 0),
    figsize=(6.0, 5.0),
):
    """Four (N, C, spatial) blocks, two per row, with the set sharing one mean and
    variance shaded.

    Each panel draws an activation tensor of ``shape`` = (N, C, spatial) as a block of
    voxels (C to the right, N into the page, the flattened spatial axes H, W upwards)
    and fills, in the method's book colour, the entries normalized together with the
    entry at ``index`` (from :func:`normalized_mask`; "gn" uses ``num_groups``).

    Returns:
        The Figure; each axes has ``gid="norm-axes:<method>"`` and, as ``ax.mask``, the
        boolean mask (shape ``shape``) it shaded.
    """

    n, c, s = shape
    ncols = min(2, len(methods))
    nrows = -(-len(methods) // ncols)
    fig = plt.figure(figsize=figsize, layout="constrained")
    for k, method in enumerate(methods):
        ax = fig.add_subplot(nrows, ncols, k + 1, projection="3d")
        mask = normalized_mask(method, shape, index, num_groups)
        shaded = mask.transpose(1, 0, 2)  # voxel axes: x = C, y = N, z = HW
        ax.voxels(~shaded, facecolors="#d9d9d920", edgecolor="#9090907f", linewidth=0.4)
        ax.voxels(shaded, facecolors=COLORS[method], edgecolor="#404040", linewidth=0.5)
        ax.set_box_aspect((c, n, s), zoom=1.1)
        ax.view_init(elev=22, azim=-58)
        ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
        ax.set_xlabel("C", labelpad=-12)
        ax.set_ylabel("N", labelpad=-12)
        ax.set_zlabel("H, W", labelpad=-12)
        for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
            axis.pane.set_visible(False)
            axis.line.set_color("0.5")
        ax.grid(False)
        title = LABELS[method] + (f" (G={num_groups})" if method == "gn" else "")
        ax.set_title(f"{title}\nm = {int(mask.sum())}", fontsize=10)
        ax.set_gid(f"norm-axes:{method}")
        ax.mask = mask
    return fig


# ------------------------------------------------------------- which axes: live


def statistics_pool(size=256, shape=(8, 4), seed=0):
    """A pool of ``size`` examples of shape (C, P) = ``shape`` whose statistics differ
    from example to example: ``x[n, c, p] = a_n + b_c + s_n e`` with an offset a_n and
    a scale s_n per example, an offset b_c per channel and e standard normal.
    Returns an array (size, C, P)."""
    rng = np.random.default_rng(seed)
    c, p = shape
    a = rng.normal(0.0, 1.0, (size, 1, 1))
    b = rng.normal(0.0, 1.0, (1, c, 1))
    s = np.exp(rng.normal(0.0, 0.4, (size, 1, 1)))
    return a + b + s * rng.normal(size=(size, c, p))


def entry_statistics(pool, method, batch_size, num_groups=2, num_batches=100, seed=0):
    """The mean and standard deviation with which ``method`` normalizes one entry,
    example 0's first value (channel 0, position 0), in ``num_batches`` random batches
    of ``batch_size``: example 0 and ``batch_size - 1`` others drawn from the rest of
    ``pool`` (N, C, P) without replacement.

    Statistics come from :func:`bnlib.functional.norm_forward` with the axes of
    :func:`reduction_axes` ("gn" on the grouped view). Returns ``(mu, sigma)``, each of
    shape (num_batches,); for "ln", "in" and "gn" every entry is the same.
    """
    rng = np.random.default_rng(seed)
    n, c, p = pool.shape
    mus, sigmas = np.empty(num_batches), np.empty(num_batches)
    for k in range(num_batches):
        others = 1 + rng.choice(n - 1, size=batch_size - 1, replace=False)
        x = pool[np.concatenate([[0], others])]
        if method == "gn":
            x = x.reshape(batch_size, num_groups, c // num_groups, p)
        _, cache = F.norm_forward(x, None, None, reduction_axes(method, 3), eps=0.0)
        x_hat = cache["x_hat"].reshape(-1)[0]
        sigmas[k] = 1.0 / np.ravel(cache["inv_std"])[0]
        mus[k] = pool[0, 0, 0] - x_hat * sigmas[k]
    return mus, sigmas


def which_axes_view(method="bn", batch_size=4, num_groups=2, pool=None, seed=0):
    """The live figure of "which axes": left, a batch of ``batch_size`` examples of
    shape (C, P) drawn as a grid (one row per example, C blocks of P cells), the values
    that share one mean and variance with example 0's first value coloured; right, the
    mean that value is normalized with, over 60 random batches, for BN, LN, IN and GN.

    Returns ``(fig, stats)`` with ``stats = {method: standard deviation of the mean
    across batches}`` and ``stats["m"]``, the values behind each statistic.
    """
    fig = plt.figure(figsize=(7.5, 3.4), layout=None)
    stats = _draw_which_axes(fig, method, batch_size, num_groups, pool, seed)
    return fig, stats


def _draw_which_axes(fig, method, batch_size, num_groups, pool, seed):
    """Draw :func:`which_axes_view`'s two panels into ``fig`` (cleared first)."""
    pool = statistics_pool(seed=seed) if pool is None else pool
    _, c, p = pool.shape
    fig.clf()
    a0, a1 = fig.add_gridspec(
        1, 2, width_ratios=(1.5, 1), left=0.08, right=0.98, bottom=0.2, top=0.9
    ).subplots()
    mask = normalized_mask(method, (batch_size, c, p), (0, 0, 0), num_groups)
    grid = mask.reshape(batch_size, c * p).astype(float)
    cmap = plt.matplotlib.colors.ListedColormap(["#eeeeee", COLORS[method]])
    a0.pcolormesh(grid, cmap=cmap, vmin=0, vmax=1, edgecolors="white", linewidth=0.6)
    for k in range(1, c):
        a0.axvline(k * p, color="0.3", lw=1.2)
    a0.add_patch(plt.Rectangle((0, 0), 1, 1, fill=False, ec="k", lw=2.0))
    a0.set_xlim(0, c * p)
    a0.set_ylim(batch_size, 0)
    a0.set_xticks((np.arange(c) + 0.5) * p, [str(k) for k in range(c)])
    a0.set_yticks(np.arange(batch_size) + 0.5, [str(k) for k in range(batch_size)])
    a0.tick_params(length=0)
    a0.grid(False)
    a0.set_xlabel(f"channel (each block: {p} positions)")
    a0.set_ylabel("example in the batch")
    name = LABELS[method] + (f", G = {num_groups}" if method == "gn" else "")
    a0.set_title(f"{name}: {int(mask.sum())} values share one μ, σ", fontsize=10)
    stats = {"m": int(mask.sum())}
    jitter = np.random.default_rng(seed).uniform(-0.18, 0.18, 60)
    for k, other in enumerate(("bn", "ln", "in", "gn")):
        mus, _ = entry_statistics(pool, other, batch_size, num_groups, 60, seed)
        stats[other] = float(np.std(mus))
        strong = other == method
        a1.scatter(
            k + jitter,
            mus,
            s=16 if strong else 8,
            color=COLORS[other],
            alpha=0.9 if strong else 0.35,
        )
    a1.set_xticks(range(4), ["BN", "LN", "IN", f"GN\nG={num_groups}"])
    a1.set_ylim(-3.5, 3.5)
    a1.set_ylabel("μ used for the framed value")
    a1.set_title(f"60 random batches of {batch_size}", fontsize=10)
    return stats


def which_axes_frames(pool=None, seed=0):
    """A figure and ``draw((method, batch_size, num_groups))`` for
    :func:`bnlib.plotting.scrubber`: the site's stand-in for the widget."""
    pool = statistics_pool(seed=seed) if pool is None else pool
    fig = plt.figure(figsize=(7.5, 3.4), layout=None)

    def draw(setting):
        method, b, g = setting
        return _draw_which_axes(fig, method, b, g, pool, seed)

    return fig, draw


def which_axes_widget(seed=0):
    """A batch-size slider, a method picker and a group count above the live figure of
    :func:`which_axes_view` (JupyterLab)."""
    import ipywidgets as widgets

    from ..plotting import live_figure, slider

    pool = statistics_pool(seed=seed)
    controls = {
        "batch_size": slider("batch size", 4, 2, 16, 1, integer=True, label="80px"),
        "method": widgets.ToggleButtons(
            options=[("BN", "bn"), ("LN", "ln"), ("IN", "in"), ("GN", "gn")],
            value="bn",
            description="method",
            style={"button_width": "48px"},
        ),
        "num_groups": widgets.Dropdown(
            options=[1, 2, 4, 8],
            value=2,
            description="groups G",
            layout=widgets.Layout(width="160px"),
        ),
    }

    def view(**values):
        return which_axes_view(pool=pool, seed=seed, **values)

    c = controls
    rows = [[c["batch_size"], c["num_groups"]], [c["method"]]]
    return live_figure(view, controls, rows=rows)


# --------------------------------------------------------------------------- axes


def reduction_axes(method: str, ndim: int) -> tuple[int, ...]:
    """Axes a method averages over, for an input of rank ``ndim`` laid out (N, C, ...).

    ======  ==========================================  ==============================
    method  axes                                         one mean per
    ======  ==========================================  ==============================
    "bn"    (0, 2, ..., ndim-1)                          channel
    "ln"    (1, 2, ..., ndim-1)                          example
    "rms"   (1, 2, ..., ndim-1), no centering            example
    "in"    (2, ..., ndim-1)                             example and channel
    "gn"    (2, 3, ..., ndim) of the *grouped view*      example and group of channels
            ``(N, G, C/G, *spatial)``, rank ndim + 1
    ======  ==========================================  ==============================

    For a transformer's (N, T, d) activations LayerNorm is applied per token, over the
    last axis only (``LayerNorm(d)``): "ln" with the token axis treated as batch.
    """
    if ndim < 2:
        raise ValueError(
            f"expected an input of rank >= 2 laid out (N, C, *spatial), got rank {ndim}"
        )
    spatial = tuple(range(2, ndim))
    table = {
        "bn": (0,) + spatial,
        "ln": (1,) + spatial,
        "rms": (1,) + spatial,
        "in": spatial,
        "gn": tuple(range(2, ndim + 1)),
    }
    if method not in table:
        raise ValueError(f"method must be one of {sorted(table)}, got {method!r}")
    if method == "in" and not spatial:
        raise ValueError(
            "InstanceNorm needs at least one spatial axis (N, C, L, ...); "
            f"got rank {ndim}"
        )
    return table[method]


def normalized_mask(
    method: str, shape: tuple, index: tuple, num_groups: int = 2
) -> np.ndarray:
    """Boolean mask (shape ``shape``) of the entries sharing statistics with ``index``.

    ``shape`` is ``(N, C, *spatial)``; the mask marks the set one mean and one
    variance are computed over when normalizing the entry at ``index`` ("bn", "ln",
    "rms", "in" or "gn" with ``num_groups`` groups). Its sum is the group size m.
    """
    shape, index = tuple(shape), tuple(index)
    n, c = shape[:2]
    if method == "gn" and c % num_groups:
        raise ValueError(
            f"num_channels ({c}) must be divisible by num_groups ({num_groups})"
        )
    nn, cc = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")
    per = {
        "bn": (cc,),
        "ln": (nn,),
        "rms": (nn,),
        "in": (nn, cc),
        "gn": (nn, cc // max(c // num_groups, 1)),
    }
    if method not in per:
        raise ValueError(f"method must be one of {sorted(per)}, got {method!r}")
    same = np.ones((n, c), dtype=bool)
    for key in per[method]:
        same &= key == key[index[0], index[1]]
    return np.broadcast_to(same.reshape((n, c) + (1,) * (len(shape) - 2)), shape).copy()


# ---------------------------------------------------------- sequences: recurrent layers


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


def rnn_classifier(
    input_size,
    hidden_size,
    num_classes,
    norm="ln",
    max_len=None,
    rng=None,
    **rnn_kwargs,
) -> Sequential:
    """``Sequential(NormRNN, LastStep, Linear)``: (N, T, D) -> logits (N, num_classes).

    ``norm`` is ``"ln"``, ``"bn"`` (statistics per time step: give ``max_len``) or None.
    """
    rng = as_generator(rng)
    rnn = NormRNN(
        input_size, hidden_size, norm=norm, max_len=max_len, rng=rng, **rnn_kwargs
    )
    return Sequential(rnn, LastStep(), Linear(hidden_size, num_classes, rng=rng))


def make_drift_task(
    num_samples, length, rng=None, drift=0.15, noise=1.0, min_length=None
):
    """Sequences whose class is the sign of a hidden drift: x_t = s drift + noise e_t.

    s = +1 (class 1) or -1 (class 0), e_t standard normal, one input feature. The
    evidence grows with the length, so a model that integrates over time does better on
    longer sequences. With ``min_length``, each sequence gets its own length drawn
    uniformly from min_length..length and is padded with NaN after its end.

    Returns x (num_samples, length, 1), y (num_samples,), lengths (num_samples,).
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
    return {
        f"lengths {min_length}-{max_len}": make_drift_task(
            num_samples, max_len, rng=rng, min_length=min_length
        )[:2],
        f"length {max_len}": make_drift_task(num_samples, max_len, rng=rng)[:2],
        f"length {2 * max_len}": make_drift_task(num_samples, 2 * max_len, rng=rng)[:2],
    }


def _rnn_repetition(args):
    """One repetition of :func:`rnn_length_experiment` (a top-level function, so that
    a process pool can call it): ``{run: {test: accuracy}}``."""
    runs, tests, seed, kw = args
    rng = np.random.default_rng(seed)
    max_len, min_length = kw["max_len"], kw["min_length"]
    train_sets = {
        True: make_drift_task(
            kw["train_size"], max_len, rng=rng, min_length=min_length
        )[:2],
        False: make_drift_task(kw["train_size"], max_len, rng=rng)[:2],
    }
    acc = {}
    for name, (norm, variable) in runs.items():
        model = rnn_classifier(
            1, kw["hidden"], 2, norm=norm, max_len=max_len, extrapolate="last", rng=rng
        )
        fit(
            model,
            Adam(model, lr=kw["lr"]),
            *train_sets[variable],
            epochs=kw["epochs"],
            batch_size=kw["batch_size"],
            rng=rng,
            progress=False,
        )
        acc[name] = {t: evaluate(model, *data_t)[1] for t, data_t in tests.items()}
    return acc


def rnn_length_experiment(
    runs,
    tests,
    seeds,
    jobs=1,
    max_len=30,
    hidden=16,
    train_size=1500,
    min_length=5,
    epochs=3,
    batch_size=16,
    lr=0.003,
):
    """Train :func:`rnn_classifier` networks on the drift task, test them on ``tests``.

    ``runs`` maps a run name to ``(norm, variable)``: norm "bn" or "ln", and whether its
    training sequences have random lengths min_length..max_len (``True``, NaN-padded) or
    all max_len steps (``False``). ``tests`` maps a test name to ``(x, y)``, x of shape
    (N, T, 1) (e.g. from :func:`drift_test_sets`). One repetition per integer of
    ``seeds``: its own generator draws two new training sets of ``train_size``
    sequences (variable, then fixed lengths) and, for every run in order, new initial
    weights and a new shuffling. The repetitions are independent, so they run in
    ``jobs`` processes with the same result for any ``jobs``. BN falls back to the last
    step's statistics beyond ``max_len`` (``extrapolate="last"``). Training: Adam(lr),
    ``epochs`` epochs, ``batch_size``.

    Returns ``acc[run][test]``: an array of the repetitions' test accuracies.
    """
    kw = dict(
        max_len=max_len,
        hidden=hidden,
        train_size=train_size,
        min_length=min_length,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
    )
    tasks = [(runs, tests, int(s), kw) for s in seeds]
    reps = parallel_map(_rnn_repetition, tasks, jobs)
    return {
        name: {t: np.array([r[name][t] for r in reps]) for t in tests} for name in runs
    }


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


def _transform(name, w, x, rng):
    """Apply one of :data:`TRANSFORMATIONS` to the weights (C, D) and data (N, D, L)."""
    c, d = w.shape
    if name == "weight matrix re-scaling":
        return 2.7 * w, x
    if name == "weight matrix re-centering":
        return w + rng.normal(size=(1, d)), x  # the same vector added to every row
    if name == "weight vector re-scaling":
        return w * rng.uniform(0.3, 3.0, size=(c, 1)), x  # each row its own factor
    if name == "dataset re-scaling":
        return w, 2.7 * x
    if name == "dataset re-centering":
        return w, x + rng.normal(size=(1, d, 1))  # the same shift for every example
    if name == "single training case re-scaling":
        return w, x * rng.uniform(0.3, 3.0, size=(x.shape[0], 1, 1))
    raise ValueError(
        f"unknown transformation {name!r}; expected one of {TRANSFORMATIONS}"
    )


#: The six transformations of Ba, Kiros & Hinton (2016), Table 1, in its column order.
TRANSFORMATIONS = (
    "weight matrix re-scaling",
    "weight matrix re-centering",
    "weight vector re-scaling",
    "dataset re-scaling",
    "dataset re-centering",
    "single training case re-scaling",
)


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
        out, _ = F.norm_forward(
            a.reshape(n, num_groups, c // num_groups, length), None, None, (2, 3), eps
        )
        return out.reshape(a.shape)
    out, _ = F.norm_forward(
        a, None, None, reduction_axes(method, 3), eps, center=method != "rms"
    )
    return out


def invariance_table(
    methods=("bn", "wn", "ln"),
    length=1,
    num_examples=16,
    in_features=6,
    out_features=8,
    num_groups=2,
    eps=1e-12,
    tol=1e-6,
    rng=0,
    return_changes=False,
):
    """Check numerically which transformation leaves each method's output unchanged.

    A linear layer with weights W (out_features, in_features) is applied at each of
    ``length`` positions of data x (num_examples, in_features, length) (length 1 is the
    fully connected case of Ba et al. 2016), then normalized by each method. For every
    transformation in :data:`TRANSFORMATIONS`, the layer's normalized output before and
    after is compared: invariant means a relative change below ``tol`` (eps is tiny so
    that it does not blur the answer).

    Returns ``{method: {transformation: bool}}`` (and, with ``return_changes=True``,
    also the relative changes in the same layout).
    """
    rng = np.random.default_rng(rng)
    w = rng.normal(size=(out_features, in_features))
    x = rng.normal(size=(num_examples, in_features, length)) + rng.normal(
        size=(1, in_features, 1)
    )
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


def invariance_markdown(table, labels=None):
    """A Markdown table (str, via :func:`bnlib.plotting.markdown_table`) of
    ``{method: {transformation: bool}}``: one row per method, one column per
    transformation, cells "**yes**" (invariant) or "no". ``labels`` maps method keys to
    row names."""
    labels = labels or {}
    cols = list(next(iter(table.values())))
    rows = [
        [labels.get(method, method)] + ["**yes**" if row[c] else "no" for c in cols]
        for method, row in table.items()
    ]
    return markdown_table(["invariant?"] + cols, rows)


def batch_size_sweep(
    data,
    norms=("bn", "ln", "gn"),
    batch_sizes=(2, 4, 8, 16, 32, 64),
    epochs=1,
    optimizer="adam",
    lr=0.01,
    ref_batch=32,
    train_size=None,
    rng=0,
    **net_kwargs,
):
    """Train :func:`conv1d_net` for each norm and batch size; return test errors.

    Every run sees the same number of epochs over the same (first ``train_size``)
    training examples and starts from the same seed. The learning rate is scaled with
    the batch size b: ``lr * b / ref_batch`` for ``optimizer="sgd"`` (momentum 0.9, the
    linear scaling rule of Wu & He 2018), ``lr * sqrt(b / ref_batch)`` for ``"adam"``.
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
            model = conv1d_net(
                norm,
                length=xs.shape[-1],
                in_channels=xs.shape[1],
                rng=rng,
                **net_kwargs,
            )
            if optimizer == "sgd":
                opt = SGD(model, lr=lr * b / ref_batch, momentum=0.9)
            else:
                opt = Adam(model, lr=lr * np.sqrt(b / ref_batch))
            fit(
                model, opt, xs, ys, epochs=epochs, batch_size=b, rng=rng, progress=False
            )
            errs.append(100.0 * (1.0 - evaluate(model, data.x_test, data.y_test)[1]))
        errors[norm] = np.array(errs)
    return errors


class WSConv1d(Conv1d):
    """Conv1d with Weight Standardization (Qiao et al. 2019): each filter's weights
    (one row of the (out, in, k) weight) are standardized over their in * k fan-in
    before the convolution, ``w_hat = (v - mean(v)) / sqrt(var(v) + eps)``; the raw
    weights ``params["weight"]`` are what the optimizer updates. Build one from a
    Conv1d with :func:`weight_standardize`."""

    ws_eps = 1e-5

    def _standardize(self):
        v = self.params["weight"]
        w_hat, cache = F.norm_forward(v, None, None, (1, 2), eps=self.ws_eps)
        return v, w_hat, cache

    def forward(self, x):
        v, w_hat, self._ws_cache = self._standardize()
        self.params["weight"] = w_hat
        try:
            return super().forward(x)
        finally:
            self.params["weight"] = v

    def backward(self, dout):
        v, w_hat, cache = self._standardize()
        self.params["weight"] = w_hat
        try:
            dx = super().backward(dout)
        finally:
            self.params["weight"] = v
        self.grads["weight"] = F.norm_backward(self.grads["weight"], cache)[0]
        return dx


def weight_standardize(model):
    """Turn every Conv1d of a :class:`bnlib.Sequential` into a :class:`WSConv1d` in
    place (same parameter arrays); returns the model."""
    for layer in model.layers:
        if type(layer) is Conv1d:
            layer.__class__ = WSConv1d
    return model


def ws_gn_run(data, seed, batch_size, epochs=4, train_size=1000, lr=0.1):
    """One run of section 3's protocol with GN + Weight Standardization: the test
    error (%) of ``weight_standardize(conv1d_net("gn"))`` trained with SGD (momentum
    0.9, learning rate ``lr * batch_size / 32``)."""
    xs, ys = data.x_train[:train_size], data.y_train[:train_size]
    model = weight_standardize(conv1d_net("gn", length=xs.shape[-1], rng=seed))
    opt = SGD(model, lr=lr * batch_size / 32, momentum=0.9)
    fit(
        model,
        opt,
        xs,
        ys,
        epochs=epochs,
        batch_size=batch_size,
        rng=seed,
        progress=False,
    )
    return 100.0 * (1.0 - evaluate(model, data.x_test, data.y_test)[1])


def _sweep_one_run(args):
    """One training run of :func:`batch_size_sweep_seeds` (a top-level function, so
    that a process pool can call it): the test error (%) of one norm, batch size and
    seed."""
    data, seed, norm, b, kwargs = args
    return batch_size_sweep(data, norms=(norm,), batch_sizes=(b,), rng=seed, **kwargs)[
        norm
    ][0]


def sweep_seeds(root, num_seeds):
    """The integer seeds of the runs of :func:`batch_size_sweep_seeds`: one per run,
    drawn from ``np.random.default_rng(root)`` (e.g. ``root=[SEED, 6]``)."""
    return [int(s) for s in np.random.default_rng(root).integers(2**31, size=num_seeds)]


def batch_size_sweep_seeds(
    data, seeds, jobs=1, norms=("bn", "ln", "gn"), batch_sizes=(2, 4, 8, 16, 32), **kw
):
    """:func:`batch_size_sweep` once per seed of ``seeds`` (each run's initial weights
    and shuffles), the training runs spread over ``jobs`` processes.

    Every run (one norm, batch size and seed) is independent and seeded by its own
    integer, so the result is the same for any ``jobs`` and equals
    ``batch_size_sweep(data, norms, batch_sizes, rng=seed, **kw)`` row by row. The
    smallest batch sizes, the slowest runs, are started first.

    Returns ``{norm: array (len(seeds), len(batch_sizes)) of test errors in %}``.
    """
    tasks = [
        (data, int(s), norm, int(b), kw)
        for b in sorted(batch_sizes)
        for s in seeds
        for norm in norms
    ]
    results = parallel_map(_sweep_one_run, tasks, jobs)
    done = {(t[1], t[2], t[3]): r for t, r in zip(tasks, results)}
    return {
        norm: np.array(
            [[done[(int(s), norm, int(b))] for b in batch_sizes] for s in seeds]
        )
        for norm in norms
    }


def plot_batch_size_sweep(batch_sizes, errors, ax=None, title=None):
    """Median test error against batch size (batch shrinking to the right, as in Wu &
    He's Figure 1), with a band from the lowest to the highest run and one dot per run.

    ``errors``: ``{norm: array (runs, len(batch_sizes))}``. Returns the Axes.
    """
    if ax is None:
        ax = plt.subplots(figsize=(6.0, 3.6))[1]
    b = np.asarray(batch_sizes)
    for k, (norm, err) in enumerate(errors.items()):
        err = np.atleast_2d(err)
        color = COLORS.get(norm, COLORS["reference"])
        label = LABELS.get(norm, norm)
        ax.fill_between(b, err.min(0), err.max(0), color=color, alpha=0.18, lw=0)
        ax.plot(b, np.median(err, 0), "o-", color=color, label=label)
        jitter = 2.0 ** (0.06 * (k - (len(errors) - 1) / 2))
        for row in err:
            ax.plot(b * jitter, row, ".", color=color, ms=3, alpha=0.7)
    ax.set_xscale("log", base=2)
    ax.set_xticks(b, [str(v) for v in b])
    ax.minorticks_off()
    ax.invert_xaxis()
    ax.set_ylim(bottom=0)
    ax.set_xlabel("batch size (examples per step)")
    ax.set_ylabel("test error (%)")
    if title:
        ax.set_title(title)
    ax.legend()
    return ax


# ------------------------------------------------------------- sequences: statistics


def bayes_accuracy(lengths, drift=0.15, noise=1.0):
    """Best possible accuracy on :func:`make_drift_task` for sequences of ``lengths``.

    The sum of a sequence's T values is N(+-T drift, T noise^2), and the optimal rule is
    its sign: accuracy Phi(drift sqrt(T) / noise). Returns the mean over ``lengths``.
    """
    from math import erf, sqrt

    z = drift * np.sqrt(np.asarray(lengths, dtype=float)) / noise
    return float(np.mean([0.5 * (1.0 + erf(v / sqrt(2.0))) for v in np.ravel(z)]))


def plot_rnn_accuracies(acc_runs, runs, bayes, figsize=(7.0, 3.4)):
    """Bars of the median accuracy per run and test, with the range over repetitions as
    error bars, on an axis from 0, and the Bayes-optimal accuracy of each test as a grey
    line (``bayes``: ``{test: float}``). ``acc_runs[run][test]`` holds the runs'
    accuracies (a list or an array, as :func:`rnn_length_experiment` returns them),
    ``runs`` maps run names to ``(norm, variable_lengths)``. Returns the Figure.
    """
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    tests = list(bayes)
    width = 0.8 / len(runs)
    for k, (name, (norm, variable_lengths)) in enumerate(runs.items()):
        vals = [np.asarray(acc_runs[name][t]) for t in tests]
        med = np.array([np.median(v) for v in vals])
        lo = med - np.array([v.min() for v in vals])
        hi = np.array([v.max() for v in vals]) - med
        style = (
            dict(color=COLORS[norm])
            if variable_lengths
            else dict(color="white", edgecolor=COLORS[norm], hatch="///")
        )
        ax.bar(
            np.arange(len(tests)) + (k - (len(runs) - 1) / 2) * width,
            med,
            width,
            yerr=(lo, hi),
            capsize=3,
            label=name,
            **style,
        )
    for i, t in enumerate(tests):
        ax.plot(
            [i - 0.45, i + 0.45],
            [bayes[t]] * 2,
            color=COLORS["reference"],
            lw=2,
            label="Bayes-optimal" if i == 0 else None,
        )
    ax.set_xticks(
        np.arange(len(tests)), ["test {}\n{}".format(*t.split(" ", 1)) for t in tests]
    )
    ax.set_ylim(0, 1)
    ax.set_ylabel("test accuracy")
    fig.legend(fontsize=9, loc="outside upper center", ncol=2)
    return fig


# ------------------------------------------------------------- transformers


class ResidualStack:
    """``depth`` residual feed-forward blocks on (N, d) tokens, pre-LN or post-LN.

    Block l computes F_l(x) = W2 relu(W1 x) (``bnlib.Linear`` layers, hidden width
    ``4 d``, no biases, Xavier-normal weights as in Xiong et al. 2020).
    ``placement="post"`` (the original transformer): x <- LN(x + F_l(x)).
    ``placement="pre"``: x <- x + F_l(LN(x)), and one final LN. Attention is left
    out: the point is where the LN sits on the residual path.
    """

    def __init__(self, d=32, depth=12, placement="pre", rng=None):
        from ..modules import LayerNorm, Linear, ReLU, Sequential

        if placement not in ("pre", "post"):
            raise ValueError(f"placement must be 'pre' or 'post', got {placement!r}")
        rng = np.random.default_rng(rng)
        self.placement = placement
        self.ffn = []
        for _ in range(depth):
            lin1, lin2 = Linear(d, 4 * d, bias=False), Linear(4 * d, d, bias=False)
            for lin in (lin1, lin2):  # Xavier normal: std sqrt(2 / (fan_in + fan_out))
                w = lin.params["weight"]
                w[...] = rng.normal(0.0, np.sqrt(2.0 / sum(w.shape)), w.shape)
            self.ffn.append(Sequential(lin1, ReLU(), lin2))
        self.ln = [LayerNorm(d) for _ in range(depth + (placement == "pre"))]

    def forward(self, x):
        for ffn, ln in zip(self.ffn, self.ln):
            x = x + ffn(ln(x)) if self.placement == "pre" else ln(x + ffn(x))
        return self.ln[-1](x) if self.placement == "pre" else x

    def backward(self, dout):
        """Fills each block's ``grads``; returns dL/dx."""
        if self.placement == "pre":
            dout = self.ln[-1].backward(dout)
        for ffn, ln in zip(reversed(self.ffn), reversed(self.ln[: len(self.ffn)])):
            if self.placement == "pre":  # x + F(LN(x)): both paths
                dout = dout + ln.backward(ffn.backward(dout))
            else:  # LN(x + F(x)): through the LN, then both paths
                dout = ln.backward(dout)
                dout = dout + ffn.backward(dout)
        return dout


def layer_gradient_norms(placement, depth=12, d=32, num_tokens=256, rng=None):
    """Gradient norm of each block's second weight matrix at initialization.

    A :class:`ResidualStack` with a linear read-out to 10 classes, random Gaussian
    tokens (num_tokens, d) and random labels; one forward and backward of the
    cross-entropy. Returns an array (depth,): ``||dL/dW2||`` (Frobenius) of block 1 to
    ``depth`` (Xiong et al. 2020 plot the same quantity for W^FFN of a transformer).
    """
    from ..losses import softmax_cross_entropy
    from ..modules import Linear

    rng = np.random.default_rng(rng)
    stack = ResidualStack(d, depth, placement, rng=rng)
    head = Linear(d, 10, rng=rng)
    x = rng.normal(size=(num_tokens, d))
    y = rng.integers(0, 10, num_tokens)
    _, dlogits = softmax_cross_entropy(head(stack.forward(x)), y)
    stack.backward(head.backward(dlogits))
    return np.array([np.linalg.norm(f.layers[2].grads["weight"]) for f in stack.ffn])


def plot_layer_gradients(per_layer, depths, by_depth, figsize=(7.5, 3.3)):
    """Two panels from :func:`layer_gradient_norms` over several runs.

    Left: ``per_layer[placement]`` (runs, depth), gradient norm of each block's W2,
    median over runs with a min-max band. Right: ``by_depth[placement]`` (runs,
    len(depths)), the last block's gradient norm against the depth, log-log. Pre-LN
    solid, post-LN dashed. Returns the Figure.
    """
    fig, (a0, a1) = plt.subplots(1, 2, figsize=figsize, layout="constrained")
    styles = {
        "pre": dict(color=COLORS["ln"], ls="-", marker="o", label="pre-LN"),
        "post": dict(color=COLORS["reference"], ls="--", marker="s", label="post-LN"),
    }
    for placement, g in per_layer.items():
        layers = np.arange(1, g.shape[1] + 1)
        a0.fill_between(
            layers, g.min(0), g.max(0), color=styles[placement]["color"], alpha=0.2
        )
        a0.plot(layers, np.median(g, 0), ms=4, **styles[placement])
    a0.set_ylim(bottom=0)
    a0.set_xlabel("block l (1 = next to the input)")
    a0.set_ylabel("gradient norm of W2")
    a0.set_title(f"at initialization, depth {per_layer['pre'].shape[1]}", fontsize=10)
    a0.legend(fontsize=9)
    for placement, g in by_depth.items():
        a1.fill_between(
            depths, g.min(0), g.max(0), color=styles[placement]["color"], alpha=0.2
        )
        a1.plot(depths, np.median(g, 0), ms=4, **styles[placement])
    a1.set_xscale("log", base=2)
    a1.set_yscale("log", base=2)
    a1.set_xticks(depths, [str(v) for v in depths])
    a1.minorticks_off()
    a1.set_xlabel("depth L (blocks)")
    a1.set_ylabel("gradient norm of the last W2")
    a1.set_title("last block, against depth", fontsize=10)
    a1.legend(fontsize=9)
    return fig


def causal_mean(x):
    """Causal layer: position t gets the mean of the tokens 0..t, (N, T, d) -> same."""
    return np.cumsum(x, axis=1) / np.arange(1, x.shape[1] + 1)[None, :, None]


def normalize_tokens(h, norm, eps=1e-5):
    """``"ln"``: each token over its d features; ``"bn"``: each feature over the batch
    and all positions (N, T), as BN over a transformer's tokens would."""
    axes = {"ln": (2,), "bn": (0, 1)}[norm]
    return F.norm_forward(h, None, None, axes, eps)[0]


def influence_matrix(norm, x, delta=1e-6):
    """How much each input position moves each output position of
    ``normalize_tokens(causal_mean(x), norm)``: entry [t, s] is the rms change of the
    outputs at position t per unit change of the inputs at position s (finite
    differences along a fixed direction). Zero above the diagonal means causal.
    Returns an array (T, T)."""
    base = normalize_tokens(causal_mean(x), norm)
    direction = np.random.default_rng(0).normal(size=x[:, 0].shape)
    out = np.zeros((x.shape[1], x.shape[1]))
    for s in range(x.shape[1]):
        x2 = x.copy()
        x2[:, s] += delta * direction
        change = normalize_tokens(causal_mean(x2), norm) - base
        out[:, s] = np.sqrt(np.mean(change**2, axis=(0, 2))) / delta
    return out


def plot_influence(matrices, figsize=(7.0, 3.4), floor=1e-3):
    """Heatmaps of :func:`influence_matrix` results, ``{norm: (T, T)}``, one panel each
    on a shared logarithmic colour scale from ``floor`` (so that small influences of
    future positions show); exact zeros are white. Returns the Figure."""
    from matplotlib.colors import LogNorm

    fig, axes = plt.subplots(1, len(matrices), figsize=figsize, layout="constrained")
    vmax = max(m.max() for m in matrices.values())
    scale = LogNorm(vmin=floor, vmax=vmax)
    for ax, (norm, m) in zip(np.atleast_1d(axes), matrices.items()):
        shown = np.ma.masked_where(m == 0, np.maximum(m, floor))
        im = ax.imshow(shown, cmap="Greys", norm=scale)
        ax.set_facecolor("white")
        ax.grid(False)
        ax.plot([-0.5, m.shape[0] - 0.5], [-0.5, m.shape[0] - 0.5], color="C3", lw=1)
        ax.set_title(f"{LABELS[norm]} after a causal layer", fontsize=10)
        ax.set_xlabel("input position s")
        ax.set_ylabel("output position t")
        ticks = np.arange(m.shape[0])
        ax.set_xticks(ticks[::2]), ax.set_yticks(ticks[::2])
    fig.colorbar(im, ax=axes, shrink=0.8, label="influence of s on t")
    return fig


def _main(argv=None):
    """Command line: the multi-seed batch-size sweep of section 4 (see ``--help``)."""
    import argparse
    import json

    from ..data import Dataset, load_mnist1d

    p = argparse.ArgumentParser(
        prog="python -m bnlib.chapters.ch5_bn_vs_ln",
        description="Chapter 5's batch-size sweep over many seeds; prints JSON.",
    )
    p.add_argument("--seeds", type=int, default=10, help="number of runs")
    p.add_argument("--root", type=int, default=0, help="SEED of the notebook")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    p.add_argument("--norms", nargs="+", default=["bn", "ln", "gn"])
    p.add_argument("--train-size", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--optimizer", default="sgd")
    p.add_argument("--lr", type=float, default=0.1)
    args = p.parse_args(argv)
    raw = load_mnist1d()
    data = Dataset(
        raw.x_train[:, None, :], raw.y_train, raw.x_test[:, None, :], raw.y_test
    )
    errors = batch_size_sweep_seeds(
        data,
        sweep_seeds([args.root, 6], args.seeds),
        jobs=args.jobs,
        norms=tuple(args.norms),
        batch_sizes=tuple(args.batch_sizes),
        epochs=args.epochs,
        train_size=args.train_size,
        optimizer=args.optimizer,
        lr=args.lr,
    )
    print(
        json.dumps(
            {"args": vars(args), "errors": {k: v.tolist() for k, v in errors.items()}}
        )
    )


# ------------------------------------------------------------------ answer keys
# The keys of this chapter's exercises whose answer is a number, judged by
# bnlib.exercises.check_answer; importing this module registers them.


def _phi(z):
    return NormalDist().cdf(z)


def _x_hat(x, eps):
    """x_hat of a single feature x (m values), from bnlib."""
    return F.batchnorm_forward(np.reshape(x, (-1, 1)), None, None, eps)[1]["x_hat"]


def _instance_norm_invariances():
    """Is IN after a position-wise linear layer (W (C, D) on (N, D, L)) invariant to
    each transformation of TRANSFORMATIONS, in that order?"""
    rng = np.random.default_rng(0)
    w, u = rng.normal(size=(4, 3)), rng.normal(size=(5, 3, 6))

    def inorm(w, u):
        return F.norm_forward(np.einsum("cd,ndl->ncl", w, u), None, None, (2,), 0.0)[0]

    moves = [
        (2.7 * w, u),
        (w + rng.normal(size=(1, 3)), u),
        (w * rng.uniform(0.3, 3.0, (4, 1)), u),
        (w, 2.7 * u),
        (w, u + rng.normal(size=(1, 3, 1))),
        (w, u * rng.uniform(0.3, 3.0, (5, 1, 1))),
    ]
    return [bool(np.allclose(inorm(*mv), inorm(w, u))) for mv in moves]


def _axes(shape, axes):
    """(m, number of means) of a normalization of ``shape`` over ``axes``."""
    m = F.norm_forward(np.zeros(shape), None, None, axes)[1]["m"]
    return [m, math.prod(shape) // m]


_HALF = math.sqrt(0.5)
_BAYES = [_phi(0.15 * math.sqrt(t)) for t in (30, 60)]
answer_key(
    "ex-ch5-ema-a",
    "the values of x_hat in a batch of two, any order",
    1e-3,
    lambda: _x_hat([0.3, 1.7], 0.0),
    {"used the unbiased variance (divided by m - 1 = 1)": [-_HALF, _HALF]},
    any_order=True,
)
for _name, _shape, _on, _wrong in (
    (
        "bn",
        (8, 32, 14, 14),
        (0, 2, 3),
        {"averaged over N only; over H, W too": [8, 6272]},
    ),
    (
        "ln",
        (8, 32, 14, 14),
        (1, 2, 3),
        {"averaged over C only; over H, W too": [32, 1568]},
    ),
    ("in", (8, 32, 14, 14), (2, 3), {"that is LayerNorm, over C, H and W": [6272, 8]}),
    ("gn", (8, 8, 4, 14, 14), (2, 3, 4), {"averaged over C/G only": [4, 12544]}),
    ("tln", (8, 128, 512), (2,), {"averaged over a whole sequence": [65536, 8]}),
    ("tbn", (8, 128, 512), (0, 1), {"averaged over N only; over T too": [8, 65536]}),
):
    answer_key(
        f"ex-ch5-axes-{_name}",
        "(m, number of means), 2 whole numbers",
        0,
        lambda s=_shape, a=_on: _axes(s, a),
        _wrong,
    )
answer_key(
    "ex-ch5-instance",
    "six True/False (invariant?) in the order of ch5.TRANSFORMATIONS",
    0,
    _instance_norm_invariances,
    {
        "that is BatchNorm's row; IN's statistics are per example, so it also removes "
        "a single case's scale": [1, 0, 1, 1, 1, 0],
        "that is LayerNorm's row (fully connected); IN's statistics are per channel": [
            1,
            1,
            0,
            1,
            0,
            1,
        ],
        "not all: one changes a channel differently at different positions": [1] * 6,
    },
    keyed=True,
)
_M = np.array([2, 64])
answer_key(
    "ex-ch5-ema-b",
    "the running variance's relative standard deviation for m = 2 and m = 64",
    0.03,
    np.sqrt(2 / (_M - 1) * 0.1 / 1.9),
    {
        "that is one batch's; the EMA averages about 1 / alpha batches": np.sqrt(
            2 / (_M - 1)
        ),
        "those are variances; take the square root": 2 / (_M - 1) * 0.1 / 1.9,
        "used m instead of m - 1": np.sqrt(2 / _M * 0.1 / 1.9),
    },
    rel=True,
)
answer_key(
    "ex-ch5-bayes-b",
    "the optimal accuracy for T = 30, T = 60 and T uniform on 5..30, 3 numbers",
    0.005,
    _BAYES + [np.mean([_phi(0.15 * math.sqrt(t)) for t in range(5, 31)])],
    {
        "for mixed lengths you took Phi at the mean length; average Phi over the "
        "lengths": _BAYES + [_phi(0.15 * math.sqrt(17.5))]
    },
)
answer_key(
    "ex-ch5-bayes-d",
    "the number of steps of evidence worth accuracy 0.75",
    1,
    (NormalDist().inv_cdf(0.75) / 0.15) ** 2,
    {
        "that is sqrt(T); square it": NormalDist().inv_cdf(0.75) / 0.15,
        "that is 0.15 * sqrt(T)": NormalDist().inv_cdf(0.75),
    },
)


if __name__ == "__main__":
    _main()
