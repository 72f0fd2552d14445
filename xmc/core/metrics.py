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


def label_hits(Y: sp.csr_matrix, idx: np.ndarray) -> np.ndarray:
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
    return metrics_of_sums(metric_sums(Y, pred, ks, label_counts=label_counts, n_train=n_train))


def metric_sums(
    Y: sp.spmatrix,
    pred: sp.spmatrix,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    label_counts: np.ndarray | None = None,
    n_train: int | None = None,
) -> dict[str, float]:
    """The sums behind ``evaluate``'s metrics (``n``: rows): sums of shards' rows add up, so a
    held-out set scored shard by shard (``add_sums``) gives the metrics of the whole."""
    Y = csr(Y)
    pred = csr(pred)
    if Y.shape != pred.shape:
        raise ValueError(f"truth is {Y.shape} but predictions are {pred.shape}")
    kmax = max(ks)
    idx, _ = topk_rows(pred, kmax)
    hits = label_hits(Y, idx)
    n_pos = np.diff(Y.indptr).astype(np.float64)
    discount = 1.0 / np.log2(np.arange(2, kmax + 2))
    out: dict[str, float] = {"n": float(Y.shape[0])}
    inv_p = None
    if label_counts is not None and n_train is not None:
        inv_p = 1.0 / propensity(label_counts, n_train)
    for k in ks:
        h = hits[:, :k]
        out[f"P@{k}"] = float(h.sum() / k)
        out[f"R@{k}"] = float(np.sum(h.sum(1) / np.maximum(n_pos, 1)))
        ideal = np.cumsum(discount)[np.minimum(n_pos, k).astype(int) - 1]
        dcg = (h * discount[:k]).sum(1)
        out[f"nDCG@{k}"] = float(np.sum(np.where(n_pos > 0, dcg / ideal, 0.0)))
        if inv_p is not None:
            out[f"PSP@{k}.gained"] = float((h * inv_p[np.maximum(idx[:, :k], 0)]).sum())
            best_idx, _ = topk_rows(csr(Y.multiply(inv_p[None, :])), k)
            out[f"PSP@{k}.best"] = float(np.where(best_idx >= 0, inv_p[np.maximum(best_idx, 0)], 0.0).sum())
    return out


def add_sums(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Two ``metric_sums`` added (keys in ``a``'s order)."""
    return {key: a.get(key, 0.0) + b.get(key, 0.0) for key in [*a, *(k for k in b if k not in a)]}


def metrics_of_sums(sums: dict[str, float]) -> dict[str, float]:
    """``evaluate``'s metrics, in percent, from ``metric_sums`` (added over shards or not)."""
    n = max(sums["n"], 1.0)
    out: dict[str, float] = {}
    for key in sums:
        if key == "n" or key.endswith(".best"):
            continue
        if key.endswith(".gained"):
            out[key[: -len(".gained")]] = 100 * sums[key] / max(sums[key.replace(".gained", ".best")], 1e-12)
        else:
            out[key] = 100 * sums[key] / n
    return out
