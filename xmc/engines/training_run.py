"""The MLflow run of one training, open while the model trains (driver side only).

``TrainingRun`` starts the parent run before the fit (so its duration is the training's), is the
fit loop's :class:`~xmc.core.fit.RoundObserver`: each round's child run is created when the round
starts and ended when its record is complete, and the round's metrics are logged as they come,
with real timestamps and ``step=round`` on the parent (the UI's curves). ``finish`` logs what only
exists after the fit: final held-out metrics, artifacts, plots, the pyfunc and its registration.
Rounds the observer never heard of (a resumed checkpoint, a model logged after the fact) are
logged by ``finish`` too, so a run is complete either way.

Workers never talk to MLflow; an MLflow failure during a round is a warning (the round is
logged again by ``finish``), so tracking never kills a training.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from xmc.engines.tracking import (
    MODEL_NAME_IN_RUN,
    REQUIREMENTS,
    TrackingError,
    TrackingParams,
    TrackingResult,
    assignment_summary,
    ensure_champion,
    environment,
    evaluation_split,
    experiment,
    flatten,
    folder_bytes,
    git_revision,
    label_precision,
    metric_key,
    round_metrics,
)
from xmc.log import peak_rss_mib

if TYPE_CHECKING:
    from xmc.core.model import XMCModel
    from xmc.params import XMCParams

log = logging.getLogger("xmc.tracking")
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
EXAMPLE_TERMS = 30
"""Features (or words) in the logged input example."""


def now_ms() -> int:
    return int(time.time() * 1000)


def training_run(
    tracking: TrackingParams, params: XMCParams, X: sp.spmatrix, Y: sp.spmatrix,
    extra_params: dict[str, str] | None = None, *, n_rows: int | None = None,
    fingerprint: str | None = None,
) -> TrainingRun:
    """The MLflow run of a training about to start.

    ``with training_run(...) as run: model = fit(..., observer=run); model.save(d); run.finish(model, d)``
    A fit whose rows stay in shards passes the first rows of its data as X, Y (final metrics, the
    input example), with the whole data's row count and fingerprint.
    """
    return TrainingRun(tracking, params, X, Y, extra_params, n_rows=n_rows, fingerprint=fingerprint)


def log_training(
    model: XMCModel, model_dir: str | Path, tracking: TrackingParams, X: sp.spmatrix, Y: sp.spmatrix,
    *, fit_seconds: float, extra_params: dict[str, str] | None = None,
) -> TrackingResult:
    """Log a model fitted earlier (parent run, a child run per round, artifacts, pyfunc, registry).

    For a model being trained, open the run before the fit instead (:func:`training_run`): its
    rounds are then logged as they happen. Sets this process's MLflow tracking URI.
    """
    with training_run(tracking, model.params, X, Y, extra_params) as run:
        return run.finish(model, model_dir, fit_seconds=fit_seconds)


class TrainingRun:
    """``with TrainingRun(...) as run: model = fit(..., observer=run); ...; run.finish(...)``."""

    def __init__(self, tracking: TrackingParams, params: XMCParams, X: sp.spmatrix, Y: sp.spmatrix,
                 extra_params: dict[str, str] | None = None, *, n_rows: int | None = None,
                 fingerprint: str | None = None) -> None:
        self.tracking, self.params = tracking, params
        self.X, self.Y = X, Y
        self.n_rows, self.fingerprint = n_rows, fingerprint
        self.extra_params = extra_params or {}
        self.run_id = ""
        self.experiment_id = ""
        self.children: dict[tuple[int, int], str] = {}
        """Child run id of each (tree, round)."""
        self.logged: dict[tuple[int, int], dict[str, float]] = {}
        self.open_child: tuple[int, int] | None = None
        self.tags: dict[str, str] = {}

    # -- the parent run -------------------------------------------------------------------------
    def __enter__(self) -> TrainingRun:
        import mlflow
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        from xmc.core.sparse import csr
        from xmc.io.checkpoint import fingerprint

        X, Y = self.X, self.Y
        try:
            mlflow.set_tracking_uri(self.tracking.uri)
            self.client = mlflow.MlflowClient()
            self.experiment_id = experiment(self.client, self.tracking)
            mlflow.set_experiment(experiment_id=self.experiment_id)
            run = mlflow.start_run(experiment_id=self.experiment_id, run_name=self.tracking.run_name or None)
            self.run_id = run.info.run_id
            params = {**flatten(self.params.to_dict()), "n_train": str(self.n_rows or X.shape[0]),
                      "n_features": str(X.shape[1]), "n_labels": str(Y.shape[1]), **self.extra_params}
            digest = self.fingerprint or fingerprint(csr(X), csr(Y))
            self.tags = {"data_fingerprint": digest, **git_revision(), **environment()}
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])
            mlflow.set_tags(self.tags)
        except MlflowException as e:
            if self.run_id:
                mlflow.end_run("FAILED")
            raise TrackingError(f"MLflow at {self.tracking.uri}: {e.message} (nothing trained yet; "
                                "give a reachable --tracking-uri)") from None
        self.run_params = params
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        import mlflow

        status = "FINISHED" if exc_type is None else "KILLED" if exc_type is KeyboardInterrupt else "FAILED"
        try:
            self._end_child("FINISHED" if exc_type is None else status)
        finally:
            mlflow.end_run(status)

    # -- the fit loop's observer ----------------------------------------------------------------
    def _name(self, key: tuple[int, int]) -> str:
        """Child run name: ``round-<r>``, or ``tree-<t>-round-<r>`` in an ensemble."""
        return f"round-{key[1]}" if self.params.tree.n_trees == 1 else f"tree-{key[0]}-round-{key[1]}"

    def round_started(self, r: int, tree: int = 0) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        self._end_child("FINISHED")
        key = (tree, r)
        try:
            child = self.client.create_run(self.experiment_id, tags={MLFLOW_PARENT_RUN_ID: self.run_id},
                                           run_name=self._name(key))
            params = {"round": str(r), "tree": str(tree),
                      **flatten(asdict(self.params.disentangle), "disentangle.")}
            self.client.log_batch(child.info.run_id, params=[Param(k, v) for k, v in params.items()])
        except MlflowException as e:
            log.warning(f"MLflow: {self._name(key)} not logged live ({e.message}); logged after the fit")
            return
        self.children[key], self.open_child = child.info.run_id, key

    def round_finished(self, record: dict[str, Any]) -> None:
        from mlflow.exceptions import MlflowException

        key = (int(record.get("tree", 0)), int(record["round"]))
        try:
            self._log_round(record)
        except MlflowException as e:
            log.warning(f"MLflow: {self._name(key)} metrics not logged live ({e.message}); "
                        "logged after the fit")
        if self.open_child == key:
            self._end_child("FINISHED")

    def _log_round(self, record: dict[str, Any]) -> None:
        """The round's metrics not logged yet (or changed) on its child and, with step=round, the parent
        (an ensemble's keys there start with ``tree<t>/``, one curve per tree)."""
        from mlflow.entities import Metric
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        key = (int(record.get("tree", 0)), int(record["round"]))
        r = key[1]
        done = self.logged.setdefault(key, {})
        new = {k: v for k, v in round_metrics(record).items() if done.get(k) != v}
        if key not in self.children:  # never heard of live: a child run made and ended now
            child = self.client.create_run(self.experiment_id, tags={MLFLOW_PARENT_RUN_ID: self.run_id},
                                           run_name=self._name(key))
            self.children[key] = child.info.run_id
            self.client.set_terminated(child.info.run_id, "FINISHED")
        if new:
            ts = now_ms()
            prefix = "" if self.params.tree.n_trees == 1 else f"tree{key[0]}/"
            self.client.log_batch(self.children[key], metrics=[Metric(k, v, ts, r) for k, v in new.items()])
            self.client.log_batch(self.run_id, metrics=[Metric(prefix + k, v, ts, r) for k, v in new.items()])
        done.update(new)

    def dense_epoch(self, record: dict[str, Any]) -> None:
        """A PRIME epoch's loss and held-out P@1 on the parent run as ``dense/...``, step = epoch."""
        from mlflow.entities import Metric
        from mlflow.exceptions import MlflowException

        ts, step = now_ms(), int(record["epoch"])
        metrics = [Metric(f"dense/{metric_key(k)}", float(v), ts, step)
                   for k, v in record.items() if k != "epoch"]
        try:
            self.client.log_batch(self.run_id, metrics=metrics)
        except MlflowException as e:
            log.warning(f"MLflow: dense epoch {step} not logged ({e.message})")

    def _end_child(self, status: str) -> None:
        if self.open_child is None:
            return
        run_id, self.open_child = self.children[self.open_child], None
        try:
            self.client.set_terminated(run_id, status)
        except Exception as e:  # noqa: BLE001 - a child left RUNNING must not hide the real outcome
            log.warning(f"MLflow: could not end child run {run_id}: {e}")

    # -- after the fit ----------------------------------------------------------------------------
    def finish(self, model: XMCModel, model_dir: str | Path, *, fit_seconds: float) -> TrackingResult:
        """Final metrics, artifacts, plots, the pyfunc (registered when asked); the run stays open."""
        from mlflow.exceptions import MlflowException

        quiet = os.environ.get(PROGRESS_BAR)
        os.environ[PROGRESS_BAR] = "false"  # the input example's check downloads artifacts: no bars
        try:
            return self._finish(model, Path(model_dir), fit_seconds)
        except MlflowException as e:
            raise TrackingError(f"MLflow at {self.tracking.uri}: {e.message} (the model folder {model_dir} "
                                "is saved; rerun with a reachable --tracking-uri to log it)") from None
        finally:
            if quiet is None:
                del os.environ[PROGRESS_BAR]
            else:
                os.environ[PROGRESS_BAR] = quiet

    def _finish(self, model: XMCModel, model_dir: Path, fit_seconds: float) -> TrackingResult:
        import mlflow
        from mlflow.entities import Metric

        from xmc.core.metrics import evaluate

        client, run_id = self.client, self.run_id
        self._end_child("FINISHED")
        rounds: list[dict[str, Any]] = [rec for m in model.trees for rec in m.info.get("rounds", [])]
        for rec in rounds:  # rounds not heard of live, and seconds added after the loop
            self._log_round(rec)
        Xe, Ye, split_name = evaluation_split(model, self.X, self.Y)
        pred = model.predict(Xe, topk=5)
        final = evaluate(Ye, pred, (1, 3, 5), label_counts=model.label_counts, n_train=model.n_train)
        summary = {"fit_seconds": fit_seconds, "model_bytes": float(folder_bytes(model_dir)),
                   "rounds_run": float(max(len(model.info.get("rounds", [])) - 1, 0)),
                   "n_trees": float(len(model.trees)),
                   "best_round": float(model.info.get("best_round", 0)),
                   **{f"{split_name}_{metric_key(k)}": v for k, v in final.items()},
                   "peak_rss_bytes": peak_rss_mib() * 2**20}
        cost = model.info.get("cost")
        if cost:  # the C the rankers were trained with, and the rows' recurring share behind it
            summary.update({f"cost/{k}": float(cost[k]) for k in ("effective", "recurring_share")})
        pairs = model.info.get("pairs")
        if pairs:  # whether the fit paired features (xmc.core.feature_pairs), and on what rows
            keys = ("m", "n_pairs", "row_features", "row_labels")
            summary.update({f"pairs/{k}": float(pairs[k]) for k in keys if pairs.get(k) is not None})
        dense = model.info.get("dense")
        if dense:  # the fusion constants and the held-out P@k of tree, dense part and hybrid
            summary.update({f"dense/{k}": float(dense[k])
                            for k in ("alpha", "beta", "gamma", "kept", "seconds")})
            summary.update({f"dense/held_out_{metric_key(k)}": float(v)
                            for k, v in dense["held_out"].items()})
        ts = now_ms()
        client.log_batch(run_id, metrics=[Metric(k, v, ts, 0) for k, v in summary.items()])
        with tempfile.TemporaryDirectory(prefix="xmc-mlflow-") as tmp:
            artifacts, code = Path(tmp) / "artifacts", Path(tmp) / "code"
            code.mkdir()
            write_artifacts(artifacts, model, rounds, self.run_params, self.tags, Ye, pred, split_name)
            mlflow.log_artifacts(str(artifacts), run_id=run_id)
            vectorizer = load_vectorizer(model_dir)
            info = log_pyfunc(mlflow, model_dir, code, self.tracking.register_as or None,
                              vectorizer is not None, input_example(vectorizer, self.X))
        result = TrackingResult(self.tracking.uri, self.experiment_id, run_id, info.model_uri)
        text = description(model, final, split_name, (model_dir / "vectorizer").is_dir())
        client.set_tag(run_id, "mlflow.note.content", text)  # the run page's Description
        name = self.tracking.register_as
        if not name:
            return result
        version = str(info.registered_model_version)
        for key, value in (("run_id", run_id), ("data_fingerprint", self.tags["data_fingerprint"])):
            client.set_model_version_tag(name, version, key, value)
        client.update_model_version(name, version, description=text)
        if not client.get_registered_model(name).description:
            client.update_registered_model(name, description=text)
        champion = ensure_champion(client, name, version)
        return TrackingResult(self.tracking.uri, self.experiment_id, run_id, info.model_uri, name, version,
                              champion)


def load_vectorizer(model_dir: Path) -> Any:
    """The model folder's text vectorizer, or None for a model trained on feature matrices."""
    from xmc.core.model import VECTORIZER_DIR
    from xmc.io.vectorizer import TextVectorizer

    folder = model_dir / VECTORIZER_DIR
    return TextVectorizer.load(folder) if folder.is_dir() else None


def description(model: XMCModel, final: dict[str, float], split_name: str, text_input: bool) -> str:
    """What the registered version is, what it takes and answers (shown in the registry UI)."""
    names = "label names" if model.label_names else "label column ids (no label names were given)"
    if text_input:
        takes = "raw text: a list of strings, or a DataFrame with a 'text' column"
    else:
        takes = (f"sparse feature rows: a DataFrame with 'indices' (feature ids in [0, {model.n_features})) "
                 "and 'values' columns, one row per document")
    p1 = final.get("P@1")
    quality = f" P@1 {p1:.2f} on {'held-out' if split_name == 'heldout' else 'training'} rows." if p1 else ""
    return (f"xmc extreme multi-label classifier: {model.n_labels} labels, {model.n_features} features, "
            f"trained on {model.n_train} documents, {len(model.trees)} label tree(s) with "
            f"{model.params.disentangle.rounds} disentangling "
            f"round(s), up to {model.params.disentangle.max_copies} clusters per label.{quality} "
            f"Input: {takes}. Output: 'labels' ({names}, best first) and 'scores'; "
            "params {\"topk\": k} (default 5).")


def input_example(vectorizer: Any, X: sp.spmatrix) -> Any:
    """One request the model answers, from the first non-empty training row (words or feature ids)."""
    import pandas as pd

    from xmc.core.sparse import csr

    X = csr(X)
    rows = np.flatnonzero(np.diff(X.indptr))
    row = X[int(rows[0])] if len(rows) else X[0]
    words = row.indices < (vectorizer.n_terms if vectorizer is not None else X.shape[1])
    data, indices = row.data[words], row.indices[words]  # a text encoder's columns follow the words
    order = np.argsort(-data, kind="stable")[:EXAMPLE_TERMS]
    ids, vals = indices[order], data[order]
    if vectorizer is not None:
        vocab = vectorizer.vocab
        return [" ".join(vocab[j] for j in sorted(ids.tolist()))]
    keep = np.argsort(ids)
    return pd.DataFrame({"indices": [ids[keep].astype(np.int64).tolist()],
                         "values": [vals[keep].astype(np.float64).tolist()]})


def write_artifacts(
    folder: Path, model: XMCModel, rounds: list[dict[str, Any]], params: dict[str, str],
    tags: dict[str, str], Ye: sp.csr_matrix, pred: sp.csr_matrix, split_name: str,
) -> None:
    from xmc.engines import plots

    for sub in ("config", "rounds", "assignment", "plots"):
        (folder / sub).mkdir(parents=True)
    config = {"params": model.params.to_dict(), "run_params": params, "tags": tags}
    (folder / "config" / "params.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "rounds" / "rounds.json").write_text(json.dumps(rounds, indent=2) + "\n")
    summary, csv_lines = assignment_summary(model)
    (folder / "assignment" / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (folder / "assignment" / "copied_labels.csv").write_text("\n".join(csv_lines) + "\n")
    best = model.info.get("best_round")
    rounds = [r for r in rounds if r.get("tree", 0) == 0]  # the plots follow tree 0 of an ensemble
    if any(r.get("validation") for r in rounds):
        plots.precision_by_round(rounds, folder / "plots" / "precision_by_round.png", best_round=best)
    if rounds:
        plots.copies_by_round(rounds, folder / "plots" / "copies_by_round.png", best_round=best)
    leaf_sizes = np.bincount(model.tree.parents[-1], minlength=model.tree.n_clusters)
    plots.leaf_size_histogram(leaf_sizes, folder / "plots" / "leaf_sizes.png")
    plots.frequency_vs_precision(model.label_counts, label_precision(Ye, pred),
                                 folder / "plots" / "label_frequency_vs_precision.png", data_name=split_name)


def log_pyfunc(mlflow: Any, model_dir: Path, tmp: Path, registered_name: str | None, text_input: bool,
               example: Any) -> Any:
    """Log the model folder as a pyfunc (logged as code, no pickle) with an input example."""
    requirements = []
    encoder = (model_dir / "vectorizer" / "encoder").is_dir()  # serving embeds text with transformers
    for pkg in (*REQUIREMENTS, *(("transformers",) if encoder else ())):
        try:
            requirements.append(f"{pkg}=={metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            continue
    from xmc.engines import pyfunc

    entry = pyfunc.write_entry_script(tmp)
    return mlflow.pyfunc.log_model(
        name=MODEL_NAME_IN_RUN, python_model=str(entry),
        artifacts={pyfunc.MODEL_ARTIFACT: str(model_dir)},
        signature=pyfunc.signature(text_input), input_example=example,
        pip_requirements=requirements, registered_model_name=registered_name,
    )
