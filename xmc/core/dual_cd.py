"""Dual coordinate descent for the L2-loss SVM (Hsieh et al., ICML 2008), compiled with numba.

The same problem as ``xmc.core.solver``'s Newton-CG, for each label j of a cluster:

    min_w  0.5 ||w||^2 + C * sum_i max(0, 1 - y_ij * x_i . w)^2          (y in {-1, +1})

solved in its dual, ``min_a 0.5 a^T (Q + D) a - 1^T a`` with ``a >= 0``, ``Q_ik = y_i y_k x_i.x_k``
and ``D = I / (2C)``, keeping ``w = sum_i a_i y_i x_i`` up to date: one coordinate step reads one
sparse row, so a pass costs O(nnz(X)) whatever the number of features. Coordinates whose
projected gradient says they will stay at zero are shrunk away, which is why negatives far from
the margin (most rows of a fat leaf, for most of its labels) cost almost nothing after a pass or
two. This is the solver liblinear (and so PECOS) uses by default for text; on real leaves, where a
parent holds thousands of documents and only a few are a label's positives, it beat batched
Newton-CG in torch by a wide margin on the CPU (docs/performance.md). Newton-CG stays for GPUs.

Stopping: liblinear's, the spread of projected gradients over a pass ``max PG - min PG <= tol``
(with a final pass over all coordinates), or ``max_iter`` passes. The visiting order is a
seeded permutation per label and pass, so the result does not depend on threads or runs.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit


@njit(cache=True, nogil=True)
def _xorshift(state: np.ndarray) -> np.uint64:
    x = state[0]
    x ^= (x << np.uint64(13)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    x ^= x >> np.uint64(7)
    x ^= (x << np.uint64(17)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    state[0] = x
    return x


@njit(cache=True, nogil=True)
def _solve_columns(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, sq_norms: np.ndarray,
                   y_ptr: np.ndarray, y_rows: np.ndarray, d: int, cost: float, tol: float,
                   max_iter: int, seed: int) -> np.ndarray:
    """W (d x m) for labels whose positive rows are ``y_rows[y_ptr[j]:y_ptr[j+1]]`` (sorted)."""
    n = indptr.shape[0] - 1
    m = y_ptr.shape[0] - 1
    W = np.zeros((d, m), dtype=np.float32)
    diag = 0.5 / cost
    w = np.zeros(d, dtype=np.float64)
    alpha = np.zeros(n, dtype=np.float64)
    y = np.empty(n, dtype=np.float64)
    index = np.empty(n, dtype=np.int64)
    state = np.empty(1, dtype=np.uint64)
    for j in range(m):
        w[:] = 0.0
        alpha[:] = 0.0
        y[:] = -1.0
        for p in range(y_ptr[j], y_ptr[j + 1]):
            y[y_rows[p]] = 1.0
        for i in range(n):
            index[i] = i
        state[0] = np.uint64(seed * 1_000_003 + j + 1) | np.uint64(1)
        active = n
        pg_max_old = np.inf  # no upper bound on a: only the shrink-at-zero test needs it
        for _ in range(max_iter):
            pg_max = -np.inf
            pg_min = np.inf
            for s in range(active):  # a fresh random order of the active rows
                t = s + np.int64(_xorshift(state) % np.uint64(active - s))
                index[s], index[t] = index[t], index[s]
            s = 0
            while s < active:
                i = index[s]
                yi = y[i]
                z = 0.0
                for p in range(indptr[i], indptr[i + 1]):
                    z += w[indices[p]] * data[p]
                G = yi * z - 1.0 + diag * alpha[i]
                PG = 0.0
                if alpha[i] == 0.0:
                    if G > pg_max_old:  # will stay at zero: shrink it away
                        active -= 1
                        index[s], index[active] = index[active], index[s]
                        continue
                    if G < 0.0:
                        PG = G
                else:
                    PG = G
                pg_max = max(pg_max, PG)
                pg_min = min(pg_min, PG)
                if abs(PG) > 1e-12:
                    old = alpha[i]
                    alpha[i] = max(old - G / (sq_norms[i] + diag), 0.0)
                    step = (alpha[i] - old) * yi
                    for p in range(indptr[i], indptr[i + 1]):
                        w[indices[p]] += step * data[p]
                s += 1
            if pg_max - pg_min <= tol:
                if active == n:
                    break
                active = n  # converged on the shrunk set: check every row once more
                pg_max_old = np.inf
                continue
            pg_max_old = pg_max if pg_max > 0 else np.inf
        for k in range(d):
            W[k, j] = w[k]
    return W


def solve_dual_cd(X: sp.csr_matrix, Y: np.ndarray, cost: float, tol: float, max_iter: int,
                  seed: int = 0) -> np.ndarray:
    """Weights (d x m) of m L2-loss SVMs on the rows of ``X`` (bias column included by the caller)."""
    X = sp.csr_matrix(X, dtype=np.float64)
    Yc = sp.csc_matrix(np.asarray(Y) > 0)
    Yc.sort_indices()
    sq_norms = np.asarray(X.multiply(X).sum(axis=1)).ravel()
    return _solve_columns(X.indptr.astype(np.int64), X.indices.astype(np.int64), X.data, sq_norms,
                          Yc.indptr.astype(np.int64), Yc.indices.astype(np.int64), X.shape[1],
                          float(cost), float(tol), int(max_iter), int(seed))
