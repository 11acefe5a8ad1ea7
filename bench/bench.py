"""bnlib vs PyTorch timings, printed as a markdown table of ratios measured in one run.

    make bench                      # or: .venv/bin/python bench/bench.py
    .venv/bin/python bench/bench.py --quick        # fewer repeats, for a smoke test
    .venv/bin/python bench/bench.py --only bn      # one group of rows (bn, mlp, staged)
    .venv/bin/python bench/bench.py --out table.md # also write the table and machine

Every row times two functions that do the same work, interleaved (A B, B A, A B, ...)
after a warm-up, so that a slow moment on a shared machine hits both; each side's time
is the median over many repeats, and the ratio is the median of the per-pair ratios
bnlib / other (each pair ran back to back). Rows:

* BN forward + backward in training mode, float32, (256, 1024) and (32, 64, 32, 32):
  ``bnlib.BatchNorm1d/2d`` forward and backward (running statistics updated; the layers
  compute through ``bnlib.fastpath``) vs ``torch.nn.functional.batch_norm(...,
  training=True)`` and autograd backward on the same input and upstream gradient, with
  1 thread and with the default thread count.
* staged vs compact BN backward (both bnlib): the price of the readable version.
* one SGD step (forward, softmax cross-entropy, backward, update) of a
  784-100-100-100-10 sigmoid MLP with BN after each hidden linear layer, batch 60,
  bnlib vs the same network in torch.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits

import bnlib
import bnlib.functional as F

DEFAULT_THREADS = os.cpu_count() or 1
TARGET = 1.5  # bnlib within 1.5x of torch on the BN rows


def measure(fa, fb, repeats, warmup=5, min_time=2e-3):
    """Time ``fa`` and ``fb`` interleaved: A B, B A, A B, ... after a warm-up.

    Each sample runs a call ``inner`` times in a row (enough to take ``min_time``),
    so very short calls are not dominated by the timer's resolution.
    """
    for _ in range(warmup):
        fa()
        fb()
    t0 = time.perf_counter()
    fa()
    one = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(min_time / one))
    ta, tb = [], []
    for r in range(repeats):
        # alternate the order: A B, B A, A B, ...
        pair = ((fa, ta), (fb, tb)) if r % 2 == 0 else ((fb, tb), (fa, ta))
        for f, out in pair:
            t0 = time.perf_counter()
            for _ in range(inner):
                f()
            out.append((time.perf_counter() - t0) / inner)
    # each pair ran back to back, under similar load
    ratios = [a / b for a, b in zip(ta, tb, strict=True)]
    return Timing(
        statistics.median(ta),
        statistics.median(tb),
        _spread(ta),
        _spread(tb),
        statistics.median(ratios),
        min(ta) / min(tb),
    )


@dataclass
class Timing:
    """Medians (s) of bnlib and of the other side, their relative spreads, the median of
    the ratios of back-to-back pairs, and the ratio of the fastest samples."""

    a: float
    b: float
    spread_a: float
    spread_b: float
    ratio: float
    best_ratio: float


def _spread(ts):
    """Interquartile range relative to the median: how noisy the samples were."""
    q = statistics.quantiles(ts, n=4)
    return (q[2] - q[0]) / statistics.median(ts)


# ------------------------------------------------------------------ the cases
def bn_case(shape, dtype=np.float32, seed=0):
    """Our module and torch's functional batch_norm on the same data."""
    rng = np.random.default_rng(seed)
    x = rng.normal(1.0, 2.0, shape).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    c = shape[1]
    bn = (bnlib.BatchNorm1d if len(shape) <= 3 else bnlib.BatchNorm2d)(c)
    bn.params["weight"][...] = rng.uniform(0.5, 2.0, c)
    bn.params["bias"][...] = rng.normal(size=c)

    def ours():
        bn(x)
        bn.backward(dy)

    xt = torch.from_numpy(x).requires_grad_(True)
    dyt = torch.from_numpy(dy)
    w = torch.from_numpy(bn.params["weight"].astype(dtype)).requires_grad_(True)
    b = torch.from_numpy(bn.params["bias"].astype(dtype)).requires_grad_(True)
    rm, rv = torch.zeros(c, dtype=w.dtype), torch.ones(c, dtype=w.dtype)

    def theirs():
        xt.grad = w.grad = b.grad = None
        out = torch.nn.functional.batch_norm(
            xt, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5
        )
        out.backward(dyt)

    # both sides compute the same thing
    ours()
    theirs()
    dx = bn.backward(dy)
    np.testing.assert_allclose(
        dx, xt.grad.numpy(), rtol=1e-4, atol=1e-4 * np.abs(dx).max()
    )
    return ours, theirs


