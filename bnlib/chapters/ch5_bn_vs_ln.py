"""Normalization across axes and in recurrent networks (chapter 5).

* :func:`reduction_axes`, :func:`normalized_mask`, :func:`plot_norm_axes`: which
  entries of an (N, C, *spatial) tensor share one mean and variance under BN, LN, IN,
  GN, RMSNorm.
* :func:`invariance_table`: the numerical checks behind Table 1 of Ba, Kiros & Hinton
  (2016), with :class:`bnlib.WeightNormLinear`.
* :func:`batch_size_sweep`: the batch-size experiment of Wu & He (2018), Figure 1, on
  :func:`bnlib.conv1d_net`.
* :func:`make_drift_task`: a synthetic sequence classification task of any length;
  :func:`drift_test_sets`, :func:`rnn_length_experiment` and
  :func:`plot_rnn_length_experiment`: BN per time step vs LN (:class:`bnlib.NormRNN`)
  on lengths seen and unseen in training.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .. import functional as F
from ..models import conv1d_net, rnn_classifier
from ..optim import SGD, Adam
from ..plotting import COLORS, LABELS
from ..train import evaluate, fit

__all__ = [
    "plot_norm_axes",
    "reduction_axes",
    "normalized_mask",
    "make_drift_task",
    "drift_test_sets",
    "rnn_length_experiment",
    "plot_rnn_length_experiment",
    "TRANSFORMATIONS",
    "BA2016_TABLE1",
    "invariance_table",
    "invariance_html",
    "batch_size_sweep",
]

# ---------------------------------------------------------------- chapter 5: normalized axes


def plot_norm_axes(
    methods=("bn", "ln", "in", "gn"),
    shape=(4, 6, 5),
    num_groups=2,
    index=(1, 1, 0),
    figsize=(10.0, 3.0),
):
    """Four (N, C, spatial) blocks with the set that shares one mean and variance shaded.

    Each panel draws an activation tensor of ``shape`` = (N, C, spatial) as a block of
    voxels (C to the right, N into the page, the flattened spatial axes H, W upwards) and
    fills, in the method's book colour, the entries normalized together with the entry at
    ``index`` (from :func:`normalized_mask`; "gn" uses ``num_groups``).

    Returns:
        The Figure; each axes has ``gid="norm-axes:<method>"`` and, as ``ax.mask``, the
        boolean mask (shape ``shape``) it shaded.
    """

    n, c, s = shape
    fig = plt.figure(figsize=figsize, layout="constrained")
    for k, method in enumerate(methods):
        ax = fig.add_subplot(1, len(methods), k + 1, projection="3d")
        mask = normalized_mask(method, shape, index, num_groups)
        shaded = mask.transpose(1, 0, 2)  # voxel axes: x = C, y = N, z = HW
        ax.voxels(~shaded, facecolors="#d9d9d920", edgecolor="#9090907f", linewidth=0.4)
        ax.voxels(shaded, facecolors=COLORS[method], edgecolor="#404040", linewidth=0.5)
        ax.set_box_aspect((c, n, s), zoom=0.88)
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
    """Boolean mask (shape ``shape``) of the entries that share statistics with ``index``.

    ``shape`` is (N, C, *spatial); the mask marks the set one mean and one variance are
    computed over when normalizing the entry at ``index`` ("bn", "ln", "rms", "in" or
    "gn" with ``num_groups`` groups). Its sum is the group size m.
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


def make_drift_task(
    num_samples, length, rng=None, drift=0.15, noise=1.0, min_length=None
):
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
    return {
        f"lengths {min_length}-{max_len}": make_drift_task(
            num_samples, max_len, rng=rng, min_length=min_length
        )[:2],
        f"length {max_len}": make_drift_task(num_samples, max_len, rng=rng)[:2],
        f"length {2 * max_len}": make_drift_task(num_samples, 2 * max_len, rng=rng)[:2],
    }


def rnn_length_experiment(
    runs,
    tests,
    seeds=3,
    max_len=30,
    hidden=16,
    train_size=1500,
    min_length=5,
    epochs=3,
    batch_size=16,
    lr=0.003,
    rng=None,
):
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
        train_sets = {
            True: make_drift_task(train_size, max_len, rng=rng, min_length=min_length)[
                :2
            ],
            False: make_drift_task(train_size, max_len, rng=rng)[:2],
        }
        for name, (norm, variable) in runs.items():
            model = rnn_classifier(
                1, hidden, 2, norm=norm, max_len=max_len, extrapolate="last", rng=rng
            )
            fit(
                model,
                Adam(model, lr=lr),
                *train_sets[variable],
                epochs=epochs,
                batch_size=batch_size,
                rng=rng,
                progress=False,
            )
            models[name] = model
            for t, data_t in tests.items():
                acc[name][t].append(evaluate(model, *data_t)[1])
    acc = {
        name: {t: float(np.mean(v)) for t, v in a.items()} for name, a in acc.items()
    }
    return acc, models


def plot_rnn_length_experiment(
    models,
    acc,
    runs,
    num_batches,
    num_runs=3,
    variable="BN, lengths 5-30",
    fixed="BN, all length 30",
    figsize=(10.0, 3.2),
):
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

    rnn_var, rnn_fix = models[variable][0], models[fixed][0]
    steps = np.arange(len(rnn_var.active_counts))
    label_var, label_fix = variable.split(", ", 1)[-1], fixed.split(", ", 1)[-1]
    fig, (a0, a1, a2) = plt.subplots(1, 3, figsize=figsize)
    fixed_style = dict(color=COLORS["reference"], ls="--", label=label_fix)
    a0.plot(
        steps, rnn_var.active_counts / num_batches, color=COLORS["bn"], label=label_var
    )
    a0.plot(steps, rnn_fix.active_counts / num_batches, **fixed_style)
    a0.axhline(2, color="k", lw=0.8, ls=":")
    a0.set_xlabel("time step t")
    a0.set_ylabel("sequences per batch at step t")
    a0.set_title("who contributes to BN's statistics")
    a0.legend(fontsize=8)
    a1.plot(
        steps, rnn_var.running_var.mean(axis=1), color=COLORS["bn"], label=label_var
    )
    a1.plot(steps, rnn_fix.running_var.mean(axis=1), **fixed_style)
    a1.set_xlabel("time step t")
    a1.set_ylabel("running variance of $a_t$")
    a1.set_title("per-step statistics")
    a1.legend(fontsize=8)
    tests = list(next(iter(acc.values())))
    width = 0.27
    for k, (name, (norm, variable_lengths)) in enumerate(runs.items()):
        style = (
            dict(color=COLORS[norm])
            if variable_lengths
            else dict(color="white", edgecolor=COLORS[norm], hatch="///")
        )
        a2.bar(
            np.arange(len(tests)) + (k - (len(runs) - 1) / 2) * width,
            [acc[name][t] for t in tests],
            width,
            label=name,
            **style,
        )
    a2.set_xticks(
        np.arange(len(tests)), ["test {}\n{}".format(*t.split(" ", 1)) for t in tests]
    )
    a2.set_ylim(0.5, 0.9)
    a2.set_ylabel("test accuracy")
    a2.set_title(f"mean accuracy over {num_runs} runs")
    a2.legend(fontsize=7, loc="upper left")
    return fig


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

    Returns ``{method: {transformation: bool}}`` (and, with ``return_changes=True``, also
    the relative changes in the same layout).
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
    return (
        f'<table class="table"><thead><tr><th>invariant?</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


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
