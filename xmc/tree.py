"""Label tree: PIFA label embeddings, hierarchical balanced spherical 2-means, cluster chain.

The tree is kept as plain arrays (PECOS's "cluster chain" in array form): ``parents[t][c]`` is
the parent of child ``c`` in layer ``t``. Layer 0's parents are the root (all zeros); the last
layer's children are label *copies*: ``copy_label[c]`` is the label of copy ``c`` and
``parents[-1][c]`` its leaf cluster. In the baseline every label has exactly one copy; the
disentanglement rounds give a label up to lambda copies, in different leaves. Children of a
parent are contiguous, so a parent's slice of a weight matrix is a column range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from xmc.params import TreeParams
from xmc.sparse import csr, indicator, normalize_rows


def pifa(X: sp.csr_matrix, Y: sp.csr_matrix) -> sp.csr_matrix:
    """PIFA label embeddings ``normalize_rows(Y^T X)``: a label is the sum of its instances."""
    return normalize_rows(csr(Y.T.tocsr() @ X))


@dataclass(frozen=True)
class LabelTree:
    """Parents per layer plus the copy -> label map of the last layer."""

    parents: tuple[np.ndarray, ...]
    copy_label: np.ndarray
    n_labels: int

    def __post_init__(self) -> None:
        if not self.parents:
            raise ValueError("a label tree needs at least one layer")
        n_parents = 1
        for t, parent in enumerate(self.parents):
            if parent.ndim != 1 or len(parent) == 0:
                raise ValueError(f"layer {t}: parent array must be 1-D and non-empty")
            if np.any(np.diff(parent) < 0):
                raise ValueError(f"layer {t}: children must be sorted by parent")
            if parent.min() < 0 or parent.max() >= n_parents:
                raise ValueError(f"layer {t}: parent index out of range [0, {n_parents})")
            n_parents = len(parent)
        if len(self.copy_label) != len(self.parents[-1]):
            raise ValueError("copy_label must have one entry per child of the last layer")
        if len(self.copy_label) and (self.copy_label.min() < 0 or self.copy_label.max() >= self.n_labels):
            raise ValueError(f"copy_label out of range [0, {self.n_labels})")

    @property
    def n_layers(self) -> int:
        return len(self.parents)

    @property
    def n_clusters(self) -> int:
        """Number of leaf clusters (parents of the last layer)."""
        return 1 if self.n_layers == 1 else len(self.parents[-2])

    def n_parents(self, t: int) -> int:
        return 1 if t == 0 else len(self.parents[t - 1])

    def children_ptr(self, t: int) -> np.ndarray:
        """CSR-style pointer: children of parent p in layer t are ``ptr[p]:ptr[p+1]``."""
        return np.searchsorted(self.parents[t], np.arange(self.n_parents(t) + 1)).astype(np.int64)

    def label_cluster_matrix(self) -> sp.csr_matrix:
        """``C`` (n_labels x n_clusters): C[l, k] = 1 if a copy of label l lives in leaf k."""
        C = sp.csr_matrix(
            (np.ones(len(self.copy_label), np.float32), (self.copy_label, self.parents[-1])),
            shape=(self.n_labels, self.n_clusters),
        )
        C.sum_duplicates()
        C.data[:] = 1.0
        return C

    def copy_targets(self, Y: sp.csr_matrix) -> sp.csc_matrix:
        """Last layer's targets: (N x n_copies) 0/1, each copy positive on its label's instances."""
        return sp.csc_matrix(Y.tocsc()[:, self.copy_label], dtype=np.float32)

    def layer_targets(self, Y: sp.csr_matrix, last: sp.csc_matrix | None = None) -> list[sp.csc_matrix]:
        """Per layer, the (N x n_children) 0/1 matrix of instances positive under each child.

        Last layer: ``Y`` restricted to the copies (or ``last`` if given); above:
        ``Binary(Y_{t+1} P_{t+1})`` with P the child -> parent indicator, so an instance is
        positive for every ancestor of its labels.
        """
        out: list[sp.csc_matrix] = [self.copy_targets(Y) if last is None else last]
        for t in range(self.n_layers - 1, 0, -1):
            up = out[0] @ indicator(self.parents[t], self.n_parents(t))
            up = sp.csc_matrix(up, dtype=np.float32)
            up.data[:] = 1.0
            out.insert(0, up)
        return out


def tree_depth(n_labels: int, max_leaf_size: int) -> int:
    """Binary depth d with 2^d balanced leaves of at most max_leaf_size labels (at least 1 split).

    Capped at floor(log2 L) so no leaf is empty; only max_leaf_size 1 can then be exceeded.
    """
    if n_labels <= 1:
        return 0
    d = max(1, math.ceil(math.log2(n_labels / max_leaf_size)))
    return min(d, int(math.floor(math.log2(n_labels))))


def balanced_2means(Z: sp.csr_matrix, rng: np.random.Generator, max_iter: int) -> np.ndarray:
    """Split rows of Z into two halves (0/1 array) by balanced spherical 2-means.

    Rows are ranked by their similarity to centroid 0 minus centroid 1 and the top half goes to
    0: the split is exactly balanced, which bounds leaf sizes and hence ranker cost.
    """
    n = Z.shape[0]
    half = (n + 1) // 2
    i, j = rng.choice(n, size=2, replace=False)
    c = np.vstack([Z[i].toarray(), Z[j].toarray()]).astype(np.float64)
    assign = np.zeros(n, dtype=np.int8)
    for it in range(max_iter):
        diff = Z @ (c[0] - c[1])
        order = np.lexsort((np.arange(n), -diff))  # stable: ties by row index
        new = np.ones(n, dtype=np.int8)
        new[order[:half]] = 0
        if it > 0 and np.array_equal(new, assign):
            break
        assign = new
        for side in (0, 1):
            s = np.asarray(Z[assign == side].sum(axis=0)).ravel()
            norm = np.linalg.norm(s)
            c[side] = s / norm if norm > 0 else s
    return assign


def build_tree(Z: sp.csr_matrix, params: TreeParams) -> LabelTree:
    """Hierarchical balanced 2-means on label embeddings Z (n_labels x dim), grouped into levels.

    Labels are split recursively to binary depth d (leaves hold <= max_leaf_size labels). Binary
    levels are grouped log2(branching_factor) at a time, so internal nodes have up to
    branching_factor children; the top level takes the remainder. Deterministic for a seed.
    """
    n_labels = Z.shape[0]
    d = tree_depth(n_labels, params.max_leaf_size)
    rng = np.random.default_rng(params.seed)
    code = np.zeros(n_labels, dtype=np.int64)  # binary path of each label, MSB first
    Z = csr(Z)
    for _depth in range(d):
        new_code = code * 2
        by_node = np.argsort(code, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(code[by_node]) != 0])
        for members in np.split(by_node, starts[1:]):
            side = balanced_2means(Z[members], rng, params.kmeans_max_iter)
            new_code[members] += side
        code = new_code
    step = int(math.log2(params.branching_factor))
    depths = list(range(d, 0, -step))[::-1]  # e.g. d=10, step=4 -> [2, 6, 10]
    parents: list[np.ndarray] = []
    prev = 0
    for depth in depths:
        nodes = np.arange(2**depth, dtype=np.int64)
        parents.append(nodes >> (depth - prev))
        prev = depth
    order = np.lexsort((np.arange(n_labels), code))
    parents.append(code[order])
    return LabelTree(parents=tuple(parents), copy_label=order.astype(np.int64), n_labels=n_labels)
