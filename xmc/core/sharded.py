"""The fit with the rows on the workers: no stage gathers the corpus in the driver.

``fit_sharded`` reads a features bundle's part files only by their Parquet footers (row counts),
cuts them into shards of ``SHARD_ROWS`` rows and hands them to the executor: the workers prepare
the rows (normalise, split off the held-out rows by their hash, ``rows.holdout_mask``) into the
work folder and return label-sized sums, which the driver adds up into PIFA and the label counts
(with feature weights, ``feature_weight_exponent``, the summed label mass gives the weights, a
second pass weighs every shard's rows and PIFA is summed again from them).
From there the fit loop is ``fit``'s own (``fit.fit_trees``): it asks ``ShardedRows`` for layers,
gains, coverage and held-out scores, and each answer is a few passes over the shards
(``xmc.core.shard_units``). Training a layer is a shuffle: the shards write the rows routed to
each parent into that parent's partition, then one unit per cluster reads its partition only.

What the driver holds is sized by the labels (PIFA, the tree, the weights, the gains' L x K sums,
per-shard row counts), so its memory stays flat as the corpus grows; a worker holds one shard or
one partition. The root's partition is every training row (its children are trained on all
rows, as in the in-process fit), so the root unit is the largest one: see docs/scaling.md.
With the same shards the model is the in-process ``fit``'s, weight for weight.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import replace
from functools import reduce
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from xmc.core.cost import resolve_cost
from xmc.core.disentangle import GAIN_CHUNK_ROWS, SHARD_ROWS, kept_moves
from xmc.core.executor import Executor, LocalExecutor
from xmc.core.feature_pairs import column_count, pair_count, pairs_of, pairs_record
from xmc.core.fit import FitInputs, RoundObserver, fit_trees
from xmc.core.metrics import add_sums, metrics_of_sums
from xmc.core.model import XMCModel
from xmc.core.rows import Matching, Member, holdout_threshold
from xmc.core.shard_pairs import PairSpec, pair_shard, shard_pair_keys, shard_row_entries
from xmc.core.shard_units import (
    AssembleSpec,
    AssembleUnit,
    CoverageSpec,
    GainSpec,
    PartitionSpec,
    PartitionUnit,
    PartSlice,
    PreparedShard,
    PrepareSpec,
    ReduceSpec,
    RouteSpec,
    ShardUnit,
    ShareSpec,
    ValidateSpec,
    WeighSpec,
    assemble_layer,
    build_tree_unit,
    coverage_shard,
    gain_shard,
    prepare_shard,
    reduce_sums,
    route_shard,
    share_shard,
    train_partition,
    validate_shard,
    weigh_shard,
)
from xmc.core.solver import resolve_device, use_dual_cd
from xmc.core.train import layer_solver, spread_children
from xmc.core.tree import LabelTree
from xmc.errors import DataFormatError
from xmc.io.features import bundle_digest, split_parts
from xmc.io.shards import load_csr, load_matrices, remove, save_matrices
from xmc.params import PredictParams, SolverParams, TreeParams, XMCParams


class ShardedRows:
    """The training rows as shard files under ``root``, read by the executor's units (``TrainingRows``).

    Layers live in storage too (``root/model``): the driver holds an empty stub per layer (its
    shape, its file's size), tasks get paths, never matrices, and ``resolve`` loads the final
    model's layers once the fit is done, so the driver never holds two models at once.
    """

    def __init__(self, root: Path, shards: Sequence[PreparedShard], n_features: int,
                 label_counts: np.ndarray, executor: Executor, row_sizes: np.ndarray) -> None:
        self.root, self.executor = root, executor
        self.row_sizes = row_sizes
        """The training rows by their number of labels (``cost.row_sizes``), for ``row_cost_exponent``."""
        self.n_features = n_features
        self.label_counts = label_counts
        self.train = [ShardUnit(s.shard, s.n_train) for s in shards if s.n_train]
        self.valid = [ShardUnit(s.shard, s.n_val) for s in shards if s.n_val]
        self.has_validation = bool(self.valid)
        self.passes = 0
        self._saved = 0
        self._stored: dict[int, tuple[weakref.ref[sp.csc_matrix], Path]] = {}

    def _folder(self, name: str) -> Path:
        self.passes += 1
        return self.root / f"pass-{self.passes:05d}-{name}"

    def _new_path(self) -> Path:
        self._saved += 1
        return self.root / "model" / f"W{self._saved:05d}.npz"

    def _remember(self, W: sp.csc_matrix, path: Path) -> None:
        """``W`` is stored at ``path``; the file goes when the driver drops the matrix."""
        key = id(W)

        def gone(_: object) -> None:
            self._stored.pop(key, None)
            path.unlink(missing_ok=True)

        self._stored[key] = (weakref.ref(W, gone), path)

    def _path(self, W: sp.csc_matrix) -> Path:
        """Where a layer matrix is stored (written first if the driver made it, e.g. a placeholder)."""
        hit = self._stored.get(id(W))
        if hit is not None and hit[0]() is W:
            return hit[1]
        path = save_matrices(self._new_path(), W=sp.csc_matrix(W))
        self._remember(W, path)
        return path

    def _paths(self, weights: Sequence[sp.csc_matrix]) -> list[Path]:
        return [self._path(W) for W in weights]

    def _train_layer(self, tree: LabelTree, t: int, solver: SolverParams, predict: PredictParams,
                     matcher: Sequence[sp.csc_matrix] | None, parents: np.ndarray | None,
                     routed: Path | None, desc: str, kept: AssembleUnit | None = None) -> sp.csc_matrix:
        """Shuffle the rows of layer t's parents into partitions, train a unit per partition,
        assemble the layer (with ``kept``'s old columns) in storage; its stub comes back."""
        folder = self._folder(f"layer{t}")
        man = None
        if matcher is not None and solver.negatives == "tfn+man" and t > 0:
            man = self._paths(matcher)
        spec = RouteSpec(self.root, folder, tree, t, parents, man, predict, solver, routed, self.row_sizes)
        written = self.executor.map(route_shard, spec, self.train, desc=f"{desc}: shuffle")
        ptr = tree.children_ptr(t)
        units = []
        for p in range(tree.n_parents(t)) if parents is None else parents.tolist():
            shards = tuple(u.shard for u, w in zip(self.train, written, strict=True) if p in w)
            n_rows = sum(w.get(p, 0) for w in written)
            units.append(PartitionUnit(t, p, int(ptr[p]), int(ptr[p + 1]), int(ptr[p]), n_rows, shards))
        part = PartitionSpec(folder, self.n_features, layer_solver(solver, t, tree.n_layers))
        paths = self.executor.map(train_partition, part,
                                  spread_children(units), desc=desc)
        unit = AssembleUnit(tuple(paths), self._new_path(), *((kept.old, kept.moves) if kept else ()))
        (path,) = self.executor.map(assemble_layer, AssembleSpec(self.n_features, len(tree.parents[t])),
                                    [unit], desc=f"{desc}: assemble")
        remove(folder)
        return self._stub(path, (self.n_features + 1, len(tree.parents[t])))

    def _stub(self, path: Path, shape: tuple[int, int]) -> sp.csc_matrix:
        """An empty matrix of the layer's shape standing for the layer stored at ``path``: the
        driver passes it around (tasks get the path) and ``resolve`` loads it at the end."""
        W = sp.csc_matrix(shape, dtype=np.float32)
        W.stored_bytes = path.stat().st_size
        self._remember(W, path)
        return W

    def resolve(self, weights: Sequence[sp.csc_matrix]) -> list[sp.csc_matrix]:
        out = []
        for W in weights:
            stub = getattr(W, "stored_bytes", None) is not None
            out.append(sp.csc_matrix(load_matrices(self._path(W), "W")["W"]) if stub else W)
        return out

    def train_layers(self, tree: LabelTree, solver: SolverParams, predict: PredictParams,
                     layers: list[int] | None = None, weights: list[sp.csc_matrix] | None = None,
                     routed: Matching | None = None) -> list[sp.csc_matrix]:
        out = list(weights) if weights is not None else [None] * tree.n_layers
        for t in range(tree.n_layers) if layers is None else sorted(layers):
            out[t] = self._train_layer(tree, t, solver, predict, out[:t], None, routed,
                                       f"layer {t + 1}/{tree.n_layers}")
        return out

    def train_rankers(self, tree: LabelTree, new_tree: LabelTree, W_old: sp.csc_matrix,
                      changed: np.ndarray, solver: SolverParams, predict: PredictParams,
                      matcher: Sequence[sp.csc_matrix], desc: str) -> sp.csc_matrix:
        kept = AssembleUnit((), Path(), self._path(W_old), tuple(kept_moves(tree, new_tree, changed)))
        return self._train_layer(new_tree, tree.n_layers - 1, solver, predict, matcher, changed, None, desc,
                                 kept)

    def gains(self, tree: LabelTree, weights: Sequence[sp.csc_matrix], predict: PredictParams,
              bias: float, keep: int) -> tuple[sp.csr_matrix, Matching]:
        folder = self._folder("gains")
        search = replace(predict, chunk_size=max(predict.chunk_size, GAIN_CHUNK_ROWS))
        spec = GainSpec(self.root, folder, tree, self._paths(weights[:-1]), search, bias, keep)
        paths = self.executor.map(gain_shard, spec, self.train, desc="gains")
        G = sp.csr_matrix((tree.n_labels, tree.n_clusters), dtype=np.float32)
        for path in paths:  # one shard's sums at a time: the driver holds L x K, never rows
            G = G + load_csr(path, "G")
        return sp.csr_matrix(G), folder

    def coverage(self, matching: Matching, C: sp.csr_matrix) -> float:
        counts = self.executor.map(coverage_shard, CoverageSpec(self.root, matching, C), self.train,
                                   desc="coverage")
        reached, pairs = (sum(c[i] for c in counts) for i in (0, 1))
        return reached / pairs if pairs else 0.0

    def validate(self, members: Sequence[Member], predict: PredictParams, bias: float,
                 label_counts: np.ndarray, n_train: int) -> dict[str, float] | None:
        if not self.has_validation:
            return None
        stored = [(tree, self._paths(weights)) for tree, weights in members]
        spec = ValidateSpec(self.root, stored, predict, bias, label_counts, n_train)
        parts = self.executor.map(validate_shard, spec, self.valid, desc="held-out")
        return metrics_of_sums(reduce(add_sums, parts))

    def drop(self, matching: Matching) -> None:
        remove(matching)


def shard_slices(parts: Sequence[tuple[Path, int]], shard_rows: int = SHARD_ROWS) -> list[PartSlice]:
    """The bundle's part files cut into shards of at most ``shard_rows`` rows, in row order."""
    slices: list[PartSlice] = []
    first = 0
    for path, n in parts:
        for a in range(0, n, shard_rows):
            slices.append(PartSlice(len(slices), str(path), a, min(a + shard_rows, n), first + a))
        first += n
    return slices


def fit_sharded(
    bundle: str | Path,
    params: XMCParams | None = None,
    *,
    executor: Executor | None = None,
    work_dir: str | Path | None = None,
    label_names: list[str] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    observer: RoundObserver | None = None,
    shard_rows: int = SHARD_ROWS,
) -> XMCModel:
    """``fit`` on a features bundle's train split without loading it: rows stay in shards.

    ``work_dir`` (default: the system's temp folder) holds the shards and the shuffles in a
    folder of its own, removed at the end; on a cluster it must be storage every node sees.
    """
    params = params or XMCParams()
    executor = executor or LocalExecutor()
    manifest, parts = split_parts(bundle, "train")
    n_features, n_labels = int(manifest["n_features"]), int(manifest["n_labels"])
    n_rows = sum(n for _, n in parts)
    if n_rows == 0:
        raise DataFormatError("the bundle's train split has no rows", path=bundle)
    if label_names is not None and len(label_names) != n_labels:
        raise DataFormatError(f"{len(label_names)} label names for {n_labels} labels")
    if not use_dual_cd(params.solver, resolve_device(params.solver.device)):
        import torch  # noqa: F401  loaded here, so executors can bound its threads per unit
    root = Path(work_dir or tempfile.gettempdir()) / f"xmc-fit-{uuid.uuid4().hex[:12]}"
    root.mkdir(parents=True)
    if params.dense.dense != "none":
        from xmc.errors import ParamError

        raise ParamError("--dense prime trains on the driver's rows: use --data-plane driver (or the local "
                         "executor) for a hybrid model")
    threshold = holdout_threshold(params.tree.seed, n_rows, params.disentangle.validation_fraction)
    gamma = params.solver.feature_weight_exponent
    spec = PrepareSpec(root, n_features, n_labels, params.normalize_rows, params.tree.seed, threshold,
                       document_frequency=params.solver.recurring_df > 0, label_mass=gamma > 0)
    try:
        prepared = executor.map(prepare_shard, spec, shard_slices(parts, shard_rows), desc="shards")
        pairs, fitting_row_features, fitting_row_labels = None, None, None
        m = pairs_of(params.solver, n_features, 0.0)
        if m:  # within the feature limit: the fitting rows' mean length (and labels) decide
            entries = executor.map(shard_row_entries, spec, prepared, desc="pairs")
            features, labels, n = (sum(c) for c in zip(*entries, strict=True))
            fitting_row_features, fitting_row_labels = (features / n, labels / n) if n else (0.0, 0.0)
            m = pairs_of(params.solver, n_features, fitting_row_features, fitting_row_labels)
        if m:  # the fitting rows' pairs, then every row with its pair columns, as fit makes them
            pair_spec = PairSpec(spec, m, params.solver.pair_weight)
            keys = executor.map(shard_pair_keys, pair_spec, prepared, desc="pairs")
            pairs = np.unique(np.concatenate(keys))
            executor.map(pair_shard, replace(pair_spec, vocabulary=pairs), prepared, desc="pairs")
        n_columns = column_count(n_features, pairs)
        reduce_spec = ReduceSpec(root)
        sums = tuple(s.sums for s in prepared)
        ((counts, train_counts, sizes, weights),) = executor.map(
            reduce_sums, ReduceSpec(root, gamma, params.solver.feature_weight_measure), [sums], desc="PIFA")
        if weights is not None:  # the rows weighed as fit weighs them, then PIFA again from them
            executor.map(weigh_shard, WeighSpec(root, weights, params.normalize_rows), prepared,
                         desc="feature weights")
            executor.map(reduce_sums, reduce_spec, [sums], desc="PIFA")
        remove(root / "sums")
        if not counts.any():
            raise DataFormatError("Y has no positive label at all: nothing to learn", path=bundle)
        rows = ShardedRows(root, prepared, n_columns, train_counts, executor, sizes)
        if not rows.train:
            raise DataFormatError("every training row was held out: lower validation_fraction", path=bundle)
        digest = bundle_digest(bundle) if checkpoint_dir is not None else ""
        cost: dict[str, object] = {}
        if params.solver.recurring_df:  # C of the training rows, as fit's resolve_cost_of_rows
            shares = executor.map(share_shard, ShareSpec(root, params.solver.recurring_df), rows.train,
                                  desc="cost")
            params, cost = resolve_cost(params, sum(s for s, _ in shares), sum(n for _, n in shares))

        def tree_of(tree_params: TreeParams) -> LabelTree:  # built where PIFA is, not on the driver
            (tree,) = executor.map(build_tree_unit, reduce_spec, [tree_params], desc="tree")
            return tree

        inputs = FitInputs(tree_of, counts, n_features, n_rows, digest, weights, pairs)
        model = fit_trees(rows, inputs, params, label_names=label_names, checkpoint_dir=checkpoint_dir,
                          resume=resume, observer=observer)
        for member in model.trees:
            member.weights = rows.resolve(member.weights)
        model.info["shards"] = {"count": len(prepared), "rows": shard_rows, "passes": rows.passes}
        if cost:
            model.info["cost"] = cost
        model.info["pairs"] = pairs_record(params.solver, n_features, fitting_row_features,
                                           fitting_row_labels, pair_count(pairs))
        return model
    finally:
        shutil.rmtree(root, ignore_errors=True)
