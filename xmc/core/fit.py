"""The fit loop: build the tree, train every layer, then alternate reassignment and retraining.

This is the driver's side of training (shared state, round records, early stopping and
checkpoints); the model it returns (``xmc.core.model.XMCModel``) only predicts, saves and loads.
The method is docs/design.md's: a baseline partition (XR-Linear), then R rounds of precision-gain
reassignment with up to lambda copies per label, each round kept only if held-out P@1 improves.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import replace as dataclass_replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from xmc.core.cost import resolve_cost_of_rows
from xmc.core.disentangle import (
    InMemoryRows,
    RankerRetrain,
    RoundRecord,
    disentangle_round,
    leaf_size_stats,
    pending_rankers,
    weight_bytes,
)
from xmc.core.executor import Executor, LocalExecutor
from xmc.core.feature_pairs import (
    column_count,
    pair_count,
    pair_vocabulary,
    pairs_of,
    pairs_record,
    row_entries,
    with_pairs,
)
from xmc.core.feature_weights import feature_weights, weigh_rows
from xmc.core.model import RANKERS_PENDING, XMCModel, check_xy, prepare_features
from xmc.core.rows import TrainingRows, split_validation
from xmc.core.solver import resolve_device, use_dual_cd
from xmc.core.sparse import csr
from xmc.core.tree import LabelTree, build_tree, pifa
from xmc.errors import DataFormatError
from xmc.io.checkpoint import Checkpoint, RoundState, check_checkpoint_folder, fingerprint
from xmc.log import peak_rss_mib
from xmc.params import TreeParams, XMCParams


class RoundObserver(Protocol):
    """Told about each round as it happens (e.g. the MLflow run of ``xmc.engines.tracking``).

    ``round_started(r, tree)`` comes before the round's work (round 0: before the tree is built),
    ``round_finished(record)`` once its record (``RoundRecord.to_dict()``) is complete; in an
    ensemble the records carry ``"tree": t``. Called on the driver, in order; the fit loop knows
    nothing else about who listens.
    """

    def round_started(self, r: int, tree: int = 0) -> None: ...

    def round_finished(self, record: dict[str, Any]) -> None: ...


def fit(
    X: sp.spmatrix,
    Y: sp.spmatrix,
    params: XMCParams | None = None,
    *,
    executor: Executor | None = None,
    label_names: list[str] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    observer: RoundObserver | None = None,
    label_text: sp.csr_matrix | None = None,
) -> XMCModel:
    """Build the label tree from PIFA embeddings, train every layer, then run the rounds.

    Before anything else every row is weighed by the feature weights of the fitting rows
    (``feature_weight_exponent``; the held-out rows do not choose them) and the model keeps them.

    With ``validation_fraction > 0`` a seeded share of the rows is held out: the model is
    trained on the rest, every round is scored on it, and the rounds stop (keeping the best)
    once P@1 stops improving. Round records land in ``model.info["rounds"]``.
    With ``checkpoint_dir`` the state is saved after the baseline and after every round;
    ``resume=True`` continues from the last saved round instead of starting over.
    ``observer`` hears of each round as it starts and finishes (live tracking).
    With ``n_trees`` T > 1 the T trees are fitted one after the other on the same rows (tree t
    from seed + t, the same held-out rows for all), each with its own rounds, checkpoint folder
    ``tree_<t>/`` and observer records tagged ``"tree": t``; every tree's units go through the
    executor, so a cluster is kept busy within a tree and the driver holds one X for all trees.
    With ``dense`` = prime a dense part (``xmc.core.dense``) is trained on the same rows after the
    trees, and fused with them by constants fitted on the held-out rows (``fusion_fraction`` of the
    rows when ``validation_fraction`` is 0); ``label_text`` are the label names as feature rows.
    With ``refit_trees`` (and ``validation_fraction`` 0, no ``sense_prototypes``) the trees are then
    trained again on every row (checkpoint folder ``refit/``): the hybrid's trees are those of a fit
    without ``dense``.
    """
    params = params or XMCParams()
    check_xy(X, Y)
    if label_names is not None and len(label_names) != Y.shape[1]:
        raise DataFormatError(f"{len(label_names)} label names for {Y.shape[1]} labels")
    executor = executor or LocalExecutor()
    if not use_dual_cd(params.solver, resolve_device(params.solver.device)):
        import torch  # noqa: F401  loaded here, so executors can bound its threads per unit
    Xp = prepare_features(X, params, X.shape[1])
    Y = csr(Y)
    held_out = params.dense.held_out_fraction(params.disentangle.validation_fraction)
    Xt, Yt, Xv, Yv = split_validation(Xp, Y, held_out, params.tree.seed)
    fitting_row_features, fitting_row_labels = row_entries(Xt), row_entries(Yt)
    m = pairs_of(params.solver, X.shape[1], fitting_row_features, fitting_row_labels)
    pairs = pair_vocabulary(Xt, m) if m else None  # the pairs of the fitting rows alone
    pairs_info = pairs_record(params.solver, X.shape[1], fitting_row_features, fitting_row_labels,
                              pair_count(pairs))
    if pairs is not None:  # every row (held-out ones too) as the model will see it at predict
        del Xt, Xv
        Xp = with_pairs(Xp, pairs, m, params.solver.pair_weight, params.normalize_rows)
        Xt, Yt, Xv, Yv = split_validation(Xp, Y, held_out, params.tree.seed)
    refit = refits_trees(params, Xv.shape[0] if Xv is not None else 0)
    gamma, measure = params.solver.feature_weight_exponent, params.solver.feature_weight_measure
    s = feature_weights(Xt, Yt, gamma, measure)  # from the fitting rows alone
    given_rows = Xp if refit and s is not None else None  # the refit weighs every row afresh
    if s is not None:  # every row (held-out ones too) as the model will see it at predict
        del Xt, Xv  # the split's copies go before the weighed rows come (one copy of X less at peak)
        Xp = weigh_rows(Xp, s, params.normalize_rows)
        Xt, Yt, Xv, Yv = split_validation(Xp, Y, held_out, params.tree.seed)
    if refit and checkpoint_dir is not None and not resume:  # a fresh run: no earlier run's refit
        check_checkpoint_folder(checkpoint_dir)  # ours (or empty) before anything in it is removed
        shutil.rmtree(Path(checkpoint_dir) / "refit", ignore_errors=True)
    given, (params, cost) = params, resolve_cost_of_rows(params, Xt)
    inputs = FitInputs(partial(build_tree, pifa(Xt, Yt)), np.asarray(Y.sum(axis=0)).ravel().astype(np.int64),
                       X.shape[1], X.shape[0], fingerprint(Xp, Y) if checkpoint_dir is not None else "", s,
                       pairs)
    model = fit_trees(InMemoryRows(Xt, Yt, Xv, Yv, executor), inputs, params, label_names=label_names,
                      checkpoint_dir=checkpoint_dir, resume=resume, observer=None if refit else observer)
    if params.dense.dense == "prime":
        from xmc.core.dense.fit import fit_dense

        dense, dense_info = fit_dense(
            Xt, Yt, Xv, Yv, model, params, label_text=label_text, checkpoint_dir=checkpoint_dir,
            resume=resume, observer=observer, executor=executor)
        if refit:  # the held-out rows served the fusion only: the trees again, on every row
            if given_rows is not None:  # weights of every row, as the fit without --dense has them;
                # the dense part then reads rows weighed by these, a few held-out rows off its own
                s = feature_weights(given_rows, Y, gamma, measure)
                Xp = weigh_rows(given_rows, s, params.normalize_rows)
                del given_rows
            params, cost = resolve_cost_of_rows(given, Xp)
            folder = None if checkpoint_dir is None else Path(checkpoint_dir) / "refit"
            every_row = dataclass_replace(inputs, tree_of=partial(build_tree, pifa(Xp, Y)),
                                          feature_weights=s)
            model = fit_trees(InMemoryRows(Xp, Y, None, None, executor), every_row, params,
                              label_names=label_names, checkpoint_dir=folder, resume=resume,
                              observer=observer)
            dense_info["trees_refit"] = True
        model.dense, model.info["dense"] = dense, dense_info
    if cost:  # how the C of the final trees was chosen
        model.info["cost"] = cost
    model.info["pairs"] = pairs_info
    return model


def refits_trees(params: XMCParams, n_held_out: int) -> bool:
    """Whether a hybrid's trees are trained again on every row after its fusion (``refit_trees``): only
    where the held-out rows exist for the fusion alone (``validation_fraction`` 0), and not with
    ``sense_prototypes``, whose prototypes are the copies of the first trees. The first trees then
    report no rounds to the observer: the rounds it hears, and MLflow shows, are the final trees'."""
    d = params.dense
    return (d.dense == "prime" and d.refit_trees and params.disentangle.validation_fraction == 0
            and n_held_out > 0 and not d.sense_prototypes)


