"""Label tree: PIFA label embeddings, hierarchical spherical 2-means or k-means, cluster chain.

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

from xmc.core.sparse import csr, indicator, normalize_rows
from xmc.params import TreeParams


def pifa(X: sp.csr_matrix, Y: sp.csr_matrix) -> sp.csr_matrix:
    """PIFA label embeddings ``normalize_rows(Y^T X)``: a label is the sum of its instances."""
    return pifa_of_sums(pifa_sums(X, Y))


def pifa_sums(X: sp.csr_matrix, Y: sp.csr_matrix) -> sp.csr_matrix:
    """``Y^T X`` in float64: sums of float32 values that float64 holds exactly in practice, so
    shards' partial sums added in any order give the matrix of one product (and the same tree)."""
    return sp.csr_matrix(Y.T.tocsr().astype(np.float64) @ X.astype(np.float64))


def pifa_of_sums(S: sp.csr_matrix) -> sp.csr_matrix:
    """PIFA from (summed) ``pifa_sums``: rows normalised in float64, stored as float32."""
    return csr(normalize_rows(S), np.float32)


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


def top_half(score: np.ndarray) -> np.ndarray:
    """0 for the ceil(n/2) rows of highest score (ties: lower row first), 1 for the rest.

    The same split as a stable sort by -score, in O(n). Rows that share no column with either
    centroid (labels without training instances, for one) score exactly 0; at 1M labels over
    half do, and a partition over that many equal values is 7x slower, so the cut is found
    among the non-zero scores when it does not fall on 0.
    """
    n = len(score)
    half = (n + 1) // 2
    neg = -score
    below = neg < 0
    n_below = int(below.sum())
    n_zero = n - n_below - int((neg > 0).sum())
    if n_below >= half:
        cut = float(np.partition(neg[below], half - 1)[half - 1])
    elif n_below + n_zero >= half:
        cut = 0.0
    else:
        k = half - 1 - n_below - n_zero
        cut = float(np.partition(neg[neg > 0], k)[k])
    top = neg < cut
    ties = np.flatnonzero(neg == cut)[: half - int(top.sum())]
    side = np.ones(n, dtype=np.int8)
    side[top] = 0
    side[ties] = 0
    return side


def balanced_2means(Z: sp.csr_matrix, rng: np.random.Generator, max_iter: int) -> np.ndarray:
    """Split rows of Z into two halves (0/1 array) by balanced spherical 2-means.

    Rows are ranked by their similarity to centroid 0 minus centroid 1 and the top half goes to
    0: the split is exactly balanced, which bounds leaf sizes and hence ranker cost. A side's
    centroid is its rows' sum normalised: side 0's is ``Z^T 1_0`` (one pass over Z, no copy of
    its rows) and side 1's the node's total minus it.
    """
    n, m = Z.shape
    i, j = rng.choice(n, size=2, replace=False)
    c = np.zeros((2, m))
    for side, row in ((0, i), (1, j)):
        lo, hi = Z.indptr[row], Z.indptr[row + 1]
        c[side, Z.indices[lo:hi]] = Z.data[lo:hi]
    ZT = Z.T  # a CSC view: Z^T v is one C pass over Z
    total = ZT @ np.ones(n)
    assign = np.zeros(n, dtype=np.int8)
    for it in range(max_iter):
        new = top_half(Z @ (c[0] - c[1]))
        if it > 0 and np.array_equal(new, assign):
            break
        assign = new
        s0 = ZT @ (assign == 0).astype(np.float64)
        for side, s in ((0, s0), (1, total - s0)):
            norm = np.linalg.norm(s)
            c[side] = s / norm if norm > 0 else s
    return assign


class NodeRows:
    """Rows of one level's labels, grouped by tree node, cut out per node with local columns.

    A node's centroids are dense over its columns; over all D columns they cost O(D) per
    iteration however few labels the node holds (1M labels, D = 2^17: most of a 59 s tree went
    to 16K deep nodes of ~120 labels and their scipy row selections). Dropping the columns that
    do not occur in a node changes no dot product or sum.
    """

    def __init__(self, Z: sp.csr_matrix, order: np.ndarray) -> None:
        self.Z = csr(Z[order])
        self._seen = np.zeros(Z.shape[1], dtype=bool)
        self._slot = np.zeros(Z.shape[1], dtype=self.Z.indices.dtype)

    def node(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``[start, stop)`` over the columns that occur in them, in column order."""
        lo, hi = self.Z.indptr[start], self.Z.indptr[stop]
        idx = self.Z.indices[lo:hi]
        self._seen[idx] = True
        cols = np.flatnonzero(self._seen)
        self._seen[cols] = False
        self._slot[cols] = np.arange(len(cols), dtype=self._slot.dtype)
        return sp.csr_matrix((self.Z.data[lo:hi], self._slot[idx], self.Z.indptr[start : stop + 1] - lo),
                             shape=(stop - start, len(cols)))


def level_widths(depth: int, branching_factor: int) -> list[int]:
    """Children per node of each level of a tree of binary depth ``depth``: binary levels grouped
    log2(branching_factor) at a time, the top level taking the remainder (depth 10, branching
    16: [4, 16, 16])."""
    step = int(math.log2(branching_factor))
    depths = list(range(depth, 0, -step))[::-1]  # e.g. depth 10, step 4 -> [2, 6, 10]
    return [2 ** (b - a) for a, b in zip([0, *depths[:-1]], depths, strict=True)]


def build_tree(Z: sp.csr_matrix, params: TreeParams) -> LabelTree:
    """The label tree of label embeddings Z (n_labels x dim), by ``params.clustering``.

    'balanced': labels are split recursively by balanced 2-means to binary depth d (leaves hold
    <= max_leaf_size labels); binary levels are grouped log2(branching_factor) at a time, so
    internal nodes have up to branching_factor children. 'kmeans': the same levels, each node
    split by spherical k-means (``xmc.core.kmeans_tree``). Deterministic for a seed.
    """
    n_labels = Z.shape[0]
    d = tree_depth(n_labels, params.max_leaf_size)
    if params.clustering == "kmeans" and d > 0:
        from xmc.core.kmeans_tree import build_kmeans_tree

        return build_kmeans_tree(Z, params)
    rng = np.random.default_rng(params.seed)
    code = np.zeros(n_labels, dtype=np.int64)  # binary path of each label, MSB first
    Z = csr(Z)
    for _depth in range(d):
        by_node = np.argsort(code, kind="stable")
        bounds = np.flatnonzero(np.r_[True, np.diff(code[by_node]) != 0, True])
        rows = NodeRows(Z, by_node)
        side = np.zeros(n_labels, dtype=np.int64)
        for start, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            side[start:stop] = balanced_2means(rows.node(start, stop), rng, params.kmeans_max_iter)
        code = code * 2
        code[by_node] += side
    parents: list[np.ndarray] = []
    prev = 0
    for width in level_widths(d, params.branching_factor):
        depth = prev + int(math.log2(width))
        nodes = np.arange(2**depth, dtype=np.int64)
        parents.append(nodes >> (depth - prev))
        prev = depth
    order = np.lexsort((np.arange(n_labels), code))
    parents.append(code[order])
    return LabelTree(parents=tuple(parents), copy_label=order.astype(np.int64), n_labels=n_labels)
