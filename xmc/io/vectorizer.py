"""The fitted text transform, re-implemented in numpy/scipy for prediction without Spark.

``xmc featurize`` fits a vocabulary and IDF in Spark and saves them with the exact tokenizer
settings; ``TextVectorizer`` applies the same transform to new documents on one machine:

    lowercase -> tokens (regex matches, length >= min_token_length) -> cut at digits
    (``split_digits``: a trailing number, or every run of digits) -> drop stop words
    -> Snowball stems (``stemmer``; ``xmc.io.stems.stem_tokens``, which Spark's executors call too)
    -> terms = tokens (+ adjacent token pairs "a b" when ngram_max = 2) (+ "<" and the first k
       characters of each token longer than k, k = prefix_length > 0) -> counts of vocabulary terms
    -> tf = 1 + ln(count) (sublinear) or count -> tf * idf, idf = ln((1 + N) / (1 + df)) + 1
    -> L2-normalised row
    [-> with a pretrained text encoder (``xmc.io.text_encoder``): its unit embedding, times
        ``encoder_weight``, appended as ``dim`` more columns; the row is L2-normalised again]

Spark tokenizes with Java regexes, whose ``(?U)\\w`` differs from Python's ``\\w`` (Python leaves out
combining marks, so it would cut Hindi or decomposed accents into pieces). ``\\w`` in the token
pattern is therefore expanded here into Java's class (letters, marks, digits, connector
punctuation, join controls), so both sides cut the same tokens. The folder holds JSON and npz only.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from xmc.errors import BundleError
from xmc.io.stems import stem_tokens, stemmer_class, stemmer_version
from xmc.io.text_encoder import TextEncoder

log = logging.getLogger("xmc.vectorizer")

ENCODER_DIR = "encoder"

FORMAT = "xmc-vectorizer"
SCHEMA_VERSION = 1
STEMMED_SCHEMA_VERSION = 2
"""A vectorizer whose terms are stems or cut at digits: an older reader, which knows only version 1
and would ignore those settings, refuses it."""
PREFIX_SCHEMA_VERSION = 3
"""A vectorizer with token prefixes among its terms: a reader from before them would make no prefix
terms and miss those columns quietly, so it refuses the file."""
PREFIX_MARK = "<"
"""Starts a prefix term (``prefix_length``): no token holds it (tokens are regex matches of word
characters by default), so '<lib' never meets the word 'lib'."""
DIGIT_RUNS = re.compile(r"\d+|\D+")
r"""Runs of digits and of other characters (Python's \d on str is Unicode Nd, as Java's (?U)\d)."""
TRAILING_DIGITS = re.compile(r"^(\D+?)(\d+)$")
"""Non-digits then digits to the end ('libssl3'); Spark's: ``xmc.engines.spark.text.TRAILING_DIGITS``."""
# Java's (?U)\w: Alphabetic (letters, letter numbers, Other_Alphabetic), marks, decimal digits,
# connector punctuation, join controls. Extra ranges: the join controls, and the Other_Alphabetic
# symbols outside those categories (circled and squared Latin letters).
_JAVA_WORD_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nl", "Mn", "Mc", "Me", "Nd", "Pc"})
_JAVA_WORD_EXTRA = ((0x200C, 0x200D), (0x24B6, 0x24E9), (0x1F130, 0x1F149), (0x1F150, 0x1F169),
                    (0x1F170, 0x1F189))
_ASSIGNED_PLANES = ((0, 0x40000), (0xE0000, 0xF0000))