@dataclass
class FitInputs:
    """What every tree of a fit shares besides the rows; all sized by the labels, not the rows."""

    tree_of: Callable[[TreeParams], LabelTree]
    """The label tree of the training rows' PIFA embeddings (held-out rows apart) for a seed and
    shape: ``build_tree`` on the driver's PIFA, or a unit over the shards' (the driver never holds it)."""
    counts: np.ndarray
    """Documents per label over all rows (propensities for PSP)."""
    n_features: int
    n_rows: int
    """All rows, held-out ones included."""
    fingerprint: str
    """Of the data, for checkpoints ('' without a checkpoint)."""
    feature_weights: np.ndarray | None = None
    """The rows' feature weights (``xmc.core.feature_weights``), which every model of the fit stores."""
    pairs: np.ndarray | None = None
    """The pair columns' keys (``xmc.core.feature_pairs``), which every model of the fit stores."""

    @property
    def n_columns(self) -> int:
        """Columns of the rows the layers train on: the features, then the pairs."""
        return column_count(self.n_features, self.pairs)


def fit_trees(
    rows: TrainingRows, inputs: FitInputs, params: XMCParams, *, label_names: list[str] | None = None,
    checkpoint_dir: str | Path | None = None, resume: bool = False, observer: RoundObserver | None = None,
) -> XMCModel:
    """``fit`` after the rows are in place (in memory, or sharded in storage): one tree, or T."""
    T = params.tree.n_trees
    if T == 1:
        return fit_tree(rows, inputs, params, label_names, checkpoint_dir, resume, observer)
    if checkpoint_dir is not None:
        check_checkpoint_folder(checkpoint_dir)
    trees = []
    for t in range(T):
        member = params.replace(seed=params.tree.seed + t, n_trees=1)
        folder = None if checkpoint_dir is None else Path(checkpoint_dir) / f"tree_{t}"
        heard = None if observer is None else TreeObserver(observer, t)
        model = fit_tree(rows, inputs, member, label_names if t == 0 else None, folder, resume, heard)
        for record in model.info.get("rounds", []):
            record["tree"] = t
        trees.append(model)
    ensemble = trees[0]
    ensemble.params, ensemble.members = params, trees[1:]
    ensemble.info["trees"] = [tree_summary(t, m) for t, m in enumerate(trees)]
    validation = rows.validate([(m.tree, m.weights) for m in trees], params.predict, params.solver.bias,
                               ensemble.label_counts, ensemble.n_train)
    if validation is not None:
        ensemble.info["validation"] = validation
    return ensemble


