"""Label tree by spherical k-means per level: clusters of the sizes the label embeddings give.

Balanced 2-means (``xmc.core.tree.build_tree``) cuts every node into equal halves, so a dense
region of the embedding space is split over several leaves and a sparse region's labels are
merged with strangers to fill theirs. Here each level splits a node into the level's width by
spherical k-means, which leaves the clusters unbalanced (Bonsai's trees, Khandagale et al. 2020,
also cluster k-ways without a size constraint). The tree keeps the balanced tree's shape: the
same levels and widths (``level_widths``), every leaf at the same depth; a node with fewer
labels than the width gets one cluster per label, an empty cluster is dropped.

A leaf over ``kmeans_leaf_cap`` x ``max_leaf_size`` labels is cut by balanced 2-means until none is:
the rankers of a leaf cost labels x rows, and uncapped k-means leaves on debian-deps held up to
1.1-1.8K labels (the rankers took 2.5x as long); capped at 2x, they cost what balanced leaves do.
The halves hang where their leaf did, so a node of the last level may have more children than
the level's width.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np
import scipy.sparse as sp
from numba import njit

from xmc.core.sparse import csr
from xmc.core.tree import LabelTree, NodeRows, balanced_2means, level_widths, tree_depth
from xmc.params import TreeParams


@njit(cache=True, nogil=True)
def _nearest(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, centroids: np.ndarray,
             assign: np.ndarray) -> int:
    """Each non-empty row's most similar centroid (cosine: rows and centroids are unit vectors; the
    lower index on ties) into ``assign``; empty rows get -1. Returns how many rows changed."""
    n, k = len(indptr) - 1, centroids.shape[1]
    score = np.empty(k, dtype=np.float64)
    changed = 0
    for i in range(n):
        best = -1
        if indptr[i + 1] > indptr[i]:
            score[:] = 0.0
            for p in range(indptr[i], indptr[i + 1]):
                f, v = indices[p], data[p]
                for c in range(k):
                    score[c] += v * centroids[f, c]
            best = 0
            for c in range(1, k):
                if score[c] > score[best]:
                    best = c
        if best != assign[i]:
            changed += 1
            assign[i] = best
    return changed


@njit(cache=True, nogil=True)
def _centroids(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, assign: np.ndarray,
               centroids: np.ndarray, sums: np.ndarray) -> None:
    """Each cluster's normalised sum of its rows into ``centroids``, in place (``sums``: a buffer of
    its shape); an empty cluster keeps its centroid. Every loop runs along a row of the (d x k)
    arrays: by column they were 70 % of a tree's time."""
    d, k = centroids.shape
    sums[:, :] = 0.0
    for i in range(len(indptr) - 1):
        c = assign[i]
        if c >= 0:
            for p in range(indptr[i], indptr[i + 1]):
                sums[indices[p], c] += data[p]
    norm = np.zeros(k, dtype=np.float64)
    for f in range(d):
        for c in range(k):
            norm[c] += sums[f, c] * sums[f, c]
    for c in range(k):
        norm[c] = math.sqrt(norm[c])
    for f in range(d):
        for c in range(k):
            if norm[c] > 0.0:
                centroids[f, c] = sums[f, c] / norm[c]


def spherical_kmeans(Z: sp.csr_matrix, k: int, rng: np.random.Generator, max_iter: int) -> np.ndarray:
    """Cluster ids 0..k'-1 (k' <= k, no empty cluster) of Z's rows by spherical k-means.

    Seeds are k distinct non-empty rows; Lloyd iterations stop when no row moves. Rows with an
    empty embedding (a label without a training instance) say nothing about where they belong:
    they are dealt round-robin over the clusters, so they pile into none.
    """
    n = Z.shape[0]
    nonempty = np.flatnonzero(np.diff(Z.indptr) > 0)
    k = min(k, len(nonempty))
    if k <= 1:
        return np.zeros(n, dtype=np.int64)
    indptr, indices = Z.indptr.astype(np.int64), Z.indices.astype(np.int64)
    data = Z.data.astype(np.float64)
    seeds = rng.choice(nonempty, size=k, replace=False)
    centroids = np.zeros((Z.shape[1], k), dtype=np.float64)
    for c, row in enumerate(seeds.tolist()):
        lo, hi = indptr[row], indptr[row + 1]
        centroids[indices[lo:hi], c] = data[lo:hi]
    assign = np.full(n, -2, dtype=np.int64)
    sums = np.empty_like(centroids)
    for _ in range(max_iter):
        if _nearest(indptr, indices, data, centroids, assign) == 0:
            break
        _centroids(indptr, indices, data, assign, centroids, sums)
    empty = np.flatnonzero(assign < 0)
    used = np.unique(assign[assign >= 0])
    assign[empty] = used[np.arange(len(empty)) % len(used)]
    return np.unique(assign, return_inverse=True)[1].astype(np.int64)


def build_kmeans_tree(Z: sp.csr_matrix, params: TreeParams) -> LabelTree:
    """The label tree of ``clustering`` 'kmeans' (at least one level: ``tree_depth`` > 0): per
    level, each node's labels split by spherical k-means into the level's width; then leaves over
    the cap halved by balanced 2-means until none is. Deterministic for a seed."""
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

    def halve(Zn: sp.csr_matrix) -> np.ndarray:
        if Zn.shape[0] <= cap:
            return np.zeros(Zn.shape[0], dtype=np.int64)
        return balanced_2means(Zn, rng, params.kmeans_max_iter).astype(np.int64)

    while np.bincount(group).max() > cap:
        group, leaf = _split_nodes(Z, group, halve)
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
