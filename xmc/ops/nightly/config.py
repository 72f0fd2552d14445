"""A night's configuration (one JSON file), its exit codes, and the lock that keeps two nights apart."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from xmc.engines.spark.params import FeaturizeParams
from xmc.errors import ParamError, XMCError
from xmc.params import ExecutorParams, XMCParams, coerce_fields

NIGHTLY_VALIDATION_FRACTION = 0.1
"""Share of the night's training rows held out by default: rounds scored and stopped on it."""

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
    train: XMCParams = field(default_factory=lambda: XMCParams().replace(
        validation_fraction=NIGHTLY_VALIDATION_FRACTION))
    """Model parameters: a nested dict as saved in a manifest, or flat ({"rounds": 2}); unless it sets
    validation_fraction, 0.1 of the rows are held out to score and stop the rounds (held-out curves)."""
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

    def check_paths(self) -> None:
        """The data files exist (checked on the machine that runs the night, before the lock)."""
        from xmc.errors import DataFormatError

        for name in ("input", "eval_input", "x", "y", "label_names", "eval_x", "eval_y"):
            value = getattr(self, name)
            if value and "://" not in value and not Path(value).exists():
                raise DataFormatError(f"no such file or folder: {value}", field=name)

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
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataFormatError(f"cannot read the config ({e.strerror or e})", path=path) from None
    except json.JSONDecodeError as e:
        raise DataFormatError(f"not valid JSON: {e.msg}", path=path, line=e.lineno) from None
    except UnicodeDecodeError as e:
        raise DataFormatError(f"not valid UTF-8 text (byte {e.start})", path=path) from None
    except RecursionError:
        raise DataFormatError("not valid JSON: nested too deeply", path=path) from None
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
        except (ParamError, TypeError, ValueError, KeyError) as e:
            raise DataFormatError(str(e), path=source, field=key) from None
    try:
        return NightlyParams(**values)
    except ParamError as e:
        raise DataFormatError(str(e), path=source) from None


def _coerce(key: str, declared: str, value: Any, base: Path | None) -> Any:
    """One field of the config: nested objects through their own params' checks, scalars through
    ``xmc.params.coerce_fields`` (the type check every config and flag goes through), paths made
    absolute against the config's folder."""
    if declared in ("XMCParams", "FeaturizeParams", "ExecutorParams") and not isinstance(value, dict):
        raise ParamError(f"expected an object of {declared.removesuffix('Params').lower()} parameters")
    if declared == "XMCParams":
        train = XMCParams.from_dict(value)
        given = "validation_fraction" in value or "validation_fraction" in (value.get("disentangle") or {})
        return train if given else train.replace(validation_fraction=NIGHTLY_VALIDATION_FRACTION)
    if declared == "FeaturizeParams":
        return FeaturizeParams().replace(**value)
    if declared == "ExecutorParams":
        known = {f.name for f in fields(ExecutorParams)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ParamError(f"unknown executor parameter {unknown[0]!r}; known: {', '.join(sorted(known))}")
        return ExecutorParams(**coerce_fields(ExecutorParams, value))
    value = coerce_fields(NightlyParams, {key: value})[key]
    if key in _PATH_FIELDS and value and base is not None and "://" not in value:
        return str(base / value)
    return value


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
