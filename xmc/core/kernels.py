"""The beam search's inner loops, compiled with numba: scoring the children of every beam entry, and
merging a label's copies (into blocks for an ensemble's sum, or straight into one tree's top k).
They ran as numpy and scipy calls before; these are the same sums in the same order, without the
per-call overhead and the temporary blocks (docs/performance.md, fourteenth session).

**Scoring children** (``expand_scores``). A layer holds, per parent p, the rows of
``W[:, children of p]`` that have a nonzero, over the sorted features they use (``ScoringLayer``).
The numpy path grouped the beam by parent and ran one scipy product per parent and chunk (2,811
products on debian-deps' test split, each a few rows): about 0.5 ms of overhead apiece. The kernel
groups the beam's entries by parent as that path did (a counting sort), maps the parent's features
to its block's rows in a scratch array, and for each entry adds the weights of the row's features
into the children's sums, in float32 and in the order of the row's features: the order scipy's
product adds them in, so the linear scores are the same numbers. (A binary search per feature
instead of the scratch map was slower on the 1-2-gram TF-IDFs, whose rows hold many features.)
The score transform stays numpy's (``post_process``): a compiled pass computing its ``exp``'s
argument was no faster (``powf`` dominates) and not bit for bit numpy's power.

**Building the blocks** (``parent_blocks``). Each parent's distinct features, sorted, and its block
rows come from two passes over the weights by feature (W as CSR): a parent opens a row the first
time a feature reaches one of its children, so its rows come out in feature order with no sort.
The ``np.unique`` per parent it replaces cost 0.22 s of debian-deps' 1.1 s test prediction.

**Merging copies** (``merge_copy_scores``). A disentangled tree holds some labels in several
leaves, so one row's candidates (the copies in its beam's leaves) may name a label more than
once; the row's score of that label is the max (or mean) over its retrieved copies. With numpy this
needed a per-row ``lexsort`` of every candidate by (label, score): on debian-deps' test split
(11.5K rows, beam 10, leaves of up to ~120 copies) that sort was 1.7 s of a 4.4 s prediction,
against 1.5 s for the whole prediction of a tree without copies. Here each row is one pass over its
candidates, mapping each copy to its label and keeping the label's max (or sum and count) in a
scratch array indexed by label: O(candidates) per row, no sort. A row's merged labels come in the
order their first copy appears, padded with -1 and -inf to the most distinct labels any row has
(a first pass counts them, so the blocks are allocated once at that width: debian-deps' 2,530
candidates per row hold at most 1,715 labels, pypi-tags' 1,860 at most its 243).
The order does not matter downstream: ``topk_dense`` breaks ties by the label's index, not its
position, so the top-k is the sorted version's. A tree on its own (``merge_topk``) keeps only each
row's best k while merging, in ``topk_dense``'s order (score descending, ties to the lower label).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import scipy.sparse as sp
from numba import njit


class Blocks(Protocol):
    """What the kernel reads of a layer: ``xmc.core.predict.ScoringLayer``'s per-parent blocks."""

    ptr: np.ndarray
    row_ptr: np.ndarray
    features: np.ndarray
    rows: sp.csr_matrix
    width: int
    n_features: int


