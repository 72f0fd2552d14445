"""The sharded fit's work units: pure functions of (spec, unit) that read and write storage.

Each pass of ``xmc.core.sharded`` is one ``executor.map`` of one of these over shards or clusters:

- ``prepare_shard``: a slice of a bundle part -> the shard's prepared train / held-out rows, and its
  share of the label-sized sums (PIFA ``Y^T X``, label counts); pairs: ``xmc.core.shard_pairs``.
- ``weigh_shard``: the shard's rows scaled by the summed label mass's feature weights, PIFA redone.
- ``route_shard``: the shard's rows routed to each parent of a layer (teacher forcing by their
  labels, plus the matcher's beam for matcher-aware negatives), written per parent: the map side
  of a shuffle by cluster id.
- ``train_partition``: a cluster unit reads only its parent's pieces (the reduce side), trains the
  children and writes the weights: a path comes back, not a matrix.
- ``assemble_layer``: the cluster units' weights (and the kept clusters' old columns) glued into
  the layer's matrix, written for the driver to load in one piece.
- ``reduce_sums``, ``build_tree_unit``: the shards' PIFA sums added and normalised, the tree built
  from them: the driver never holds PIFA.
- ``gain_shard``, ``coverage_shard``, ``validate_shard``: a round's gains, its coverage and the
  held-out scores, each from one shard, as sums the driver adds up.

A unit's memory is its shard or its partition, never the corpus. Specs carry the tree (label-sized)
and the weights' *paths*: a worker loads a layer once (``stored_weights``, cached per process) and
scores every shard it gets with it, and the driver never serialises a model into a task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from xmc.core.cost import add_row_sizes, document_frequency, recurring_share_sum, row_costs, row_sizes
from xmc.core.disentangle import coverage_counts, routed_copy_targets
from xmc.core.feature_weights import label_mass, weigh_rows, weights_of_mass
from xmc.core.metrics import metric_sums
from xmc.core.model import check_xy
from xmc.core.predict import ScoringLayer, match_layers, predict_ensemble
from xmc.core.rows import holdout_mask
from xmc.core.sparse import csr, normalize_rows
from xmc.core.train import ClusterWeights, assemble, fit_rows, routed_rows, weights_of
from xmc.core.tree import LabelTree, build_tree, pifa_of_sums, pifa_sums
from xmc.errors import DataFormatError
from xmc.io.features import load_part
from xmc.io.shards import load_csr, load_matrices, partition_file, rows_file, save_matrices
from xmc.params import FeatureWeightMeasure, PredictParams, SolverParams, TreeParams


@dataclass(frozen=True)
class ShardUnit:
    """Shard ``shard`` of the training data (``n_rows`` of them, for load balancing)."""

    shard: int
    n_rows: int


def load_rows(root: Path, split: str, shard: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    m = load_matrices(rows_file(root, split, shard))
    return sp.csr_matrix(m["X"]), sp.csr_matrix(m["Y"])


@lru_cache(maxsize=16)
def _stored(path: str) -> sp.csc_matrix:
    return sp.csc_matrix(load_matrices(path, "W")["W"])


@lru_cache(maxsize=16)
def _scoring(path: str, ptr: bytes) -> ScoringLayer:
    return ScoringLayer(_stored(path), np.frombuffer(ptr, dtype=np.int64))


def stored_weights(paths: Sequence[Path]) -> list[sp.csc_matrix]:
    """Layer matrices from storage, each loaded once per process (paths are never rewritten)."""
    return [_stored(str(p)) for p in paths]


def stored_layers(tree: LabelTree, paths: Sequence[Path]) -> list[ScoringLayer]:
    """``scoring_layers`` of stored layers, built once per process and tree shape."""
    return [_scoring(str(p), tree.children_ptr(t).astype(np.int64).tobytes()) for t, p in enumerate(paths)]


# -- prepare ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrepareSpec:
    root: Path
    n_features: int
    n_labels: int
    normalize: bool
    seed: int
    threshold: float
    """Rows whose hash draw is below it are held out (``rows.holdout_threshold``)."""
    document_frequency: bool = False
    """Also sum the features' document frequencies (for ``share_shard``: a C scaled by ``recurring_df``)."""
    label_mass: bool = False
    """Also sum ``Y^T |X|`` (for the feature weights, ``reduce_sums``)."""


