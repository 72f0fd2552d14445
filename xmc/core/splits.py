"""How a node's labels are split: balanced spherical 2-means (equal halves) and spherical k-means
(clusters of the sizes the embeddings give), over a node's own rows and columns (``NodeRows``).

``xmc.core.tree`` builds the label tree from these; they know nothing of trees.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
from numba import njit

from xmc.core.sparse import csr


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
def _column_sums(colptr: np.ndarray, rows: np.ndarray, data: np.ndarray, assign: np.ndarray,
                 sums: np.ndarray, lo: int, hi: int) -> None:
    """``sums[f, c]`` for features ``lo..hi-1``: column f's values over the rows of cluster c (rows
    with ``assign`` -1 in none). By column (Z as CSC), each row of ``sums`` is written alone, in
    order: threads may take feature ranges side by side, and each sum adds its rows in row order
    whoever computes it, so the centroids do not depend on the number of cores."""
    k = sums.shape[1]
    for f in range(lo, hi):
        for c in range(k):
            sums[f, c] = 0.0
        for p in range(colptr[f], colptr[f + 1]):
            c = assign[rows[p]]
            if c >= 0:
                sums[f, c] += data[p]


@njit(cache=True, nogil=True)
def _normalise(sums: np.ndarray, centroids: np.ndarray) -> None:
    """Each cluster's column of ``sums`` over its norm into ``centroids``; an empty cluster keeps its
    centroid. Every loop runs along a row of the (d x k) arrays: by column they were 70 % of a
    tree's time. One thread: the norms add the features in one fixed order."""
    d, k = sums.shape
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


PARALLEL_WORK = 4_000_000
"""Multiply-adds (stored values x clusters) of one assignment pass from which a node's passes run on
every core: below it a thread pool's start costs more than it saves."""


def row_ranges(indptr: np.ndarray, parts: int) -> list[tuple[int, int]]:
    """``parts`` consecutive row ranges of about equal stored values (empty ranges dropped)."""
    cuts = np.searchsorted(indptr, np.linspace(0, indptr[-1], parts + 1)[1:-1], side="right") - 1
    bounds = np.unique(np.r_[0, np.clip(cuts, 0, len(indptr) - 1), len(indptr) - 1])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def available_cores() -> int:
    """Cores this process may run on (its affinity where the OS tells it, as under a scheduler)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Lloyd:
    """The two passes of one node's Lloyd iterations over its rows Z: each row to its nearest centroid
    (over Z as CSR, by row ranges) and each centroid as its rows' normalised sum (over Z as CSC, by
    feature ranges). A node whose pass takes ``min_work`` multiply-adds or more runs both on a pool of
    threads, one range per core (the kernels release the GIL): on debian-deps the first two levels'
    nodes are most of the tree's time. A row's cluster and a centroid's sum are each computed alone
    and in one order, so every core count gives the one-thread result, bit for bit."""

    def __init__(self, Z: sp.csr_matrix, k: int, cores: int = 0, min_work: int | None = None) -> None:
        self.indptr, self.indices = Z.indptr.astype(np.int64), Z.indices.astype(np.int64)
        self.data = Z.data.astype(np.float64)
        by_column = Z.tocsc()  # from CSR, each column's rows come out in row order
        self.colptr, self.rows = by_column.indptr.astype(np.int64), by_column.indices.astype(np.int64)
        self.column_data = by_column.data.astype(np.float64)
        cores = cores or available_cores()
        big = cores > 1 and Z.nnz * k >= (PARALLEL_WORK if min_work is None else min_work)
        self.row_ranges = row_ranges(self.indptr, cores) if big else [(0, Z.shape[0])]
        self.feature_ranges = row_ranges(self.colptr, cores) if big else [(0, Z.shape[1])]
        parts = max(len(self.row_ranges), len(self.feature_ranges))
        self.pool = ThreadPoolExecutor(parts) if parts > 1 else None

    def nearest(self, centroids: np.ndarray, assign: np.ndarray) -> int:
        """Each row's most similar centroid into ``assign`` (empty rows -1); how many rows changed."""
        if self.pool is None:
            return _nearest(self.indptr, self.indices, self.data, centroids, assign)
        jobs = [self.pool.submit(_nearest, self.indptr[a : b + 1], self.indices, self.data, centroids,
                                 assign[a:b]) for a, b in self.row_ranges]
        return sum(job.result() for job in jobs)

    def centroids(self, assign: np.ndarray, centroids: np.ndarray, sums: np.ndarray) -> None:
        """Each cluster's normalised sum of its rows into ``centroids`` (``sums``: a buffer of its shape)."""
        args = (self.colptr, self.rows, self.column_data, assign, sums)
        if self.pool is None:
            _column_sums(*args, 0, sums.shape[0])
        else:
            for job in [self.pool.submit(_column_sums, *args, a, b) for a, b in self.feature_ranges]:
                job.result()
        _normalise(sums, centroids)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def spherical_kmeans(Z: sp.csr_matrix, k: int, rng: np.random.Generator, max_iter: int) -> np.ndarray:
    """Cluster ids 0..k'-1 (k' <= k, no empty cluster) of Z's rows by spherical k-means.

    Seeds are k distinct non-empty rows; Lloyd iterations stop when no row moves. Rows with an
    empty embedding (a label without a training instance) say nothing about where they belong:
    they are dealt round-robin over the clusters, so they pile into none. A big node's passes run
    on every core (``Lloyd``); the result does not depend on how many there are.
    """
    n = Z.shape[0]
    nonempty = np.flatnonzero(np.diff(Z.indptr) > 0)
    k = min(k, len(nonempty))
    if k <= 1:
        return np.zeros(n, dtype=np.int64)
    lloyd = Lloyd(Z, k)
    seeds = rng.choice(nonempty, size=k, replace=False)
    centroids = np.zeros((Z.shape[1], k), dtype=np.float64)
    for c, row in enumerate(seeds.tolist()):
        lo, hi = lloyd.indptr[row], lloyd.indptr[row + 1]
        centroids[lloyd.indices[lo:hi], c] = lloyd.data[lo:hi]
    assign = np.full(n, -2, dtype=np.int64)
    sums = np.empty_like(centroids)
    try:
        for _ in range(max_iter):
            if lloyd.nearest(centroids, assign) == 0:
                break
            lloyd.centroids(assign, centroids, sums)
    finally:
        lloyd.close()
    empty = np.flatnonzero(assign < 0)
    used = np.unique(assign[assign >= 0])
    assign[empty] = used[np.arange(len(empty)) % len(used)]
    return np.unique(assign, return_inverse=True)[1].astype(np.int64)