def tree_summary(t: int, model: XMCModel) -> dict[str, Any]:
    """An ensemble member in a line of the record: its seed, kept round and that round's held-out scores."""
    best = int(model.info.get("best_round", 0))
    rounds = model.info.get("rounds") or []
    return {"tree": t, "seed": model.params.tree.seed, "best_round": best,
            "validation": rounds[best].get("validation") if best < len(rounds) else None}


class TreeObserver:
    """Passes tree t's rounds on to the fit's observer, each record tagged ``"tree": t``."""

    def __init__(self, inner: RoundObserver, tree: int) -> None:
        self.inner, self.tree = inner, tree

    def round_started(self, r: int, tree: int = 0) -> None:
        self.inner.round_started(r, tree=self.tree)

    def round_finished(self, record: dict[str, Any]) -> None:
        self.inner.round_finished({**record, "tree": self.tree})


def fit_tree(
    rows: TrainingRows, inputs: FitInputs, params: XMCParams, label_names: list[str] | None,
    checkpoint_dir: str | Path | None, resume: bool, observer: RoundObserver | None,
) -> XMCModel:
    """One tree: baseline partition, layers, then the rounds (``fit``'s work for ``n_trees`` = 1)."""
    ckpt = None
    if checkpoint_dir is not None:
        ckpt = Checkpoint(checkpoint_dir, params, inputs.fingerprint)
        state = ckpt.load() if resume else None
        if state is not None:
            return run_rounds(state.current, rows, ckpt, state, observer)
    if observer is not None:
        observer.round_started(0)
    t0 = time.perf_counter()
    tree = inputs.tree_of(params.tree)
    t1 = time.perf_counter()
    rounds = params.disentangle.rounds > 0 and tree.n_layers > 1
    defer = rounds and not rows.has_validation  # nothing reads the baseline's rankers: train the matcher
    weights = rows.train_layers(tree, params.solver, params.predict,
                                layers=list(range(tree.n_layers - 1)) if defer else None)
    t2 = time.perf_counter()
    info: dict[str, Any] = {"seconds_tree": t1 - t0, "seconds_train": t2 - t1}
    if defer:
        weights[-1] = pending_rankers(inputs.n_columns, len(tree.copy_label))
        info[RANKERS_PENDING] = True
    model = XMCModel(params, tree, weights, inputs.n_features, inputs.counts, inputs.n_rows, label_names,
                     info, feature_weights=inputs.feature_weights, pairs=inputs.pairs)
    if rounds:
        model = run_rounds(model, rows, ckpt, observer=observer)
    return model


