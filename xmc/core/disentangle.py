"""Label disentanglement: precision-gain reassignment of labels to up to lambda leaf clusters.

One round (shared/METHOD.md): match the training set with the current matcher (M, N x K), sum
the precision gains ``G = Y^T M`` over instance shards (independent work units), give each
label its best clusters by gain under the lambda / capacity / minimum-gain rules, and retrain
the rankers of the clusters whose label set changed (the matcher too, if asked). Rounds
alternate until R or until held-out precision stops improving.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from xmc.core.cost import row_costs_of
from xmc.core.executor import Executor
from xmc.core.metrics import evaluate
from xmc.core.predict import ScoringLayer, Shard, match_layers, predict_ensemble, row_shards, scoring_layers
from xmc.core.rows import Matching, Member, TrainingRows
from xmc.core.sparse import csr
from xmc.core.train import (
    ClusterWeights,
    LayerData,
    assemble,
    layer_units,
    matched_rows,
    train_cluster,
    train_layers,
    weights_of,
)
from xmc.core.tree import LabelTree
from xmc.params import DisentangleParams, PredictParams, SolverParams

SHARD_ROWS = 32768
"""Training rows per shard of the sharded fit's storage (``xmc.core.sharded``)."""
GAIN_CHUNK_ROWS = 8192
"""Training rows per gain shard of the in-memory fit, and rows matched at once in either fit's gain
pass. Chunks of 32K rows paid off while the beam search ran one scipy product per parent node a
chunk reaches (8K-row chunks made the gain pass at 1M labels 2x slower); the compiled kernel
(``xmc.core.kernels``) has no such cost per parent. On debian-deps, 8K rows against 32K: the gain
pass 0.43 s against 0.77 s (more shards keep both cores busy) and the fit's traced peak 173 MiB
against 306 MiB (a chunk's padded candidate blocks)."""


@dataclass(frozen=True)
class GainInputs:
    """What every gain shard reads: data, tree and the matcher's layers, ready to score."""

    X: sp.csr_matrix
    Y: sp.csr_matrix
    tree: LabelTree
    matcher: list[ScoringLayer]
    """``scoring_layers`` of all layers but the last, built once for every shard."""
    predict: PredictParams
    """Its beam_size is the search's beam."""
    bias: float
    keep: int
    """Leaves kept per instance: the best ``keep`` of the search's beam."""


def gain_matching(params: DisentangleParams, predict: PredictParams) -> tuple[PredictParams, int]:
    """(predict params whose beam is the gain search's, leaves kept per instance)."""
    keep = params.gain_beam_size or predict.beam_size
    return replace(predict, beam_size=max(keep, params.gain_search_beam or predict.beam_size)), keep


@dataclass(frozen=True)
class ShardGains:
    G: sp.csr_matrix
    """(L x K) gains of this shard: instances of label l the matcher sends to leaf k."""
    M: sp.csr_matrix
    """(rows x K) 0/1 matching of this shard's rows."""


def shard_gains(shared: GainInputs, shard: Shard) -> ShardGains:
    """Match one shard and return its share of ``G = Y^T M`` (a pure work unit)."""
    Xs = shared.X[shard.start : shard.stop]
    M = match_layers(Xs, shared.tree, shared.matcher, shared.predict, bias=shared.bias, keep=shared.keep)
    G = csr(shared.Y[shard.start : shard.stop].T.tocsr() @ M)
    return ShardGains(G, M)


