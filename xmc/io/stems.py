"""Snowball stems of tokens: the one function both Spark's executors and prediction call.

This module imports nothing beyond the standard library until it stems, so a Spark executor
that runs the featurizer's stemming step needs only snowballstemmer (and the pandas and pyarrow
every pandas UDF needs), not numpy or scipy. The pure-Python stemmer classes are loaded by name:
``snowballstemmer.stemmer()`` would hand back PyStemmer's C stemmers wherever PyStemmer happens
to be installed, whose version is not the one the vocabulary records.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import threading
from typing import Any

STEMS_MAX = 200_000
"""Stems kept per process (about 40 MB): a corpus repeats its tokens, and pure-Python stemming is the
expensive part of a document's terms; past this many the cache starts again, so a Spark worker's
memory stays set by configuration, not by the corpus' vocabulary."""

_STEMS: dict[tuple[str, str], str] = {}
_LOCAL = threading.local()


def stemmer_class(language: str) -> Any:
    """The pure-Python Snowball stemmer class of ``language`` ('english' -> EnglishStemmer); a
    ValueError names the languages there are."""
    module = None
    if language.replace("_", "").isalpha() and language == language.lower():
        try:
            module = importlib.import_module(f"snowballstemmer.{language}_stemmer")
        except ModuleNotFoundError:
            pass
    name = "".join(part.capitalize() for part in language.split("_")) + "Stemmer"
    if module is None or not hasattr(module, name):
        import snowballstemmer

        known = ", ".join(snowballstemmer.algorithms())
        raise ValueError(f"no Snowball stemmer for {language!r}; known: none, {known}")
    return getattr(module, name)


def stemmer_version() -> str:
    """The installed snowballstemmer's version: a vocabulary of stems is valid under it alone."""
    return importlib.metadata.version("snowballstemmer")


def stem_tokens(tokens: list[str], language: str) -> list[str]:
    """Each token's Snowball stem in ``language`` ('none': the tokens unchanged).

    A stemmer object keeps its word in its own state, so each thread has its own."""
    if language == "none":
        return tokens
    stemmers = _LOCAL.__dict__.setdefault("stemmers", {})
    stemmer = stemmers.get(language)
    if stemmer is None:
        stemmer = stemmers[language] = stemmer_class(language)()
    if len(_STEMS) > STEMS_MAX:
        _STEMS.clear()
    out = []
    for token in tokens:
        stem = _STEMS.get((language, token))
        if stem is None:
            stem = _STEMS[(language, token)] = stemmer.stemWord(token)
        out.append(stem)
    return out
