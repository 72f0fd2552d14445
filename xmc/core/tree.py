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
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import scipy.sparse as sp

from xmc.core.sparse import csr, indicator, normalize_rows
from xmc.core.splits import NodeRows, balanced_2means, spherical_kmeans
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
    split by spherical k-means (``build_kmeans_tree``; the splits are ``xmc.core.splits``'s).
    Deterministic for a seed.
    """
    n_labels = Z.shape[0]
    d = tree_depth(n_labels, params.max_leaf_size)
    if params.clustering == "kmeans" and d > 0:
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


def build_kmeans_tree(Z: sp.csr_matrix, params: TreeParams) -> LabelTree:
    """The label tree of ``clustering`` 'kmeans' (at least one level: ``tree_depth`` > 0): per
    level, each node's labels split by spherical k-means into the level's width; then leaves over
    the cap halved by balanced 2-means until none is. Deterministic for a seed.

    Balanced 2-means cuts every node into equal halves, so a dense
    region of the embedding space is split over several leaves and a sparse region's labels are
    merged with strangers to fill theirs. Here each level splits a node into the level's width by
    spherical k-means, which leaves the clusters unbalanced (Bonsai's trees, Khandagale et al. 2020,
    also cluster k-ways without a size constraint). The tree keeps the balanced tree's shape: the
    same levels and widths (``level_widths``), every leaf at the same depth; a node with fewer
    labels than the width gets one cluster per label, an empty cluster is dropped.

    A leaf over ``kmeans_leaf_cap`` x ``max_leaf_size`` labels is halved until none is: the
    rankers of a leaf cost labels x rows, and uncapped k-means leaves on debian-deps held up to
    1.1-1.8K labels (the rankers took 2.5x as long); capped at 2x, they cost what balanced leaves do.
    The halves hang where their leaf did, so a node of the last level may have more children than
    the level's width.
    """
    n_labels = Z.shape[0]
    rng = np.random.default_rng(params.seed)
    Z = csr(Z)
    group = np.zeros(n_labels, dtype=np.int64)  # each label's node at the current level
    parents: list[np.ndarray] = []
    for width in level_widths(tree_depth(n_labels, params.max_leaf_size), params.branching_factor):
        group, parent = _split_nodes(Z, group, partial(spherical_kmeans, k=width, rng=rng,
                                                       max_iter=params.kmeans_max_iter))
        parents.append(parent)
    cap = max(1, math.ceil(params.kmeans_leaf_cap * params.max_leaf_size))
    while np.bincount(group).max() > cap:
        group, leaf = _halve_fat_leaves(Z, group, cap, rng, params.kmeans_max_iter)
        parents[-1] = parents[-1][leaf]  # a leaf's halves hang where it did
    order = np.lexsort((np.arange(n_labels), group))
    parents.append(group[order])
    return LabelTree(parents=tuple(parents), copy_label=order.astype(np.int64), n_labels=n_labels)


def _split_nodes(Z: sp.csr_matrix, group: np.ndarray,
                 split: Callable[[sp.csr_matrix], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(each label's child node, each child's parent node): every node of ``group`` (ids 0..G-1)
    cut by ``split`` (a node's rows over its own columns -> cluster ids 0..k'-1), children
    numbered in their parents' order, so each layer's parents stay sorted."""
    by_node = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.r_[True, np.diff(group[by_node]) != 0, True])
    rows = NodeRows(Z, by_node)
    child = np.empty(len(group), dtype=np.int64)
    parent: list[np.ndarray] = []
    n_children = 0
    for node, (start, stop) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)):
        ids = split(rows.node(start, stop))
        child[by_node[start:stop]] = n_children + ids
        k = int(ids.max()) + 1
        parent.append(np.full(k, node, dtype=np.int64))
        n_children += k
    return child, np.concatenate(parent)


def _halve_fat_leaves(Z: sp.csr_matrix, group: np.ndarray, cap: int, rng: np.random.Generator,
                      max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """One pass: every leaf of ``group`` over ``cap`` labels halved by balanced 2-means, in leaf
    order, the others kept whole; (each label's new leaf, each new leaf's old leaf). Only the fat
    leaves' rows are cut out: the others, most of the labels, are not copied again each pass."""
    sizes = np.bincount(group)
    fat = sizes > cap
    in_fat = np.flatnonzero(fat[group])
    by_leaf = in_fat[np.argsort(group[in_fat], kind="stable")]
    bounds = np.flatnonzero(np.r_[True, np.diff(group[by_leaf]) != 0, True])
    rows = NodeRows(Z, by_leaf)
    side = np.zeros(len(group), dtype=np.int64)
    for start, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        side[by_leaf[start:stop]] = balanced_2means(rows.node(start, stop), rng, max_iter)
    pieces = 1 + fat.astype(np.int64)
    first = np.cumsum(pieces) - pieces  # each old leaf's first new leaf
    return first[group] + side, np.repeat(np.arange(len(sizes)), pieces)
