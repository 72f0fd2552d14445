"""Layer-by-layer training of the matcher and the rankers as independent cluster work units.

For layer t, each parent node p is one unit: its children (sub-clusters, or label copies at the
last layer) are trained one-vs-rest on the instances routed to p, i.e. the instances positive
for any child of p (teacher-forced negatives, TFN), plus optionally the instances the matcher
trained so far sends to p (matcher-aware negatives, MAN). A unit depends only on its inputs, so
units run in any order, on any executor, with the same result.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sp

from xmc.core.cost import label_costs, row_costs_of
from xmc.core.executor import Executor
from xmc.core.predict import ScoringLayer, Shard, match_layers, row_shards, scoring_layers, stack_rows
from xmc.core.solver import solve_squared_hinge_blocks
from xmc.core.sparse import nonzero_rows
from xmc.core.tree import LabelTree
from xmc.params import PredictParams, SolverParams


@dataclass(frozen=True)
class LayerData:
    """What every unit of one layer reads: features, the layer's targets, solver params."""

    X: sp.csr_matrix
    """(N x D) instance features."""
    Y: sp.csc_matrix
    """(N x n_children) 0/1: instance i is positive under child c."""
    solver: SolverParams
    row_cost: np.ndarray | None = None
    """(N) each instance's factor on C (``cost.row_costs``), or None: 1."""


