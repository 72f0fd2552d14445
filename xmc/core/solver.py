"""The rankers' solver: one-vs-rest L2-regularised squared-hinge SVMs of one cluster's children.

For each column j of ``Y``:  min_w  0.5 ||w||^2 + C * sum_i max(0, 1 - y_ij * x_i . w)^2,
with the bias the weight of a constant feature ``bias`` appended to every row (regularised, as
in liblinear). Two algorithms solve it: dual coordinate descent (``xmc.core.dual_cd``, numba),
the CPU's, and batched Newton-CG in torch (``xmc.core.newton_cg``), a GPU's. This module picks
one and imports torch only when Newton-CG runs or a GPU may be there: on a CPU-only machine a
training run never loads torch (about 250 MiB of resident memory and a second of start-up).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

from xmc.core.sparse import with_bias
from xmc.errors import ParamError
from xmc.params import SolverParams

_NVIDIA_NODES = ("/dev/nvidiactl", "/proc/driver/nvidia")


def _gpu_available() -> bool:
    """Whether torch sees a CUDA GPU; without an NVIDIA driver on the machine, torch is not loaded."""
    if "torch" not in sys.modules and not any(os.path.exists(p) for p in _NVIDIA_NODES):
        return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; 'cuda' without a GPU is an error."""
    if device == "auto":
        return "cuda" if _gpu_available() else "cpu"
    if device == "cuda" and not _gpu_available():
        raise ParamError(
            "device='cuda' but torch sees no GPU: use device='cpu' or install a CUDA build of torch"
        )
    return device


def use_dual_cd(params: SolverParams, device: str) -> bool:
    """Dual coordinate descent unless asked for Newton-CG, or 'auto' on a GPU (where batched
    Newton-CG's sparse x dense products pay)."""
    if params.algorithm == "auto":
        return device == "cpu"
    return params.algorithm == "dual-cd"


def solve_squared_hinge(X: sp.csr_matrix, Y: np.ndarray, params: SolverParams,
                        cost: float | np.ndarray | None = None,
                        row_cost: np.ndarray | None = None) -> np.ndarray:
    """Weights (d + 1, m) of m one-vs-rest squared-hinge SVMs; the last row is the bias weight.

    ``X`` is (n x d) CSR, ``Y`` an (n x m) 0/1 array, ``cost`` one C per column (m) or one for all
    (``params.cost`` when None), ``row_cost`` (n, positive) a factor on it per row, or None (1).
    Returns float32, before pruning.
    """
    W = np.zeros((X.shape[1] + 1, Y.shape[1]), dtype=np.float32)
    for a, block in solve_squared_hinge_blocks(X, Y, params, cost, row_cost):
        W[:, a:a + block.shape[1]] = block
    return W


def solve_squared_hinge_blocks(X: sp.csr_matrix, Y: np.ndarray, params: SolverParams,
                               cost: float | np.ndarray | None = None,
                               row_cost: np.ndarray | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``solve_squared_hinge``'s weights as (first column, d + 1 x some columns) blocks, in order.

    Dual coordinate descent solves labels in blocks anyway: handing each over as it is solved lets
    the caller prune it first, so the dense (d + 1) x m weights of a wide unit are never held (a
    pypi-tags TF-IDF unit: 71K features x 186 labels, 53 MB, on each of 2 threads). Newton-CG
    solves the whole unit at once: one block.
    """
    n, d = X.shape
    m = Y.shape[1]
    if Y.shape[0] != n:
        raise ValueError(f"X has {n} rows but Y has {Y.shape[0]}")
    if row_cost is not None and len(row_cost) != n:
        raise ValueError(f"X has {n} rows but row_cost has {len(row_cost)}")
    if n == 0 or m == 0:
        yield 0, np.zeros((d + 1, m), dtype=np.float32)
        return
    device = resolve_device(params.device)
    X_aug = with_bias(X, params.bias)
    if use_dual_cd(params, device):
        from xmc.core.dual_cd import solve_dual_cd_blocks

        yield from solve_dual_cd_blocks(X_aug, Y, params.cost if cost is None else cost, params.dual_tol,
                                        params.dual_max_iter, row_cost=row_cost)
        return
    import torch

    from xmc.core.newton_cg import solve_newton

    yield 0, solve_newton(X_aug, Y, params, torch.device(device), cost, row_cost)
