"""Nightly retrain: featurize -> train -> evaluate on a frozen set -> register -> promotion gate.

Why a gate: a nightly job that moves ``champion`` on every run ships whatever the night's data
and config produced. Here the candidate and the current champion are scored in the same process
on the same frozen evaluation set (P@k, predict latency per 1000 documents, model folder size);
``champion`` moves (the old one kept as ``previous_champion``) only if the candidate wins on the
metric by ``margin`` points and is not slower or larger beyond the configured ratios. Otherwise
the registered version is tagged ``decision=rejected`` with the reason, for a human to look at.

Operations (see ``jobs/nightly.py`` for the exit codes):

* an exclusive ``fcntl.flock`` on the lock file keeps two nightlies apart; the kernel drops it
  when the process dies, so a crashed night never blocks the next one;
* every night works in ``work_dir/run_id`` (``run_id`` defaults to the UTC date) and each step's
  output is written atomically, so re-running a failed night reuses finished steps (bundle,
  model, registered version) and redoes only the rest; a finished night answers its recorded
  result again without touching the registry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import math
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from xmc.errors import BundleError, ParamError, XMCError
from xmc.params import ExecutorParams, XMCParams
from xmc.spark.params import FeaturizeParams

EXIT_PROMOTED = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_REJECTED = 3
EXIT_LOCKED = 4
PREVIOUS_CHAMPION = "previous_champion"
"""Alias kept on the champion a promotion replaced (one command to roll back)."""
METRICS = tuple(f"{m}@{k}" for m in ("P", "nDCG", "PSP") for k in (1, 3, 5))
EVAL_TOPK = 5
_PATH_FIELDS = ("input", "eval_input", "x", "y", "label_names", "eval_x", "eval_y", "work_dir", "lock_path")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class LockHeldError(XMCError):
    """Another nightly run holds the lock (the scheduler should skip this night, not retry at once)."""


@dataclass(frozen=True)
class NightlyParams:
    """The whole nightly pipeline in one JSON file (``xmc nightly --config FILE``).

    Data comes either as a raw corpus (``input`` + ``eval_input``, featurized by Spark) or as
    prepared features (``x``/``y`` + ``eval_x``/``eval_y``, npz or XC; no featurize step).
    Relative paths in a config file are relative to the file's folder.
    """

    input: str = ""
    """Raw training corpus, JSONL or Parquet records {id, text, labels} (featurized by Spark)."""
    eval_input: str = ""
    """Frozen evaluation records {id, text, labels} (raw text; each model uses its own vectorizer)."""
    x: str = ""
    """Prepared training features: X.npz, or an XC text file holding X and Y (skips featurize)."""
    y: str = ""
    """Prepared training labels Y.npz ('' when x is an XC file)."""
    label_names: str = ""
    """Label names file for prepared features, one per line ('' = none)."""
    eval_x: str = ""
    """Frozen evaluation features (npz or XC) for prepared data."""
    eval_y: str = ""
    """Frozen evaluation labels Y.npz ('' when eval_x is an XC file)."""
    model_name: str = "xmc"
    """Registered model name; consumers load models:/MODEL_NAME@champion."""
    tracking_uri: str = ""
    """MLflow tracking URI ('' = sqlite:///mlflow.db in the current folder)."""
    experiment: str = "xmc-nightly"
    """MLflow experiment of the nightly runs."""
    train: XMCParams = field(default_factory=XMCParams)
    """Model parameters: a nested dict as saved in a manifest, or flat ({"rounds": 2})."""
    featurize: FeaturizeParams = field(default_factory=FeaturizeParams)
    """Featurize parameters (flat) for a raw corpus."""
    executor: ExecutorParams = field(default_factory=ExecutorParams)
    """Where training work units run: {"executor": "ray", "ray_address": "auto"} inside a RayJob."""
    metric: str = "P@1"
    """Metric of the gate on the frozen set, one of P@k, nDCG@k, PSP@k with k in 1, 3, 5."""
    margin: float = 0.2
    """Points (percent) the candidate must beat the champion by on the metric to be promoted."""
    max_latency_ratio: float = 1.5
    """Largest candidate/champion predict time per 1000 documents accepted."""
    max_size_ratio: float = 2.0
    """Largest candidate/champion model folder size accepted."""
    latency_repeats: int = 3
    """Times each model scores the frozen set; the fastest counts (less timer noise)."""
    work_dir: str = "runs/nightly"
    """Folder of the nights: WORK_DIR/RUN_ID holds one night's bundle, model and result."""
    lock_path: str = ""
    """Lock file ('' = WORK_DIR/nightly.lock); shared by every nightly that must not overlap."""
    run_id: str = ""
    """Name of the night ('' = today's UTC date, YYYY-MM-DD); re-running the same id resumes it."""

    def __post_init__(self) -> None:
        checks = [
            (self.metric in METRICS, "metric", f"use one of {', '.join(METRICS)}"),
            (math.isfinite(self.margin) and self.margin >= 0, "margin", "use points >= 0, e.g. 0.2"),
            (math.isfinite(self.max_latency_ratio) and self.max_latency_ratio >= 1, "max_latency_ratio",
             "use a ratio >= 1, e.g. 1.5"),
            (math.isfinite(self.max_size_ratio) and self.max_size_ratio >= 1, "max_size_ratio",
             "use a ratio >= 1, e.g. 2.0"),
            (self.latency_repeats >= 1, "latency_repeats", "use >= 1"),
            (bool(self.model_name.strip()), "model_name", "name the registered model, e.g. xmc-tags"),
            (bool(self.experiment.strip()), "experiment", "name the MLflow experiment"),
            (self.run_id == "" or bool(_RUN_ID.match(self.run_id)), "run_id",
             "use letters, digits, '.', '_' or '-' (it names a folder)"),
        ]
        for ok, name, fix in checks:
            if not ok:
                raise ParamError(f"{name}={getattr(self, name)!r} is invalid: {fix}")

    @property
    def raw(self) -> bool:
        return bool(self.input)

    def require_data(self) -> None:
        """Exactly one data source, with its frozen evaluation set."""
        if bool(self.input) == bool(self.x):
            raise ParamError("give either input (raw corpus, featurized by Spark) or x (prepared features)")
        if self.raw and not self.eval_input:
            raise ParamError("input needs eval_input: the frozen evaluation records {id, text, labels}")
        if not self.raw and not self.eval_x:
            raise ParamError("x needs eval_x: the frozen evaluation features (and eval_y unless XC)")

    @property
    def night(self) -> str:
        return self.run_id or dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")

    @property
    def lock(self) -> Path:
        return Path(self.lock_path) if self.lock_path else Path(self.work_dir) / "nightly.lock"


def load_config(path: str | Path) -> NightlyParams:
    """A ``NightlyParams`` from a JSON file; errors name the file and the field."""
    from xmc.errors import DataFormatError

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise DataFormatError(f"cannot read the config ({e.strerror})", path=path) from None
    except json.JSONDecodeError as e:
        raise DataFormatError(f"not valid JSON: {e.msg}", path=path, line=e.lineno) from None
    if not isinstance(data, dict):
        raise DataFormatError("a nightly config must hold a JSON object", path=path)
    return params_from_dict(data, base=path.resolve().parent, source=path)


def params_from_dict(
    data: dict[str, Any], *, base: Path | None = None, source: str | Path = "config"
) -> NightlyParams:
    """Check names and types field by field (the message names ``source`` and the field)."""
    from xmc.errors import DataFormatError

    types = {f.name: str(f.type) for f in fields(NightlyParams)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        declared = types.get(key)
        if declared is None:
            raise DataFormatError(f"unknown field; known: {', '.join(types)}", path=source, field=key)
        try:
            values[key] = _coerce(key, declared, value, base)
        except ParamError as e:
            raise DataFormatError(str(e), path=source, field=key) from None
    try:
        return NightlyParams(**values)
    except ParamError as e:
        raise DataFormatError(str(e), path=source) from None


def _coerce(key: str, declared: str, value: Any, base: Path | None) -> Any:
    if declared == "XMCParams":
        if not isinstance(value, dict):
            raise ParamError("expected an object of model parameters")
        return XMCParams.from_dict(value)
    if declared == "FeaturizeParams":
        if not isinstance(value, dict):
            raise ParamError("expected an object of featurize parameters")
        return FeaturizeParams().replace(**value)
    if declared == "ExecutorParams":
        if not isinstance(value, dict):
            raise ParamError("expected an object of executor parameters")
        try:
            return ExecutorParams(**value)
        except TypeError as e:
            raise ParamError(f"unknown executor parameter ({e})") from None
    if declared == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if declared == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if declared == "str" and isinstance(value, str):
        if key in _PATH_FIELDS and value and base is not None and "://" not in value:
            return str(base / value)
        return value
    raise ParamError(f"{value!r} has the wrong type: expected {declared}")


@contextlib.contextmanager
def nightly_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` or raise :class:`LockHeldError` at once (no waiting)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise LockHeldError(f"{path}: another nightly holds the lock ({holder}); "
                                "this one is skipped") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}\n"
                  .encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class EvalSet:
    """The frozen evaluation set: raw texts with label names, or features with a label matrix."""

    texts: list[str] | None = None
    labels: list[list[str]] | None = None
    X: sp.csr_matrix | None = None
    Y: sp.csr_matrix | None = None

    @property
    def n(self) -> int:
        return len(self.texts) if self.texts is not None else int(self.X.shape[0])  # type: ignore[union-attr]


@dataclass(frozen=True)
class Scores:
    """One model on the frozen set: metrics (percent), predict ms per 1000 docs, folder bytes."""

    metrics: dict[str, float]
    ms_per_1k: float
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def score(model_dir: str | Path, data: EvalSet, repeats: int = 1) -> Scores:
    """Score a model folder on the frozen set; raw text goes through the model's own vectorizer."""
    from xmc.metrics import evaluate
    from xmc.model import XMCModel
    from xmc.tracking import folder_bytes

    model_dir = Path(model_dir)
    model = XMCModel.load(model_dir)
    if data.texts is not None:
        from xmc.vectorizer import TextVectorizer

        if not (model_dir / "vectorizer").is_dir():
            raise BundleError(f"{model_dir}: no text vectorizer, so it cannot score the raw evaluation set")
        vectorizer = TextVectorizer.load(model_dir / "vectorizer")
        Y = label_matrix(data.labels or [], model.label_names or [])

        def run() -> sp.csr_matrix:
            return model.predict(vectorizer.transform(data.texts or []), topk=EVAL_TOPK)
    else:
        X, Y = data.X, data.Y
        assert X is not None and Y is not None
        if X.shape[1] != model.n_features or Y.shape[1] != model.n_labels:
            raise BundleError(f"{model_dir}: model has {model.n_features} features x {model.n_labels} "
                              f"labels, the evaluation set {X.shape[1]} x {Y.shape[1]}")

        def run() -> sp.csr_matrix:
            return model.predict(X, topk=EVAL_TOPK)
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pred = run()
        seconds.append(time.perf_counter() - t0)
    metrics = evaluate(Y, pred, (1, 3, 5), label_counts=model.label_counts, n_train=model.n_train)
    return Scores(metrics, 1000 * 1000 * min(seconds) / max(data.n, 1), folder_bytes(model_dir))


def label_matrix(labels: list[list[str]], names: list[str]) -> sp.csr_matrix:
    """0/1 matrix of the records' labels in the model's label order (labels it never saw are dropped)."""
    index = {name: j for j, name in enumerate(names)}
    rows, cols = [], []
    for i, labs in enumerate(labels):
        for lab in labs:
            j = index.get(lab)
            if j is not None:
                rows.append(i)
                cols.append(j)
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(labels), len(names)))


def decide(candidate: Scores, champion: Scores | None, params: NightlyParams) -> Decision:
    """The promotion gate: every failed condition is named in the reason."""
    if champion is None:
        return Decision(True, "no champion yet")
    m = params.metric
    gain = candidate.metrics[m] - champion.metrics[m]
    failed = []
    if gain < params.margin:
        failed.append(f"{m} {candidate.metrics[m]:.2f} vs champion {champion.metrics[m]:.2f}: "
                      f"gain {gain:+.2f} < margin {params.margin}")
    latency = candidate.ms_per_1k / max(champion.ms_per_1k, 1e-9)
    if latency > params.max_latency_ratio:
        failed.append(f"latency x{latency:.2f} > max_latency_ratio {params.max_latency_ratio}")
    size = candidate.size_bytes / max(champion.size_bytes, 1)
    if size > params.max_size_ratio:
        failed.append(f"size x{size:.2f} > max_size_ratio {params.max_size_ratio}")
    if failed:
        return Decision(False, "; ".join(failed))
    return Decision(True, f"{m} gain {gain:+.2f} >= margin {params.margin}, latency x{latency:.2f}, "
                          f"size x{size:.2f}")


@dataclass
class _Data:
    X: sp.csr_matrix
    Y: sp.csr_matrix
    names: list[str] | None
    extra_dirs: dict[str, str | Path] | None
    evalset: EvalSet


def _log(msg: str) -> None:
    print(f"xmc nightly: {msg}", file=sys.stderr, flush=True)


def _prepare(params: NightlyParams, night: Path) -> _Data:
    """Training matrices and the frozen set; a raw corpus is featurized once per night (reused on re-run)."""
    from xmc.data import LabelVocab, load_xy, read_records

    if not params.raw:
        X, Y = load_xy(params.x, params.y or None)
        names = LabelVocab.load(params.label_names).names if params.label_names else None
        Xe, Ye = load_xy(params.eval_x, params.eval_y or None)
        return _Data(X, Y, names, None, EvalSet(X=Xe, Y=Ye))
    from xmc.spark.bundle import load_label_names, load_split, read_manifest

    bundle = night / "bundle"
    try:
        read_manifest(bundle)
        _log(f"reusing the features bundle {bundle}")
    except BundleError:
        from xmc.spark.featurize import featurize
        from xmc.spark.session import spark_session

        _log(f"featurizing {params.input} -> {bundle}")
        spark, created = spark_session(None, {}, app_name="xmc-nightly")
        try:
            featurize(spark, [params.input], bundle, params.featurize)
        finally:
            if created:
                spark.stop()
    split = load_split(bundle, "train")
    records = read_records(params.eval_input)
    evalset = EvalSet(texts=[r.text for r in records], labels=[list(r.labels) for r in records])
    return _Data(split.X, split.Y, load_label_names(bundle), {"vectorizer": bundle / "vectorizer"}, evalset)


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    from xmc.fsutil import atomic_file

    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def run_nightly(params: NightlyParams) -> dict[str, Any]:
    """One night under the lock; returns the recorded result (``decision`` is promoted or rejected)."""
    params.require_data()
    with nightly_lock(params.lock):
        return _run(params, Path(params.work_dir) / params.night)


def _run(params: NightlyParams, night: Path) -> dict[str, Any]:
    import mlflow

    from xmc.batch import resolve_model
    from xmc.model import XMCModel
    from xmc.tracking import CHAMPION, TrackingParams, log_training

    done = night / "result.json"
    if done.is_file():
        _log(f"night {night.name} already finished: {done}")
        return dict(json.loads(done.read_text()))
    night.mkdir(parents=True, exist_ok=True)
    data = _prepare(params, night)
    model_dir, fit_file = night / "model", night / "fit.json"
    if fit_file.is_file() and (model_dir / "manifest.json").is_file():
        _log(f"reusing the trained model {model_dir}")
        model = XMCModel.load(model_dir)
        fit_seconds = float(json.loads(fit_file.read_text())["fit_seconds"])
    else:
        _log(f"training on {data.X.shape[0]} documents, {data.Y.shape[1]} labels")
        t0 = time.perf_counter()
        from xmc.executor import make_executor

        model = XMCModel.fit(data.X, data.Y, params.train, label_names=data.names,
                             executor=make_executor(params.executor))
        fit_seconds = time.perf_counter() - t0
        model.save(model_dir, extra_dirs=data.extra_dirs)
        _write_json(fit_file, {"fit_seconds": fit_seconds})
    candidate = score(model_dir, data.evalset, params.latency_repeats)

    tracking = TrackingParams(params.tracking_uri, params.experiment, params.model_name,
                              run_name=f"nightly-{night.name}")
    mlflow.set_tracking_uri(tracking.uri)
    client = mlflow.MlflowClient()
    champion_version = _alias(client, params.model_name, CHAMPION)
    champion: Scores | None = None
    reason_prefix = ""
    if champion_version is not None:
        try:
            folder = resolve_model(f"models:/{params.model_name}/{champion_version}", night / "champion",
                                   tracking.uri)
            champion = score(folder, data.evalset, params.latency_repeats)
        except BundleError as e:  # a champion the frozen set cannot score: a human must decide
            reason_prefix = f"champion v{champion_version} cannot be scored ({e}); "

    registered_file = night / "registered.json"
    if registered_file.is_file():
        registered = json.loads(registered_file.read_text())
        _log(f"reusing registered version {registered['version']}")
    else:
        result = log_training(model, model_dir, tracking, data.X, data.Y, fit_seconds=fit_seconds,
                              extra_params={"nightly.run_id": night.name,
                                            "input": params.input or params.x})
        registered = {"version": result.version, "run_id": result.run_id}
        _write_json(registered_file, registered)
    version = str(registered["version"])

    if champion_version == version:  # a re-run after the first night's registration set it
        decision = Decision(True, "no champion yet")
    elif reason_prefix:
        decision = Decision(False, reason_prefix + "move the alias by hand if the candidate is wanted")
    else:
        decision = decide(candidate, champion, params)
    if decision.promote and champion_version not in (None, version):
        client.set_registered_model_alias(params.model_name, PREVIOUS_CHAMPION, champion_version)
    if decision.promote:
        client.set_registered_model_alias(params.model_name, CHAMPION, version)
    out = {"night": night.name, "model_name": params.model_name, "version": version,
           "run_id": registered["run_id"], "decision": "promoted" if decision.promote else "rejected",
           "reason": decision.reason, "metric": params.metric, "champion_version": champion_version,
           "candidate": candidate.to_dict(), "champion": champion.to_dict() if champion else None}
    _record(client, out)
    _write_json(done, out)
    _log(f"v{version} {out['decision']}: {decision.reason}")
    return out


def _alias(client: Any, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:  # no such model or alias yet
        return None


def _record(client: Any, out: dict[str, Any]) -> None:
    """Decision, reason and gate metrics as version tags, and on the training run."""
    from mlflow.entities import Metric, RunTag

    from xmc.tracking import metric_key

    tags = {"decision": out["decision"], "reason": out["reason"][:5000], "nightly.night": out["night"],
            "nightly.champion_version": str(out["champion_version"])}
    metrics: dict[str, float] = {}
    for who in ("candidate", "champion"):
        s = out[who]
        if s is None:
            continue
        metrics[f"frozen_{who}_{metric_key(out['metric'])}"] = s["metrics"][out["metric"]]
        metrics[f"frozen_{who}_ms_per_1k"] = s["ms_per_1k"]
        metrics[f"frozen_{who}_size_bytes"] = float(s["size_bytes"])
    for k, v in {**tags, **{k: f"{v:.6g}" for k, v in metrics.items()}}.items():
        client.set_model_version_tag(out["model_name"], out["version"], k, v)
    now = int(time.time() * 1000)
    client.log_batch(out["run_id"], metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                     tags=[RunTag(f"nightly.{k}" if "." not in k else k, v) for k, v in tags.items()])