@dataclass(frozen=True)
class PartSlice:
    """Rows ``[start, stop)`` of a bundle part file, rows ``[first, ...)`` of the whole split."""

    shard: int
    path: str
    start: int
    stop: int
    first: int

    @property
    def n_rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class PreparedShard:
    shard: int
    n_train: int
    n_val: int
    sums: Path
    """npz: ``pifa`` (L x D float64 sums over the train rows), ``counts`` (all rows),
    ``train_counts`` (train rows) per label; ``row_sizes`` (train rows by their number of labels,
    ``cost.row_sizes``); ``df`` (train rows) per feature if the spec asks."""


def prepare_shard(spec: PrepareSpec, part: PartSlice) -> PreparedShard:
    X, Y = load_part(part.path, spec.n_features, spec.n_labels, part.start, part.stop)
    try:
        check_xy(X)  # Y is built from label ids: 0/1 by construction
    except DataFormatError as e:
        raise DataFormatError(f"rows {part.start}..{part.stop}: {e}", path=part.path) from None
    X = normalize_rows(X) if spec.normalize else csr(X)
    Y = csr(Y)
    held = holdout_mask(spec.seed, part.first, part.first + part.n_rows, spec.threshold)
    Xt, Yt = X[~held], Y[~held]
    save_matrices(rows_file(spec.root, "train", part.shard), X=Xt, Y=Yt)
    save_matrices(rows_file(spec.root, "valid", part.shard), X=X[held], Y=Y[held])
    sums = save_matrices(spec.root / "sums" / f"s{part.shard:05d}.npz",
                         counts=np.diff(Y.tocsc().indptr).astype(np.int64),
                         train_counts=np.diff(Yt.tocsc().indptr).astype(np.int64),
                         row_sizes=row_sizes(np.diff(Yt.indptr)), **feature_sums(spec, Xt, Yt))
    return PreparedShard(part.shard, int(Xt.shape[0]), int(held.sum()), sums)


def feature_sums(spec: PrepareSpec, Xt: sp.csr_matrix, Yt: sp.csr_matrix) -> dict[str, Any]:
    """A shard's train rows' sums that read their features: PIFA's, document frequencies and mass if asked."""
    df = {"df": document_frequency(Xt)} if spec.document_frequency else {}
    return {"pifa": pifa_sums(Xt, Yt), **df, **({"mass": label_mass(Xt, Yt)} if spec.label_mass else {})}


@dataclass(frozen=True)
class WeighSpec:
    root: Path
    feature_weights: np.ndarray
    normalize: bool


def weigh_shard(spec: WeighSpec, shard: PreparedShard) -> None:
    """The shard's rows (train and held-out) scaled by the feature weights and normalised again, as
    the in-process fit weighs its rows; its PIFA sums redone from them (the other sums stand: the
    weights are positive, so no feature leaves a row)."""
    for split in ("train", "valid"):
        X, Y = load_rows(spec.root, split, shard.shard)
        X = weigh_rows(X, spec.feature_weights, spec.normalize)
        save_matrices(rows_file(spec.root, split, shard.shard), X=X, Y=Y)
        if split == "train":
            sums = {k: v for k, v in load_matrices(shard.sums).items() if k != "mass"}
            save_matrices(shard.sums, **{**sums, "pifa": pifa_sums(X, Y)})


# -- route (map side of the shuffle) ---------------------------------------------------------------
@dataclass(frozen=True)
class RouteSpec:
    root: Path
    folder: Path
    """The pass folder the partitions go to."""
    tree: LabelTree
    layer: int
    parents: np.ndarray | None
    """Only these parents (None: all)."""
    matcher: Sequence[Path] | None
    """Stored layers above, for matcher-aware negatives (None: teacher-forced rows only)."""
    predict: PredictParams
    solver: SolverParams
    routed: Path | None = None
    """A round's matching folder: the matcher's targets are then the routed copy targets."""
    row_sizes: np.ndarray | None = None
    """Every shard's training rows by their number of labels (``cost.row_sizes``): the partitions
    then carry each row's factor on C (``row_cost_exponent``), as the in-process fit gives it."""


