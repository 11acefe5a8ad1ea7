"""Is this process running with the book's pinned numerics?

The Makefile pins OpenBLAS to its Haswell (AVX2) kernels, caps numpy's SIMD dispatch at
AVX2 and uses one thread, so that every x86-64 machine computes the committed outputs
bit for bit (README, "Reproducibility"). The pins act when the libraries load, so they
must be in the environment before Python starts: ``make lab`` and ``make test`` do that.
"""

from __future__ import annotations

import os
import platform

__all__ = [
    "PINS",
    "pinned_environment",
    "pinned_numerics",
    "report_unpinned",
    "check_pinned",
]

# The Makefile exports the same values (a test checks that the two agree).
PINS = {
    "OPENBLAS_CORETYPE": "Haswell",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
# Set by `make test-perturbed`, which runs the chapters under other kernels on purpose.
PERTURBED = "BNLIB_PERTURBED"


def _is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def pinned_numerics() -> dict[str, bool]:
    """What is pinned in this process: ``{"blas_kernels", "numpy_dispatch", "threads"}``
    -> bool. Reads what the libraries report, not only the environment."""
    from numpy._core._multiarray_umath import __cpu_features__
    from threadpoolctl import threadpool_info

    blas = [d for d in threadpool_info() if d.get("internal_api") == "openblas"]
    return {
        "blas_kernels": bool(blas)
        and all(d.get("architecture") == "Haswell" for d in blas),
        "numpy_dispatch": not __cpu_features__.get("AVX512F", False)
        or not __cpu_features__.get("X86_V4", False),
        "threads": all(d.get("num_threads") == 1 for d in threadpool_info()),
    }


def pinned_environment() -> dict[str, str]:
    """A copy of ``os.environ`` with the pins, for a child process (on x86-64; other
    platforms get the thread counts only)."""
    env = dict(os.environ)
    for name, value in PINS.items():
        if _is_x86_64() or name.endswith("NUM_THREADS"):
            env[name] = value
    env.pop(PERTURBED, None)
    return env


def report_unpinned() -> str:
    """One line to print when the numerics are not pinned on x86-64 ('' when they are,
    on other platforms, where they cannot be, and under a deliberate perturbation)."""
    if not _is_x86_64() or os.environ.get(PERTURBED):
        return ""
    missing = [k for k, ok in pinned_numerics().items() if not ok]
    if not missing:
        return ""
    return (
        "Note: numerics not pinned (" + ", ".join(missing) + "): outputs may differ "
        "from the book's in the last digits. Start JupyterLab with `make lab`."
    )


def check_pinned():
    """Print :func:`report_unpinned`'s note if there is one (each chapter's first
    cell)."""
    note = report_unpinned()
    if note:
        print(note)
