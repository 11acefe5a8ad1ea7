"""Centered finite differences, for checking a backward pass by hand or in a test."""

from __future__ import annotations

import numpy as np

__all__ = ["numerical_gradient", "rel_error", "check_module_gradients"]


def numerical_gradient(f, x, h=1e-5):
    """dL/dx of the scalar function ``f()`` by centered differences, perturbing ``x``
    in place.

    ``(f(x + h e_i) - f(x - h e_i)) / (2h)`` for every entry i; x is restored
    afterwards. Use float64: the truncation error is O(h^2), the rounding error
    O(eps / h).
    """
    grad = np.zeros_like(x, dtype=np.float64)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        f_plus = f()
        x[i] = old - h
        f_minus = f()
        x[i] = old
        grad[i] = (f_plus - f_minus) / (2 * h)
    return grad


def rel_error(a, b, floor=1e-12):
    """Relative error of two arrays as a whole:
    ``||a - b|| / max(||a|| + ||b||, floor)``.

    Taken over the whole array (2-norm) rather than entry by entry, so that entries
    whose true gradient is almost zero do not dominate with meaningless ratios.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(
        np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), floor)
    )


def check_module_gradients(module, x, rng=None, h=1e-5):
    """Compare a module's backward with finite differences of
    ``L = sum(module(x) * R)``.

    R is a fixed random array, so every output entry carries a different weight.
    Returns ``{"x": rel_error, "weight": ..., ...}`` over the input and every parameter.
    The module is run in its current train/eval mode; x must be float64.
    """
    rng = np.random.default_rng(rng)
    x = np.array(x, dtype=np.float64)
    r = rng.normal(size=module(x).shape)

    def loss():
        return float(np.sum(module(x) * r))

    module(x)
    dx = module.backward(r)
    analytic = {"x": dx, **{k: module.grads[k].copy() for k in module.params}}
    errors = {"x": rel_error(dx, numerical_gradient(loss, x, h))}
    for k, p in module.params.items():
        errors[k] = rel_error(analytic[k], numerical_gradient(loss, p, h))
    return errors