def resolved(state: RoundState, rows: TrainingRows) -> RoundState:
    """The state with its models' layer values (what a checkpoint saves)."""
    def whole(m: XMCModel) -> XMCModel:
        return dataclass_replace(m, weights=rows.resolve(m.weights))

    return dataclass_replace(state, current=whole(state.current), best=whole(state.best))


def run_rounds(
    model: XMCModel, rows: TrainingRows, checkpoint: Checkpoint | None = None,
    state: RoundState | None = None, observer: RoundObserver | None = None,
) -> XMCModel:
    """Alternate reassignment and retraining for up to R rounds; keep the best by validation P@1.

    ``state`` (from a checkpoint) continues after its round; ``checkpoint`` saves every round;
    ``observer`` hears of each round (the baseline's start is announced by ``fit``).
    """
    p = model.params

    def validate(m: XMCModel) -> dict[str, float] | None:
        return rows.validate([(m.tree, m.weights)], p.predict, p.solver.bias, m.label_counts, m.n_train)

    def footprint(record: RoundRecord, m: XMCModel) -> RoundRecord:
        record.weight_bytes = weight_bytes(m.weights)
        record.peak_rss_mib = peak_rss_mib()
        return record

    if state is None:
        t0 = time.perf_counter()
        base = RoundRecord(0, copies=len(model.tree.copy_label), leaf_sizes=leaf_size_stats(model.tree),
                           validation=validate(model))
        base.seconds = {"tree": model.info.get("seconds_tree", 0.0),
                        "train": model.info.get("seconds_train", 0.0), "validate": time.perf_counter() - t0}
        footprint(base, model)
        if observer is not None:
            observer.round_finished(base.to_dict())
        state = RoundState(0, model, model, 0, (base.validation or {}).get("P@1", 0.0), [base.to_dict()])
        if checkpoint is not None:
            checkpoint.save(resolved(state, rows))
    for r in range(state.round + 1, p.disentangle.rounds + 1):
        if state.finished:
            break
        current = state.current
        if observer is not None:
            observer.round_started(r)
        pending = bool(current.info.get(RANKERS_PENDING))
        # without validation only the last round's rankers are ever read; a fixed point stopping
        # the rounds earlier leaves them pending, and they are trained after the loop
        rankers: RankerRetrain = "all" if pending else "changed"
        if not rows.has_validation and r < p.disentangle.rounds:
            rankers = "none"
        tree, weights, record = disentangle_round(
            rows, current.tree, current.weights, p.solver, p.predict, p.disentangle,
            p.tree.max_leaf_size, r, rankers,
        )
        info = {k: v for k, v in model.info.items() if k not in ("rounds", RANKERS_PENDING)}
        if rankers == "none":
            info[RANKERS_PENDING] = True
        current = XMCModel(p, tree, weights, model.n_features, model.label_counts, model.n_train,
                           model.label_names, info, feature_weights=model.feature_weights, pairs=model.pairs)
        t0 = time.perf_counter()
        record.validation = validate(current)
        record.seconds["validate"] = time.perf_counter() - t0
        state.round, state.current = r, current
        state.records.append(footprint(record, current).to_dict())
        if record.validation is None:
            state.best, state.best_round = current, r
        elif record.validation["P@1"] > state.best_score:
            state.best, state.best_round, state.best_score = current, r, record.validation["P@1"]
        else:
            state.finished = True  # held-out precision stopped improving: keep the best round
        if record.clusters_changed == 0:
            state.finished = True  # fixed point: further rounds would repeat this one
        if observer is not None:
            observer.round_finished(state.records[-1])
        if checkpoint is not None:
            checkpoint.save(resolved(state, rows))
    best = state.best
    if best.info.get(RANKERS_PENDING):
        t0 = time.perf_counter()
        best.weights = rows.train_layers(best.tree, p.solver, p.predict, layers=[best.tree.n_layers - 1],
                                         weights=best.weights)
        del best.info[RANKERS_PENDING]
        state.records[state.best_round]["seconds"]["rankers"] = time.perf_counter() - t0
    best.info["rounds"] = list(state.records)
    best.info["best_round"] = state.best_round
    return best