@functools.lru_cache(maxsize=1)
def java_word_class() -> str:
    """The body of a Python character class matching what Java's ``(?U)\\w`` matches."""
    n = sys.maxunicode + 1
    ok = np.zeros(n, bool)
    for lo, hi in _ASSIGNED_PLANES:  # planes 4-13 and 15-16 hold no word characters
        ok[lo:hi] = np.fromiter((unicodedata.category(chr(cp)) in _JAVA_WORD_CATEGORIES
                                 for cp in range(lo, hi)), bool, hi - lo)
    for lo, hi in _JAVA_WORD_EXTRA:
        ok[lo : hi + 1] = True
    edges = np.flatnonzero(np.diff(np.concatenate([[False], ok, [False]]).astype(np.int8)))
    esc = re.escape
    return "".join(esc(chr(lo)) if lo == hi - 1 else f"{esc(chr(lo))}-{esc(chr(hi - 1))}"
                   for lo, hi in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def python_pattern(token_pattern: str) -> str:
    r"""The token pattern for Python's ``re`` with every ``\w`` replaced by Java's ``(?U)\w`` class."""
    if "\\w" not in token_pattern:
        return token_pattern
    body = java_word_class()
    out: list[str] = []
    i, in_class = 0, False
    while i < len(token_pattern):
        c = token_pattern[i]
        if c == "\\" and i + 1 < len(token_pattern):
            pair = token_pattern[i : i + 2]
            out.append((body if in_class else f"[{body}]") if pair == "\\w" else pair)
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
        elif c == "]" and in_class:
            in_class = False
        out.append(c)
        i += 1
    return "".join(out)


def java_pattern(token_pattern: str) -> str:
    r"""The token pattern for Spark's (Java) tokenizer: Unicode classes on, so ``\w`` is not ASCII-only."""
    return "(?U)" + token_pattern


def _trailing_cut(token: str) -> tuple[str, ...]:
    """'libssl3' -> ('libssl', '3'): non-digits then digits to the end; any other token whole."""
    m = TRAILING_DIGITS.match(token)
    return (m.group(1), m.group(2)) if m else (token,)


def utf16_len(token: str) -> int:
    """Java's String.length (UTF-16 units), which Spark's minimum token length counts."""
    return len(token) + sum(1 for ch in token if ord(ch) > 0xFFFF)


@dataclass
class TextVectorizer:
    """Vocabulary, IDF and the tokenizer settings they were fitted with."""

    vocab: list[str]
    idf: np.ndarray
    lowercase: bool = True
    token_pattern: str = r"\w+"
    min_token_length: int = 2
    stop_words: tuple[str, ...] = ()
    split_digits: str = "none"
    """'trailing' (a trailing number cut off), 'all' (every run of digits and of the rest) or 'none'
    (absent in files saved before it)."""
    stemmer: str = "none"
    """Snowball language of the stems the vocabulary holds ('none': tokens as they are; a vectorizer
    saved before stemming existed has no such field and loads as 'none')."""
    ngram_max: int = 1
    prefix_length: int = 0
    """k > 0: each token longer than k characters adds the term PREFIX_MARK + its first k characters
    (0 in files saved before prefixes existed)."""
    sublinear_tf: bool = True
    l2_normalize: bool = True
    n_docs: int = 0
    encoder: TextEncoder | None = None
    """A frozen pretrained text encoder whose embedding follows the TF-IDF columns, or None."""
    encoder_weight: float = 1.0
    """Weight of the (unit) embedding against the (unit) TF-IDF part before the row is re-normalised."""
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.idf = np.asarray(self.idf, dtype=np.float64)
        k = self.prefix_length
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise BundleError(f"vectorizer: prefix_length={self.prefix_length!r}; use an integer >= 0")
        if self.split_digits not in ("none", "trailing", "all"):
            raise BundleError(f"vectorizer: split_digits={self.split_digits!r}; use none, trailing or all")
        if self.idf.shape != (len(self.vocab),):
            raise BundleError(f"vectorizer: {len(self.vocab)} terms but {self.idf.shape} idf values")
        self._index = {term: j for j, term in enumerate(self.vocab)}
        if len(self._index) != len(self.vocab):
            raise BundleError("vectorizer: the vocabulary repeats a term")
        self._regex = re.compile(python_pattern(self.token_pattern))
        self._stop = frozenset(w.lower() for w in self.stop_words)
        if self.stemmer != "none":
            try:
                stemmer_class(self.stemmer)
            except ValueError as e:
                raise BundleError(f"vectorizer: {e}") from None

    @property
    def n_terms(self) -> int:
        """Columns of the TF-IDF part (the vocabulary)."""
        return len(self.vocab)

    @property
    def n_features(self) -> int:
        """Columns of a row: the vocabulary, then the encoder's embedding."""
        return len(self.vocab) + (self.encoder.dim if self.encoder is not None else 0)

    def tokens(self, text: str) -> list[str]:
        """Tokens after lowercasing, the length filter, the cut at digits, stop-word removal and
        stemming (Spark's order)."""
        if self.lowercase:
            text = text.lower()
        m = self.min_token_length
        toks = [t for t in self._regex.findall(text) if len(t) >= m or utf16_len(t) >= m]
        if self.split_digits == "all":
            toks = [piece for t in toks for piece in DIGIT_RUNS.findall(t)]
        elif self.split_digits == "trailing":
            toks = [piece for t in toks for piece in _trailing_cut(t)]
        if self._stop:
            toks = [t for t in toks if t.lower() not in self._stop]
        return stem_tokens(toks, self.stemmer)

    def terms(self, text: str) -> list[str]:
        """Tokens, then adjacent pairs joined by a space when ngram_max = 2 (Spark's NGram), then the
        prefixes of the tokens longer than ``prefix_length`` when it is above 0."""
        toks = self.tokens(text)
        out = toks
        if self.ngram_max == 2:
            out = toks + [f"{a} {b}" for a, b in zip(toks, toks[1:], strict=False)]
        if (k := self.prefix_length) > 0:
            out = out + [PREFIX_MARK + t[:k] for t in toks if len(t) > k]
        return out

    def transform(self, texts: Iterable[str]) -> sp.csr_matrix:
        """(N x n_features) float32 CSR; terms outside the vocabulary are ignored."""
        if self.encoder is None:
            return self.tfidf(texts)
        texts = list(texts)
        return with_embedding(self.tfidf(texts), self.encoder.encode(texts), self.encoder_weight,
                              self.l2_normalize)

    def tfidf(self, texts: Iterable[str]) -> sp.csr_matrix:
        """(N x n_terms) float32 CSR of the TF-IDF part."""
        indptr = [0]
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        index = self._index
        for text in texts:
            counts = Counter(c for t in self.terms(text) if (c := index.get(t)) is not None)
            if counts:
                j = np.fromiter(sorted(counts), dtype=np.int64, count=len(counts))
                tf = np.array([counts[k] for k in j.tolist()], dtype=np.float64)
                v = (1.0 + np.log(tf) if self.sublinear_tf else tf) * self.idf[j]
                if self.l2_normalize:
                    v = v / np.sqrt(np.sum(v * v))
                cols.append(j)
                vals.append(v)
            indptr.append(indptr[-1] + len(counts))
        n = len(indptr) - 1
        col = np.concatenate(cols).astype(np.int32) if cols else np.zeros(0, np.int32)
        val = np.concatenate(vals).astype(np.float32) if vals else np.zeros(0, np.float32)
        return sp.csr_matrix((val, col, np.asarray(indptr, np.int64)), shape=(n, self.n_terms))

    def config(self) -> dict[str, Any]:
        return {"lowercase": self.lowercase, "token_pattern": self.token_pattern,
                "min_token_length": self.min_token_length, "stop_words": list(self.stop_words),
                "split_digits": self.split_digits, "stemmer": self.stemmer, "ngram_max": self.ngram_max,
                "prefix_length": self.prefix_length, "sublinear_tf": self.sublinear_tf,
                "l2_normalize": self.l2_normalize, "n_docs": self.n_docs}

    def save(self, folder: str | Path) -> None:
        """``vectorizer.json`` (settings), ``vocab.json`` (terms by index), ``idf.npz``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        # n_features here counts the terms (vocab.json); an encoder's columns follow them
        meta = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "n_features": self.n_terms,
                "idf": "ln((1 + n_docs) / (1 + df)) + 1", **self.config()}
        if self.stemmer != "none":  # the stems a vocabulary holds are those of this version
            meta["stemmer_version"] = stemmer_version()
        if self.stemmer != "none" or self.split_digits != "none":
            # an xmc from before these would load this, ignore them and miss every stemmed or cut
            # term quietly: version 2 makes it refuse the file instead
            meta["schema_version"] = STEMMED_SCHEMA_VERSION
        if self.prefix_length > 0:  # likewise for the prefix terms
            meta["schema_version"] = PREFIX_SCHEMA_VERSION
        if self.encoder is not None:
            meta["text_encoder"] = {"folder": ENCODER_DIR, "dim": self.encoder.dim,
                                    "weight": self.encoder_weight}
            self.encoder.save(folder / ENCODER_DIR)
        (folder / "vectorizer.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        (folder / "vocab.json").write_text(json.dumps(self.vocab, ensure_ascii=False))
        np.savez(folder / "idf.npz", idf=self.idf)

    @classmethod
    def load(cls, folder: str | Path) -> TextVectorizer:
        folder = Path(folder)
        try:
            meta = json.loads((folder / "vectorizer.json").read_text())
            vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
            with np.load(folder / "idf.npz", allow_pickle=False) as z:
                idf = z["idf"]
        except FileNotFoundError as e:
            raise BundleError(f"{folder}: no fitted vectorizer here ({Path(e.filename).name} missing); "
                              "train from a text bundle made by `xmc featurize`") from None
        except Exception as e:  # json, zipfile, zlib and numpy raise their own types on a bad file
            raise BundleError(f"{folder}: unreadable vectorizer ({type(e).__name__}: {e})") from None
        if (not isinstance(meta, dict) or meta.get("format") != FORMAT
                or meta.get("schema_version") not in (SCHEMA_VERSION, STEMMED_SCHEMA_VERSION,
                                                      PREFIX_SCHEMA_VERSION)):
            raise BundleError(f"{folder}/vectorizer.json: not an {FORMAT} v{SCHEMA_VERSION} to "
                              f"v{PREFIX_SCHEMA_VERSION} file")
        if not isinstance(vocab, list) or len(vocab) != meta.get("n_features"):
            raise BundleError(f"{folder}/vocab.json: expected a list of {meta.get('n_features')} terms")
        if idf.ndim != 1 or not np.issubdtype(idf.dtype, np.floating) or not np.all(np.isfinite(idf)):
            raise BundleError(f"{folder}/idf.npz: idf must be a vector of finite numbers")
        keys = ("lowercase", "token_pattern", "min_token_length", "ngram_max", "sublinear_tf",
                "l2_normalize", "n_docs")
        try:
            vectorizer = cls(vocab, idf, stop_words=tuple(meta["stop_words"]),
                             stemmer=meta.get("stemmer", "none"),
                             split_digits=str(meta.get("split_digits", "none")),
                             prefix_length=meta.get("prefix_length", 0), **{k: meta[k] for k in keys})
            _check_stemmer_version(folder, vectorizer.stemmer, meta.get("stemmer_version"))
            if "text_encoder" in meta:
                vectorizer.encoder = TextEncoder.load(folder / ENCODER_DIR)
                vectorizer.encoder_weight = float(meta["text_encoder"]["weight"])
                if vectorizer.encoder.dim != meta["text_encoder"]["dim"]:
                    raise BundleError(f"{folder}: the text encoder is {vectorizer.encoder.dim} wide, "
                                      f"vectorizer.json says {meta['text_encoder']['dim']}")
            return vectorizer
        except BundleError:
            raise
        except Exception as e:  # a field missing or of the wrong type, a token pattern that does not compile
            raise BundleError(f"{folder}/vectorizer.json: bad field ({type(e).__name__}: {e})") from None


def _check_stemmer_version(folder: Path, stemmer: str, saved: str | None) -> None:
    """Warn when the installed Snowball stemmers differ from those that made the vocabulary: a word
    whose stem changed between versions no longer finds its column, so predictions drift quietly."""
    if stemmer == "none" or saved is None:
        return
    installed = stemmer_version()
    if installed != saved:
        log.warning(f"{folder}: the vocabulary was stemmed by snowballstemmer {saved}, this is {installed}; "
                    "some words may miss their terms (pip install snowballstemmer=={saved}, or re-featurize)")


def with_embedding(X: sp.csr_matrix, E: np.ndarray, weight: float, l2_normalize: bool) -> sp.csr_matrix:
    """[X, weight * E] row by row, each row divided by its norm when ``l2_normalize`` (Spark's
    ``xmc.engines.spark.text.with_embedding`` computes the same)."""
    X = sp.csr_matrix(X, dtype=np.float32)
    scale = np.ones(X.shape[0])
    if l2_normalize:
        sq = np.asarray(X.multiply(X).sum(axis=1), dtype=np.float64).ravel()
        scale = 1.0 / np.sqrt(sq + weight * weight * np.sum(np.asarray(E, np.float64) ** 2, axis=1))
    left = sp.diags(scale) @ X
    right = sp.csr_matrix((weight * scale)[:, None] * E)
    return sp.csr_matrix(sp.hstack([left, right], format="csr"), dtype=np.float32)
