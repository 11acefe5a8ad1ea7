"""Losses: each returns ``(loss, dlogits)``, the mean loss over the batch and its
gradient."""

from __future__ import annotations

import numpy as np

__all__ = ["softmax_cross_entropy", "mse_loss", "accuracy"]


def softmax_cross_entropy(logits, y):
    """Mean cross-entropy of softmax(logits) against integer labels.

    Args:
        logits: (N, K) scores.
        y: (N,) integer class labels in [0, K).
    Returns:
        loss (float), dlogits (N, K) = (softmax(logits) - onehot(y)) / N.
    """
    logits = np.asarray(logits)
    y = np.asarray(y)
    if logits.ndim != 2 or y.shape != (logits.shape[0],):
        raise ValueError(
            f"softmax_cross_entropy: expected logits (N, K) and labels (N,), "
            f"got {logits.shape} and {y.shape}"
        )
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = logits.shape[0]
    loss = -log_probs[np.arange(n), y].mean()
    dlogits = np.exp(log_probs)
    dlogits[np.arange(n), y] -= 1.0
    return float(loss), dlogits / n


def mse_loss(pred, target):
    """Mean squared error over all entries: loss (float), dpred (shape of pred)."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(
            f"mse_loss: pred {pred.shape} and target {target.shape} differ in shape"
        )
    diff = pred - target
    return float(np.mean(diff**2)), (2.0 / diff.size) * diff


def accuracy(logits, y):
    """Fraction of rows whose argmax equals the label."""
    return float(np.mean(np.argmax(logits, axis=1) == y))
