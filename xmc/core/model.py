"""XMCModel: a trained label tree with its matcher and rankers, and the text vectorizer it reads.

The model predicts, saves and loads; training (``xmc.core.fit``) builds it. Every raw-text path
(CLI, batch prediction, nightly scoring, the MLflow pyfunc) goes through ``predict_texts``, so the
model's own vectorizer is the only place text becomes features.
"""

from __future__ import annotations

import tempfile
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from xmc._version import __version__
from xmc.core.dense.fusion import fuse
from xmc.core.executor import Executor
from xmc.core.feature_pairs import column_count, with_pairs
from xmc.core.feature_weights import weigh_rows
from xmc.core.predict import ScoringLayer, predict_ensemble, scoring_layers
from xmc.core.sparse import csr, normalize_rows
from xmc.core.tree import LabelTree
from xmc.errors import BundleError, DataFormatError, ParamError
from xmc.io.model_bundle import load_bundle, save_bundle
from xmc.io.vectorizer import TextVectorizer
from xmc.params import XMCParams

VECTORIZER_DIR = "vectorizer"
"""Folder of a model bundle holding the fitted text vectorizer (models trained from raw text)."""
DENSE_DIR = "dense"
"""Folder of a hybrid model's bundle holding its dense part (``xmc.core.dense.model``, arrays only)."""
COMPONENTS: tuple[str, ...] = ("all", "tree", "dense")
"""What ``predict`` scores with: the whole model, or one part of a hybrid."""
TREES_DIR = "trees"
"""Folder of an ensemble's bundle holding trees 1..T-1, each a complete model bundle ``trees/<t>/``."""

def check_xy(X: sp.spmatrix, Y: sp.spmatrix | None = None) -> None:
    """Shapes agree and values are finite; Y is 0/1. Raised before any work starts."""
    if X.shape[0] == 0:
        raise DataFormatError("X has no rows", field="X")
    if not np.all(np.isfinite(sp.csr_matrix(X).data)):
        raise DataFormatError("X holds NaN or inf values", field="X")
    if Y is None:
        return
    if Y.shape[0] != X.shape[0]:
        raise DataFormatError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}", field="Y")
    if Y.shape[1] == 0:
        raise DataFormatError("Y has no label columns", field="Y")
    data = sp.csr_matrix(Y).data
    if not np.all((data == 0) | (data == 1)):
        raise DataFormatError("Y must be a 0/1 indicator matrix", field="Y")
    if not np.any(data == 1):
        raise DataFormatError("Y has no positive label at all: nothing to learn", field="Y")


RANKERS_PENDING = "rankers_pending"
"""``info`` key of a model whose last layer is a placeholder: nothing has read its rankers yet."""


SOLVER_FIELDS_ADDED: dict[str, Any] = {"recurring_df": 0, "row_cost_exponent": 0.0,
                                       "feature_weight_exponent": 0.0, "feature_weight_measure": "entropy",
                                       "feature_pairs": 0}
"""Solver fields added after models were saved, and how such a model was trained: a model saved
before C was scaled used the C it records, one saved before rows had costs gave every row C, one
saved before features had weights took them as given, and one saved before the weights had a
measure weighed them by entropy (its params then say so, not today's default)."""


