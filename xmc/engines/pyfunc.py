"""The MLflow pyfunc face of a model folder: raw text (or sparse features) in, top-k label names out.

Nothing is pickled. The model folder written by ``XMCModel.save`` is logged as an artifact and
``load_context`` reads it back with ``XMCModel.load`` (checksums verified); the Python model is
logged *as code* (a three-line entry script importing :class:`XMCPyfunc`), so MLflow stores no
cloudpickle of it. The ``xmc`` package must be importable where the model is loaded (it is in
this project's environment; ``mlflow models serve --env-manager local`` uses that environment).

Accepted inputs of ``predict``:

* a model with a text vectorizer (trained with ``xmc train --data BUNDLE``): a list of strings,
  a pandas Series of strings, or a DataFrame whose ``text`` column (else its first column) holds
  the raw documents (its signature is one unnamed string column, so MLflow passes only that);
* a model without one (trained on feature matrices): a DataFrame with ``indices`` (feature ids)
  and ``values`` columns, one sparse row per document, in the model's feature space; raw text
  is answered with a :class:`RequestError` saying why (a ``DataFormatError``; HTTP 400 when served).

The output is a DataFrame with ``labels`` (names, or column indices as strings when the model
has no names) and ``scores`` (floats), best first. ``params={"topk": k}`` picks k (default 5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from xmc.errors import DataFormatError

DEFAULT_TOPK = 5
MODEL_ARTIFACT = "model"
"""Key of the model folder in the pyfunc's ``artifacts``."""
ENTRY_SCRIPT = ("from xmc.engines.pyfunc import XMCPyfunc\nimport mlflow.models\n\n"
                "mlflow.models.set_model(XMCPyfunc())\n")
"""The model-from-code script MLflow stores instead of a pickle of the Python model."""


class RequestError(DataFormatError, MlflowException):
    """A request the model cannot answer: a DataFormatError in Python, HTTP 400 when served.

    MLflow's scoring server answers an MlflowException with its error code's status and its
    message (prefixed "Failed to predict data"); any other exception becomes a generic
    "unexpected error" with the reason buried in the stack trace.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        DataFormatError.__init__(self, message, field=field)
        MlflowException.__init__(self, str(self), error_code=INVALID_PARAMETER_VALUE)


class XMCPyfunc(PythonModel):
    """Loads the xmc model folder (and its vectorizer, if any) and answers top-k requests."""

    def load_context(self, context: Any) -> None:
        from xmc.core.model import XMCModel

        folder = Path(context.artifacts[MODEL_ARTIFACT])
        self.model = XMCModel.load(folder)

    # pd.DataFrame is a hint MLflow infers no schema from (the logged signature is the schema), and
    # one it does not warn about, unlike no hint or Any; MLflow hands predict a DataFrame (or a list)
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        topk = int((params or {}).get("topk") or DEFAULT_TOPK)
        if topk < 1:
            raise RequestError(f"topk={topk} is invalid: use an integer >= 1", field="params.topk")
        X = self.features(model_input)
        return predict_frame(self.model, X, topk)

    def features(self, model_input: Any) -> sp.csr_matrix:
        """CSR features of the request, from raw text (vectorizer) or indices/values rows."""
        if isinstance(model_input, pd.DataFrame) and {"indices", "values"} <= set(model_input.columns):
            return sparse_rows(model_input["indices"], model_input["values"], self.model.n_features)
        if self.model.vectorizer is None:
            raise RequestError(
                "this model has no text vectorizer (it was trained on feature matrices, not on a "
                "`xmc featurize` bundle): send a DataFrame with 'indices' and 'values' columns, "
                "one sparse feature row per document", field="model_input")
        return self.model.vectorizer.transform(texts_of(model_input))


def texts_of(model_input: Any) -> list[str]:
    """Raw documents from a list/Series of strings or a DataFrame (``text`` column, else the first)."""
    if isinstance(model_input, pd.DataFrame):
        if model_input.shape[1] == 0:
            raise RequestError("no input columns: send a 'text' column of raw documents",
                                  field="model_input")
        col = model_input["text"] if "text" in model_input.columns else model_input.iloc[:, 0]
        values = col.tolist()
    elif isinstance(model_input, pd.Series | list | tuple | np.ndarray):
        values = list(model_input)
    else:
        raise RequestError(f"unsupported input {type(model_input).__name__}: send a list of strings "
                              "or a DataFrame with a 'text' column", field="model_input")
    bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
    if bad is not None:
        raise RequestError(f"row {bad}: expected a string, got {type(values[bad]).__name__}",
                              field="text")
    return values


def sparse_rows(indices: pd.Series, values: pd.Series, n_features: int) -> sp.csr_matrix:
    """One CSR row per (indices, values) pair; ids outside [0, n_features) are an error."""
    cols = [np.asarray(ix, dtype=np.int64).ravel() for ix in indices]
    vals = [np.asarray(v, dtype=np.float32).ravel() for v in values]
    for i, (c, v) in enumerate(zip(cols, vals, strict=True)):
        if len(c) != len(v):
            raise RequestError(f"row {i}: {len(c)} indices but {len(v)} values", field="indices")
        if len(c) and (c.min() < 0 or c.max() >= n_features):
            raise RequestError(f"row {i}: feature id out of range [0, {n_features})", field="indices")
    indptr = np.concatenate([[0], np.cumsum([len(c) for c in cols])]).astype(np.int64)
    col = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    val = np.concatenate(vals) if vals else np.zeros(0, np.float32)
    X = sp.csr_matrix((val, col, indptr), shape=(len(cols), n_features))
    X.sum_duplicates()
    return X


def predict_frame(model: Any, X: sp.csr_matrix, topk: int) -> pd.DataFrame:
    """``labels`` (names) and ``scores`` per row, best first; empty lists for an empty row."""
    from xmc.core.sparse import topk_rows

    if X.shape[0] == 0:
        return pd.DataFrame({"labels": pd.Series([], dtype=object), "scores": pd.Series([], dtype=object)})
    pred = model.predict(X, topk=topk)
    idx, vals = topk_rows(pred, topk)
    names = model.label_names
    labels, scores = [], []
    for i in range(idx.shape[0]):
        keep = idx[i] >= 0
        labels.append([names[j] if names else str(j) for j in idx[i][keep].tolist()])
        scores.append([float(v) for v in vals[i][keep]])
    return pd.DataFrame({"labels": labels, "scores": scores})


def signature(has_vectorizer: bool) -> Any:
    """Input schema by model kind (one unnamed string column, or indices/values), output, and topk.

    An unnamed string column lets MLflow accept both a plain list of strings and a DataFrame
    with a ``text`` column; a named ``text`` column would refuse the list.
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    if has_vectorizer:
        inputs = Schema([ColSpec("string")])
    else:
        # all optional, so that raw text reaches predict() and gets xmc's explanation, not a schema error
        inputs = Schema([ColSpec("string", "text", required=False),
                         ColSpec(Array("long"), "indices", required=False),
                         ColSpec(Array("double"), "values", required=False)])
    outputs = Schema([ColSpec(Array("string"), "labels"), ColSpec(Array("double"), "scores")])
    return ModelSignature(inputs=inputs, outputs=outputs,
                          params=ParamSchema([ParamSpec("topk", "long", DEFAULT_TOPK)]))


def write_entry_script(folder: str | Path) -> Path:
    """The model-from-code script MLflow logs in place of a pickled Python model."""
    path = Path(folder) / "xmc_pyfunc_entry.py"
    path.write_text(ENTRY_SCRIPT)
    return path
