"""Prediction as a distributed map over a features bundle's shards, the model loaded once per worker.

``xmc predict --model DIR --data BUNDLE --split test --out DIR --executor ray``: the split's part
files are cut into the sharded fit's shards (``xmc.core.sharded.shard_slices``); each unit reads its
rows, scores them with the model (``XMCModel.load`` once per worker process, cached by folder) and
writes ``part-<shard>.parquet`` ``{id, labels, scores}``; it returns the metric sums of its rows,
which the driver adds into P@k / PSP@k of the whole split. The driver reads no row; the output
folder appears whole or not at all. The model folder must be visible to every node.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import lru_cache, reduce
from pathlib import Path
from typing import Any

from xmc.core.executor import Executor
from xmc.core.metrics import add_sums, metric_sums, metrics_of_sums
from xmc.core.model import XMCModel
from xmc.core.shard_units import PartSlice
from xmc.core.sharded import shard_slices
from xmc.errors import DataFormatError
from xmc.io.features import load_part, read_doc_ids, split_parts
from xmc.io.files import atomic_dir, manifest_format_is

FORMAT = "xmc-predictions"


@dataclass(frozen=True)
class ShardPredictSpec:
    model: str
    out: Path
    n_features: int
    n_labels: int
    topk: int
    beam_size: int | None
    components: str = "all"


@lru_cache(maxsize=2)
def _model(folder: str) -> XMCModel:
    return XMCModel.load(folder)


def predict_shard(spec: ShardPredictSpec, part: PartSlice) -> dict[str, float]:
    """Score one shard, write its predictions; the metric sums of its rows (empty without labels)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from xmc.core.sparse import topk_rows

    X, Y = load_part(part.path, spec.n_features, spec.n_labels, part.start, part.stop)
    ids = read_doc_ids(part.path, part.start, part.stop)
    model = _model(spec.model)
    pred = model.predict(X, topk=spec.topk, beam_size=spec.beam_size, components=spec.components)
    idx, vals = topk_rows(pred, spec.topk)
    keep = idx >= 0
    names = model.label_names
    labels = [[names[j] if names else str(j) for j in idx[i][keep[i]].tolist()] for i in range(len(idx))]
    scores = [vals[i][keep[i]] for i in range(len(idx))]
    table = pa.table({"id": pa.array(ids, pa.string()), "labels": pa.array(labels, pa.list_(pa.string())),
                      "scores": pa.array(scores, pa.list_(pa.float32()))})
    pq.write_table(table, spec.out / f"part-{part.shard:05d}.parquet")
    if Y.nnz == 0:
        return {}
    return metric_sums(Y, pred, (1, 3, 5), label_counts=model.label_counts, n_train=model.n_train)


def predict_bundle(model_dir: str | Path, bundle: str | Path, split: str, out: str | Path,
                   executor: Executor, *, topk: int | None = None,
                   beam_size: int | None = None, components: str = "all") -> dict[str, Any]:
    """Predict a bundle split shard by shard into the folder ``out``; returns its manifest."""
    model = XMCModel.load(model_dir)  # checked here once: a bad folder fails before any task
    manifest, parts = split_parts(bundle, split)
    if manifest["n_features"] != model.n_features or manifest["n_labels"] != model.n_labels:
        raise DataFormatError(f"the bundle has {manifest['n_features']} features and {manifest['n_labels']} "
                              f"labels, the model {model.n_features} and {model.n_labels}", path=bundle)
    k = min(topk or model.params.predict.topk, model.n_labels)
    t0 = time.perf_counter()
    with atomic_dir(out, owned=manifest_format_is(FORMAT), what="an xmc predictions folder") as tmp:
        spec = ShardPredictSpec(str(Path(model_dir).resolve()), tmp, model.n_features, model.n_labels, k,
                                beam_size, components)
        sums = [s for s in executor.map(predict_shard, spec, shard_slices(parts), desc="predict") if s]
        report = {"format": FORMAT, "model": str(model_dir), "bundle": str(bundle), "split": split,
                  "rows": sum(n for _, n in parts), "topk": k, "components": components,
                  "seconds": round(time.perf_counter() - t0, 3),
                  "metrics": metrics_of_sums(reduce(add_sums, sums)) if sums else None}
        (tmp / "manifest.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
