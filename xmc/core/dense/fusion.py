"""The tree's and the dense scores as one ranking, with constants fitted on held-out training rows.

Candidates are the union of the tree's beam top-k and the dense top-k. The tree's score of a label
is its path score in (0, 1] (0 where the beam did not reach it); the dense score is mapped to (0, 1]
by ``exp(beta * (s - s_top))``. The hybrid is ``(1 - alpha) * tree + alpha * dense``. Fitting, in
order: gamma (the label-frequency prior) for the best dense-only held-out P@1, then (alpha, beta)
for the best hybrid P@1 (ties: P@5). alpha = 0, the tree alone, is on the grid, and a weight is
only taken when it beats the tree alone by ``MIN_GAIN`` held-out P@1: noise does not buy a change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from xmc.core.metrics import evaluate
from xmc.core.sparse import from_topk, topk_rows

GAMMAS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15)
ALPHAS = tuple(round(0.05 * i, 2) for i in range(21))
BETAS = (2.0, 5.0, 10.0, 20.0, 40.0)
MIN_GAIN = 0.1
"""Held-out P@1 points a hybrid weight must add over the tree alone to be taken."""


@dataclass(frozen=True)
class Fusion:
    alpha: float
    beta: float
    gamma: float
    record: dict[str, float]
    """Held-out P@1/P@5 of the tree, the dense part and the hybrid at the fitted constants."""


def fuse(tree: sp.csr_matrix, dense: sp.csr_matrix, alpha: float, k: int) -> sp.csr_matrix:
    """Top-k of ``(1 - alpha) * tree + alpha * dense`` per row (both N x L, scores in (0, 1])."""
    if alpha <= 0:
        S = sp.csr_matrix(tree)
    elif alpha >= 1:
        S = sp.csr_matrix(dense)
    else:
        S = sp.csr_matrix((1 - alpha) * tree + alpha * dense)
    idx, vals = topk_rows(S, k)
    return from_topk(idx, vals, S.shape[1])


def _p(Y: sp.csr_matrix, pred: sp.csr_matrix) -> tuple[float, float]:
    e = evaluate(Y, pred, (1, 5))
    return e["P@1"], e["P@5"]


def fit_gamma(Y: sp.csr_matrix, raw: np.ndarray, label_counts: np.ndarray, k: int) -> tuple[float, float]:
    """(gamma, dense P@1) best on held-out rows; ``raw`` is their dense score matrix without a prior."""
    prior = np.log1p(label_counts).astype(np.float32)
    best = (-1.0, 0.0)
    for g in GAMMAS:
        S = raw + g * prior
        idx = np.argpartition(-S, min(k, S.shape[1] - 1), axis=1)[:, :k]
        p1 = _p(Y, from_topk(idx, np.take_along_axis(S, idx, 1), S.shape[1]))[0]
        if p1 > best[0] + 1e-9:
            best = (p1, g)
    return best[1], best[0]


def fit_fusion(Y: sp.csr_matrix, tree: sp.csr_matrix, dense_idx: np.ndarray, dense_scores: np.ndarray,
               gamma: float, k: int) -> Fusion:
    """(alpha, beta) for the best hybrid held-out P@1 given the tree's and the dense top-k."""
    from xmc.core.dense.model import probabilities

    L = tree.shape[1]
    base = _p(Y, fuse(tree, tree, 0.0, k))
    best = (base, 0.0, BETAS[0])
    dense_p = (0.0, 0.0)
    for beta in BETAS:
        dense = from_topk(dense_idx, probabilities(dense_scores, beta), L)
        dense_p = _p(Y, dense)
        for alpha in ALPHAS[1:]:
            got = _p(Y, fuse(tree, dense, alpha, k))
            if got > best[0]:
                best = (got, alpha, beta)
    (p1, p5), alpha, beta = best
    if p1 < base[0] + MIN_GAIN:
        (p1, p5), alpha = base, 0.0
    return Fusion(alpha, beta, gamma, {"tree_P@1": base[0], "tree_P@5": base[1], "dense_P@1": dense_p[0],
                                       "dense_P@5": dense_p[1], "hybrid_P@1": p1, "hybrid_P@5": p5})
