"""MLflow tracking and registry of a training run, from the driver only.

Workers never talk to MLflow. The run opens before the fit and hears of each round through the
fit loop's observer hook (:mod:`xmc.engines.training_run`), so the training code knows nothing
about MLflow; a model fitted earlier is logged after the fact by ``training_run.log_training``. One
training run gives:

* a parent run: the model's params (flattened), data shape and fingerprint, git revision and
  library versions, final metrics (fit seconds, model bytes, peak RSS, held-out P@k/nDCG@k/PSP@k);
  every round metric again with ``step=round`` so the UI draws curves across rounds (``val_*``:
  the held-out split, per round);
* one child run per round (``round-0`` is the single-partition baseline), open while the round
  runs, with that round's params and metrics (params are write-once per run, hence a run per round);
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

import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xmc.errors import ParamError, XMCError

if TYPE_CHECKING:  # numpy and scipy load in the functions: `xmc train --help` reads TrackingParams
    import numpy as np
    import scipy.sparse as sp

    from xmc.core.model import XMCModel

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
"""MLflow's own default store (3.x refuses the old ./mlruns file store)."""
CHAMPION = "champion"
"""Registry alias of the version consumers load (``models:/NAME@champion``)."""
MODEL_NAME_IN_RUN = "model"
PLOT_SAMPLE_ROWS = 10_000
"""Rows scored for the final metrics and plots when there is no validation split (bounded cost)."""
REQUIREMENTS = ("mlflow", "numpy", "scipy", "pandas", "torch", "snowballstemmer")
"""What a logged model needs beside xmc (pinned at the versions of the run): snowballstemmer makes the
stems a raw-text model's vocabulary holds, so serving it elsewhere needs that very version."""


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
    for pkg in ("xmc", *REQUIREMENTS):
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

    The split is recomputed with the fit's seed (``xmc.core.rows.split_validation``), so the final
    metrics are on rows the model never trained on.
    """
    import numpy as np

    from xmc.core.rows import split_validation
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
    import numpy as np

    from xmc.core.sparse import binarize

    P = binarize(pred)
    predicted = np.asarray(P.sum(axis=0)).ravel()
    hits = np.asarray(P.multiply(binarize(Y)).sum(axis=0)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(predicted > 0, hits / np.maximum(predicted, 1), np.nan)


def assignment_summary(model: XMCModel) -> tuple[dict[str, Any], list[str]]:
    """How many clusters each label lives in (histogram) and the copied labels as CSV lines."""
    import numpy as np

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
