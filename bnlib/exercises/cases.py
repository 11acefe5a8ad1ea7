"""The four seeded cases every code checker runs: ``case(kind, k)`` recreates one."""

from __future__ import annotations

import numpy as np

__all__ = ["case", "CASE_FIELDS"]

#: Case k: (m, n, eps, dtype). Case 0 has one group with a tiny spread (eps matters).
_SPECS = (
    (4, 3, 1e-5, np.float64),
    (6, 5, 1e-3, np.float64),
    (2, 4, 0.1, np.float64),
    (16, 3, 1e-4, np.float32),
)

#: What ``case(kind, k)`` returns, in this order.
CASE_FIELDS = {
    "batchnorm": ("x", "gamma", "beta", "dout", "eps"),
    "batchnorm-eval": ("x", "gamma", "beta", "dout", "eps", "mean", "var"),
    "layernorm": ("x", "gamma", "beta", "dout", "eps"),
    "rmsnorm": ("x", "gamma", "dout", "eps"),
    "instancenorm": ("x", "eps"),
    "layer": ("xs", "douts", "gamma", "beta", "eps", "momentum"),
    "fold": ("W", "b", "gamma", "beta", "mean", "var", "eps"),
    "gradient-change": ("model", "x", "y", "lr"),
}

#: The axes each kind normalizes over, and what the reports call one group.
_GROUPS = {
    "batchnorm": ((0,), "feature"),
    "batchnorm-eval": ((0,), "feature"),
    "layernorm": ((1,), "example"),
    "rmsnorm": ((1,), "example"),
    "instancenorm": ((2,), "(example, channel) pair"),
    "layer": ((0,), "feature"),
}


def _draw(kind, k):
    """Case k of ``kind``: a dict of the fields of :data:`CASE_FIELDS` and k, dtype,
    tiny (the index of the tiny group, or None)."""
    m, n, eps, dtype = _SPECS[k]
    rng = np.random.default_rng(k)
    if kind == "gradient-change":
        from ..models import make_mlp

        model = make_mlp([3, 4, 2], "sigmoid", None, rng=k)
        x, y = rng.normal(size=(m, 3)), rng.integers(0, 2, m)
        return dict(k=k, model=model, x=x, y=y, lr=(0.5, 0.1, 1.0)[k], dtype=np.float64)
    shape = (m, n, n + 2) if kind == "instancenorm" else (m, n)
    c = dict(x=rng.normal(1.5, 2.0, shape), dout=rng.normal(size=shape))
    c.update(gamma=rng.uniform(0.5, 2.0, n), beta=rng.normal(size=n))
    c.update(mean=rng.normal(size=n), var=rng.uniform(0.5, 2.0, n))
    c.update(W=rng.normal(size=(n, m)), b=rng.normal(size=n))
    c.update(xs=rng.normal(1.5, 2.0, (4, m, n)), douts=rng.normal(size=(3, m, n)))
    tiny = None
    if k == 0:
        c["var"][0] = 2e-5
        if kind in _GROUPS and kind != "layer":
            axes = _GROUPS[kind][0]
            tiny = tuple(slice(None) if a in axes else 0 for a in range(len(shape)))
            c["x"][tiny] = 1e-3 * rng.normal(size=c["x"][tiny].shape)
    c = {key: v.astype(dtype) for key, v in c.items()}
    return dict(
        c, k=k, eps=eps, momentum=(0.1, 0.2, 0.1, 0.3)[k], dtype=dtype, tiny=tiny
    )


def case(kind, k):
    """The inputs of case ``k`` (0 to 3) of a check, as the tuple ``CASE_FIELDS[kind]``:
    ``x, gamma, beta, dout, eps = bnlib.exercises.case("batchnorm", 2)``."""
    if kind not in CASE_FIELDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {list(CASE_FIELDS)}")
    c = _draw(kind, k)
    return tuple(c[f] for f in CASE_FIELDS[kind])


def _describe(kind, c):
    fields = CASE_FIELDS[kind]
    arrays = [f"{f} {c[f].shape}" for f in fields if isinstance(c[f], np.ndarray)]
    scalars = [f"{f} = {c[f]:g}" for f in ("eps", "momentum", "lr") if f in fields]
    what = ", ".join(arrays + [np.dtype(c["dtype"]).name] + scalars)
    return f"case {c['k']} (seed {c['k']}): {what}"
