"""bnlib: a small numpy library for learning batch normalization, with PyTorch
semantics.

Two layers, as in PyTorch: :mod:`bnlib.functional` (pure forward/backward functions with
explicit caches) and the modules (stateful layers with ``params``, ``grads``,
``train()`` and ``eval()``). Around them: batch-norm variants (:mod:`bnlib.variants`),
model builders (:mod:`bnlib.models`), BN surgery on trained models
(:mod:`bnlib.surgery`), training, optimizers, losses, data, gradient checks, exercise
checkers and figure style.

Each chapter's own experiments live in ``bnlib.chapters``, one module per notebook
(``from bnlib.chapters import ch3_test_time as ch3``); they are not exported here.
"""

from . import exercises, functional, numerics, plotting
from .data import (
    Dataset,
    load_digits,
    load_mnist1d,
    load_mnist_idx,
    make_gaussian_classes,
    minibatches,
    read_idx,
)
from .gradcheck import check_module_gradients, numerical_gradient, rel_error
from .losses import accuracy, mse_loss, softmax_cross_entropy
from .models import ACTIVATIONS, NORMS, conv1d_net, make_mlp, norm_layer, rnn_classifier
from .modules import (
    BatchNorm1d,
    BatchNorm2d,
    BatchNormBase,
    Conv1d,
    Dropout,
    Flatten,
    GroupNorm,
    InstanceNorm1d,
    LayerNorm,
    Linear,
    Module,
    NormBase,
    ReLU,
    RMSNorm,
    Sequential,
    Sigmoid,
    Tanh,
)
from .optim import SGD, Adam
from .surgery import (
    batchnorm_layers,
    capture_inputs,
    fold_batchnorm,
    precise_bn,
    preserved,
)
from .train import (
    History,
    NonFiniteLossError,
    evaluate,
    fit,
    parallel_map,
    train_step,
)
from .variants import (
    BatchRenorm1d,
    GhostBatchNorm1d,
    LastStep,
    NoisyBatchNorm1d,
    NormRNN,
    WeightNormLinear,
)

__version__ = "0.1.0"

__all__ = [
    # modules
    "exercises",
    "functional",
    "numerics",
    "plotting",
    # layers
    "Module",
    "Linear",
    "Conv1d",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Dropout",
    "Flatten",
    "Sequential",
    "NormBase",
    "BatchNormBase",
    "BatchNorm1d",
    "BatchNorm2d",
    "LayerNorm",
    "GroupNorm",
    "InstanceNorm1d",
    "RMSNorm",
    # variants
    "BatchRenorm1d",
    "GhostBatchNorm1d",
    "NoisyBatchNorm1d",
    "WeightNormLinear",
    "NormRNN",
    "LastStep",
    # models
    "ACTIVATIONS",
    "NORMS",
    "norm_layer",
    "make_mlp",
    "conv1d_net",
    "rnn_classifier",
    # surgery
    "batchnorm_layers",
    "precise_bn",
    "fold_batchnorm",
    "capture_inputs",
    "preserved",
    # training
    "softmax_cross_entropy",
    "mse_loss",
    "accuracy",
    "SGD",
    "Adam",
    "History",
    "NonFiniteLossError",
    "fit",
    "evaluate",
    "train_step",
    "parallel_map",
    # data and checks
    "Dataset",
    "load_mnist1d",
    "load_digits",
    "make_gaussian_classes",
    "read_idx",
    "load_mnist_idx",
    "minibatches",
    "numerical_gradient",
    "rel_error",
    "check_module_gradients",
]
