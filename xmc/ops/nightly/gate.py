"""The promotion gate: score the candidate and the champion on the same frozen set, then decide.

The candidate replaces the champion only if it wins on the metric by ``margin`` points and is not
slower or larger beyond the configured ratios; otherwise the version is tagged ``rejected``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from xmc.errors import BundleError
from xmc.ops.nightly.config import EVAL_TOPK, NightlyParams


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
    from xmc.core.metrics import evaluate
    from xmc.core.model import XMCModel
    from xmc.engines.tracking import folder_bytes

    model_dir = Path(model_dir)
    model = XMCModel.load(model_dir)
    if data.texts is not None:
        if model.vectorizer is None:
            raise BundleError(f"{model_dir}: no text vectorizer, so it cannot score the raw evaluation set")
        Y = label_matrix(data.labels or [], model.label_names or [])

        def run() -> sp.csr_matrix:
            return model.predict_texts(data.texts or [], topk=EVAL_TOPK)
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
