"""xmc: partition-based extreme multi-label classification with disentangled label clusters."""

__version__ = "0.1.0"

from xmc.executor import Executor, LocalExecutor  # noqa: E402
from xmc.model import XMCModel  # noqa: E402
from xmc.params import PredictParams, SolverParams, TreeParams, XMCParams  # noqa: E402

__all__ = [
    "Executor",
    "LocalExecutor",
    "PredictParams",
    "SolverParams",
    "TreeParams",
    "XMCModel",
    "XMCParams",
    "__version__",
]
