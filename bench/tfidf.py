"""A reference TF-IDF of word 1-2-grams (or words alone), in numpy/scipy: features every system trains on.

The product's featurizer (``xmc featurize``) is one of the systems under test, so the peers
table also runs every system, ours included, on features none of them chose. This transform is
scikit-learn's ``TfidfVectorizer(ngram_range=(1, 2))`` at its defaults, written out so the bench
needs no new dependency and the recipe is on one screen:

    lowercase -> tokens = regex ``(?u)\\b\\w\\w+\\b`` (two or more word characters)
    -> terms = tokens + adjacent token pairs joined by one space
    -> vocabulary = every term of the training split (min_df 1), sorted
    -> tf = raw count (no sublinear 1 + ln tf: the documents are a name and a line, so counts
       above 1 are rare and the choice barely moves a row; the defaults keep it reproducible)
    -> idf = ln((1 + n) / (1 + df)) + 1 (smoothed), fitted on the training split only
    -> row = tf * idf, L2-normalised; a document with no known term stays an all-zero row.

tests/test_bench_tfidf.py checks it against scikit-learn where that is installed.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

TOKEN = re.compile(r"(?u)\b\w\w+\b")


def terms(text: str, ngram_max: int = 2) -> list[str]:
    """Word unigrams then (``ngram_max`` 2) bigrams of a lowercased text (scikit-learn's order)."""
    toks = TOKEN.findall(text.lower())
    return toks + ([f"{a} {b}" for a, b in zip(toks, toks[1:], strict=False)] if ngram_max >= 2 else [])


@dataclass(frozen=True)
class ReferenceTfidf:
    """A fitted vocabulary (term -> column, alphabetical) and its idf per column."""

    vocab: dict[str, int]
    idf: np.ndarray
    ngram_max: int = 2
    """2: word 1-2-grams (``ngram_range=(1, 2)``); 1: words alone (scikit-learn's default range), whose
    rows are short: the form in which pairs of features pay (docs/performance.md)."""

    @classmethod
    def fit(cls, texts: Sequence[str], ngram_max: int = 2) -> ReferenceTfidf:
        """Vocabulary and smoothed idf of the training texts."""
        if ngram_max not in (1, 2):
            raise ValueError(f"ngram_max must be 1 or 2, not {ngram_max}")
        df: Counter[str] = Counter()
        for text in texts:
            df.update(set(terms(text, ngram_max)))
        names = sorted(df)
        counts = np.array([df[t] for t in names], dtype=np.float64)
        idf = np.log((1.0 + len(texts)) / (1.0 + counts)) + 1.0
        return cls({t: j for j, t in enumerate(names)}, idf, ngram_max)

    @property
    def n_features(self) -> int:
        return len(self.vocab)

    def transform(self, texts: Iterable[str]) -> sp.csr_matrix:
        """(n x n_features) float32 CSR, sorted indices, L2-normalised rows."""
        indptr: list[int] = [0]
        cols: list[int] = []
        tfs: list[int] = []
        for text in texts:
            counts = Counter(j for t in terms(text, self.ngram_max) if (j := self.vocab.get(t)) is not None)
            cols.extend(counts.keys())
            tfs.extend(counts.values())
            indptr.append(len(cols))
        n = len(indptr) - 1
        col = np.asarray(cols, dtype=np.int64)
        val = np.asarray(tfs, dtype=np.float64) * self.idf[col]
        X = sp.csr_matrix((val, col, np.asarray(indptr, dtype=np.int64)), shape=(n, self.n_features))
        X.sort_indices()
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        X.data *= np.repeat(inv, np.diff(X.indptr))
        return X.astype(np.float32)


def label_matrix(label_lists: Sequence[Sequence[str]], index: dict[str, int]) -> sp.csr_matrix:
    """0/1 CSR of label-name lists; names outside ``index`` (unseen in training) are dropped."""
    indptr, cols = [0], []
    for labels in label_lists:
        cols.extend(sorted({index[name] for name in labels if name in index}))
        indptr.append(len(cols))
    return sp.csr_matrix((np.ones(len(cols), np.float32), np.asarray(cols, np.int64), np.asarray(indptr)),
                         shape=(len(label_lists), len(index)))
