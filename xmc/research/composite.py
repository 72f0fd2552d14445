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

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from xmc.core.predict import _beam_chunk, scoring_layers
from xmc.core.sparse import binarize, csr, normalize_rows, with_bias
from xmc.core.tree import LabelTree, build_tree, pifa
from xmc.params import PredictParams, TreeParams


@dataclass(frozen=True)
class Composite:
    """``halves[c] = (a, b)``: original labels merged into composite c (b = -1: left single)."""

    halves: np.ndarray
    label_map: sp.csr_matrix
    """(L x L_c) 0/1: original label -> composite."""

    def apply(self, Y: sp.spmatrix) -> sp.csr_matrix:
        return binarize(csr(Y) @ self.label_map)


def make_composite(
    X: sp.csr_matrix, Y: sp.csr_matrix, tree: TreeParams, seed: int = 0, levels_up: int = 1
) -> Composite:
    """Pair labels across the two halves of each node ``levels_up`` binary levels above the leaves.

    Leaves of a baseline tree are numbered in binary-tree order, so the node ``levels_up`` above
    covers ``2**levels_up`` consecutive leaves; a label of its left half is paired with one of its
    right half. One level up pairs sibling leaves (similar labels); two levels up pairs cousins.
    """
    if levels_up < 1:
        raise ValueError(f"levels_up must be >= 1, got {levels_up}")
    rng = np.random.default_rng(seed)
    # the numbering above is the balanced tree's: the set stays what it was whatever the default
    t = build_tree(pifa(normalize_rows(csr(X)), csr(Y)), replace(tree, clustering="balanced"))
    leaf_of = np.empty(t.n_labels, dtype=np.int64)
    leaf_of[t.copy_label] = t.parents[-1]
    span = 2 ** levels_up
    if t.n_clusters < span:
        raise ValueError(f"the baseline tree has {t.n_clusters} leaves: too few to go {levels_up} levels up")
    node_of = leaf_of // span
    left_half = (leaf_of % span) < span // 2
    halves: list[tuple[int, int]] = []
    for node in range(int(np.ceil(t.n_clusters / span))):
        a = rng.permutation(np.flatnonzero((node_of == node) & left_half))
        b = rng.permutation(np.flatnonzero((node_of == node) & ~left_half))
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


def leaf_scores(
    X: sp.csr_matrix, tree: LabelTree, weights: list[sp.csc_matrix], params: PredictParams, bias: float
) -> np.ndarray:
    """Dense (N x K) matcher score of every leaf cluster (product of transformed scores down the path).

    The beam is opened to every leaf, so this is for analysis of small trees, not for serving.
    """
    Xb = with_bias(csr(X), bias)
    layers = scoring_layers(tree, weights[:-1])
    idx, score = _beam_chunk(Xb, layers, tree.n_clusters, params.post_processor)
    leaf = np.zeros((X.shape[0], tree.n_clusters))
    rows = np.repeat(np.arange(X.shape[0]), idx.shape[1]).reshape(idx.shape)
    leaf[rows[idx >= 0], idx[idx >= 0]] = score[idx >= 0]
    return leaf


@dataclass(frozen=True)
class TrueSplit:
    """The instances (``rows``) of one multi-modal label and the mode (0/1) each came from."""

    label: int
    rows: np.ndarray
    truth: np.ndarray


def split_vi(
    S_leaf: np.ndarray, tree: LabelTree, splits: list[TrueSplit], seed: int = 0, n_permutations: int = 200
) -> dict[str, float]:
    """Mean VI of the model's split against the true one, and of random splits, over labels.

    The model's split sends an instance to the one of the label's clusters that the matcher
    scores higher (``S_leaf``, N x K; shared/METHOD.md). A random split permutes the model's
    split, so it has the same proportions and differs only in its alignment with the truth.
    ``vi_random`` is the mean over ``n_permutations`` random splits and ``p_value`` the share of
    them whose mean VI is as low as the model's (one-sided permutation test: "clearly below
    random" means a small p-value). Labels with one copy cannot split (both VIs equal H(truth));
    they are counted in ``labels`` but left out of the means.
    """
    rng = np.random.default_rng(seed)
    pairs = []
    for s in splits:
        clusters = tree.parents[-1][tree.copy_label == s.label]
        if len(clusters) > 1 and len(s.rows) > 1:
            pairs.append((s.truth, S_leaf[np.ix_(s.rows, clusters)].argmax(axis=1)))
    out: dict[str, float] = {"labels": len(splits), "labels_with_copies": len(pairs)}
    if not pairs:
        return {**out, "vi_model": 0.0, "vi_random": 0.0, "p_value": 1.0}
    vi_model = float(np.mean([variation_of_information(t, m) for t, m in pairs]))
    vi_perm = np.array([np.mean([variation_of_information(t, rng.permutation(m)) for t, m in pairs])
                        for _ in range(n_permutations)])
    return {**out, "vi_model": vi_model, "vi_random": float(vi_perm.mean()),
            "p_value": float((1 + (vi_perm <= vi_model).sum()) / (1 + n_permutations))}


def disentanglement_vi(
    X: sp.csr_matrix, Y_orig: sp.csr_matrix, comp: Composite, tree: LabelTree,
    weights: list[sp.csc_matrix], params: PredictParams, bias: float, seed: int = 0,
) -> dict[str, float]:
    """``split_vi`` over the paired composites: the true side of an instance is the half it has.

    Instances carrying both halves are left out (their true side is undefined). ``X`` must be
    preprocessed as the model expects.
    """
    Yc = sp.csc_matrix(Y_orig)
    splits = []
    for c, (a, b) in enumerate(comp.halves):
        if b < 0:
            continue
        in_a = np.zeros(X.shape[0], bool)
        in_a[Yc[:, a].indices] = True
        in_b = np.zeros(X.shape[0], bool)
        in_b[Yc[:, b].indices] = True
        rows = np.flatnonzero(in_a ^ in_b)
        splits.append(TrueSplit(c, rows, in_a[rows].astype(np.int64)))
    return split_vi(leaf_scores(X, tree, weights, params, bias), tree, splits, seed)