@dataclass(frozen=True)
class ClusterUnit:
    """One parent node of one layer: train children ``[child_start, child_stop)`` on ``rows``."""

    layer: int
    parent: int
    child_start: int
    child_stop: int
    rows: np.ndarray

    @property
    def n_children(self) -> int:
        return self.child_stop - self.child_start

    @property
    def n_rows(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class ClusterWeights:
    """Pruned weights of one unit as COO triplets; ``feature == D`` is the bias row."""

    child_start: int
    child_stop: int
    feature: np.ndarray
    child: np.ndarray
    value: np.ndarray


def train_cluster(shared: LayerData, unit: ClusterUnit) -> ClusterWeights:
    """Fit the unit's children on its rows (a pure work unit over the driver's matrices)."""
    Y_local = shared.Y[:, unit.child_start : unit.child_stop][unit.rows]
    row_cost = None if shared.row_cost is None else shared.row_cost[unit.rows]
    return fit_rows(shared.X[unit.rows], Y_local, unit.child_start, unit.child_stop, shared.solver, row_cost)


def fit_rows(X_p: sp.csr_matrix, Y_p: sp.spmatrix, child_start: int, child_stop: int,
             solver: SolverParams, row_cost: np.ndarray | None = None) -> ClusterWeights:
    """One-vs-rest rankers of children ``[child_start, child_stop)`` on the rows routed to their
    parent (``Y_p``: rows x those children), restricted to the features that occur there;
    ``row_cost``: each row's factor on C (None: 1).

    Both data planes end here (the driver's matrices, or a cluster's shuffled partition), so the
    same rows give the same weights.
    """
    n_features = X_p.shape[1]
    seen = np.zeros(n_features, dtype=bool)  # O(nnz + D): unique + searchsorted cost 10% of a fit
    seen[X_p.indices] = True
    features = np.flatnonzero(seen)
    local = np.empty(n_features, dtype=X_p.indices.dtype)
    local[features] = np.arange(len(features), dtype=X_p.indices.dtype)
    remap = local[X_p.indices]
    X_local = sp.csr_matrix((X_p.data, remap, X_p.indptr), shape=(X_p.shape[0], len(features)))
    Y_dense = Y_p.toarray()
    rows, cols, values = [], [], []
    for a, W in solve_squared_hinge_blocks(X_local, Y_dense, solver,
                                           label_costs((Y_dense > 0).sum(axis=0), solver), row_cost):
        # pruned block by block; by child, then feature: the layer's CSC order (``assemble``)
        c, r = np.nonzero(((np.abs(W) >= solver.weight_threshold) & (W != 0)).T)
        rows.append(r)
        cols.append(c + a)
        values.append(W[r, c])
    r, c = np.concatenate(rows), np.concatenate(cols)
    global_feature = np.append(features, n_features)[r]  # local row d -> bias row D
    return ClusterWeights(child_start, child_stop, global_feature.astype(np.int64),
                          c.astype(np.int64), np.concatenate(values))


MIN_UNITS = 4
"""A layer with fewer parents than this (the root: one) has each heavy parent's children split
into several units over the same rows, so parallel executors have work for every core (Ray, 2
workers, 20K labels: 13.6 s -> 12.2 s). The children are independent one-vs-rest problems; only
the solver's approximate stopping makes the weights differ slightly (same for every executor)."""
SPLIT_MIN_WORK = 250_000
"""... where heavy = rows x children of at least this: below it (Bibtex's root, 4.9K rows x 16)
the extra passes over the rows cost more than the parallelism saves."""


def layer_solver(solver: SolverParams, t: int, n_layers: int) -> SolverParams:
    """The solver of layer t: one C per label (``label_cost_exponent``) on the rankers only; a matcher
    cluster holds thousands of positives, and a C cut by its size cost debian-deps 0.3-0.5 P@1."""
    return solver if t == n_layers - 1 else replace(solver, label_cost_exponent=0.0)


def routed_rows(
    tree: LabelTree, t: int, Y_t: sp.csc_matrix, matched: sp.csc_matrix | None = None,
    parents: Sequence[int] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """(parent, rows routed to it) for layer t: rows positive under a child (+ matched), all at the root.

    Row-local, so a shard of the rows gives its share of every parent's rows.
    """
    ptr = tree.children_ptr(t)
    for p in range(tree.n_parents(t)) if parents is None else parents:
        if t == 0:
            rows = np.arange(Y_t.shape[0], dtype=np.int64)
        else:
            rows = nonzero_rows(Y_t[:, ptr[p] : ptr[p + 1]])
            if matched is not None:
                rows = np.union1d(rows, nonzero_rows(matched[:, p]))
        yield int(p), rows


def layer_units(
    tree: LabelTree,
    t: int,
    Y_t: sp.csc_matrix,
    matched: sp.csc_matrix | None = None,
    parents: Sequence[int] | None = None,
) -> list[ClusterUnit]:
    """Units of layer t (all parents, or the given ones): rows positive under a child (+ matched).

    With fewer than ``MIN_UNITS`` parents, a heavy parent's children are spread over several units.
    """
    ptr = tree.children_ptr(t)
    return spread_children([ClusterUnit(t, p, int(ptr[p]), int(ptr[p + 1]), rows)
                            for p, rows in routed_rows(tree, t, Y_t, matched, parents)])


UnitT = TypeVar("UnitT")


def spread_children(units: list[UnitT]) -> list[UnitT]:
    """Units cut into pieces over contiguous child ranges (any unit dataclass with
    ``child_start``, ``child_stop``, ``n_children`` and ``n_rows``; work = rows x children).

    With fewer than ``MIN_UNITS`` units, each heavy one (work at least ``SPLIT_MIN_WORK``) is cut
    into ``MIN_UNITS / units`` pieces. With more, a unit holding over ``1 / MIN_UNITS`` of the
    layer's work is cut so that no piece does: a reassignment round gives copies to a few
    clusters, and one of them (pypi-tags: 181 children over 93 % of the rows) then ran on one
    core while the others idled.
    """
    if not units:
        return units
    every: list[Any] = list(units)
    work = [u.n_rows * u.n_children for u in every]
    if len(every) < MIN_UNITS:
        share = -(-MIN_UNITS // len(every))
        pieces = [share if w >= SPLIT_MIN_WORK else 1 for w in work]
    else:
        cap = max(SPLIT_MIN_WORK, sum(work) / MIN_UNITS)
        pieces = [max(1, math.ceil(w / cap)) for w in work]
    return [replace(u, child_start=int(a), child_stop=int(b)) for u, k in zip(every, pieces, strict=True)
            for a, b in _chunks(u.child_start, u.child_stop, k)]


def _chunks(start: int, stop: int, pieces: int) -> list[tuple[int, int]]:
    """``[start, stop)`` cut into at most ``pieces`` non-empty contiguous ranges."""
    edges = np.unique(np.linspace(start, stop, min(pieces, stop - start) + 1).round().astype(np.int64))
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def weights_of(W: sp.csc_matrix, child_start: int, child_stop: int, new_start: int) -> ClusterWeights:
    """Existing columns ``[child_start, child_stop)`` of W as a unit result placed at ``new_start``."""
    block = sp.coo_matrix(W[:, child_start:child_stop])
    return ClusterWeights(new_start, new_start + child_stop - child_start, block.row.astype(np.int64),
                          block.col.astype(np.int64), block.data.astype(np.float32))


def assemble(results: list[ClusterWeights], n_features: int, n_children: int) -> sp.csc_matrix:
    """Glue unit weights into the layer's ((D + 1) x n_children) CSC matrix, bias row last.

    Units cover disjoint child ranges and hand their entries over by child, then feature
    (``fit_rows``, ``weights_of``): taken in child order they are the CSC arrays as they are. That
    copies each entry once (debian-deps' 5M ranker weights: 0.05 s, where scipy's COO sort of
    int64 triplets took 0.4-0.6 s of a 7.5 s fit, much of it faulting in fresh memory); results in
    another order take that sort.
    """
    results = sorted(results, key=lambda r: r.child_start)
    if all(_column_ordered(r) for r in results) and all(
            a.child_stop <= b.child_start for a, b in zip(results, results[1:], strict=False)):
        nnz = sum(len(r.value) for r in results)
        index = np.int32 if max(nnz, n_features + 1) < np.iinfo(np.int32).max else np.int64
        counts = np.zeros(n_children, dtype=index)
        for r in results:
            counts[r.child_start:r.child_stop] = np.bincount(r.child, minlength=r.child_stop - r.child_start)
        indptr = np.zeros(n_children + 1, dtype=index)
        np.cumsum(counts, out=indptr[1:])
        feature = np.concatenate([r.feature for r in results]).astype(index, copy=False) if results \
            else np.zeros(0, index)
        value = np.concatenate([r.value for r in results]).astype(np.float32, copy=False) if results \
            else np.zeros(0, np.float32)
        return sp.csc_matrix((value, feature, indptr), shape=(n_features + 1, n_children), copy=False)
    feature = np.concatenate([r.feature for r in results]) if results else np.zeros(0, np.int64)
    child = np.concatenate([r.child + r.child_start for r in results]) if results else feature
    value = np.concatenate([r.value for r in results]) if results else np.zeros(0, np.float32)
    W = sp.csc_matrix((value.astype(np.float32), (feature, child)), shape=(n_features + 1, n_children))
    W.sort_indices()
    return W


def _column_ordered(r: ClusterWeights) -> bool:
    """Whether a unit's entries run by child, then strictly increasing feature, within its range."""
    if len(r.child) == 0:
        return True
    if r.child[0] < 0 or r.child[-1] >= r.child_stop - r.child_start:
        return False
    step_child, step_feature = np.diff(r.child), np.diff(r.feature)
    return bool(np.all((step_child > 0) | ((step_child == 0) & (step_feature > 0))))


@dataclass(frozen=True)
class MatchInputs:
    """What every matching shard reads: the rows and the layers above, ready to score."""

    X: sp.csr_matrix
    tree: LabelTree
    layers: list[ScoringLayer]
    predict: PredictParams
    bias: float
    keep: int | None


def match_shard(shared: MatchInputs, shard: Shard) -> sp.csr_matrix:
    """The matching of one shard's rows (a pure work unit)."""
    return match_layers(shared.X[shard.start : shard.stop], shared.tree, shared.layers, shared.predict,
                        bias=shared.bias, keep=shared.keep)


def matched_rows(X: sp.csr_matrix, tree: LabelTree, weights: Sequence[sp.csc_matrix], predict: PredictParams,
                 executor: Executor, *, bias: float, keep: int | None, desc: str) -> sp.csc_matrix:
    """``match`` through ``weights`` (the layers above some layer), shard by shard on the executor.

    The matcher-aware negatives need every fitting row matched before a layer trains; run in the
    driver, that search was a tenth of a debian-deps fit on one core while the other idled. Shards of
    ``chunk_size`` rows are the chunks the search cuts anyway, so the matching is the one-call one.
    """
    shared = MatchInputs(X, tree, scoring_layers(tree, weights), predict, bias, keep)
    parts = executor.map(match_shard, shared, row_shards(X.shape[0], predict.chunk_size), desc=desc)
    return stack_rows(parts, len(tree.parents[len(weights) - 1])).tocsc()


def train_layers(
    X: sp.csr_matrix,
    Y: sp.csr_matrix,
    tree: LabelTree,
    solver: SolverParams,
    predict: PredictParams,
    executor: Executor,
    layers: list[int] | None = None,
    weights: list[sp.csc_matrix] | None = None,
    matcher_targets: sp.csc_matrix | None = None,
) -> list[sp.csc_matrix]:
    """Train the given layers (all by default), top-down; other layers keep ``weights``.

    ``matcher_targets`` (N x copies), optional, replaces ``Y`` per copy when deriving the
    targets of the layers above the last (see ``disentangle.routed_copy_targets``).

    With ``negatives='tfn+man'`` a layer's units also get the rows that the beam search through
    the layers above (already trained) sends to each parent. Each row's factor on C
    (``row_cost_exponent``) comes from its labels in ``Y``, the fit's rows.
    """
    targets = tree.layer_targets(Y, matcher_targets)
    row_cost = row_costs_of(Y, solver)
    out = list(weights) if weights is not None else [None] * tree.n_layers
    todo = range(tree.n_layers) if layers is None else sorted(layers)
    for t in todo:
        matched = None
        if solver.negatives == "tfn+man" and t > 0:
            matched = matched_rows(X, tree, out[:t], predict, executor, bias=solver.bias,
                                   keep=solver.man_top or None,
                                   desc=f"layer {t + 1}/{tree.n_layers}: matching")
        units = layer_units(tree, t, targets[t], matched)
        results = executor.map(
            train_cluster, LayerData(X, targets[t], layer_solver(solver, t, tree.n_layers), row_cost), units,
            desc=f"layer {t + 1}/{tree.n_layers}",
        )
        out[t] = assemble(results, X.shape[1], len(tree.parents[t]))
    return out
