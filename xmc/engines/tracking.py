"""MLflow tracking and registry for a finished training run, from the driver only.

Workers never talk to MLflow: everything logged here already exists as plain data once the fit
returns (``model.info["rounds"]`` holds one record per alternation round), so logging happens
after the fit and the training code knows nothing about MLflow. One training run gives:

* a parent run: the model's params (flattened), data shape and fingerprint, git revision and
  library versions, final metrics (fit seconds, model bytes, peak RSS, held-out P@k/nDCG@k/PSP@k);
  every round metric again with ``step=round`` so the UI draws curves across rounds;
* one child run per round (``round-0`` is the single-partition baseline) with that round's params
  and metrics (params are write-once per run, hence a run per round);
* artifacts: ``config/params.json``, ``rounds/rounds.json``, ``assignment/`` (label -> clusters
  summary), ``plots/*.png``;
* the model as an MLflow pyfunc (:mod:`xmc.engines.pyfunc`: the model folder as an artifact, no pickle),
  registered under ``register_as`` when given. The alias ``champion`` is set only when the
  registered model has no champion yet: later alias moves belong to a promotion gate that
  compares the new version with the current champion.

The default store is MLflow's own default, a SQLite file ``mlflow.db`` in the current folder
(open it with ``mlflow ui --backend-store-uri sqlite:///mlflow.db``).
"""

from __future__ import annotations

import json
import platform
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from xmc.errors import ParamError, XMCError
from xmc.log import peak_rss_mib

if TYPE_CHECKING:
    from xmc.core.model import XMCModel

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
"""MLflow's own default store (3.x refuses the old ./mlruns file store)."""
CHAMPION = "champion"
"""Registry alias of the version consumers load (``models:/NAME@champion``)."""
MODEL_NAME_IN_RUN = "model"
PLOT_SAMPLE_ROWS = 10_000
"""Rows scored for the final metrics and plots when there is no validation split (bounded cost)."""
_REQUIREMENTS = ("mlflow", "numpy", "scipy", "pandas", "torch")


class TrackingError(XMCError):
    """MLflow refused or could not be reached; the model folder on disk is already complete."""


@dataclass(frozen=True)
class TrackingParams:
    """Where and how a training run is logged to MLflow (driver side, after the fit)."""

    tracking_uri: str = ""
    """MLflow tracking URI: sqlite:///path.db or http://host:port ('' = sqlite:///mlflow.db here)."""
    experiment: str = "xmc"
    """MLflow experiment the run is logged under (created when missing)."""
    register_as: str = ""
    """Registered model name to add a version to ('' = no registry); alias champion only if it has none."""
    run_name: str = ""
    """Name of the parent run in the MLflow UI ('' = MLflow picks one)."""

    def __post_init__(self) -> None:
        if not self.experiment.strip():
            raise ParamError("experiment='' is invalid: name the MLflow experiment, e.g. --experiment xmc")
        if self.register_as and not self.register_as.strip():
            raise ParamError(f"register_as={self.register_as!r} is invalid: use a model name, e.g. xmc-tags")

    @property
    def uri(self) -> str:
        return self.tracking_uri or DEFAULT_TRACKING_URI


@dataclass(frozen=True)
class TrackingResult:
    """Where a run went: enough to find it again in the UI or with the client."""

    tracking_uri: str
    experiment_id: str
    run_id: str
    model_uri: str
    registered_name: str | None = None
    version: str | None = None
    champion_set: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def metric_key(name: str) -> str:
    """MLflow metric names may not hold '@': ``P@1`` -> ``P_at_1``."""
    return name.replace("@", "_at_")


