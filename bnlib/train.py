"""A small training loop that records what the chapters plot."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from .data import minibatches
from .losses import accuracy, softmax_cross_entropy

__all__ = [
    "History",
    "NonFiniteLossError",
    "train_step",
    "evaluate",
    "fit",
    "parallel_map",
]


class NonFiniteLossError(FloatingPointError):
    """Raised by :func:`fit` when the loss becomes NaN or infinite."""


@dataclass
class History:
    """What :func:`fit` records.

    Per training step: ``step``, ``loss``, ``acc`` and each probe's value in ``probes``.
    Per evaluation: ``eval_step``, ``test_loss``, ``test_acc``.
    ``stopped`` holds the message if training stopped on a non-finite loss.
    """

    step: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    acc: list = field(default_factory=list)
    eval_step: list = field(default_factory=list)
    test_loss: list = field(default_factory=list)
    test_acc: list = field(default_factory=list)
    probes: dict = field(default_factory=dict)
    stopped: str | None = None

    @property
    def diverged(self) -> bool:
        return self.stopped is not None

    def series(self, name, key=None):
        """``(steps, values)`` of probe ``name``, skipping the steps where it returned
        None; with ``key``, each value is ``value[key]`` (probes that return dicts).
        ``values`` is stacked into an array (T, ...)."""
        pairs = [(s, v) for s, v in zip(self.step, self.probes[name]) if v is not None]
        steps = np.array([s for s, _ in pairs])
        return steps, np.array([v if key is None else v[key] for _, v in pairs])


def train_step(model, optimizer, xb, yb, loss_fn=softmax_cross_entropy):
    """One forward, backward and update. Returns ``(loss, output)``."""
    out = model(xb)
    loss, dout = loss_fn(out, yb)
    if np.isfinite(loss):
        optimizer.zero_grad()
        model.backward(dout)
        optimizer.step()
    return loss, out


def evaluate(model, x, y, loss_fn=softmax_cross_entropy, batch_size=1000):
    """Mean loss and accuracy of ``model`` in eval mode on (x, y), in batches.

    The model's train/eval mode is restored afterwards. Accuracy is NaN when
    ``y`` is not integer labels.
    """
    was_training = model.training
    model.eval()
    losses, accs, sizes = [], [], []
    for i in range(0, len(x), batch_size):
        out = model(x[i : i + batch_size])
        yb = y[i : i + batch_size]
        losses.append(loss_fn(out, yb)[0])
        accs.append(
            accuracy(out, yb)
            if np.issubdtype(np.asarray(yb).dtype, np.integer)
            else np.nan
        )
        sizes.append(len(yb))
    model.train(was_training)
    return float(np.average(losses, weights=sizes)), float(
        np.average(accs, weights=sizes)
    )


def _divergence_message(step, epoch, loss, optimizer):
    return (
        f"loss became {loss} at step {step} (epoch {epoch}); training stopped before "
        f"applying that update. Try a smaller learning rate (lr={optimizer.lr}), a "
        "normalization layer, or check the inputs for NaN/inf."
    )


def fit(
    model,
    optimizer,
    x,
    y,
    *,
    epochs=1,
    batch_size=64,
    loss_fn=softmax_cross_entropy,
    test=None,
    eval_every=None,
    probes=None,
    rng=None,
    progress=True,
    on_nonfinite="raise",
    max_steps=None,
):
    """Train ``model`` with mini-batches of (x, y) and record a :class:`History`.

    Args:
        x, y: training inputs (N, ...) and targets (N, ...).
        epochs: passes over the data; each uses a fresh shuffle from ``rng``.
        batch_size: mini-batch size m; a last incomplete batch is dropped.
        test: optional ``(x_test, y_test)``, evaluated every ``eval_every`` steps
            (default: once per epoch) and after the last step.
        probes: optional ``{name: fn(model) -> value}``, called after every step.
        rng: seed or Generator for the shuffles.
        progress: show a tqdm progress bar.
        on_nonfinite: ``"raise"`` raises :class:`NonFiniteLossError` naming the step and
            what to try; ``"stop"`` records that message in ``history.stopped`` and
            returns.
        max_steps: optional cap on the number of steps.
    """
    if on_nonfinite not in ("raise", "stop"):
        raise ValueError(
            f"on_nonfinite must be 'raise' or 'stop', got {on_nonfinite!r}"
        )
    rng = np.random.default_rng(rng)
    probes = probes or {}
    hist = History(probes={name: [] for name in probes})
    total, steps_per_epoch = _total_steps(len(x), batch_size, epochs, max_steps)
    eval_every = eval_every or steps_per_epoch
    model.train()
    step = 0
    with tqdm(total=total, disable=not progress, leave=False) as bar:
        for epoch in range(epochs):
            for xb, yb in minibatches(x, y, batch_size, rng, drop_last=True):
                if step >= total:
                    break
                loss, out = train_step(model, optimizer, xb, yb, loss_fn)
                if not np.isfinite(loss):
                    # step + 1: numbered from 1, as in hist.step
                    hist.stopped = _divergence_message(step + 1, epoch, loss, optimizer)
                    if on_nonfinite == "raise":
                        raise NonFiniteLossError(hist.stopped)
                    return hist
                step += 1
                _record_step(hist, step, loss, out, yb, model, probes)
                if test is not None and (step % eval_every == 0 or step == total):
                    tl, ta = evaluate(model, *test, loss_fn=loss_fn)
                    hist.eval_step.append(step)
                    hist.test_loss.append(tl)
                    hist.test_acc.append(ta)
                bar.update(1)
    return hist


def _total_steps(n, batch_size, epochs, max_steps):
    """(steps fit takes, steps per epoch) for n examples; a last incomplete batch
    is dropped."""
    steps_per_epoch = n // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {batch_size} is larger than the data set ({n})")
    total = epochs * steps_per_epoch
    return (total if max_steps is None else min(max_steps, total)), steps_per_epoch


def _record_step(hist, step, loss, out, yb, model, probes):
    """Append one training step to ``hist``: its loss, its accuracy (NaN unless the
    targets are class indices of a 2-D output) and every probe's value."""
    hist.step.append(step)
    hist.loss.append(loss)
    classes = out.ndim == 2 and np.issubdtype(np.asarray(yb).dtype, np.integer)
    hist.acc.append(accuracy(out, yb) if classes else np.nan)
    for name, fn in probes.items():
        hist.probes[name].append(fn(model))


def parallel_map(fn, tasks, jobs=1):
    """``[fn(t) for t in tasks]``, computed in ``jobs`` worker processes.

    For independent training runs: each task carries everything its run needs,
    including its own seed, so the results are the same for any ``jobs`` and come
    back in the order of ``tasks``. ``fn`` must be importable by name (a module-level
    function) and its results picklable. Workers are forked from the calling process
    (they see the modules it has imported, and start at once); where ``fork`` is not
    available (Windows), or with ``jobs=1``, the tasks run one after the other in
    this process. Keep ``jobs`` at or below the number of cores, with one BLAS
    thread per process (``OPENBLAS_NUM_THREADS=1``, as the Makefile sets).
    """
    tasks = list(tasks)
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    import multiprocessing as mp

    if jobs == 1 or len(tasks) < 2 or "fork" not in mp.get_all_start_methods():
        return [fn(t) for t in tasks]
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("fork")
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=ctx) as pool:
        return list(pool.map(fn, tasks))
