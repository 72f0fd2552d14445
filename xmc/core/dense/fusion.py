"""The tree's and the dense scores as one ranking, with constants fitted on held-out training rows.

Candidates are the union of the tree's beam top-k and the dense top-k. Both sides are compared in
log space, relative to each row's best: the tree's ``ln(t / t_top)`` (its score is a product of
per-level probabilities) and the dense ``beta * (s - s_top)``; a candidate one side did not return
gets that side's lowest value in the row minus 1. The hybrid is ``(1 - alpha) * tree + alpha * dense``.
A linear mix of the raw (0, 1] scores was tried first and lost P@5 at every weight on Bibtex
held-out rows: l6-hinge path scores below the tree's top few are ~1e-10, so any dense candidate
displaced them. Fitting, in order: gamma (the label-frequency prior) for the best dense-only
held-out P@1, then (alpha, beta) for the best held-out (P@1 + P@5) / 2 among the weights that keep
P@1 at the tree's; alpha = 0 (the tree alone) is on the grid, and a weight is only taken when it
beats the tree alone by ``MIN_GAIN`` and by ``Z`` standard errors of the paired per-row gain: noise
does not buy a change. The second test came from pypi-tags, where 715 held-out rows gave alpha 0.4
for +0.42 held-out P@1 (three rows) and the test split then lost 0.50 P@1.

``kept`` (DenseParams.fusion_keeps, default 1): the tree's best ``kept`` labels keep their ranks and
the fusion orders the rest. On Bibtex and pypi-tags a free fusion's held-out P@1 gains turned into
test losses, while its gains below rank 1 held on test (docs/prime.md): so the tree, the
sharper ranker, names the first label and the dense part helps choose the next ones. With ranks
kept, P@1 cannot move, and the weight may go up to 0.9.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from xmc.core.metrics import evaluate, label_hits
from xmc.core.sparse import csr, from_topk, topk_rows

GAMMAS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15)
ALPHAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
FREE_ALPHA_MAX = 0.5
"""A free fusion (no kept ranks) puts at most half the weight on the dense part: it is the weaker ranker
on every real set here (Bibtex held-out P@1 63.5 vs 65.7), and a weight of 0.8 chosen on 499 held-out
rows lost 0.36 P@1 on test."""
BETAS = (5.0, 10.0, 20.0)
MIN_GAIN = 0.1
"""Held-out points of (P@1 + P@5) / 2 a hybrid weight must add over the tree alone to be taken."""
Z = 2.0
"""Standard errors of the paired held-out gain (per row: (P@1 + P@5) / 2, hybrid minus tree) the gain
must also exceed: about a 2 % one-sided chance that a weight with no real gain is taken."""


@dataclass(frozen=True)
class Fusion:
    alpha: float
    beta: float
    gamma: float
    kept: int
    record: dict[str, float]
    """Held-out P@1/P@5 of the tree, the dense part and the hybrid at the fitted constants."""


def _relative(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Row-wise ``values - row max`` over present entries; absent ones at the row's min - 1."""
    v = np.where(present, values, np.inf)
    low = np.where(present.any(axis=1, keepdims=True), v.min(axis=1, keepdims=True), 0.0)
    v = np.where(present, values, -np.inf)
    top = np.where(present.any(axis=1, keepdims=True), v.max(axis=1, keepdims=True), 0.0)
    return np.where(present, values - top, low - top - 1.0)