def round_metrics(record: dict[str, Any]) -> dict[str, float]:
    """Flat numeric metrics of one round record (see ``xmc.core.disentangle.RoundRecord``)."""
    out: dict[str, float] = {}
    for name in ("labels_copied", "copies", "clusters_changed", "coverage_before", "coverage_after",
                 "weight_bytes", "peak_rss_mib"):
        if record.get(name) is not None:
            out[name] = float(record[name])
    for stat, v in (record.get("leaf_sizes") or {}).items():
        out[f"leaf_size_{stat}"] = float(v)
    for name, v in (record.get("validation") or {}).items():
        out[f"val_{metric_key(name)}"] = float(v)
    for phase, v in (record.get("seconds") or {}).items():
        out[f"seconds_{phase}"] = float(v)
    return out


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params as ``group.field`` strings (MLflow params are flat strings)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def environment() -> dict[str, str]:
    """Versions that decide whether a run can be reproduced."""
    env = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("xmc", *_REQUIREMENTS):
        try:
            env[f"version.{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            env[f"version.{pkg}"] = "missing"
    return env


def git_revision(folder: str | Path | None = None) -> dict[str, str]:
    """Commit and dirty flag of the checkout holding the xmc code ({} outside a git checkout)."""
    folder = Path(folder) if folder else Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_revision": rev, "git_dirty": str(bool(dirty)).lower()}


def folder_bytes(folder: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def evaluation_split(
    model: XMCModel, X: sp.spmatrix, Y: sp.spmatrix
) -> tuple[sp.csr_matrix, sp.csr_matrix, str]:
    """The fit's own held-out rows when it had a validation split, else a seeded training sample.

    The split is recomputed with the fit's seed (``xmc.core.model.split_validation``), so the final
    metrics are on rows the model never trained on.
    """
    from xmc.core.fit import split_validation
    from xmc.core.sparse import csr

    X, Y = csr(X), csr(Y)
    fraction = model.params.disentangle.validation_fraction
    if fraction > 0:
        _, _, Xv, Yv = split_validation(X, Y, fraction, model.params.tree.seed)
        assert Xv is not None and Yv is not None
        return Xv, Yv, "heldout"
    if X.shape[0] > PLOT_SAMPLE_ROWS:
        rows = np.sort(np.random.default_rng(model.params.tree.seed).choice(X.shape[0], PLOT_SAMPLE_ROWS,
                                                                            replace=False))
        X, Y = X[rows], Y[rows]
    return X, Y, "train"


def label_precision(Y: sp.csr_matrix, pred: sp.csr_matrix) -> np.ndarray:
    """Per label: share of the rows it was predicted for (in the top-k) where it is true; NaN if never."""
    from xmc.core.sparse import binarize

    P = binarize(pred)
    predicted = np.asarray(P.sum(axis=0)).ravel()
    hits = np.asarray(P.multiply(binarize(Y)).sum(axis=0)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(predicted > 0, hits / np.maximum(predicted, 1), np.nan)


def assignment_summary(model: XMCModel) -> tuple[dict[str, Any], list[str]]:
    """How many clusters each label lives in (histogram) and the copied labels as CSV lines."""
    C = model.tree.label_cluster_matrix().tocsr()
    n_clusters = np.diff(C.indptr)
    hist = {str(int(k)): int(v) for k, v in zip(*np.unique(n_clusters, return_counts=True), strict=True)}
    names = model.label_names
    lines = ["label,name,train_count,clusters"]
    for label in np.flatnonzero(n_clusters > 1).tolist():
        clusters = ";".join(str(int(c)) for c in C.indices[C.indptr[label]:C.indptr[label + 1]])
        name = (names[label] if names else str(label)).replace('"', '""')
        lines.append(f'{label},"{name}",{int(model.label_counts[label])},{clusters}')
    summary = {"n_labels": model.n_labels, "n_clusters": model.tree.n_clusters,
               "copies": int(len(model.tree.copy_label)), "labels_by_cluster_count": hist,
               "labels_copied": int(np.sum(n_clusters > 1))}
    return summary, lines


def artifact_location(uri: str) -> str | None:
    """For a local SQLite store: artifacts in ``mlruns/`` beside the database file.

    MLflow's default is ``./mlruns`` of whatever folder the process runs in, which scatters one
    store's artifacts over every folder a job was started from. Servers choose their own (None).
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    return (Path(uri[len(prefix):]).resolve().parent / "mlruns").as_uri()


def experiment(client: Any, tracking: TrackingParams) -> str:
    """Id of the experiment, created (artifacts beside a SQLite store) when missing."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(tracking.experiment)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(tracking.experiment, artifact_location(tracking.uri)))
    except MlflowException:  # created meanwhile by a concurrent run
        found = client.get_experiment_by_name(tracking.experiment)
        if found is None:
            raise
        return str(found.experiment_id)


def log_training(
    model: XMCModel, model_dir: str | Path, tracking: TrackingParams, X: sp.spmatrix, Y: sp.spmatrix,
    *, fit_seconds: float, extra_params: dict[str, str] | None = None,
) -> TrackingResult:
    """Log a fitted and saved model: parent run, child runs per round, artifacts, pyfunc, registry.

    Sets this process's MLflow tracking URI to ``tracking.uri`` (the driver logs nothing else).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return _log_training(mlflow, model, Path(model_dir), tracking, X, Y, fit_seconds, extra_params or {})
    except MlflowException as e:
        raise TrackingError(f"MLflow at {tracking.uri}: {e.message} (the model folder {model_dir} "
                            "is saved; rerun with a reachable --tracking-uri to log it)") from None


def _log_training(
    mlflow: Any, model: XMCModel, model_dir: Path, tracking: TrackingParams, X: sp.spmatrix,
    Y: sp.spmatrix, fit_seconds: float, extra_params: dict[str, str],
) -> TrackingResult:
    from mlflow.entities import Metric, Param

    from xmc.core.metrics import evaluate
    from xmc.core.sparse import csr
    from xmc.io.checkpoint import fingerprint

    mlflow.set_tracking_uri(tracking.uri)
    client = mlflow.MlflowClient()
    experiment_id = experiment(client, tracking)
    mlflow.set_experiment(experiment_id=experiment_id)
    rounds: list[dict[str, Any]] = list(model.info.get("rounds", []))
    params = {**flatten(model.params.to_dict()), "n_train": str(X.shape[0]), "n_features": str(X.shape[1]),
              "n_labels": str(Y.shape[1]), **extra_params}
    tags = {"data_fingerprint": fingerprint(csr(X), csr(Y)), **git_revision(), **environment()}
    with mlflow.start_run(experiment_id=experiment_id, run_name=tracking.run_name or None) as run:
        run_id = run.info.run_id
        client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
        mlflow.set_tags(tags)
        step_metrics: list[Metric] = []
        for rec in rounds:
            r = int(rec["round"])
            metrics = round_metrics(rec)
            with mlflow.start_run(experiment_id=experiment_id, run_name=f"round-{r}", nested=True) as child:
                child_params = {"round": str(r), **flatten(asdict(model.params.disentangle), "disentangle.")}
                client.log_batch(child.info.run_id, params=[Param(k, v) for k, v in child_params.items()],
                                 metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
            step_metrics += [Metric(k, v, 0, r) for k, v in metrics.items()]
        Xe, Ye, split_name = evaluation_split(model, X, Y)
        pred = model.predict(Xe, topk=5)
        final = evaluate(Ye, pred, (1, 3, 5), label_counts=model.label_counts, n_train=model.n_train)
        summary = {"fit_seconds": fit_seconds, "model_bytes": float(folder_bytes(model_dir)),
                   "rounds_run": float(max(len(rounds) - 1, 0)),
                   "best_round": float(model.info.get("best_round", 0)),
                   **{f"{split_name}_{metric_key(k)}": v for k, v in final.items()}}
        summary["peak_rss_bytes"] = peak_rss_mib() * 2**20
        client.log_batch(run_id, metrics=step_metrics + [Metric(k, v, 0, 0) for k, v in summary.items()])
        with tempfile.TemporaryDirectory(prefix="xmc-mlflow-") as tmp:
            artifacts, code = Path(tmp) / "artifacts", Path(tmp) / "code"
            code.mkdir()
            _write_artifacts(artifacts, model, rounds, params, tags, Ye, pred, split_name)
            mlflow.log_artifacts(str(artifacts))
            info = _log_pyfunc(mlflow, model_dir, code, tracking.register_as or None)
    result = TrackingResult(tracking.uri, experiment_id, run_id, info.model_uri)
    if tracking.register_as:
        version = str(info.registered_model_version)
        for key, value in (("run_id", run_id), ("data_fingerprint", tags["data_fingerprint"])):
            client.set_model_version_tag(tracking.register_as, version, key, value)
        champion = ensure_champion(client, tracking.register_as, version)
        result = TrackingResult(tracking.uri, experiment_id, run_id, info.model_uri, tracking.register_as,
                                version, champion)
    return result


def _write_artifacts(
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
    if rounds:
        plots.precision_by_round(rounds, folder / "plots" / "precision_by_round.png",
                                 best_round=model.info.get("best_round"))
    leaf_sizes = np.bincount(model.tree.parents[-1], minlength=model.tree.n_clusters)
    plots.leaf_size_histogram(leaf_sizes, folder / "plots" / "leaf_sizes.png")
    plots.frequency_vs_precision(model.label_counts, label_precision(Ye, pred),
                                 folder / "plots" / "label_frequency_vs_precision.png", data_name=split_name)


def _log_pyfunc(mlflow: Any, model_dir: Path, tmp: Path, registered_name: str | None) -> Any:
    """Log the model folder as a pyfunc (logged as code, no pickle); register it when named."""
    from xmc.core.model import VECTORIZER_DIR
    from xmc.engines import pyfunc

    entry = pyfunc.write_entry_script(tmp)
    requirements = []
    for pkg in _REQUIREMENTS:
        try:
            requirements.append(f"{pkg}=={metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            continue
    return mlflow.pyfunc.log_model(
        name=MODEL_NAME_IN_RUN, python_model=str(entry),
        artifacts={pyfunc.MODEL_ARTIFACT: str(model_dir)},
        signature=pyfunc.signature((model_dir / VECTORIZER_DIR).is_dir()),
        pip_requirements=requirements, registered_model_name=registered_name,
    )


def ensure_champion(client: Any, name: str, version: str) -> bool:
    """Point ``champion`` at ``version`` only if the registered model has no champion yet.

    Returns whether the alias was set. Moving an existing champion is the promotion gate's job
    (it compares the candidate with the champion first), never a side effect of training.
    """
    if CHAMPION in (client.get_registered_model(name).aliases or {}):
        return False
    client.set_registered_model_alias(name, CHAMPION, version)
    return True


def champion_uri(name: str) -> str:
    return f"models:/{name}@{CHAMPION}"
