"""Products of each row's strongest features: a degree-2 term for inputs of few features.

A linear ranker over a few hundred words can only add up each word's evidence; a pair lets it weigh
"python" with "library" apart from either word alone. Each row's ``m`` largest values (ties to the
lower feature index) give their m(m-1)/2 products ``x_i x_j`` as features of their own. The pair
columns are the pairs the fitting rows hold (``pair_vocabulary``), so a pair never seen in fitting has
no column, as an unseen word has none. The pairs' block is L2-normalised, scaled by ``pair_weight``
and appended to the row, and the row normalised again, at fit and at predict (the model stores the
vocabulary). ``SolverParams.feature_pairs`` is m; measured on validation rows in docs/performance.md.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit

from xmc.core.sparse import csr, normalize_rows
from xmc.params import SolverParams


def row_limit(solver: SolverParams, row_labels: float) -> tuple[float, str]:
    """The most features a fitting row may hold on average for pairs (0: any), and the param that set
    it. Rows of many labels (``pair_many_labels``) take the larger ``pair_max_row_features_many_labels``:
    on the proxy's labels pairs still paid at 15-17 features a row, where rows of 2-5 labels lost."""
    limit, name = solver.pair_max_row_features, "pair_max_row_features"
    if limit and solver.pair_many_labels and row_labels >= solver.pair_many_labels:
        many = solver.pair_max_row_features_many_labels
        if not many or many > limit:
            limit, name = many, "pair_max_row_features_many_labels"
    return limit, name


def pairs_of(solver: SolverParams, n_features: int, row_features: float, row_labels: float = 0.0) -> int:
    """The m of a fit on ``n_features`` input features whose fitting rows hold ``row_features`` of them
    and ``row_labels`` labels on average: ``feature_pairs``, or 0 past ``pair_max_features`` or the row
    limit (``row_limit``). Pairs stand in for the evidence a short row lacks; a long row's top m are a
    small, arbitrary part of it, and the pairs' share of the norm is taken from the rest
    (docs/performance.md)."""
    limits = ((solver.pair_max_features, n_features), (row_limit(solver, row_labels)[0], row_features))
    return 0 if any(limit and value > limit for limit, value in limits) else solver.feature_pairs


def pairs_record(solver: SolverParams, n_features: int, row_features: float | None,
                 row_labels: float | None, n_pairs: int) -> dict[str, object]:
    """``model.info["pairs"]``: whether the fit made pairs and why, for the train summary and MLflow
    (a user whose input sits near a limit sees which side it fell on). ``row_features`` None: not
    counted (the sharded fit skips the count past the feature limit), nor ``row_labels``."""
    m = pairs_of(solver, n_features, row_features or 0.0, row_labels or 0.0)
    if m:
        why = f"{n_pairs} pair columns from each row's {m} largest features"
    elif not solver.feature_pairs:
        why = "none: feature_pairs is 0"
    elif solver.pair_max_features and n_features > solver.pair_max_features:
        why = f"none: {n_features} features > pair_max_features {solver.pair_max_features}"
    else:
        limit, name = row_limit(solver, row_labels or 0.0)
        why = (f"none: {row_features or 0.0:.1f} features a row on average > {name} {limit:g} "
               f"(rows of {row_labels or 0.0:.1f} labels)")
    return {"m": m, "n_pairs": n_pairs, "n_features": n_features,
            "row_features": None if row_features is None else round(row_features, 3),
            "row_labels": None if row_labels is None else round(row_labels, 3), "why": why}


def pair_count(pairs: np.ndarray | None) -> int:
    """Pair columns of a model: 0 where it has no pairs (``pairs`` None)."""
    return 0 if pairs is None else len(pairs)


def column_count(n_features: int, pairs: np.ndarray | None) -> int:
    """Columns the weights read: the input features, then the pair columns (the bias row after)."""
    return n_features + pair_count(pairs)


def row_entries(X: sp.csr_matrix) -> float:
    """Mean nonzero entries per row of ``X`` (0 for no rows): ``pairs_of``'s ``row_features`` of the
    fitting rows' features, and its ``row_labels`` of their labels."""
    return np.count_nonzero(X.data) / X.shape[0] if X.shape[0] else 0.0


@njit(cache=True, nogil=True)
def _pairs(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, m: int,
           n_features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, key f_i * D + f_j with f_i < f_j, product) of every pair of each row's top m entries."""
    n = len(indptr) - 1
    count = 0
    for i in range(n):
        k = min(indptr[i + 1] - indptr[i], m)
        count += k * (k - 1) // 2
    rows = np.empty(count, dtype=np.int64)
    keys = np.empty(count, dtype=np.int64)
    values = np.empty(count, dtype=np.float32)
    top_f = np.empty(m, dtype=np.int64)
    top_v = np.empty(m, dtype=np.float32)
    out = 0
    for i in range(n):
        k = 0  # insertion into the row's best k: value descending, ties to the lower index
        for p in range(indptr[i], indptr[i + 1]):
            f, v = indices[p], data[p]
            pos = k
            if k == m:
                if not (v > top_v[m - 1] or (v == top_v[m - 1] and f < top_f[m - 1])):
                    continue
                pos = m - 1
            else:
                k += 1
            while pos > 0 and (v > top_v[pos - 1] or (v == top_v[pos - 1] and f < top_f[pos - 1])):
                top_f[pos], top_v[pos] = top_f[pos - 1], top_v[pos - 1]
                pos -= 1
            top_f[pos], top_v[pos] = f, v
        for a in range(k):
            for b in range(a + 1, k):
                lo, hi = min(top_f[a], top_f[b]), max(top_f[a], top_f[b])
                rows[out] = i
                keys[out] = lo * n_features + hi
                values[out] = top_v[a] * top_v[b]
                out += 1
    return rows, keys, values


def row_pairs(X: sp.csr_matrix, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, pair key, product) triplets of ``X``'s rows' top-``m`` features (key ``f_i * D + f_j``)."""
    X = csr(X)
    return _pairs(X.indptr.astype(np.int64), X.indices.astype(np.int64), np.asarray(X.data, dtype=np.float32),
                  int(m), int(X.shape[1]))


def pair_vocabulary(X: sp.csr_matrix, m: int) -> np.ndarray:
    """The sorted keys of the pairs the fitting rows ``X`` hold: the pair columns of the model."""
    return np.unique(row_pairs(X, m)[1])


def with_pairs(X: sp.csr_matrix, vocabulary: np.ndarray, m: int, weight: float,
               normalize: bool = True) -> sp.csr_matrix:
    """``X`` with its rows' pair columns appended (``X.shape[1] + len(vocabulary)`` columns): each row's
    pairs in the vocabulary, their block unit-norm times ``weight``; the row normalised again if
    ``normalize`` (the model's ``normalize_rows``)."""
    X = csr(X)
    rows, keys, values = row_pairs(X, m)
    col = np.searchsorted(vocabulary, keys)
    known = col < len(vocabulary)
    known[known] = vocabulary[col[known]] == keys[known]
    P = sp.csr_matrix((values[known], (rows[known], col[known])), shape=(X.shape[0], len(vocabulary)),
                      dtype=np.float32)
    P = normalize_rows(P)
    P.data *= np.float32(weight)
    Z = sp.csr_matrix(sp.hstack([X, P], format="csr"), dtype=np.float32)
    return normalize_rows(Z) if normalize else Z