def fuse(tree: sp.csr_matrix, dense_idx: np.ndarray, dense_scores: np.ndarray, alpha: float, beta: float,
         k: int, kept: int = 0) -> sp.csr_matrix:
    """Top-k (N x L CSR, scores in (0, 1]) of the hybrid of the tree's scores and the dense top-k; the
    tree's best ``kept`` labels of a row come first, in the tree's order."""
    n, L = tree.shape
    if alpha <= 0:
        idx, vals = topk_rows(sp.csr_matrix(tree), k)
        return from_topk(idx, vals, L)
    ti, tv = topk_rows(sp.csr_matrix(tree), tree.getnnz(axis=1).max(initial=1))
    cand = np.concatenate([ti, dense_idx], axis=1)
    order = np.argsort(np.where(cand < 0, L, cand), axis=1, kind="stable")
    cand = np.take_along_axis(cand, order, 1)
    dup = np.zeros(cand.shape, bool)
    dup[:, 1:] = cand[:, 1:] == cand[:, :-1]
    valid = (cand >= 0) & ~dup
    rows = np.broadcast_to(np.arange(n)[:, None], cand.shape)
    lookup = sp.csr_matrix(tree, dtype=np.float64)
    t = np.zeros(cand.shape)
    t[valid] = np.asarray(lookup[rows[valid], cand[valid]]).ravel()
    shift = dense_scores.min(initial=0.0) - 1.0  # dense scores made > 0, so 0 means "absent"
    D = from_topk(dense_idx, (dense_scores - shift).astype(np.float64), L).astype(np.float64)
    d = np.zeros(cand.shape)
    d[valid] = np.asarray(D[rows[valid], cand[valid]]).ravel()
    with np.errstate(divide="ignore"):
        lt = _relative(np.log(np.where(t > 0, t, 1.0)), valid & (t > 0))
    ld = _relative(beta * d, valid & (d > 0))
    S = np.where(valid, (1 - alpha) * lt + alpha * ld, -np.inf)
    if kept > 0:  # the tree's first labels (ti: its own order, a 0 score too) above every fused value
        rank = np.full(cand.shape, kept)
        for r in range(min(kept, ti.shape[1])):
            rank = np.where(valid & (cand == ti[:, r : r + 1]) & (ti[:, r : r + 1] >= 0), r, rank)
        S = np.where(rank < kept, kept - rank, S) - kept  # pinned in (-kept, 0], the rest <= -kept
    k = min(k, S.shape[1])
    top = np.argpartition(-S, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(S, top, 1)
    idx = np.where(np.isfinite(vals), np.take_along_axis(cand, top, 1), -1)
    return from_topk(idx, np.exp(np.where(np.isfinite(vals), vals, 0.0)), L)


def per_row(Y: sp.csr_matrix, pred: sp.csr_matrix) -> np.ndarray:
    """Each row's (P@1 + P@5) / 2, in points: the quantity the fusion maximises, row by row."""
    idx, _ = topk_rows(sp.csr_matrix(pred), 5)
    hits = label_hits(csr(Y), idx)  # evaluate()'s own hit test, kept per row
    return 100.0 * (hits[:, 0] + hits.sum(axis=1) / 5) / 2


def _p(Y: sp.csr_matrix, pred: sp.csr_matrix) -> tuple[float, float]:
    e = evaluate(Y, pred, (1, 5))
    return e["P@1"], e["P@5"]


def fit_gamma(Y: sp.csr_matrix, raw: np.ndarray, label_counts: np.ndarray, k: int
              ) -> tuple[float, float, float]:
    """(gamma, dense P@1, dense P@5) at the gamma best for held-out P@1; ``raw`` is the held-out rows'
    dense score matrix without a prior."""
    import torch

    prior = torch.from_numpy(np.log1p(label_counts).astype(np.float32))
    R = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))
    best = (-1.0, 0.0, 0.0)
    for g in GAMMAS:
        vals, idx = (R + g * prior).topk(min(k, R.shape[1]), dim=1)
        p1, p5 = _p(Y, from_topk(idx.numpy(), vals.numpy(), R.shape[1]))
        if p1 > best[0] + 1e-9:
            best = (p1, g, p5)
    return best[1], best[0], best[2]


def fit_fusion(Y: sp.csr_matrix, tree: sp.csr_matrix, dense_idx: np.ndarray, dense_scores: np.ndarray,
               gamma: float, k: int, kept: int = 0) -> Fusion:
    """(alpha, beta) for the best held-out (P@1 + P@5) / 2 that keeps P@1, given both top-k lists;
    the tree's best ``kept`` labels keep their ranks (``fuse``)."""
    L = tree.shape[1]
    tree_alone = fuse(tree, dense_idx, dense_scores, 0.0, 1.0, k)
    base = _p(Y, tree_alone)
    dense_p = _p(Y, from_topk(dense_idx, dense_scores, L))
    best = (base, 0.0, BETAS[0], tree_alone)
    for beta in BETAS:
        for alpha in ALPHAS if kept > 0 else [a for a in ALPHAS if a <= FREE_ALPHA_MAX]:
            hybrid = fuse(tree, dense_idx, dense_scores, alpha, beta, k, kept)
            got = _p(Y, hybrid)
            if got[0] >= base[0] and sum(got) > sum(best[0]):
                best = (got, alpha, beta, hybrid)
    (p1, p5), alpha, beta, chosen = best
    gain, se = 0.0, 0.0
    if alpha > 0:
        d = per_row(Y, chosen) - per_row(Y, tree_alone)
        gain, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else np.inf
    if gain < MIN_GAIN or gain < Z * se:
        (p1, p5), alpha = base, 0.0
    return Fusion(alpha, beta, gamma, kept, {
        "tree_P@1": base[0], "tree_P@5": base[1], "dense_P@1": dense_p[0], "dense_P@5": dense_p[1],
        "hybrid_P@1": p1, "hybrid_P@5": p5, "best_gain": gain, "best_gain_se": se})