def staged_case(shape, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(1.0, 2.0, shape).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    gamma = rng.uniform(0.5, 2.0, shape[1])
    _, cache = F.batchnorm_forward(x, gamma, np.zeros(shape[1]))
    return (
        lambda: F.batchnorm_backward_staged(dy, cache),
        lambda: F.batchnorm_backward(dy, cache),
    )


def mlp_case(dtype=np.float32, batch=60, seed=0):
    """One SGD step of 784-100-100-100-10, Linear-BN-Sigmoid x3 then Linear, in both."""
    rng = np.random.default_rng(seed)
    sizes = [784, 100, 100, 100]
    layers = []
    for i in range(3):
        layers += [
            bnlib.Linear(sizes[i], sizes[i + 1], rng=rng),
            bnlib.BatchNorm1d(sizes[i + 1]),
            bnlib.Sigmoid(),
        ]
    model = bnlib.Sequential(*layers, bnlib.Linear(100, 10, rng=rng))
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    tlayers = []
    for i in range(3):
        tlayers += [
            torch.nn.Linear(sizes[i], sizes[i + 1]),
            torch.nn.BatchNorm1d(sizes[i + 1]),
            torch.nn.Sigmoid(),
        ]
    tmodel = torch.nn.Sequential(*tlayers, torch.nn.Linear(100, 10)).to(tdtype)
    with torch.no_grad():
        for (m, k), p in zip(model.parameters(), tmodel.parameters(), strict=True):
            # bnlib keeps its parameters in the input dtype too, as torch does
            m.params[k] = m.params[k].astype(dtype)
            p.copy_(torch.from_numpy(m.params[k]))
    x = rng.random((batch, 784)).astype(dtype)
    y = rng.integers(0, 10, batch)
    opt = bnlib.SGD(model, lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.1, momentum=0.9)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def ours():
        bnlib.train_step(model, opt, x, y)

    def theirs():
        topt.zero_grad()
        torch.nn.functional.cross_entropy(tmodel(xt), yt).backward()
        topt.step()

    return ours, theirs


# ------------------------------------------------------------------ running
def set_threads(n):
    """n threads for torch (intra-op) and for numpy's BLAS; returns the BLAS limiter."""
    torch.set_num_threads(n)
    return threadpool_limits(limits=n, user_api="blas")


def run(repeats, only=None):
    """Rows of (case, threads, compared with, Timing, target). ``only``: one group of
    rows at 1 thread ("bn", "mlp" or "staged") instead of all of them."""
    rows = []
    thread_counts = (1,) if only else (1, DEFAULT_THREADS)
    for threads in thread_counts:
        with set_threads(threads):
            if only in (None, "bn"):
                rows += _bn_rows(threads, repeats)
            if only in (None, "mlp"):
                rows += _mlp_rows(threads, repeats)
    if only in (None, "staged"):
        with set_threads(1):
            rows += _staged_rows(repeats)
    return rows


def _bn_rows(threads, repeats):
    return [
        (
            f"BN fwd+bwd, train, float32 {shape}",
            threads,
            "torch F.batch_norm + autograd",
            measure(*bn_case(shape), repeats),
            f"<= {TARGET}",
        )
        for shape in [(256, 1024), (32, 64, 32, 32)]
    ]


def _mlp_rows(threads, repeats):
    rows = [
        (
            "SGD step, 784-100-100-100-10 sigmoid MLP with BN, batch 60, float32",
            threads,
            "same net in torch",
            measure(*mlp_case(np.float32), repeats),
            "",
        )
    ]
    if threads == 1:
        rows.append(
            (
                "SGD step, same MLP, float64",
                threads,
                "same net in torch",
                measure(*mlp_case(np.float64), repeats),
                "",
            )
        )
    return rows


def _staged_rows(repeats):
    return [
        (
            f"BN backward, staged, {np.dtype(dtype).name} {shape}",
            1,
            "bnlib compact backward",
            measure(*staged_case(shape, dtype), repeats),
            "",
        )
        for shape, dtype in [
            ((256, 1024), np.float32),
            ((256, 1024), np.float64),
            ((32, 64, 32, 32), np.float32),
        ]
    ]


def machine():
    """One paragraph: CPU (lscpu), caches, versions, SIMD level, threads, load, time."""
    lscpu = _lscpu()
    cpu = lscpu.get("Model name", platform.processor() or "unknown CPU")
    caches = ", ".join(
        f"{k} {lscpu[k]}" for k in ("L2 cache", "L3 cache") if k in lscpu
    )
    blas = threadpool_info()
    blas_text = ", ".join(
        f"{b['internal_api']} {b['version']} ({b.get('architecture')} kernels)"
        for b in blas
        if b["user_api"] == "blas"
    )
    env = (
        ", ".join(
            f"{k}={os.environ[k]}"
            for k in (
                "OPENBLAS_NUM_THREADS",
                "OMP_NUM_THREADS",
                "OPENBLAS_CORETYPE",
                "NPY_DISABLE_CPU_FEATURES",
            )
            if k in os.environ
        )
        or "no thread or kernel variables set"
    )
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    return (
        f"{cpu}, {os.cpu_count()} cores ({caches}); "
        f"Python {platform.python_version()}, "
        f"numpy {np.__version__} ({_numpy_simd()}; BLAS: {blas_text}), "
        f"torch {torch.__version__}; environment: {env}; "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; "
        f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


def _lscpu():
    """``lscpu``'s fields as a dict (empty where lscpu is missing)."""
    try:
        out = subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {
        k.strip(): v.strip()
        for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)
    }


def _numpy_simd():
    """The widest SIMD level numpy dispatches to (NPY_DISABLE_CPU_FEATURES caps it)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        return "SIMD level unknown"
    return "AVX-512 dispatch" if features.get("AVX512_SKX") else "AVX2 dispatch at most"


def table(rows, repeats):
    lines = [
        "| case | threads | compared with | bnlib (ms) | other (ms) "
        "| ratio bnlib/other | ratio of best | target |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for name, threads, other, t, target in rows:
        lines.append(
            f"| {name} | {threads} | {other} "
            f"| {t.a * 1e3:.3f} (±{t.spread_a * 50:.0f}%) "
            f"| {t.b * 1e3:.3f} (±{t.spread_b * 50:.0f}%) | **{t.ratio:.2f}** "
            f"| {t.best_ratio:.2f} | {target} |"
        )
    lines.append("")
    lines.append(
        f"Times are medians of {repeats} interleaved repeats after a warm-up; "
        "± is half the interquartile range, relative to the median. The ratio is the "
        "median over the repeats of bnlib's time / the other's time, each pair run "
        "back to back "
        "(below 1: bnlib is faster); 'ratio of best' divides the fastest samples."
    )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--quick", action="store_true", help="10 repeats")
    parser.add_argument(
        "--only", choices=["bn", "mlp", "staged"], help="one group of rows, at 1 thread"
    )
    parser.add_argument(
        "--out", help="also write the table and machine line to this file"
    )
    args = parser.parse_args(argv)
    repeats = 10 if args.quick else args.repeats
    rows = run(repeats, args.only)
    text = table(rows, repeats) + "\n\nMachine: " + machine() + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
