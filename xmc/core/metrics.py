"""Ranking metrics of the field on CSR predictions: P@k, R@k, nDCG@k and propensity-scored PSP@k.

``pred`` holds scores (any stored entry is a prediction, ranked by score, ties by label index);
``Y`` is the 0/1 truth. Averages run over all instances; an instance with no true label scores
0 on every metric (it cannot be hit), as in the XC repository's tools. PSP@k follows Jain et al.
(2016): label propensity ``p_l = 1 / (1 + c * exp(-a * log(n_l + b)))``, ``c = (log N - 1) *
(b + 1)^a``, from training counts ``n_l`` over ``N`` training instances, and is reported
normalised by the best PSP@k any ranking could reach on the same data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from xmc.core.sparse import csr, topk_rows

PROPENSITY_A = 0.55
PROPENSITY_B = 1.5
DEFAULT_KS = (1, 3, 5)


def propensity(label_counts: np.ndarray, n_train: int, a: float = PROPENSITY_A,
               b: float = PROPENSITY_B) -> np.ndarray:
    """Jain et al. propensity of each label from its training frequency."""
    c = (np.log(n_train) - 1.0) * (b + 1.0) ** a
    return 1.0 / (1.0 + c * np.exp(-a * np.log(np.asarray(label_counts, np.float64) + b)))


def _hits(Y: sp.csr_matrix, idx: np.ndarray) -> np.ndarray:
    """(n x k) 0/1: is the predicted label idx[i, r] a true label of row i? (-1 = no prediction)."""
    n_labels = Y.shape[1]
    rows, cols = Y.nonzero()
    truth = np.sort(rows.astype(np.int64) * n_labels + cols)
    keys = np.arange(idx.shape[0])[:, None].astype(np.int64) * n_labels + idx
    pos = np.searchsorted(truth, keys)
    found = truth[np.minimum(pos, len(truth) - 1)] == keys if len(truth) else np.zeros_like(keys, bool)
    return (found & (idx >= 0)).astype(np.float64)


def evaluate(
    Y: sp.spmatrix,
    pred: sp.spmatrix,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    label_counts: np.ndarray | None = None,
    n_train: int | None = None,
) -> dict[str, float]:
    """P@k, R@k, nDCG@k (and PSP@k when training counts are given), in percent."""
    Y = csr(Y)
    pred = csr(pred)
    if Y.shape != pred.shape:
        raise ValueError(f"truth is {Y.shape} but predictions are {pred.shape}")
    kmax = max(ks)
    idx, _ = topk_rows(pred, kmax)
    hits = _hits(Y, idx)
    n_pos = np.diff(Y.indptr).astype(np.float64)
    discount = 1.0 / np.log2(np.arange(2, kmax + 2))
    out: dict[str, float] = {}
    inv_p = None
    if label_counts is not None and n_train is not None:
        inv_p = 1.0 / propensity(label_counts, n_train)
    for k in ks:
        h = hits[:, :k]
        out[f"P@{k}"] = 100 * float(h.sum(1).mean() / k)
        out[f"R@{k}"] = 100 * float(np.mean(h.sum(1) / np.maximum(n_pos, 1)))
        ideal = np.cumsum(discount)[np.minimum(n_pos, k).astype(int) - 1]
        dcg = (h * discount[:k]).sum(1)
        out[f"nDCG@{k}"] = 100 * float(np.mean(np.where(n_pos > 0, dcg / ideal, 0.0)))
        if inv_p is not None:
            gained = (h * inv_p[np.maximum(idx[:, :k], 0)]).sum(1)
            best_idx, _ = topk_rows(csr(Y.multiply(inv_p[None, :])), k)
            best = np.where(best_idx >= 0, inv_p[np.maximum(best_idx, 0)], 0.0).sum(1)
            out[f"PSP@{k}"] = 100 * float(gained.sum() / max(best.sum(), 1e-12))
    return out
