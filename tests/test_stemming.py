"""Stemming in the text transform: the languages offered, the predict-time vectorizer's stems and pairs,
what a saved vectorizer records, and bad settings. Spark's side is checked against Snowball in
tests/test_featurize.py (the featurized rows equal a reference built from Snowball's own stems)."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import snowballstemmer

from xmc.engines.spark.params import STEMMERS, FeaturizeParams
from xmc.errors import BundleError, ParamError
from xmc.io import stems
from xmc.io.stems import stem_tokens, stemmer_class
from xmc.io.vectorizer import PREFIX_MARK, TextVectorizer


def test_the_languages_offered_are_snowballs() -> None:
    assert set(STEMMERS) == {"none", *snowballstemmer.algorithms()}
    assert FeaturizeParams().stemmer in STEMMERS
    with pytest.raises(ParamError, match="stemmer='klingon'.*english"):
        FeaturizeParams(stemmer="klingon")


def test_every_language_loads_snowballs_pure_python_stemmer() -> None:
    """By class, never through snowballstemmer.stemmer(), which hands out PyStemmer's C stemmers
    wherever PyStemmer is installed (not the version the vocabulary records)."""
    for language in STEMMERS[1:]:
        cls = stemmer_class(language)
        assert cls.__module__ == f"snowballstemmer.{language}_stemmer", language
        assert stem_tokens(["tokens"], language)[0]  # every language stems a word
    for bad in ("klingon", "English", "../english", "english_", ""):
        with pytest.raises(ValueError, match="no Snowball stemmer.*english"):
            stemmer_class(bad)


def test_the_cache_of_stems_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Spark worker stems a whole corpus: its memory must not grow with the vocabulary."""
    monkeypatch.setattr(stems, "STEMS_MAX", 50)
    reference = stemmer_class("english")()
    for k in range(20):
        words = [f"walk{k}x{i}ing" for i in range(10)]
        assert stem_tokens(words, "english") == [reference.stemWord(w) for w in words]
        assert len(stems._STEMS) <= 50 + 10


def test_stems_merge_word_forms_and_pairs_are_made_of_stems() -> None:
    vec = TextVectorizer(["librari", "python", "python librari"], np.ones(3), stemmer="english", ngram_max=2)
    assert vec.terms("Python libraries") == ["python", "librari", "python librari"]
    X = vec.transform(["Python libraries", "a python library", "python"])
    assert np.allclose(X[0].toarray(), X[1].toarray()) and X[0].nnz == 3  # the same terms either way
    assert X[2].nnz == 1
    plain = TextVectorizer(["libraries", "python"], np.ones(2), ngram_max=2)  # 'none': tokens as they are
    assert plain.terms("Python libraries") == ["python", "libraries", "python libraries"]
    assert stem_tokens(["running", "runs"], "none") == ["running", "runs"]
    assert stem_tokens(["corriendo", "corre"], "spanish") == snowballstemmer.stemmer("spanish").stemWords(
        ["corriendo", "corre"])


def test_tokens_are_cut_at_digits(tmp_path: Path) -> None:
    """A name and its version number become two terms (Unicode digits too), before stems and pairs:
    'trailing' cuts only a trailing number, 'all' every run of digits."""
    def vec(mode: str) -> TextVectorizer:
        return TextVectorizer(["python", "3"], np.ones(2), split_digits=mode, stemmer="english", ngram_max=2,
                              min_token_length=1)

    text = "Python3 libraries2 2captcha x86_64 x٣ ab12cd"
    assert vec("trailing").tokens(text) == ["python", "3", "librari", "2", "2captcha", "x86_64", "x", "٣",
                                            "ab12cd"]
    assert vec("all").tokens(text) == ["python", "3", "librari", "2", "2", "captcha", "x", "86", "_", "64",
                                       "x", "٣", "ab", "12", "cd"]
    assert vec("none").tokens(text)[:2] == ["python3", "libraries2"]
    assert vec("trailing").terms("python3") == ["python", "3", "python 3"]
    vec("trailing").save(tmp_path / "v")
    meta = json.loads((tmp_path / "v" / "vectorizer.json").read_text())
    assert meta["split_digits"] == "trailing" and meta["schema_version"] == 2
    assert TextVectorizer.load(tmp_path / "v").transform(["python3"]).nnz == 2
    TextVectorizer(["x"], np.ones(1), split_digits="all").save(tmp_path / "cut")  # cut, not stemmed: v2 too
    assert json.loads((tmp_path / "cut" / "vectorizer.json").read_text())["schema_version"] == 2
    old = {k: v for k, v in meta.items() if k not in ("split_digits", "stemmer", "stemmer_version")}
    (tmp_path / "v" / "vectorizer.json").write_text(json.dumps({**old, "schema_version": 1}))
    assert TextVectorizer.load(tmp_path / "v").split_digits == "none"  # saved before the cut existed
    with pytest.raises(BundleError, match="split_digits='some'"):
        TextVectorizer([], np.zeros(0), split_digits="some")
    with pytest.raises(ParamError, match="split_digits='some'"):
        FeaturizeParams(split_digits="some")


