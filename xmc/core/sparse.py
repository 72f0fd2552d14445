"""Small sparse-matrix helpers shared by training, prediction and metrics."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def csr(A: sp.spmatrix | sp.sparray, dtype: type = np.float32) -> sp.csr_matrix:
    """Canonical CSR: given dtype, sorted indices, duplicates summed, explicit zeros dropped."""
    M = sp.csr_matrix(A, dtype=dtype)
    if (M is not A and sp.issparse(A) and A.format == "csr" and not M.has_canonical_format
            and np.shares_memory(M.indices, A.indices)):
        # a dtype change copies the values but shares the index arrays: sorting M in place would
        # reorder A's indices under A's old values (the caller's matrix silently corrupted)
        M = M.copy()
    M.sum_duplicates()
    M.eliminate_zeros()
    M.sort_indices()
    return M


def normalize_rows(X: sp.csr_matrix) -> sp.csr_matrix:
    """L2-normalise each row; all-zero rows stay zero (they have no direction to keep)."""
    X = csr(X, X.dtype.type)
    sq = np.asarray(X.multiply(X).sum(axis=1)).ravel()
    norms = np.sqrt(sq, dtype=np.float64)
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    X = sp.csr_matrix(sp.diags(inv.astype(X.dtype)) @ X)
    X.sort_indices()
    return X


def with_bias(X: sp.csr_matrix, bias: float) -> sp.csr_matrix:
    """``[X, bias]``: the constant feature whose weight is a linear model's bias term (last column)."""
    return sp.hstack([X, np.full((X.shape[0], 1), bias, dtype=X.dtype)], format="csr")


def binarize(A: sp.spmatrix | sp.sparray) -> sp.csr_matrix:
    """0/1 pattern of A as float32 CSR (``Binary(.)`` of the method)."""
    B = csr(A)
    B.data[:] = 1.0
    return B


def nonzero_rows(A: sp.csc_matrix | sp.csr_matrix) -> np.ndarray:
    """Sorted indices of the rows that hold at least one stored entry."""
    if sp.isspmatrix_csr(A):
        return np.flatnonzero(np.diff(A.indptr)).astype(np.int64)
    return np.unique(A.indices).astype(np.int64)


def indicator(parent: np.ndarray, n_parents: int) -> sp.csr_matrix:
    """The (n_children x n_parents) 0/1 matrix with a one at (c, parent[c])."""
    n = len(parent)
    return sp.csr_matrix(
        (np.ones(n, dtype=np.float32), (np.arange(n), parent)), shape=(n, n_parents)
    )


def topk_rows(S: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the column indices and values of the k largest stored entries, best first.

    Returns dense (n_rows x k) arrays; rows with fewer entries are padded with index -1 and
    value -inf. Vectorised: rows are padded into a dense block, then argpartition.
    """
    n = S.shape[0]
    counts = np.diff(S.indptr)
    width = max(int(counts.max()) if n else 0, 1)
    vals = np.full((n, width), -np.inf, dtype=np.float64)
    idx = np.full((n, width), -1, dtype=np.int64)
    rows = np.repeat(np.arange(n), counts)
    pos = np.arange(S.nnz) - np.repeat(S.indptr[:-1], counts)
    vals[rows, pos] = S.data
    idx[rows, pos] = S.indices
    return topk_dense(vals, idx, k)


def topk_dense(vals: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row of a padded (value, index) block, best first; ties broken by index."""
    n, width = vals.shape
    if width > k:
        part = np.argpartition(-vals, k - 1, axis=1)[:, :k]
        kept_vals = np.take_along_axis(vals, part, axis=1)
        # argpartition keeps any of the entries tied at the k-th value: rows where some were left
        # out are redone in full order, so the lower index wins there too (the tree alone and the
        # hybrid, which asks for more candidates, then agree on a row's first labels)
        kth = kept_vals.min(axis=1, initial=np.inf)[:, None]
        left_out = (vals == kth).sum(axis=1) > (kept_vals == kth).sum(axis=1)
        redo = np.flatnonzero(left_out & np.isfinite(kth[:, 0]))
        if len(redo):
            part[redo] = np.lexsort((idx[redo], -vals[redo]), axis=1)[:, :k]
        vals = np.take_along_axis(vals, part, axis=1)
        idx = np.take_along_axis(idx, part, axis=1)
    elif width < k:
        vals = np.hstack([vals, np.full((n, k - width), -np.inf)])
        idx = np.hstack([idx, np.full((n, k - width), -1, dtype=idx.dtype)])
    order = np.lexsort((idx, -vals), axis=1) if n else np.zeros((0, k), dtype=np.int64)
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(vals, order, axis=1)


def from_topk(idx: np.ndarray, vals: np.ndarray, n_cols: int) -> sp.csr_matrix:
    """CSR (n x n_cols) holding the (index, value) pairs of a top-k block; padding (-1) dropped."""
    n, k = idx.shape
    keep = idx >= 0
    rows = np.repeat(np.arange(n), k).reshape(n, k)[keep]
    M = sp.csr_matrix(
        (vals[keep].astype(np.float32), (rows, idx[keep])), shape=(n, n_cols)
    )
    M.sort_indices()
    return M
