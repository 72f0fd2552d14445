"""Dual coordinate descent for the L2-loss SVM (Hsieh et al., ICML 2008), compiled with numba.

The same problem as ``xmc.core.solver``'s Newton-CG, for each label j of a cluster:

    min_w  0.5 ||w||^2 + C * sum_i max(0, 1 - y_ij * x_i . w)^2          (y in {-1, +1})

solved in its dual, ``min_a 0.5 a^T (Q + D) a - 1^T a`` with ``a >= 0``, ``Q_ik = y_i y_k x_i.x_k``
and ``D = I / (2C)`` (C may differ per label, ``label_cost_exponent``, and per row,
``row_cost_exponent``: D's entry of (row i, label j) is then ``1 / (2 C_j r_i)``), keeping
``w = sum_i a_i y_i x_i`` up to date: one coordinate step reads one sparse row, so a pass costs
O(nnz(X)) whatever the number of features. This is the solver
liblinear (and so PECOS) uses by default for text; on real leaves, where a parent holds thousands
of documents and only a few are a label's positives, it beat batched Newton-CG in torch by a wide
margin on the CPU (docs/performance.md). Newton-CG stays for GPUs.

The labels of a block (up to ``BLOCK``) are solved together: one row order per pass, and for each
row the label loop innermost, so the row's feature ids and values are read once for the block and
the weights ``W[f, :]`` of a feature are contiguous (the loop vectorises). Each label's problem is
unchanged and independent; only its visiting order is shared. On pypi-tags' leaves this was 2.8x
faster than solving label after label, at the same objective (relative difference 2e-4 on average).
liblinear's shrinking is left out: on those leaves it removed no rows before convergence (visits per
label and row equalled the passes), and a shared order has no per-label active set.

The weights, the row values and the scores are float32 (the dual variables float64): the inner
loops then move half the bytes and vectorise twice as wide, 25-30 % faster on pypi-tags' leaves at
the same objective (relative difference 1e-7). liblinear's shrinking was tried with matcher-aware
negatives too, per (row, label) so a label's result stays its own: no faster (docs/performance.md).

Stopping: liblinear's, per label: the spread of its projected gradients over a pass
``max PG - min PG <= tol`` freezes it; the block stops when every label is frozen, or after
``max_iter`` passes. The order is a seeded permutation per pass, so the result does not depend on
threads or runs, nor on which other labels share the block.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
from numba import njit

BLOCK = 32
"""Labels solved together: their weights ``W[f, :]`` are 4 cache lines per feature. The solver's time
on the 40 largest units of a fit, 64 / 32 / 16 / 8 / 1: pypi-tags 0.27 / 0.25 / 0.26 / 0.30 / 0.75 s,
debian-deps 3.2 / 3.0 / 3.1 / 3.6 / 9.9 s, its reference TF-IDF (203K features) 5.1 / 4.9 / 4.7 /
5.4 / 14.1 s."""


@njit(cache=True, nogil=True)
def _solve_block(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, sq_norms: np.ndarray,
                 y: np.ndarray, d: int, costs: np.ndarray, inv_row_cost: np.ndarray, tol: float,
                 max_iter: int, seed: int) -> np.ndarray:
    """W (d x m) of the labels whose +-1 targets (int8) are the columns of ``y`` (n x m), the pair
    (row i, label j) with cost ``costs[j] / inv_row_cost[i]``."""
    n, m = y.shape
    W = np.zeros((d, m), dtype=np.float32)
    alpha = np.zeros((n, m), dtype=np.float64)
    z = np.empty(m, dtype=np.float32)
    step = np.empty(m, dtype=np.float32)
    pg_max = np.empty(m, dtype=np.float64)
    pg_min = np.empty(m, dtype=np.float64)
    frozen = np.zeros(m, dtype=np.bool_)
    index = np.arange(n)
    diag = 0.5 / costs  # D = 1 / (2 C_j r_i): one per label, times one per row
    state = np.uint64(seed * 1_000_003 + 1) | np.uint64(1)
    for _ in range(max_iter):
        for s in range(n):  # a fresh random order (xorshift, multiply-shift bounded)
            state ^= state << np.uint64(13)
            state ^= state >> np.uint64(7)
            state ^= state << np.uint64(17)
            t = s + np.int64(((state >> np.uint64(32)) * np.uint64(n - s)) >> np.uint64(32))
            index[s], index[t] = index[t], index[s]
        pg_max[:] = -np.inf
        pg_min[:] = np.inf
        for s in range(n):
            i = index[s]
            z[:] = 0.0
            for p in range(indptr[i], indptr[i + 1]):
                f, v = indices[p], data[p]
                for j in range(m):
                    z[j] += W[f, j] * v
            moved = False
            row = inv_row_cost[i]
            for j in range(m):
                step[j] = 0.0
                if frozen[j]:
                    continue
                a = alpha[i, j]
                yij = float(y[i, j])
                dij = diag[j] * row
                G = yij * z[j] - 1.0 + dij * a
                PG = 0.0 if a == 0.0 and G > 0.0 else G  # projected: a stays at its bound 0
                pg_max[j] = max(pg_max[j], PG)
                pg_min[j] = min(pg_min[j], PG)
                if abs(PG) > 1e-12:
                    new = max(a - G / (sq_norms[i] + dij), 0.0)
                    alpha[i, j] = new
                    step[j] = np.float32((new - a) * yij)
                    moved = True
            if moved:
                for p in range(indptr[i], indptr[i + 1]):
                    f, v = indices[p], data[p]
                    for j in range(m):
                        W[f, j] += step[j] * v
        done = True
        for j in range(m):
            frozen[j] = frozen[j] or pg_max[j] - pg_min[j] <= tol
            done = done and frozen[j]
        if done:
            break
    return W


def solve_dual_cd_blocks(X: sp.csr_matrix, Y: np.ndarray, cost: float | np.ndarray, tol: float,
                         max_iter: int, seed: int = 0,
                         row_cost: np.ndarray | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(first label, weights (d x up to ``BLOCK``)) of the L2-loss SVMs of ``Y``'s columns on the rows
    of ``X`` (bias column included by the caller), one block of labels at a time, so a caller that
    prunes each block never holds the dense d x m weights (memory: rows x BLOCK dual variables and
    d x BLOCK weights). ``cost``: one C for every label, or one per label (m); ``row_cost`` (n), if
    given, multiplies it per row (positive)."""
    X = sp.csr_matrix(X, dtype=np.float32)
    squares = sp.csr_matrix((X.data.astype(np.float64) ** 2, X.indices, X.indptr), shape=X.shape)
    sq_norms = np.asarray(squares.sum(axis=1)).ravel()  # in float64, sharing X's index arrays
    Y = np.asarray(Y)
    costs = np.broadcast_to(np.asarray(cost, dtype=np.float64), (Y.shape[1],))
    indptr, indices = X.indptr.astype(np.int64), X.indices.astype(np.int32)
    inv_row_cost = np.ones(X.shape[0]) if row_cost is None else 1.0 / np.asarray(row_cost, dtype=np.float64)
    for a in range(0, Y.shape[1], BLOCK):  # +-1 targets one block at a time (int8: n x BLOCK bytes)
        y = np.where(Y[:, a:a + BLOCK] > 0, 1, -1).astype(np.int8)
        yield a, _solve_block(indptr, indices, X.data, sq_norms, y, X.shape[1],
                              np.ascontiguousarray(costs[a:a + BLOCK]), inv_row_cost, float(tol),
                              int(max_iter), int(seed))

