"""bench/tfidf.py: the reference TF-IDF equals scikit-learn's TfidfVectorizer(ngram_range=(1, 2))."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import tfidf  # noqa: E402

TRAIN = ["libfoo utils . Tools for FOO, foo and foo", "python3 bar . Bar bindings for Python 3",
         "zlib1g dev . compression library - development", "a . x y"]
TEST = ["foo bindings for python3", "nothing known here", "q", "Tools for bar bar"]


def test_matches_scikit_learn() -> None:
    sklearn_text = pytest.importorskip("sklearn.feature_extraction.text")
    ref = sklearn_text.TfidfVectorizer(ngram_range=(1, 2), dtype=np.float64).fit(TRAIN)
    ours = tfidf.ReferenceTfidf.fit(TRAIN)
    assert ours.vocab == {t: int(j) for t, j in ref.vocabulary_.items()}
    assert np.allclose(ours.idf, ref.idf_)
    for texts in (TRAIN, TEST):
        want = ref.transform(texts).toarray()
        assert np.allclose(ours.transform(texts).toarray(), want, atol=1e-6)


def test_rows_and_unknown_documents() -> None:
    vec = tfidf.ReferenceTfidf.fit(TRAIN)
    X = vec.transform(TEST)
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    assert np.allclose(norms, [1.0, 0.0, 0.0, 1.0], atol=1e-6)  # no known term: an all-zero row
    assert X.has_sorted_indices and X.dtype == np.float32
    assert "foo bindings" not in vec.vocab and "bar bindings" in vec.vocab


def test_label_matrix_drops_labels_unseen_in_training() -> None:
    Y = tfidf.label_matrix([["b", "a", "zzz"], [], ["b"]], {"a": 0, "b": 1})
    assert Y.toarray().tolist() == [[1, 1], [0, 0], [0, 1]]
