"""Optimizers with PyTorch's update rules, over a model's ``(module, name)``
parameters."""

from __future__ import annotations

import numpy as np

__all__ = ["SGD", "Adam"]


class _Optimizer:
    """Holds the parameters to update: a Module (all its parameters) or a list of
    ``(module, name)`` pairs (e.g. only the BatchNorm weights and biases)."""

    def __init__(self, params, lr):
        self.params = (
            params.parameters() if hasattr(params, "parameters") else list(params)
        )
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got lr={lr}")
        self.lr = lr
        self.state = [{} for _ in self.params]

    def zero_grad(self):
        for m, k in self.params:
            m.grads[k] = np.zeros_like(m.params[k])

    def step(self):
        for (m, k), state in zip(self.params, self.state):
            m.params[k] -= self._update(m.params[k], m.grads[k], state)


class SGD(_Optimizer):
    """SGD with momentum and L2 weight decay, as ``torch.optim.SGD``:
    ``g = grad + wd * p; buf = momentum * buf + g; p -= lr * buf``."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr)
        self.momentum, self.weight_decay = momentum, weight_decay

    def _update(self, p, g, state):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            buf = state.get("buf")
            state["buf"] = g.copy() if buf is None else self.momentum * buf + g
            g = state["buf"]
        return self.lr * g


class Adam(_Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction, as ``torch.optim.Adam``."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay

    def _update(self, p, g, state):
        b1, b2 = self.betas
        if self.weight_decay:
            g = g + self.weight_decay * p
        t = state["t"] = state.get("t", 0) + 1
        state["m"] = b1 * state.get("m", 0.0) + (1 - b1) * g
        state["v"] = b2 * state.get("v", 0.0) + (1 - b2) * g * g
        m_hat = state["m"] / (1 - b1**t)
        v_hat = state["v"] / (1 - b2**t)
        return self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