@njit(cache=True, nogil=True)
def _expand_rows(x_ptr: np.ndarray, x_idx: np.ndarray, x_val: np.ndarray, beam_idx: np.ndarray,
                 beam_score: np.ndarray, child_ptr: np.ndarray, row_ptr: np.ndarray, features: np.ndarray,
                 w_ptr: np.ndarray, w_idx: np.ndarray, w_val: np.ndarray, width: int,
                 n_features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, b = beam_idx.shape
    n_parents = len(child_ptr) - 1
    start = np.zeros(n_parents + 1, dtype=np.int64)  # the beam's entries grouped by parent
    offset = np.zeros((n, b), dtype=np.int64)  # where an entry's children start in its row
    n_cols = 1
    for i in range(n):
        used = 0
        for slot in range(b):
            offset[i, slot] = used
            p = beam_idx[i, slot]
            if p >= 0:
                start[p + 1] += 1
                used += child_ptr[p + 1] - child_ptr[p]
        n_cols = max(n_cols, used)
    for p in range(n_parents):
        start[p + 1] += start[p]
    entries = np.empty(start[n_parents], dtype=np.int64)
    fill = start[:-1].copy()
    for e in range(n * b):
        p = beam_idx[e // b, e % b]
        if p >= 0:
            entries[fill[p]] = e
            fill[p] += 1
    cand_idx = np.full((n, n_cols), -1, dtype=np.int64)
    z = np.full((n, n_cols), -np.inf, dtype=np.float32)
    path = np.zeros((n, n_cols), dtype=np.float32)  # the entry's path score, 0 on padding
    local = np.full(n_features, -1, dtype=np.int64)  # feature -> its row in the parent's block
    acc = np.zeros(max(width, 1), dtype=np.float32)
    for p in range(n_parents):
        if start[p] == start[p + 1]:
            continue
        lo, hi = row_ptr[p], row_ptr[p + 1]
        for r in range(lo, hi):
            local[features[r]] = r
        m = child_ptr[p + 1] - child_ptr[p]
        for q in range(start[p], start[p + 1]):
            i, slot = entries[q] // b, entries[q] % b
            acc[:m] = 0.0
            for jj in range(x_ptr[i], x_ptr[i + 1]):
                r = local[x_idx[jj]]
                if r >= 0:
                    v = x_val[jj]
                    for kk in range(w_ptr[r], w_ptr[r + 1]):
                        acc[w_idx[kk]] += v * w_val[kk]
            base = offset[i, slot]
            for c in range(m):
                cand_idx[i, base + c] = child_ptr[p] + c
                z[i, base + c] = acc[c]
                path[i, base + c] = beam_score[i, slot]
        for r in range(lo, hi):
            local[features[r]] = -1
    return cand_idx, z, path


def expand_scores(Xb: sp.csr_matrix, beam_idx: np.ndarray, beam_score: np.ndarray,
                  layer: Blocks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The linear scores of every child of every beam entry of ``layer``, row by row: blocks of child
    indices (-1: padding), float32 scores (-inf: padding) and the entry's path score (float32, 0 on
    padding). A row's entries' children lie one after another, in beam order; blocks are as wide as
    the chunk's most children in one row (padded to the layer's width per slot, debian-deps' leaf
    layer of width 318 and 56 children on average was 80 % padding, which the transform and the
    top-k then read). ``Xb`` is the chunk's rows, bias column included."""
    n_features = layer.n_features
    if Xb.shape[1] > n_features:  # the kernel indexes its feature map unchecked
        raise ValueError(f"rows with {Xb.shape[1]} feature columns for a layer of {n_features}")
    # index arrays go in as they are (numba compiles one version per dtype): a copy to int64 per
    # call would copy the whole layer's nnz(W) indices for every chunk
    rows = layer.rows
    return _expand_rows(Xb.indptr, Xb.indices, np.asarray(Xb.data, dtype=np.float32),
                        np.ascontiguousarray(beam_idx, dtype=np.int64),
                        np.ascontiguousarray(beam_score, dtype=np.float32), np.asarray(layer.ptr),
                        layer.row_ptr, layer.features, rows.indptr, rows.indices,
                        np.asarray(rows.data, dtype=np.float32), int(layer.width), int(n_features))


@njit(cache=True, nogil=True)
def _parent_blocks(r_ptr: np.ndarray, r_idx: np.ndarray, r_val: np.ndarray, child_ptr: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n_parents, n_features, nnz = len(child_ptr) - 1, len(r_ptr) - 1, r_ptr[-1]
    owner = np.empty(child_ptr[n_parents], dtype=np.int64)  # child -> its parent
    for p in range(n_parents):
        owner[child_ptr[p]:child_ptr[p + 1]] = p
    last = np.full(n_parents, -1, dtype=np.int64)  # the feature whose row a parent opened last
    row_ptr = np.zeros(n_parents + 1, dtype=np.int64)
    pos = np.zeros(n_parents + 1, dtype=np.int64)  # where a parent's weights start in the block CSR
    for j in range(n_features):  # a parent's block has a row per distinct feature
        for k in range(r_ptr[j], r_ptr[j + 1]):
            p = owner[r_idx[k]]
            pos[p + 1] += 1
            if last[p] != j:
                last[p] = j
                row_ptr[p + 1] += 1
    for p in range(n_parents):
        row_ptr[p + 1] += row_ptr[p]
        pos[p + 1] += pos[p]
    n_rows = row_ptr[n_parents]
    features = np.empty(n_rows, dtype=np.int64)
    indptr = np.empty(n_rows + 1, dtype=np.int64)
    indices = np.empty(nnz, dtype=np.int32)
    data = np.empty(nnz, dtype=np.float32)
    next_row = row_ptr[:-1].copy()
    last[:] = -1
    for j in range(n_features):  # features ascending: each parent's rows come out sorted
        for k in range(r_ptr[j], r_ptr[j + 1]):
            c = r_idx[k]
            p = owner[c]
            if last[p] != j:
                last[p] = j
                features[next_row[p]] = j
                indptr[next_row[p]] = pos[p]
                next_row[p] += 1
            indices[pos[p]] = c - child_ptr[p]
            data[pos[p]] = r_val[k]
            pos[p] += 1
    indptr[n_rows] = nnz
    return features, row_ptr, indptr, indices, data


def parent_blocks(W: sp.spmatrix, ptr: np.ndarray) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """``ScoringLayer``'s arrays for the weights ``W`` (features x children) whose columns ``ptr``
    groups by parent: each parent's sorted distinct features (concatenated), where each parent's
    rows start, and the block CSR of the weights (a row per (parent, feature), a column per child
    within the parent, ``max(width, 1)`` wide; a row's entries by child). Two passes over W's rows
    in feature order, so each parent's features come out sorted with no sort: the per-parent
    ``np.unique`` this replaces was 0.22 s of debian-deps' 1.1 s test prediction (580 parents)."""
    ptr = np.asarray(ptr, dtype=np.int64)
    R = sp.csr_matrix(W)  # by feature, each row's children ascending
    R.sort_indices()
    features, row_ptr, indptr, indices, data = _parent_blocks(
        R.indptr, R.indices, np.asarray(R.data, dtype=np.float32), ptr)
    counts = np.diff(ptr)
    width = int(counts.max()) if len(counts) else 0
    rows = sp.csr_matrix((data, indices, indptr), shape=(len(features), max(width, 1)))
    return features, row_ptr, rows


@njit(cache=True, nogil=True)
def _merge_row(cand_idx: np.ndarray, scores: np.ndarray, i: int, copy_label: np.ndarray, mean: bool,
               value: np.ndarray, finite: np.ndarray, seen: np.ndarray, touched: np.ndarray) -> int:
    """Row i's distinct labels into ``touched[:u]`` (u returned, ``seen`` set for them), each label's
    max or (sum, finite count) of its copies in ``value`` / ``finite``."""
    u = 0
    for j in range(cand_idx.shape[1]):
        c = cand_idx[i, j]
        if c < 0:
            continue
        label = copy_label[c]
        s = scores[i, j]
        if not seen[label]:
            seen[label] = True
            touched[u] = label
            u += 1
            value[label] = 0.0 if mean else -np.inf
            finite[label] = 0
        if mean:
            if np.isfinite(s):
                value[label] += s
                finite[label] += 1
        elif s > value[label]:
            value[label] = s
    return u


@njit(cache=True, nogil=True)
def _merged(label: int, value: np.ndarray, finite: np.ndarray, mean: bool) -> float:
    if mean:
        return value[label] / finite[label] if finite[label] > 0 else -np.inf
    return value[label]


@njit(cache=True, nogil=True)
def _merge_rows(cand_idx: np.ndarray, scores: np.ndarray, copy_label: np.ndarray, n_labels: int,
                mean: bool) -> tuple[np.ndarray, np.ndarray]:
    n, w = cand_idx.shape
    seen = np.zeros(n_labels, dtype=np.bool_)
    touched = np.empty(max(w, 1), dtype=np.int64)
    width = 1  # first pass: the most distinct labels in a row, so the output is allocated once, exactly
    for i in range(n):
        u = 0
        for j in range(w):
            c = cand_idx[i, j]
            if c >= 0 and not seen[copy_label[c]]:
                seen[copy_label[c]] = True
                touched[u] = copy_label[c]
                u += 1
        for q in range(u):
            seen[touched[q]] = False
        width = max(width, u)
    out_labels = np.full((n, width), -1, dtype=np.int64)
    out_scores = np.full((n, width), -np.inf, dtype=np.float64)
    value = np.zeros(n_labels, dtype=np.float64)  # max so far, or the sum of finite copies
    finite = np.zeros(n_labels, dtype=np.int64)  # finite copies seen (for the mean)
    for i in range(n):
        u = _merge_row(cand_idx, scores, i, copy_label, mean, value, finite, seen, touched)
        for q in range(u):
            label = touched[q]
            out_labels[i, q] = label
            out_scores[i, q] = _merged(label, value, finite, mean)
            seen[label] = False
    return out_labels, out_scores


def _labels(copy_label: np.ndarray) -> tuple[np.ndarray, int]:
    """Each copy's label as the kernels read it, and the labels' count (their scratch arrays' size)."""
    copy_label = np.ascontiguousarray(copy_label, dtype=np.int64)
    return copy_label, int(copy_label.max()) + 1 if len(copy_label) else 0


def merge_copy_scores(cand_idx: np.ndarray, scores: np.ndarray, copy_label: np.ndarray,
                      how: str) -> tuple[np.ndarray, np.ndarray]:
    """Per row, each label once with the max (``how`` 'max') or mean ('mean', over finite scores) of
    its copies' scores; ``cand_idx`` (copies, -1: padding) and ``scores`` are the (rows x candidates)
    blocks of the beam, ``copy_label`` each copy's label. Returns (labels, float64 scores) blocks
    padded with -1 / -inf."""
    copy_label, n_labels = _labels(copy_label)
    return _merge_rows(np.ascontiguousarray(cand_idx, dtype=np.int64), np.ascontiguousarray(scores),
                       copy_label, n_labels, how == "mean")


@njit(cache=True, nogil=True)
def _merge_topk_rows(cand_idx: np.ndarray, scores: np.ndarray, copy_label: np.ndarray, n_labels: int,
                     mean: bool, k: int) -> tuple[np.ndarray, np.ndarray]:
    n, w = cand_idx.shape
    out_labels = np.full((n, k), -1, dtype=np.int64)
    out_scores = np.full((n, k), -np.inf, dtype=np.float64)
    value = np.zeros(n_labels, dtype=np.float64)
    finite = np.zeros(n_labels, dtype=np.int64)
    seen = np.zeros(n_labels, dtype=np.bool_)
    touched = np.empty(max(w, 1), dtype=np.int64)
    for i in range(n):
        u = _merge_row(cand_idx, scores, i, copy_label, mean, value, finite, seen, touched)
        filled = 0
        for q in range(u):  # the best k by (score desc, label asc), kept sorted by insertion
            label = touched[q]
            seen[label] = False
            sc = _merged(label, value, finite, mean)
            if filled == k:
                last = out_scores[i, k - 1]
                if not (sc > last or (sc == last and label < out_labels[i, k - 1])):
                    continue
                pos = k - 1
            else:
                pos = filled
                filled += 1
            while pos > 0 and (sc > out_scores[i, pos - 1]
                               or (sc == out_scores[i, pos - 1] and label < out_labels[i, pos - 1])):
                out_scores[i, pos] = out_scores[i, pos - 1]
                out_labels[i, pos] = out_labels[i, pos - 1]
                pos -= 1
            out_scores[i, pos] = sc
            out_labels[i, pos] = label
    return out_labels, out_scores


def merge_topk(cand_idx: np.ndarray, scores: np.ndarray, copy_label: np.ndarray, how: str,
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """``merge_copy_scores`` then each row's best k labels, as ``topk_dense`` orders them (score
    descending, ties to the lower label; padding -1 / -inf last), without the merged blocks: a tree
    on its own needs only its top k, and on debian-deps the merged blocks (2,048 rows x 1,715 labels
    per chunk) and their top-k's copies were 100 MiB of a prediction's peak."""
    copy_label, n_labels = _labels(copy_label)
    return _merge_topk_rows(np.ascontiguousarray(cand_idx, dtype=np.int64), np.ascontiguousarray(scores),
                            copy_label, n_labels, how == "mean", int(k))
