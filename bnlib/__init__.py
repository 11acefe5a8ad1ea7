"""bnlib: a small numpy library for learning batch normalization.

Two layers, as in PyTorch: :mod:`bnlib.functional` (pure forward/backward
functions with explicit caches) and the modules below (stateful layers with
``params``, ``grads``, ``train()`` and ``eval()``). Semantics follow PyTorch.
"""
from . import exercises, functional, plotting
from .data import (Dataset, load_digits, load_mnist1d, load_mnist_idx, make_gaussian_classes,
                   minibatches, read_idx)
from .gradcheck import check_module_gradients, numerical_gradient, rel_error
from .losses import accuracy, mse_loss, softmax_cross_entropy
from .modules import (BatchNorm1d, BatchNorm2d, Conv1d, Dropout, Flatten, GroupNorm,
                      InstanceNorm1d, LayerNorm, Linear, Module, ReLU, RMSNorm, Sequential,
                      Sigmoid, Tanh)
from .optim import SGD, Adam
from .train import History, NonFiniteLossError, evaluate, fit, train_step

# Chapter-specific tools; each module lists its public names in __all__.
from .diagrams import *  # noqa: F401,F403
from .inference import *  # noqa: F401,F403
from .intuition import *  # noqa: F401,F403
from .probes import *  # noqa: F401,F403
from .sequence import *  # noqa: F401,F403

__version__ = "0.1.0"

__all__ = [
    "functional", "exercises", "plotting",
    "Module", "Linear", "Conv1d", "ReLU", "Sigmoid", "Tanh", "Dropout", "Flatten", "Sequential",
    "BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm", "InstanceNorm1d", "RMSNorm",
    "softmax_cross_entropy", "mse_loss", "accuracy", "SGD", "Adam",
    "History", "NonFiniteLossError", "fit", "evaluate", "train_step",
    "Dataset", "load_mnist1d", "load_digits", "make_gaussian_classes", "read_idx",
    "load_mnist_idx", "minibatches",
    "numerical_gradient", "rel_error", "check_module_gradients",
]