def precision_gains(
    X: sp.csr_matrix, Y: sp.csr_matrix, tree: LabelTree, weights: list[sp.csc_matrix],
    predict: PredictParams, bias: float, executor: Executor, shard_rows: int = GAIN_CHUNK_ROWS,
    keep: int | None = None,
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(G, M): gains summed over shards, and the stacked matching matrix (``keep`` best leaves
    of a beam-``predict.beam_size`` search per instance; all of the beam by default)."""
    if tree.n_layers < 2:
        raise ValueError("disentanglement needs a matcher: the tree has a single leaf cluster")
    shards = row_shards(X.shape[0], shard_rows)
    search = replace(predict, chunk_size=max(predict.chunk_size, shard_rows))
    shared = GainInputs(X, Y, tree, scoring_layers(tree, weights[:-1]), search, bias,
                        keep or predict.beam_size)
    parts = executor.map(shard_gains, shared, shards, desc="gains")
    G = parts[0].G.copy()  # results may be read-only views (Ray's object store)
    for part in parts[1:]:
        G = G + part.G
    return csr(G), sp.csr_matrix(sp.vstack([p.M for p in parts], format="csr"))


def coverage(Y: sp.csr_matrix, M: sp.csr_matrix, C: sp.csr_matrix) -> float:
    """``Tr(Y^T Binary(M C^T)) / nnz(Y)``: share of true pairs the matcher can reach under C."""
    reached, pairs = coverage_counts(Y, M, C)
    return reached / pairs if pairs else 0.0


def coverage_counts(Y: sp.csr_matrix, M: sp.csr_matrix, C: sp.csr_matrix) -> tuple[int, int]:
    """(true pairs the matching M reaches under C, true pairs): shards' counts add up."""
    rows, labels = Y.nonzero()
    if len(rows) == 0:
        return 0, 0
    reached = np.asarray(M[rows].multiply(C[labels]).sum(axis=1)).ravel() > 0
    return int(reached.sum()), len(rows)


def assign(
    G: sp.csr_matrix, C_old: sp.csr_matrix, n_pos: np.ndarray, params: DisentangleParams,
    capacity: int,
) -> sp.csr_matrix:
    """New label -> cluster matrix: greedy over gains in descending order (deterministic).

    An entry (l, k) is taken if label l has fewer than ``max_copies`` clusters, leaf k holds
    fewer than ``capacity`` copies (0 = no cap), and ``G[l, k]`` reaches ``min_gain`` and
    ``min_gain_share`` of the label's positives. A label that gets nothing keeps its clusters.
    """
    G = sp.coo_matrix(G)
    ok = (G.data >= params.min_gain) & (G.data >= params.min_gain_share * n_pos[G.row])
    rows, cols, gains = G.row[ok], G.col[ok], G.data[ok]
    order = np.lexsort((cols, rows, -gains))  # by gain desc, then label, then cluster
    n_labels, n_clusters = C_old.shape
    copies = np.zeros(n_labels, dtype=np.int64)
    load = np.zeros(n_clusters, dtype=np.int64)
    take_l: list[int] = []
    take_k: list[int] = []
    for label, k in zip(rows[order].tolist(), cols[order].tolist(), strict=True):
        if copies[label] < params.max_copies and (capacity == 0 or load[k] < capacity):
            copies[label] += 1
            load[k] += 1
            take_l.append(label)
            take_k.append(k)
    keep_old = sp.diags((copies == 0).astype(np.float32)) @ C_old
    C_new = sp.csr_matrix((np.ones(len(take_l), np.float32), (take_l, take_k)), shape=C_old.shape)
    return csr(C_new + keep_old)


def routed_copy_targets(Y: sp.csr_matrix, M: sp.csr_matrix, tree: LabelTree) -> sp.csc_matrix:
    """(N x copies) targets for training the *matcher*: each positive goes to the copy it was routed to.

    Rankers train every copy on its label's full positive set (shared/METHOD.md), but if the
    matcher were taught that every instance of a label belongs under each of its clusters, it
    would learn to send both senses to both clusters and undo the split the gains found. So an
    instance of a label with several copies is a matcher positive only for the copies in clusters
    the gain matching ``M`` sent it to; when none of them is, for all of them (no evidence).
    On synthetic 20K-label data this is the difference between -5 and +0 P@1 for the round.
    """
    A = tree.copy_targets(Y).tocoo()  # every copy of every positive label
    clusters, labels = tree.parents[-1], tree.copy_label
    hit = np.asarray(csr(M)[A.row, clusters[A.col]]).ravel() > 0
    # was any copy of the (row, label) pair hit? Grouped over A's entries: the product Y o (M C^T) it
    # replaces held every label of every matched cluster per row (debian-deps: 0.13-0.43 s a round)
    _, pair = np.unique(A.row.astype(np.int64) * tree.n_labels + labels[A.col], return_inverse=True)
    label_hit = (np.bincount(pair.ravel(), weights=hit) > 0)[pair.ravel()]
    keep = hit | ~label_hit
    return sp.csc_matrix((A.data[keep], (A.row[keep], A.col[keep])), shape=A.shape, dtype=np.float32)


def tree_with_assignment(tree: LabelTree, C: sp.csr_matrix) -> LabelTree:
    """Same upper levels; the last layer's copies are the nonzeros of C, sorted by cluster."""
    Cc = sp.csc_matrix(C)
    Cc.sort_indices()
    clusters = np.repeat(np.arange(C.shape[1]), np.diff(Cc.indptr))
    return LabelTree(tree.parents[:-1] + (clusters.astype(np.int64),), Cc.indices.astype(np.int64),
                     tree.n_labels)


@dataclass
class RoundRecord:
    """What one alternation round did; plain data (MLflow logging comes later)."""

    round: int
    labels_copied: int = 0
    copies: int = 0
    clusters_changed: int = 0
    leaf_sizes: dict[str, float] = field(default_factory=dict)
    coverage_before: float | None = None
    coverage_after: float | None = None
    validation: dict[str, float] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    weight_bytes: int = 0
    """Bytes of the model's weight arrays after the round (CSC data + indices + pointers)."""
    peak_rss_mib: float = 0.0
    """Peak resident memory of the driver process so far."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def weight_bytes(weights: list[sp.csc_matrix]) -> int:
    """Bytes of the layers' arrays (a stored stub's ``stored_bytes``: what its file holds)."""
    return int(sum(getattr(W, "stored_bytes", None) or W.data.nbytes + W.indices.nbytes + W.indptr.nbytes
                   for W in weights))


def leaf_size_stats(tree: LabelTree) -> dict[str, float]:
    sizes = np.bincount(tree.parents[-1], minlength=tree.n_clusters)
    return {"min": int(sizes.min()), "median": float(np.median(sizes)), "mean": float(sizes.mean()),
            "max": int(sizes.max())}


RankerRetrain = Literal["changed", "all", "none"]


def pending_rankers(n_features: int, n_copies: int) -> sp.csc_matrix:
    """All-zero last layer standing in for rankers that are trained later (only the final model's are)."""
    return sp.csc_matrix((n_features + 1, n_copies), dtype=np.float32)


def kept_moves(tree: LabelTree, new_tree: LabelTree, changed: np.ndarray) -> list[tuple[int, int, int]]:
    """(old start, old stop, new start) of the last layer's columns of each cluster whose labels
    did not change: its rankers are moved over, not retrained."""
    last = tree.n_layers - 1
    old_ptr, new_ptr = tree.children_ptr(last), new_tree.children_ptr(last)
    kept = np.setdiff1d(np.arange(new_tree.n_clusters), changed)
    return [(int(old_ptr[k]), int(old_ptr[k + 1]), int(new_ptr[k])) for k in kept]


def move_kept(tree: LabelTree, new_tree: LabelTree, W_old: sp.csc_matrix,
              changed: np.ndarray) -> list[ClusterWeights]:
    """The kept clusters' columns of ``W_old`` (``kept_moves``) at their new place."""
    return [weights_of(W_old, a, b, new) for a, b, new in kept_moves(tree, new_tree, changed)]


def disentangle_round(
    rows: TrainingRows, tree: LabelTree, weights: list[sp.csc_matrix],
    solver: SolverParams, predict: PredictParams, params: DisentangleParams, max_leaf_size: int,
    round_no: int, rankers: RankerRetrain = "changed",
) -> tuple[LabelTree, list[sp.csc_matrix], RoundRecord]:
    """One reassignment round on the training ``rows``; returns the new tree, weights and record.

    ``rankers`` says which clusters' rankers to retrain: 'changed' (step 5 of the method),
    'all' (the input's rankers were never trained), or 'none' (nothing will read this round's
    rankers: the gains of the next round use only the matcher). With 'none' the last layer is
    an empty placeholder of the right shape (see ``pending_rankers``).
    """
    record = RoundRecord(round_no)
    t0 = time.perf_counter()
    gain_predict, keep = gain_matching(params, predict)
    G, M = rows.gains(tree, weights, gain_predict, solver.bias, keep)
    t1 = time.perf_counter()
    C_old = tree.label_cluster_matrix()
    capacity = int(np.ceil(params.leaf_capacity * max_leaf_size)) if params.leaf_capacity else 0
    C_new = assign(G, C_old, rows.label_counts, params, capacity)
    new_tree = tree_with_assignment(tree, C_new)
    changed = np.flatnonzero(np.asarray(abs(C_new - C_old).sum(axis=0)).ravel() > 0)
    record.coverage_before = rows.coverage(M, C_old)
    record.coverage_after = rows.coverage(M, C_new)
    t2 = time.perf_counter()
    new_weights = list(weights)
    if params.retrain_matcher and tree.n_layers > 1:
        new_weights = rows.train_layers(new_tree, solver, predict, layers=list(range(tree.n_layers - 1)),
                                        weights=new_weights, routed=M)
    rows.drop(M)
    t3 = time.perf_counter()
    last = tree.n_layers - 1
    retrain = changed
    if solver.negatives == "tfn+man" or rankers == "all":  # MAN: ranker negatives depend on the matcher
        retrain = np.arange(new_tree.n_clusters)
    if rankers == "none":
        new_weights[last] = pending_rankers(rows.n_features, len(new_tree.copy_label))
    else:
        new_weights[last] = rows.train_rankers(tree, new_tree, weights[last], retrain, solver, predict,
                                               new_weights[:last], f"round {round_no}: rankers")
    t4 = time.perf_counter()
    per_label = np.bincount(new_tree.copy_label, minlength=tree.n_labels)
    record.labels_copied = int((per_label > 1).sum())
    record.copies = int(len(new_tree.copy_label))
    record.clusters_changed = int(len(changed))
    record.leaf_sizes = leaf_size_stats(new_tree)
    record.seconds = {"gains": t1 - t0, "assign": t2 - t1, "matcher": t3 - t2, "rankers": t4 - t3}
    return new_tree, new_weights, record


class InMemoryRows:
    """The training rows as the driver's matrices (``X`` prepared, ``Y`` 0/1), held-out apart."""

    def __init__(self, X: sp.csr_matrix, Y: sp.csr_matrix, X_val: sp.csr_matrix | None,
                 Y_val: sp.csr_matrix | None, executor: Executor) -> None:
        self.X, self.Y, self.X_val, self.Y_val, self.executor = X, Y, X_val, Y_val, executor
        self.n_features = X.shape[1]
        self.label_counts = np.diff(Y.tocsc().indptr).astype(np.int64)
        self.has_validation = X_val is not None and Y_val is not None

    def train_layers(self, tree: LabelTree, solver: SolverParams, predict: PredictParams,
                     layers: list[int] | None = None, weights: list[sp.csc_matrix] | None = None,
                     routed: Matching | None = None) -> list[sp.csc_matrix]:
        targets = None if routed is None else routed_copy_targets(self.Y, routed, tree)
        return train_layers(self.X, self.Y, tree, solver, predict, self.executor, layers=layers,
                            weights=weights, matcher_targets=targets)

    def train_rankers(self, tree: LabelTree, new_tree: LabelTree, W_old: sp.csc_matrix,
                      changed: np.ndarray, solver: SolverParams, predict: PredictParams,
                      matcher: Sequence[sp.csc_matrix], desc: str) -> sp.csc_matrix:
        last = tree.n_layers - 1
        matched = None
        if solver.negatives == "tfn+man":  # the rows the new matcher's full beam sends to each leaf
            matched = matched_rows(self.X, new_tree, matcher, predict, self.executor, bias=solver.bias,
                                   keep=solver.man_top or None, desc=f"{desc}: matching")
        targets = new_tree.copy_targets(self.Y)
        units = layer_units(new_tree, last, targets, matched, parents=changed.tolist())
        shared = LayerData(self.X, targets, solver, row_costs_of(self.Y, solver))
        results = self.executor.map(train_cluster, shared, units, desc=desc)
        results += move_kept(tree, new_tree, W_old, changed)
        return assemble(results, self.n_features, len(new_tree.copy_label))

    def gains(self, tree: LabelTree, weights: Sequence[sp.csc_matrix], predict: PredictParams,
              bias: float, keep: int) -> tuple[sp.csr_matrix, Matching]:
        return precision_gains(self.X, self.Y, tree, list(weights), predict, bias, self.executor, keep=keep)

    def coverage(self, matching: Matching, C: sp.csr_matrix) -> float:
        return coverage(self.Y, matching, C)

    def validate(self, members: Sequence[Member], predict: PredictParams, bias: float,
                 label_counts: np.ndarray, n_train: int) -> dict[str, float] | None:
        if self.X_val is None or self.Y_val is None:
            return None
        pred = predict_ensemble(self.X_val, members, predict, bias=bias, topk=5, executor=self.executor)
        return evaluate(self.Y_val, pred, (1, 3, 5), label_counts=label_counts, n_train=n_train)

    def drop(self, matching: Matching) -> None:
        pass

    def resolve(self, weights: Sequence[sp.csc_matrix]) -> list[sp.csc_matrix]:
        return list(weights)
