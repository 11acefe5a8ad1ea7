"""bnlib: a small numpy library for learning batch normalization, with PyTorch
semantics.

Two layers, as in PyTorch: :mod:`bnlib.functional` (pure forward/backward functions with
explicit caches) and the modules (stateful layers with ``params``, ``grads``,
``train()`` and ``eval()``). Around them: model builders (:mod:`bnlib.models`), BN
surgery on trained models (:mod:`bnlib.surgery`), training, optimizers, losses, data,
gradient checks, exercise checkers and figure style.

Each chapter's own experiments live in ``bnlib.chapters``, one module per notebook
(``from bnlib.chapters import ch3_test_time as ch3``); they are not exported here.
"""

from . import (
    data,
    exercises,
    functional,
    gradcheck,
    losses,
    models,
    modules,
    numerics,
    optim,
    plotting,
    surgery,
    train,
)

__version__ = "0.1.0"

# Each submodule lists its public names in its own ``__all__``, next to their
# definitions; the package exports exactly those (``bnlib.BatchNorm1d`` is
# ``bnlib.modules.BatchNorm1d``), plus four submodules used by name.
_EXPORTING = (modules, models, surgery, losses, optim, train, data, gradcheck)
globals().update({n: getattr(m, n) for m in _EXPORTING for n in m.__all__})
__all__ = ["exercises", "functional", "numerics", "plotting"] + [
    n for m in _EXPORTING for n in m.__all__
]
