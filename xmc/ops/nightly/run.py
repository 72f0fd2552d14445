"""Nightly retrain: featurize -> train -> evaluate on a frozen set -> register -> promotion gate.

Why a gate: a nightly job that moves ``champion`` on every run ships whatever the night's data
and config produced. Here the candidate and the current champion are scored in the same process
on the same frozen evaluation set (P@k, predict latency per 1000 documents, model folder size);
``champion`` moves (the old one kept as ``previous_champion``) only if the candidate wins on the
metric by ``margin`` points and is not slower or larger beyond the configured ratios. Otherwise
the registered version is tagged ``decision=rejected`` with the reason, for a human to look at.

Operations (exit codes in ``xmc.ops.nightly.config``):

* an exclusive ``fcntl.flock`` on the lock file keeps two nightlies apart; the kernel drops it
  when the process dies, so a crashed night never blocks the next one;
* every night works in ``work_dir/run_id`` (``run_id`` defaults to the UTC date) and each step's
  output is written atomically, so re-running a failed night reuses finished steps (bundle,
  model, registered version) and redoes only the rest; a finished night answers its recorded
  result again without touching the registry.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import scipy.sparse as sp

from xmc.errors import BundleError
from xmc.ops.nightly.config import PREVIOUS_CHAMPION, NightlyParams, nightly_lock
from xmc.ops.nightly.gate import Decision, EvalSet, Scores, decide, score


@dataclass
class _Data:
    X: sp.csr_matrix
    Y: sp.csr_matrix
    names: list[str] | None
    extra_dirs: dict[str, str | Path] | None
    evalset: EvalSet


log = logging.getLogger("xmc.nightly")


def _prepare(params: NightlyParams, night: Path) -> _Data:
    """Training matrices and the frozen set; a raw corpus is featurized once per night (reused on re-run)."""
    from xmc.io.readers import LabelVocab, load_xy, read_records

    if not params.raw:
        X, Y = load_xy(params.x, params.y or None)
        names = LabelVocab.load(params.label_names).names if params.label_names else None
        Xe, Ye = load_xy(params.eval_x, params.eval_y or None)
        return _Data(X, Y, names, None, EvalSet(X=Xe, Y=Ye))
    from xmc.io.features import load_label_names, load_split, read_manifest

    bundle = night / "bundle"
    try:
        read_manifest(bundle)
        log.info(f"reusing the features bundle {bundle}")
    except BundleError:
        from xmc.engines.spark.featurize import featurize
        from xmc.engines.spark.session import spark_session

        log.info(f"featurizing {params.input} -> {bundle}")
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
    from xmc.io.files import atomic_file

    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def run_nightly(params: NightlyParams) -> dict[str, Any]:
    """One night under the lock; returns the recorded result (``decision`` is promoted or rejected)."""
    params.require_data()
    params.check_paths()
    night = Path(params.work_dir) / params.night
    with nightly_lock(params.lock):
        try:
            return _run(params, night)
        except BaseException:
            _remove_if_empty(night)  # a night that failed before any step finished leaves nothing
            raise


def _remove_if_empty(night: Path) -> None:
    """Writers remove their temp siblings on failure, so a night with no finished step is empty."""
    try:
        night.rmdir()
    except OSError:  # absent, or it holds a finished step that a re-run reuses
        pass


def _run(params: NightlyParams, night: Path) -> dict[str, Any]:
    import mlflow

    from xmc.core.fit import fit
    from xmc.core.model import XMCModel
    from xmc.engines.tracking import CHAMPION, TrackingParams
    from xmc.engines.training_run import log_training, training_run
    from xmc.ops.batch import resolve_model

    done = night / "result.json"
    if done.is_file():
        log.info(f"night {night.name} already finished: {done}")
        return dict(json.loads(done.read_text()))
    night.mkdir(parents=True, exist_ok=True)
    data = _prepare(params, night)
    model_dir, fit_file = night / "model", night / "fit.json"
    tracking = TrackingParams(params.tracking_uri, params.experiment, params.model_name,
                              run_name=f"nightly-{night.name}")
    run_params = {"nightly.run_id": night.name, "input": params.input or params.x}
    registered_file = night / "registered.json"
    with ExitStack() as stack:
        live = None
        if fit_file.is_file() and (model_dir / "manifest.json").is_file():
            log.info(f"reusing the trained model {model_dir}")
            model = XMCModel.load(model_dir)
            fit_seconds = float(json.loads(fit_file.read_text())["fit_seconds"])
        else:
            from xmc.engines.executors import make_executor

            log.info(f"training on {data.X.shape[0]} documents, {data.Y.shape[1]} labels")
            if not registered_file.is_file():  # the MLflow run opens before the fit: rounds logged live
                live = stack.enter_context(training_run(tracking, params.train, data.X, data.Y, run_params))
            t0 = time.perf_counter()
            model = fit(data.X, data.Y, params.train, label_names=data.names,
                        executor=make_executor(params.executor), observer=live)
            fit_seconds = time.perf_counter() - t0
            model.save(model_dir, extra_dirs=data.extra_dirs)
            _write_json(fit_file, {"fit_seconds": fit_seconds})
        candidate = score(model_dir, data.evalset, params.latency_repeats)

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

        if registered_file.is_file():
            registered = json.loads(registered_file.read_text())
            log.info(f"reusing registered version {registered['version']}")
        else:
            if live is not None:
                result = live.finish(model, model_dir, fit_seconds=fit_seconds)
            else:
                result = log_training(model, model_dir, tracking, data.X, data.Y, fit_seconds=fit_seconds,
                                      extra_params=run_params)
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
    log.info(f"v{version} {out['decision']}: {decision.reason}")
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

    from xmc.engines.tracking import metric_key

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