def route_shard(spec: RouteSpec, unit: ShardUnit) -> dict[int, int]:
    """Write the shard's rows of each parent (and their targets for its children); {parent: rows}."""
    X, Y = load_rows(spec.root, "train", unit.shard)
    tree, t = spec.tree, spec.layer
    last = None
    if spec.routed is not None:
        M = load_csr(spec.routed / f"s{unit.shard:05d}.npz", "M")
        last = routed_copy_targets(Y, M, tree)
    Y_t = tree.layer_targets(Y, last)[t]
    matched = None
    if spec.matcher is not None and t > 0:
        matched = match_layers(X, tree, stored_layers(tree, spec.matcher), spec.predict,
                               bias=spec.solver.bias, keep=spec.solver.man_top or None).tocsc()
    ptr = tree.children_ptr(t)
    parents = None if spec.parents is None else spec.parents.tolist()
    cost = None if spec.row_sizes is None else row_costs(np.diff(Y.indptr), spec.row_sizes, spec.solver)
    written: dict[int, int] = {}
    for p, rows in routed_rows(tree, t, Y_t, matched, parents):
        if len(rows):
            save_matrices(partition_file(spec.folder, p, unit.shard), X=X[rows],
                          Y=sp.csr_matrix(Y_t[:, ptr[p] : ptr[p + 1]])[rows],
                          **({} if cost is None else {"row_cost": cost[rows]}))
            written[p] = len(rows)
    return written


# -- train (reduce side) ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PartitionSpec:
    folder: Path
    n_features: int
    solver: SolverParams


@dataclass(frozen=True)
class PartitionUnit:
    """Children ``[child_start, child_stop)`` of ``parent`` on its partition (pieces in shard order)."""

    layer: int
    parent: int
    child_start: int
    child_stop: int
    first_child: int
    """The parent's first child: column 0 of the partition's targets."""
    n_rows: int
    shards: tuple[int, ...] = field(default=())

    @property
    def n_children(self) -> int:
        return self.child_stop - self.child_start


def train_partition(spec: PartitionSpec, unit: PartitionUnit) -> Path:
    """Train the unit on its partition; the weights go to storage and their path comes back."""
    pieces = [load_matrices(partition_file(spec.folder, unit.parent, s)) for s in unit.shards]
    n_cols = unit.child_stop - unit.first_child
    X = sp.vstack([p["X"] for p in pieces], format="csr") if pieces else sp.csr_matrix((0, spec.n_features))
    Y = sp.vstack([p["Y"] for p in pieces], format="csr") if pieces else sp.csr_matrix((0, n_cols))
    row_cost = np.concatenate([p["row_cost"] for p in pieces]) if pieces and "row_cost" in pieces[0] else None
    del pieces
    a, b = unit.child_start - unit.first_child, unit.child_stop - unit.first_child
    w = fit_rows(csr(X), csr(Y)[:, a:b], unit.child_start, unit.child_stop, spec.solver, row_cost)
    return save_matrices(spec.folder / f"w{unit.parent:07d}-{unit.child_start:07d}.npz",
                         feature=w.feature, child=w.child, value=w.value,
                         span=np.array([w.child_start, w.child_stop], np.int64))


def unit_weights(path: Path) -> ClusterWeights:
    """A ``train_partition`` result read back."""
    m = load_matrices(path)
    start, stop = (int(v) for v in np.asarray(m["span"]))
    return ClusterWeights(start, stop, np.asarray(m["feature"]), np.asarray(m["child"]),
                          np.asarray(m["value"]))


@dataclass(frozen=True)
class AssembleSpec:
    n_features: int
    n_children: int


@dataclass(frozen=True)
class AssembleUnit:
    """The unit results of a layer, plus columns ``[a, b)`` of the stored ``old`` layer moved to
    start at column ``new`` (``disentangle.kept_moves``), into the layer written at ``out``."""

    parts: tuple[Path, ...]
    out: Path
    old: Path | None = None
    moves: tuple[tuple[int, int, int], ...] = ()


def assemble_layer(spec: AssembleSpec, unit: AssembleUnit) -> Path:
    results = [unit_weights(p) for p in unit.parts]
    if unit.old is not None:
        W_old = sp.csc_matrix(load_matrices(unit.old, "W")["W"])
        results += [weights_of(W_old, a, b, new) for a, b, new in unit.moves]
    return save_matrices(unit.out, W=assemble(results, spec.n_features, spec.n_children))


@dataclass(frozen=True)
class ReduceSpec:
    root: Path
    feature_weight_exponent: float = 0.0
    """With the shards' ``label_mass`` summed: the feature weights' gamma."""
    feature_weight_measure: FeatureWeightMeasure = SolverParams.feature_weight_measure
    """... and their measure."""


