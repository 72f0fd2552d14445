"""The paper's synthetic disentanglement experiment on real data: composite labels.

Within each node one binary level above the leaves of a baseline tree, labels of its two leaves
are paired at random and each pair is merged into one composite label (positives = union).
A composite is multi-modal by construction. A good model places it in both halves' clusters and
routes each instance to the copy of the half it came from. We score that with the Variation of
Information between the true split of a composite's instances (by half) and the split the model
induces (which of the composite's copies has the higher ranker score), against a random split of
the same proportions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from xmc.params import PredictParams, TreeParams
from xmc.predict import _beam_chunk, _Layer, post_process
from xmc.sparse import binarize, csr, normalize_rows
from xmc.tree import LabelTree, build_tree, pifa


@dataclass(frozen=True)
class Composite:
    """``halves[c] = (a, b)``: original labels merged into composite c (b = -1: left single)."""

    halves: np.ndarray
    label_map: sp.csr_matrix
    """(L x L_c) 0/1: original label -> composite."""

    def apply(self, Y: sp.spmatrix) -> sp.csr_matrix:
        return binarize(csr(Y) @ self.label_map)


def make_composite(X: sp.csr_matrix, Y: sp.csr_matrix, tree: TreeParams, seed: int = 0) -> Composite:
    """Pair labels across sibling leaves (binary level above the leaves) of a baseline tree."""
    rng = np.random.default_rng(seed)
    t = build_tree(pifa(normalize_rows(csr(X)), csr(Y)), tree)
    leaf_of = np.empty(t.n_labels, dtype=np.int64)
    leaf_of[t.copy_label] = t.parents[-1]
    halves: list[tuple[int, int]] = []
    for left in range(0, t.n_clusters, 2):
        a = rng.permutation(np.flatnonzero(leaf_of == left))
        b = rng.permutation(np.flatnonzero(leaf_of == left + 1))
        n = min(len(a), len(b))
        halves += [(int(x), int(y)) for x, y in zip(a[:n], b[:n], strict=True)]
        halves += [(int(x), -1) for x in np.concatenate([a[n:], b[n:]])]
    H = np.array(sorted(halves), dtype=np.int64)
    rows = np.concatenate([H[:, 0], H[H[:, 1] >= 0, 1]])
    cols = np.concatenate([np.arange(len(H)), np.flatnonzero(H[:, 1] >= 0)])
    P = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(Y.shape[1], len(H)))
    return Composite(H, P)


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def variation_of_information(u: np.ndarray, v: np.ndarray) -> float:
    """VI(U, V) = H(U) + H(V) - 2 I(U; V) = 2 H(U, V) - H(U) - H(V), in nats."""
    if len(u) == 0:
        return 0.0
    _, ui = np.unique(u, return_inverse=True)
    _, vi = np.unique(v, return_inverse=True)
    joint = np.bincount(ui * (vi.max() + 1) + vi)
    return 2 * _entropy(joint) - _entropy(np.bincount(ui)) - _entropy(np.bincount(vi))


def copy_scores(
    X: sp.csr_matrix, tree: LabelTree, weights: list[sp.csc_matrix], params: PredictParams, bias: float
) -> np.ndarray:
    """Dense (N x copies) full path score of every copy: matcher score of its leaf x ranker score.

    The beam is opened to every leaf, so this is for analysis of small trees, not for serving.
    """
    Xb = sp.hstack([X, np.full((X.shape[0], 1), bias, np.float32)], format="csr")
    layers = [_Layer(W, tree.children_ptr(t)) for t, W in enumerate(weights[:-1])]
    idx, score = _beam_chunk(Xb, layers, tree.n_clusters, params.post_processor)
    leaf = np.zeros((X.shape[0], tree.n_clusters))
    rows = np.repeat(np.arange(X.shape[0]), idx.shape[1]).reshape(idx.shape)
    leaf[rows[idx >= 0], idx[idx >= 0]] = score[idx >= 0]
    ranker = post_process((Xb @ weights[-1]).toarray(), params.post_processor)
    return leaf[:, tree.parents[-1]] * ranker


def disentanglement_vi(
    X: sp.csr_matrix, Y_orig: sp.csr_matrix, comp: Composite, tree: LabelTree,
    weights: list[sp.csc_matrix], params: PredictParams, bias: float, seed: int = 0,
) -> dict[str, float]:
    """Mean VI (model's split vs true split) and of a random split, over paired composites.

    The model's split sends an instance to the composite's copy with the higher full path score.
    Instances carrying both halves are left out (their true side is undefined). ``X`` must be
    preprocessed as the model expects.
    """
    rng = np.random.default_rng(seed)
    S = copy_scores(X, tree, weights, params, bias)
    Yc = sp.csc_matrix(Y_orig)
    vi_model, vi_random, n_multi = [], [], 0
    for c, (a, b) in enumerate(comp.halves):
        if b < 0:
            continue
        in_a = np.zeros(X.shape[0], bool)
        in_a[Yc[:, a].indices] = True
        in_b = np.zeros(X.shape[0], bool)
        in_b[Yc[:, b].indices] = True
        rows = np.flatnonzero(in_a ^ in_b)
        if len(rows) < 2:
            continue
        truth = in_a[rows].astype(np.int64)
        copies = np.flatnonzero(tree.copy_label == c)
        n_multi += len(copies) > 1
        induced = S[np.ix_(rows, copies)].argmax(axis=1)
        vi_model.append(variation_of_information(truth, induced))
        vi_random.append(variation_of_information(truth, rng.permutation(induced)))
    return {"vi_model": float(np.mean(vi_model)) if vi_model else 0.0,
            "vi_random": float(np.mean(vi_random)) if vi_random else 0.0,
            "composites": len(vi_model), "composites_with_copies": int(n_multi)}