def test_threads_get_the_same_stems() -> None:
    """A Snowball stemmer keeps its word in its own state: threads stemming at once (as a thread pool
    transforming batches does) must each have their own, or words get each other's endings. Each
    thread stems words no other thread has, so the shared cache of stems does not hide a clash."""
    bases = ("connect", "organis", "nation", "librar", "general", "happ", "relat", "condition")
    endings = ("ing", "ed", "ies", "s", "ation", "ational", "fulness", "ously", "ization", "iveness")
    words = [f"{b}{e}{'x' * r}{e}" for b in bases for e in endings for r in range(40)]
    want = snowballstemmer.stemmer("english").stemWords(words)
    start = threading.Barrier(4)
    got: dict[int, list[str]] = {}

    def work(k: int) -> None:
        mine = [f"q{k}{w}" for w in words]  # a prefix of its own: every word a cache miss
        start.wait()
        got[k] = stem_tokens(mine, "english")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        assert [g.removeprefix(f"q{k}") for g in got[k]] == want


def test_saved_vectorizer_keeps_its_stemmer_and_version(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    vec = TextVectorizer(["librari"], np.ones(1), stemmer="english")
    vec.save(tmp_path / "v")
    meta = json.loads((tmp_path / "v" / "vectorizer.json").read_text())
    installed = importlib.metadata.version("snowballstemmer")
    assert meta["stemmer"] == "english" and meta["stemmer_version"] == installed
    assert meta["schema_version"] == 2  # an xmc from before stemming refuses it rather than not stem
    TextVectorizer(["x"], np.ones(1)).save(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "vectorizer.json").read_text())["schema_version"] == 1
    assert TextVectorizer.load(tmp_path / "v").transform(["libraries"]).nnz == 1
    # a vocabulary stemmed by another version of the stemmers: loads, with a warning that says so
    (tmp_path / "v" / "vectorizer.json").write_text(json.dumps({**meta, "stemmer_version": "0.1"}))
    with caplog.at_level(logging.WARNING, logger="xmc.vectorizer"):
        TextVectorizer.load(tmp_path / "v")
    assert "snowballstemmer 0.1" in caplog.text and "re-featurize" in caplog.text
    # a vectorizer saved before stemming existed has no such field: its tokens stay as they are
    old = {k: v for k, v in meta.items() if k not in ("stemmer", "stemmer_version")}
    (tmp_path / "v" / "vectorizer.json").write_text(json.dumps(old))
    assert TextVectorizer.load(tmp_path / "v").stemmer == "none"
    (tmp_path / "v" / "vectorizer.json").write_text(json.dumps({**meta, "stemmer": "klingon"}))
    with pytest.raises(BundleError, match="no Snowball stemmer for 'klingon'"):
        TextVectorizer.load(tmp_path / "v")


def test_token_prefixes_are_terms_of_their_own(tmp_path: Path) -> None:
    """Each token (after the cut at digits and the stems) longer than k adds '<' and its first k
    characters, counted by code point; pairs stay pairs of whole tokens. A saved vectorizer with
    prefixes is schema 3 (an older reader would make none of those terms), and one saved before them
    loads with none."""
    vec = TextVectorizer(["libxml", "<lib", "<pyt"], np.ones(3), split_digits="trailing", stemmer="english",
                         ngram_max=2, prefix_length=3)
    assert vec.terms("libxml2 Python libgtk ab") == [
        "libxml", "2", "python", "libgtk", "ab", "libxml 2", "2 python", "python libgtk", "libgtk ab",
        "<lib", "<pyt", "<lib"]
    # 'lib' is not longer than 3; the accent is a code point of its own
    assert vec.terms("lib café\u0301") == ["lib", "café\u0301", "lib café\u0301", "<caf"]
    X = vec.transform(["libxml2 libgtk", "pytest"])
    assert X[0].nnz == 2 and X[1].nnz == 1  # 'libxml' and '<lib' (tf 2); a word never seen meets '<pyt'
    assert TextVectorizer(["a"], np.ones(1), prefix_length=0).terms("library") == ["library"]
    vec.save(tmp_path / "v")
    meta = json.loads((tmp_path / "v" / "vectorizer.json").read_text())
    assert meta["prefix_length"] == 3 and meta["schema_version"] == 3
    back = TextVectorizer.load(tmp_path / "v")
    assert back.prefix_length == 3 and abs(back.transform(["libxml2 libgtk"]) - X[0]).max() == 0
    old = {k: v for k, v in meta.items() if k != "prefix_length"}
    (tmp_path / "v" / "vectorizer.json").write_text(json.dumps({**old, "schema_version": 2}))
    assert TextVectorizer.load(tmp_path / "v").prefix_length == 0  # saved before prefixes existed
    (tmp_path / "v" / "vectorizer.json").write_text(json.dumps({**meta, "prefix_length": -1}))
    with pytest.raises(BundleError, match="prefix_length=-1"):
        TextVectorizer.load(tmp_path / "v")
    (tmp_path / "v" / "vectorizer.json").write_text(json.dumps({**meta, "schema_version": 4}))
    with pytest.raises(BundleError, match="v1 to v3"):
        TextVectorizer.load(tmp_path / "v")
    with pytest.raises(ParamError, match="prefix_length=-2"):
        FeaturizeParams(prefix_length=-2)
    # a token pattern that can make the word '<lib' would merge it with the prefix term (the params
    # check names the mark by hand)
    assert PREFIX_MARK == "<"
    with pytest.raises(ParamError, match=r"tokens that hold '<'.*prefix_length 0"):
        FeaturizeParams(token_pattern=r"\S+")
    assert FeaturizeParams(token_pattern=r"\S+", prefix_length=0).token_pattern == r"\S+"
