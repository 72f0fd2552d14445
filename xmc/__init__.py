"""xmc: partition-based extreme multi-label classification with disentangled label clusters.

The public surface is loaded on first use, so ``import xmc`` (and ``xmc --help``) stays fast and
imports no torch, Spark, Ray or MLflow; each engine loads when something needs it.

    from xmc import XMCParams, fit
    model = fit(X, Y, XMCParams().replace(max_leaf_size=16))
    model.save("runs/m")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from xmc._version import __version__

if TYPE_CHECKING:
    from xmc.core.executor import Executor, LocalExecutor
    from xmc.core.fit import fit
    from xmc.core.model import XMCModel
    from xmc.params import PredictParams, SolverParams, TreeParams, XMCParams

_WHERE = {
    "Executor": "xmc.core.executor", "LocalExecutor": "xmc.core.executor", "fit": "xmc.core.fit",
    "XMCModel": "xmc.core.model", "PredictParams": "xmc.params", "SolverParams": "xmc.params",
    "TreeParams": "xmc.params", "XMCParams": "xmc.params",
}

__all__ = [
    "Executor", "LocalExecutor", "PredictParams", "SolverParams", "TreeParams", "XMCModel", "XMCParams",
    "__version__", "fit",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'xmc' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