def reduce_sums(spec: ReduceSpec, paths: tuple[Path, ...]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """The shards' sums added: PIFA normalised (and the features' document frequencies, if summed)
    into ``root/pifa.npz``; (counts, train counts) per label, the train rows' ``row_sizes``, and the
    feature weights of the summed label mass (None if not summed, or none to apply)."""
    S: sp.csr_matrix | None = None
    mass: sp.csr_matrix | None = None
    counts: np.ndarray | None = None
    train_counts: np.ndarray | None = None
    df: np.ndarray | None = None
    sizes = np.zeros(0, dtype=np.int64)
    for path in paths:  # one shard's sums at a time
        m = load_matrices(path)
        S = m["pifa"] if S is None else S + m["pifa"]
        if "mass" in m:
            mass = m["mass"] if mass is None else mass + m["mass"]
        counts = m["counts"] if counts is None else counts + m["counts"]
        train_counts = m["train_counts"] if train_counts is None else train_counts + m["train_counts"]
        sizes = add_row_sizes(sizes, np.asarray(m["row_sizes"], np.int64))
        if "df" in m:
            df = m["df"] if df is None else df + m["df"]
    assert S is not None and counts is not None and train_counts is not None, "no shard"
    summed = {} if df is None else {"df": df}
    save_matrices(spec.root / "pifa.npz", pifa=pifa_of_sums(sp.csr_matrix(S)), **summed)
    weights = None if mass is None else weights_of_mass(mass, spec.feature_weight_exponent,
                                                           spec.feature_weight_measure)
    return np.asarray(counts, np.int64), np.asarray(train_counts, np.int64), sizes, weights


def build_tree_unit(spec: ReduceSpec, params: TreeParams) -> LabelTree:
    """The label tree of ``reduce_sums``'s PIFA (one unit: the k-means needs every label at once)."""
    return build_tree(sp.csr_matrix(load_matrices(spec.root / "pifa.npz", "pifa")["pifa"]), params)


@dataclass(frozen=True)
class ShareSpec:
    root: Path
    min_df: int


def share_shard(spec: ShareSpec, unit: ShardUnit) -> tuple[float, int]:
    """The shard's ``cost.recurring_share_sum`` under the document frequencies of every shard."""
    X, _ = load_rows(spec.root, "train", unit.shard)
    return recurring_share_sum(X, load_matrices(spec.root / "pifa.npz", "df")["df"], spec.min_df)


# -- a round: gains, coverage; held-out scores -------------------------------------------------------
@dataclass(frozen=True)
class GainSpec:
    root: Path
    folder: Path
    tree: LabelTree
    matcher: list[Path]
    """Stored layers of the matcher (all but the last)."""
    predict: PredictParams
    bias: float
    keep: int


def gain_shard(spec: GainSpec, unit: ShardUnit) -> Path:
    """The shard's matching M and its share of ``G = Y^T M``, written to the round's folder."""
    X, Y = load_rows(spec.root, "train", unit.shard)
    M = match_layers(X, spec.tree, stored_layers(spec.tree, spec.matcher), spec.predict, bias=spec.bias,
                     keep=spec.keep)
    return save_matrices(spec.folder / f"s{unit.shard:05d}.npz", M=M, G=csr(Y.T.tocsr() @ M))


@dataclass(frozen=True)
class CoverageSpec:
    root: Path
    folder: Path
    C: sp.csr_matrix


def coverage_shard(spec: CoverageSpec, unit: ShardUnit) -> tuple[int, int]:
    """(true pairs the matching reaches under C, true pairs) of the shard."""
    _, Y = load_rows(spec.root, "train", unit.shard)
    return coverage_counts(Y, load_csr(spec.folder / f"s{unit.shard:05d}.npz", "M"), spec.C)


@dataclass(frozen=True)
class ValidateSpec:
    root: Path
    members: Sequence[tuple[LabelTree, Sequence[Path]]]
    """Each tree and its stored layers."""
    predict: PredictParams
    bias: float
    label_counts: np.ndarray
    n_train: int


def validate_shard(spec: ValidateSpec, unit: ShardUnit) -> dict[str, float]:
    """Metric sums of the model's top 5 on the shard's held-out rows."""
    X, Y = load_rows(spec.root, "valid", unit.shard)
    if X.shape[0] == 0:
        return {}
    members = [(tree, stored_layers(tree, paths)) for tree, paths in spec.members]
    pred = predict_ensemble(X, members, spec.predict, bias=spec.bias, topk=5)
    return metric_sums(Y, pred, (1, 3, 5), label_counts=spec.label_counts, n_train=spec.n_train)
