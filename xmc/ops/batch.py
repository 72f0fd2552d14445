"""Batch prediction over parquet in bounded memory, and model references (folder or registry URI).

A nightly corpus of new documents can be far larger than memory: the input is read in row
batches with pyarrow (``ParquetFile.iter_batches``), each batch is vectorized, scored and
appended to a ``ParquetWriter`` on a temporary file that replaces the output only when every
batch is written (a reader never sees half a prediction file). Peak memory is one batch of
text, its features and its top-k, plus the model and its scoring layers (built at the first batch
and kept for the rest: ``XMCModel.scoring``).

A model is named either by its folder (``runs/x/model``) or by a registry URI
(``models:/NAME@champion``, ``models:/NAME/3``): the registered pyfunc's artifacts hold the very
model folder ``xmc train`` wrote, so it is downloaded and loaded the same way (no pickle).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xmc.errors import BundleError, DataFormatError

if TYPE_CHECKING:
    from xmc.core.executor import Executor

DEFAULT_BATCH_ROWS = 10_000
"""Rows scored at a time: bounds memory (text + features + top-k of one batch)."""
MODELS_SCHEME = "models:/"


def is_registry_uri(model: str) -> bool:
    return model.startswith(MODELS_SCHEME)


def resolve_model(model: str, dst: str | Path, tracking_uri: str = "") -> Path:
    """The local model folder of ``model``: itself, or downloaded from the registry into ``dst``.

    ``tracking_uri`` '' uses MLflow's own resolution (``MLFLOW_TRACKING_URI``, else ./mlflow.db).
    """
    if not is_registry_uri(model):
        folder = Path(model)
        if not (folder / "manifest.json").is_file():
            raise BundleError(f"{folder}: not a model folder (no manifest.json); give a folder written by "
                              "`xmc train` or a registry URI such as models:/NAME@champion")
        return folder
    import mlflow
    from mlflow.exceptions import MlflowException

    from xmc.engines import pyfunc

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model, dst_path=str(dst),
                                                         tracking_uri=tracking_uri or None))
        conf = mlflow.models.Model.load(str(local)).flavors["python_function"]
        rel = conf["artifacts"][pyfunc.MODEL_ARTIFACT]["path"]
    except MlflowException as e:
        raise BundleError(f"{model}: cannot load from the registry at {tracking_uri or 'the default store'} "
                          f"({e.message})") from None
    except KeyError:
        raise BundleError(f"{model}: not an xmc pyfunc (no '{pyfunc.MODEL_ARTIFACT}' artifact)") from None
    return local / rel


@dataclass(frozen=True)
class BatchReport:
    rows: int
    batches: int
    seconds: float
    out: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def predict_parquet(
    model_dir: str | Path, input_path: str | Path, out: str | Path, *, topk: int,
    batch_rows: int = DEFAULT_BATCH_ROWS, beam_size: int | None = None, components: str = "all",
    executor: Executor | None = None,
) -> BatchReport:
    """Score the ``{id, text}`` rows of a parquet file; write ``{id, labels, scores}`` parquet atomically.
    ``executor``: where each batch's chunks are scored (``XMCModel.predict``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from xmc.core.model import XMCModel
    from xmc.core.sparse import topk_rows
    from xmc.io.files import atomic_file

    if batch_rows < 1:
        raise DataFormatError(f"batch_rows={batch_rows} is invalid: use >= 1", field="batch_rows")
    model_dir = Path(model_dir)
    model = XMCModel.load(model_dir)
    if model.vectorizer is None:
        raise BundleError(f"{model_dir}: the model has no text vectorizer (trained on feature matrices); "
                          "batch prediction of raw text needs a model trained with `xmc train --data BUNDLE`")
    try:
        source = pq.ParquetFile(input_path)
    except Exception as e:  # pyarrow raises several unrelated types for a bad file
        raise DataFormatError(f"unreadable Parquet ({e})", path=input_path) from None
    missing = [c for c in ("id", "text") if c not in source.schema_arrow.names]
    if missing:
        raise DataFormatError(f"missing column(s) {missing}; have {source.schema_arrow.names}",
                              path=input_path)
    schema = pa.schema([("id", pa.string()), ("labels", pa.list_(pa.string())),
                        ("scores", pa.list_(pa.float32()))])
    names = model.label_names
    rows = batches = 0
    t0 = time.perf_counter()
    with atomic_file(out) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for batch in _batches(source, batch_rows, input_path):
            texts = batch.column("text").to_pylist()
            bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
            if bad is not None:
                raise DataFormatError(f"row {rows + bad + 1}: text is {texts[bad]!r}, expected a string",
                                      path=input_path, line=rows + bad + 1, field="text")
            idx, vals = topk_rows(model.predict_texts(texts, topk=topk, beam_size=beam_size,
                                                         components=components, executor=executor),
                                  topk)
            keep = idx >= 0
            labels = [[names[j] if names else str(j) for j in idx[i][keep[i]].tolist()]
                      for i in range(idx.shape[0])]
            scores = [vals[i][keep[i]].astype("float32") for i in range(idx.shape[0])]
            ids = batch.column("id").cast(pa.string())
            writer.write_table(pa.table({"id": ids, "labels": pa.array(labels, pa.list_(pa.string())),
                                         "scores": pa.array(scores, pa.list_(pa.float32()))}, schema=schema))
            rows += len(texts)
            batches += 1
    return BatchReport(rows, batches, time.perf_counter() - t0, str(out))


def _batches(source: Any, batch_rows: int, path: str | Path) -> Any:
    """Row batches of ``{id, text}``; a corrupt row group or invalid UTF-8 is a DataFormatError."""
    batches = source.iter_batches(batch_size=batch_rows, columns=["id", "text"])
    while True:
        try:
            batch = next(batches)
            batch.validate(full=True)  # invalid UTF-8 fails here, not mid-scoring
        except StopIteration:
            return
        except Exception as e:  # pyarrow raises several unrelated types for a bad file
            raise DataFormatError(f"unreadable Parquet rows ({e})", path=path) from None
        yield batch
