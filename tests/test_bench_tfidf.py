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


def test_words_alone_match_scikit_learn_and_the_unigram_columns_of_the_pairs() -> None:
    """``ngram_max`` 1 is TfidfVectorizer() at its defaults, and the 1-2-gram TF-IDF's unigram columns
    renormalised (a term's idf depends on its own document frequency alone)."""
    words = tfidf.ReferenceTfidf.fit(TRAIN, ngram_max=1)
    assert all(" " not in t for t in words.vocab) and words.n_features > 5
    both = tfidf.ReferenceTfidf.fit(TRAIN)
    cols = [both.vocab[t] for t in sorted(words.vocab, key=words.vocab.__getitem__)]
    for texts in (TRAIN, TEST):
        sub = both.transform(texts)[:, cols].toarray()
        norms = np.linalg.norm(sub, axis=1, keepdims=True)
        want = np.divide(sub, norms, out=np.zeros_like(sub), where=norms > 0)
        assert np.allclose(words.transform(texts).toarray(), want, atol=1e-6)
    with pytest.raises(ValueError, match="ngram_max must be 1 or 2"):
        tfidf.ReferenceTfidf.fit(TRAIN, ngram_max=3)
    sklearn_text = pytest.importorskip("sklearn.feature_extraction.text")
    ref = sklearn_text.TfidfVectorizer(dtype=np.float64).fit(TRAIN)
    assert words.vocab == {t: int(j) for t, j in ref.vocabulary_.items()}
    assert np.allclose(words.transform(TEST).toarray(), ref.transform(TEST).toarray(), atol=1e-6)


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