@dataclass
class XMCModel:
    """A trained label tree with its matcher and ranker weights."""

    params: XMCParams
    tree: LabelTree
    weights: list[sp.csc_matrix]
    n_features: int
    label_counts: np.ndarray
    n_train: int
    label_names: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    vectorizer: TextVectorizer | None = None
    """The text -> features transform of a model trained from raw text (None: feature input only)."""
    members: list[XMCModel] = field(default_factory=list)
    """Trees 1..T-1 of an ensemble (``params.tree.n_trees`` = T); this model's own tree is tree 0."""
    dense: Any = None
    """The dense part of a hybrid (``xmc.core.dense.model.DenseModel``) fused with the trees; None: trees."""
    feature_weights: np.ndarray | None = None
    """(n_features) each feature's factor before the rows are normalised again
    (``xmc.core.feature_weights``, from the fitting rows); None: the features as given."""
    pairs: np.ndarray | None = None
    """Sorted keys ``i * n_features + j`` (i < j) of the feature pairs that are columns of their own
    (``xmc.core.feature_pairs``, ``feature_pairs`` > 0): the pairs the fitting rows hold."""
    _layers: tuple[tuple[weakref.ref, ...], list[ScoringLayer]] | None = field(
        default=None, init=False, repr=False, compare=False)
    """The scoring layers of the last prediction and weak references to the tree and weights they were
    built from (``scoring``); never saved or pickled."""

    def scoring(self) -> list[ScoringLayer]:
        """This tree's ``scoring_layers``, built at the first prediction and kept while its tree and
        weights are the same objects. Building them is a pass over every weight: debian-deps' were
        0.13-0.15 s of every prediction, 149 ms of a one-row request to a served model (4.3 ms
        kept), and of every Arrow batch of a Spark batch prediction. The cost: the layers held beside
        the weights, about 1.4x their size (debian-deps' TF-IDF: 70 MiB beside 52 MiB)."""
        held = self._layers
        current = (self.tree, *self.weights)
        if held is None or len(held[0]) != len(current) or any(
                ref() is not obj for ref, obj in zip(held[0], current, strict=True)):
            held = (tuple(weakref.ref(obj) for obj in current), scoring_layers(self.tree, self.weights))
            self._layers = held
        return held[1]

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the kept layers (they are rebuilt where the model lands)."""
        return {**self.__dict__, "_layers": None}

    @property
    def n_columns(self) -> int:
        """Columns the weights read: the input features, then the pairs (the bias row comes after)."""
        return column_count(self.n_features, self.pairs)

    @property
    def trees(self) -> list[XMCModel]:
        """Every tree of the model, this one first (one element for a single-tree model)."""
        return [self, *self.members]

    @property
    def n_labels(self) -> int:
        return self.tree.n_labels

    def preprocess(self, X: sp.spmatrix) -> sp.csr_matrix:
        """Features as the model was trained on them (float32 CSR, rows L2-normalised if set, scaled
        by the feature weights and normalised again)."""
        X = prepare_features(X, self.params, self.n_features)
        if self.pairs is not None:
            s = self.params.solver
            X = with_pairs(X, self.pairs, s.feature_pairs, s.pair_weight, self.params.normalize_rows)
        return weigh_rows(X, self.feature_weights, self.params.normalize_rows)

    def predict(
        self, X: sp.spmatrix, *, topk: int | None = None, beam_size: int | None = None,
        components: str = "all", executor: Executor | None = None,
    ) -> sp.csr_matrix:
        """(N x n_labels) CSR holding each row's top-k label scores.

        ``components``: all (the model as trained: trees, fused with the dense part where there is
        one), tree (the trees alone), dense (the dense part alone; an error if there is none).
        ``executor``: where the trees' chunks of rows are scored (``LocalExecutor()``: every core; None:
        this thread, as a server's or a Spark task's one core wants).
        """
        check_xy(X)
        if components not in COMPONENTS:
            raise ParamError(f"components={components!r} is invalid: use one of {COMPONENTS}")
        if components == "dense" and self.dense is None:
            raise ParamError("components='dense': this model has no dense part (train with --dense prime)")
        for name, value in (("topk", topk), ("beam_size", beam_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | np.integer)
                                      or value < 1):
                raise ParamError(f"{name}={value!r} is invalid: use an integer >= 1")
        if self.info.get(RANKERS_PENDING):
            raise BundleError("this model's rankers are not trained yet (a checkpoint taken between "
                              "rounds): resume the training run to finish it")
        Xp = self.preprocess(X)
        k = topk or self.params.predict.topk
        if components == "dense":
            return self.dense.predict(Xp, k, self.dense_device())
        fused = components == "all" and self.dense is not None and self.dense.alpha > 0
        tree_k = max(k, 10) if fused else k
        tree = predict_ensemble(Xp, [(m.tree, m.scoring()) for m in self.trees], self.params.predict,
                                bias=self.params.solver.bias, topk=tree_k, beam_size=beam_size,
                                executor=executor)
        if not fused:
            return tree
        idx, scores = self.dense.topk(Xp, tree_k, device=self.dense_device())
        return fuse(tree, idx, scores, self.dense.alpha, self.dense.beta, k, self.dense.kept)

    def dense_device(self) -> str:
        """Where the dense part scores: the GPU when one is seen (a model trained on CUDA still
        serves on a CPU-only machine), unless the model's device is 'cpu'."""
        from xmc.core.solver import resolve_device

        return "cpu" if self.params.solver.device == "cpu" else resolve_device("auto")

    def predict_texts(
        self, texts: Iterable[str], *, topk: int | None = None, beam_size: int | None = None,
        components: str = "all", executor: Executor | None = None,
    ) -> sp.csr_matrix:
        """Top-k label scores of raw texts, featurized by the model's own vectorizer."""
        if self.vectorizer is None:
            raise BundleError("this model has no text vectorizer (it was trained on feature matrices, "
                              "not on raw text): pass feature rows instead")
        return self.predict(self.vectorizer.transform(texts), topk=topk, beam_size=beam_size,
                            components=components, executor=executor)

    def save(self, path: str | Path, *, extra_dirs: dict[str, str | Path] | None = None) -> None:
        """Write the model folder with its vectorizer (if any); ``extra_dirs`` are copied in, checksummed."""
        extra = dict(extra_dirs or {})
        with tempfile.TemporaryDirectory() as tmp:
            if self.vectorizer is not None and VECTORIZER_DIR not in extra:
                self.vectorizer.save(Path(tmp) / VECTORIZER_DIR)
                extra[VECTORIZER_DIR] = Path(tmp) / VECTORIZER_DIR
            if self.dense is not None:
                self.dense.save(Path(tmp) / DENSE_DIR)
                extra[DENSE_DIR] = Path(tmp) / DENSE_DIR
            for t, member in enumerate(self.members, start=1):
                member.save(Path(tmp) / TREES_DIR / str(t))
            if self.members:
                extra[TREES_DIR] = Path(tmp) / TREES_DIR
            save_bundle(
                path, tree=self.tree, weights=self.weights, n_features=self.n_features,
                label_counts=self.label_counts, n_train=self.n_train, label_names=self.label_names,
                feature_weights=self.feature_weights, pairs=self.pairs,
                meta={"xmc_version": __version__, "params": self.params.to_dict(), "info": self.info},
                extra_dirs=extra or None,
            )

    @classmethod
    def load(cls, path: str | Path) -> XMCModel:
        parts = load_bundle(path)
        try:
            saved = parts["manifest"]["params"]
            if isinstance(saved, dict) and isinstance(saved.get("solver"), dict):
                for name, before in SOLVER_FIELDS_ADDED.items():
                    saved["solver"].setdefault(name, before)
            params = XMCParams.from_dict(saved)
        except (ValueError, KeyError, TypeError) as e:
            raise BundleError(f"{path}/manifest.json: bad params ({e})") from None
        if parts["pairs"] is not None and params.solver.feature_pairs < 2:
            raise BundleError(f"{path}/manifest.json: the model holds pair columns but its params say "
                              f"feature_pairs={params.solver.feature_pairs} (>= 2 made them)")
        info = parts["manifest"].get("info", {})
        if not isinstance(info, dict):
            raise BundleError(f"{path}/manifest.json: bad field 'info' (expected an object)")
        folder = Path(path) / VECTORIZER_DIR
        vectorizer = TextVectorizer.load(folder) if folder.is_dir() else None
        if vectorizer is not None and vectorizer.n_features > parts["n_features"]:
            raise BundleError(f"{folder}: {vectorizer.n_features} features for a model of "
                              f"{parts['n_features']} features")
        members = [cls.load(Path(path) / TREES_DIR / str(t)) for t in range(1, params.tree.n_trees)]
        for t, m in enumerate(members, start=1):
            if (m.n_features, m.n_labels, m.n_train) != (parts["n_features"], parts["tree"].n_labels,
                                                          parts["n_train"]) \
                    or not np.array_equal(m.label_counts, parts["label_counts"]) \
                    or (m.pairs is None) != (parts["pairs"] is None) \
                    or (m.pairs is not None and not np.array_equal(m.pairs, parts["pairs"])):
                raise BundleError(f"{path}/{TREES_DIR}/{t}: a tree of another training set "
                                  "(features, labels or counts differ from tree 0)")
        dense = None
        if (Path(path) / DENSE_DIR).is_dir():
            from xmc.core.dense.model import DenseModel

            dense = DenseModel.load(Path(path) / DENSE_DIR, column_count(parts["n_features"], parts["pairs"]),
                                    parts["tree"].n_labels)
        return cls(params, parts["tree"], parts["weights"], parts["n_features"],
                   parts["label_counts"], parts["n_train"], parts["label_names"],
                   info, vectorizer, members, dense, parts["feature_weights"], parts["pairs"])


def prepare_features(X: sp.spmatrix, params: XMCParams, n_features: int) -> sp.csr_matrix:
    """Float32 CSR with the model's feature count; rows L2-normalised when the params say so."""
    if X.shape[1] > n_features:
        raise DataFormatError(
            f"X has {X.shape[1]} feature columns but the model was trained on {n_features}", field="X"
        )
    X = csr(X)
    if X.shape[1] < n_features:  # e.g. an XC file whose header counts fewer trailing features
        X = sp.csr_matrix((X.data, X.indices, X.indptr), shape=(X.shape[0], n_features))
    return normalize_rows(X) if params.normalize_rows else X
