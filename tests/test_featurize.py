"""Spark featurization on the real local Spark: equivalence with numpy references, bad input,
XC input, and the CLI path featurize -> train --data -> predict --input.

One session-scoped SparkSession (local[2], two shuffle partitions; tests/conftest.py) serves every test here.
"""

from __future__ import annotations

import json
import re
import sys
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
import snowballstemmer

from tests.conftest import BIBTEX
from xmc.core.model import XMCModel
from xmc.engines.spark.params import FeaturizeParams
from xmc.errors import BundleError, DataFormatError, ParamError
from xmc.io.features import (
    label_frequencies,
    load_cooccurrence,
    load_label_names,
    load_pifa,
    load_split,
    read_manifest,
)
from xmc.io.readers import LabelVocab, read_records, read_xc, write_jsonl
from xmc.io.vectorizer import TextVectorizer, python_pattern, utf16_len
from xmc.research.synth import SynthSpec, write


def _featurize(spark: Any, inputs: list[Path], out: Path, **params: Any) -> dict[str, Any]:
    """The notebook way in: the function, on the session the caller owns."""
    from xmc.engines.spark.featurize import featurize

    return featurize(spark, inputs, out, FeaturizeParams(**params))


UNICODE_DOCS = [  # words Python's \w would cut differently from Java's (?U)\w; u2 lands in the test split
    {"id": "u1", "text": "Hindi हिन्दी भाषा, café naïve; ΟΔΟΣ x_y 42 ½ cafe\u0301 connected libssl3 ٣ab",
     "labels": ["lang"]},
    {"id": "u5", "text": "हिन्दी भाषा again: CAFÉ naïve ΟΔΟΣ cafe\u0301 x_y 42 Connecting libssl1 ab٣",
     "labels": ["lang", "misc"]},
    {"id": "u6", "text": "more हिन्दी and ΟΔΟΣ with cafe\u0301 naïve x_y connects", "labels": ["lang"]},
    {"id": "u2", "text": "हिन्दी x_y cafe\u0301 ΟΔΟΣ in the test split", "labels": ["lang"]},
    {"id": "u3", "text": "?! ... -- !!", "labels": ["misc"]},  # no token: an empty row, kept
    {"id": "u4", "text": "The and of a an to in is it THE", "labels": ["misc"]},  # stop words only
]


def _spark_tokens(spark: Any, texts: list[str]) -> list[list[str]]:
    """Tokens as Spark ML's tokenizer cuts them (the reference starts from the same tokens)."""
    from pyspark.ml.feature import RegexTokenizer

    df = spark.createDataFrame(list(enumerate(texts)), "i int, text string")
    tok = RegexTokenizer(inputCol="text", outputCol="tok", pattern=r"(?U)\w+", gaps=False,
                         minTokenLength=FeaturizeParams().min_token_length)
    return [list(r["tok"]) for r in tok.transform(df).orderBy("i").collect()]


def _reference_tfidf(
    terms: list[list[str]], train: np.ndarray, min_df: int, max_features: int
) -> tuple[list[str], np.ndarray, sp.csr_matrix]:
    """Vocabulary (df desc, term), smooth idf, sublinear tf, L2 rows: numpy, from the terms."""
    df = Counter(t for doc, is_train in zip(terms, train, strict=True) if is_train for t in set(doc))
    vocab = sorted((t for t, c in df.items() if c >= min_df), key=lambda t: (-df[t], t))[:max_features]
    index = {t: j for j, t in enumerate(vocab)}
    n = int(train.sum())
    idf = np.log((1.0 + n) / (1.0 + np.array([df[t] for t in vocab], float))) + 1.0
    X = np.zeros((len(terms), len(vocab)))
    for i, doc in enumerate(terms):
        for t, c in Counter(t for t in doc if t in index).items():
            X[i, index[t]] = (1.0 + np.log(c)) * idf[index[t]]
        norm = np.linalg.norm(X[i])
        X[i] /= norm if norm > 0 else 1.0
    return vocab, idf, sp.csr_matrix(X)


def _synth_records(
    tmp: Path, spec: SynthSpec, n_train: int, n_test: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train and test records ``{id, text, labels}`` of an ``xmc synth`` world."""
    write(spec, tmp / "synth", n_train, n_test, "jsonl")
    return tuple(  # type: ignore[return-value]
        [json.loads(line) for line in (tmp / "synth" / f"{split}.jsonl").read_text().splitlines()]
        for split in ("train", "test"))


MAX_FEATURES = 600  # below the ~900 terms with df >= 2, above those with df >= 3 (the Unicode words)


@pytest.fixture(scope="module")
def text_bundle(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One `xmc featurize` run: a learnable synthetic corpus (xmc.research.synth) plus Unicode edge cases,
    25% test split by id hash, bigrams, English stop words, a truncated vocabulary (and the other
    defaults: stems, trailing numbers cut off); held-out records of the same world beside it."""
    from xmc.cli import main

    tmp = tmp_path_factory.mktemp("text")
    records, heldout = _synth_records(tmp, SynthSpec(n_labels=20, n_features=400, seed=3), 300, 100)
    records += UNICODE_DOCS
    write_jsonl(tmp / "corpus.jsonl", records)
    write_jsonl(tmp / "heldout.jsonl", [{"id": r["id"], "text": r["text"]} for r in heldout])
    assert main(["featurize", "--input", str(tmp / "corpus.jsonl"), "--out", str(tmp / "bundle"),
                 "--ngram-max", "2", "--stop-words", "english", "--min-df", "2",
                 "--max-features", str(MAX_FEATURES), "--test-fraction", "0.25", "--cooc-topk", "3"]) == 0
    return {"tmp": tmp, "bundle": tmp / "bundle", "records": records, "heldout": heldout}


def test_tfidf_labels_pifa_equal_numpy_reference(spark: Any, text_bundle: dict[str, Any]) -> None:
    from pyspark.ml.feature import StopWordsRemover

    bundle, records = text_bundle["bundle"], text_bundle["records"]
    manifest = read_manifest(bundle)
    # reference: Spark's tokens -> a trailing number cut off (the default) -> stop words -> Snowball's
    # English stems (the default; called here directly, not through xmc) -> bigrams -> numpy TF-IDF;
    # split by crc32 of the id
    stop = set(StopWordsRemover.loadDefaultStopWords("english"))
    stemmer = snowballstemmer.stemmer("english")
    k = FeaturizeParams().prefix_length  # the default: the stems' first k code points, '<' first
    terms = []
    for toks in _spark_tokens(spark, [str(r["text"]) for r in records]):
        cuts = [re.match(r"^(\D+?)(\d+)$", t) for t in toks]  # '٣' is a digit (Nd) to both
        pieces = [p for t, m in zip(toks, cuts, strict=True) for p in (m.groups() if m else (t,))]
        kept = stemmer.stemWords([t for t in pieces if t not in stop])
        terms.append(kept + [f"{a} {b}" for a, b in zip(kept, kept[1:], strict=False)]
                     + [f"<{t[:k]}" for t in kept if len(t) > k])
    test = np.array([zlib.crc32(str(r["id"]).encode()) % 10_000 < 2_500 for r in records])
    df_train = Counter(t for doc, te in zip(terms, test, strict=True) if not te for t in set(doc))
    assert sum(c >= 2 for c in df_train.values()) > MAX_FEATURES  # max_features really truncates
    vocab, idf, X_ref = _reference_tfidf(terms, ~test, min_df=2, max_features=MAX_FEATURES)

    vec = TextVectorizer.load(bundle / "vectorizer")
    assert vec.vocab == vocab
    assert {"हिन्दी", "cafe\u0301", "οδος", "connect", stemmer.stemWord("x_y")} <= set(vocab)
    assert not {"connected", "connecting", "connects", "x_y"} & set(vocab)  # Spark stemmed them
    # and cut at digits: the synthetic words w0..w399 are 'w' and a number to Spark as to the reference
    assert {"w", "42"} <= set(vocab) and not [t for t in vocab if re.fullmatch(r"w\d+", t)]
    assert {"<con", "<हिन", "<caf"} <= set(vocab)  # prefixes: a Devanagari one, one before a combining mark
    np.testing.assert_allclose(vec.idf, idf, rtol=1e-12)
    names = LabelVocab.build(read_records(text_bundle["tmp"] / "corpus.jsonl")[i]
                             for i in np.flatnonzero(~test)).names
    assert load_label_names(bundle) == names
    for split, mask in (("train", ~test), ("test", test)):
        got = load_split(bundle, split)
        assert got.doc_ids == [str(r["id"]) for r, m in zip(records, mask, strict=True) if m]
        ref = X_ref[np.flatnonzero(mask)]
        assert got.X.shape == ref.shape and (abs(got.X - ref) > 1e-5).nnz == 0
        assert ((got.X != 0) != (ref != 0)).nnz == 0  # same sparsity pattern
        # the predict-time vectorizer (pure Python tokenizer) gives Spark's rows, Unicode included
        texts = [str(r["text"]) for r, m in zip(records, mask, strict=True) if m]
        assert abs(vec.transform(texts) - got.X).max() < 1e-6
        Y_ref = np.array([[name in r["labels"] for name in names]  # type: ignore[operator]
                          for r, m in zip(records, mask, strict=True) if m], np.float32)
        assert np.array_equal(got.Y.toarray(), Y_ref)
        assert manifest["splits"][split]["rows"] == mask.sum()
    empty = int((np.diff(X_ref[np.flatnonzero(~test)].indptr) == 0).sum())
    assert manifest["splits"]["train"]["empty_rows"] == empty >= 2  # u3 (no token), u4 (stop words only)

    # label statistics, co-occurrence top-k and PIFA, against dense numpy on the train split
    train = load_split(bundle, "train")
    Y, X = train.Y.toarray().astype(float), train.X.toarray().astype(float)
    assert np.array_equal(label_frequencies(bundle), Y.sum(axis=0))
    C = Y.T @ Y
    np.fill_diagonal(C, 0)
    expected = np.zeros_like(C)
    for label in range(len(C)):
        top = sorted(np.flatnonzero(C[label]), key=lambda j: (-C[label, j], j))[:3]
        expected[label, top] = C[label, top]
    assert np.array_equal(load_cooccurrence(bundle).toarray(), expected)
    Z = Y.T @ X
    Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-300)
    from xmc.core.tree import pifa

    assert np.abs(load_pifa(bundle).toarray() - Z).max() < 1e-5
    assert abs(load_pifa(bundle) - pifa(train.X, train.Y)).max() < 1e-5
    assert manifest["input"]["sha256"] and manifest["bad_records"]["total"] == 0
    assert manifest["params"]["ngram_max"] == 2 and manifest["spark"]["master"] == "local[2]"


def test_train_on_bundle_predict_raw_text(text_bundle: dict[str, Any], capsys: Any) -> None:
    """`xmc train --data` then `xmc predict --input` on raw text; the bundle's CSR equals the
    same features built in memory, so the model's precision equals the in-memory model's."""
    from xmc.cli import main
    from xmc.core.fit import fit
    from xmc.core.metrics import evaluate
    from xmc.core.model import XMCModel
    from xmc.params import XMCParams

    tmp, bundle, heldout = text_bundle["tmp"], text_bundle["bundle"], text_bundle["heldout"]
    assert main(["train", "--data", str(bundle), "--model", str(tmp / "m"),
                 "--max-leaf-size", "8", "--rounds", "0"]) == 0
    assert main(["predict", "--model", str(tmp / "m"), "--input", str(tmp / "heldout.jsonl"),
                 "--topk", "5", "--out", str(tmp / "preds.jsonl")]) == 0
    capsys.readouterr()

    vec = TextVectorizer.load(tmp / "m" / "vectorizer")
    train = load_split(bundle)
    texts = {str(r["id"]): str(r["text"]) for r in text_bundle["records"]}
    X_mem = vec.transform(texts[i] for i in train.doc_ids)
    assert train.X.shape == X_mem.shape and abs(train.X - X_mem).max() < 1e-6
    names = load_label_names(bundle) or []
    X_test = vec.transform(str(r["text"]) for r in heldout)
    Y_test = sp.csr_matrix([[1.0 if n in r["labels"] else 0.0 for n in names]  # type: ignore[operator]
                            for r in heldout], dtype=np.float32)
    params = XMCParams().replace(max_leaf_size=8, rounds=0)
    p_mem = evaluate(Y_test, fit(X_mem, train.Y, params).predict(X_test, topk=5), (1, 3, 5))
    p_bundle = evaluate(Y_test, XMCModel.load(tmp / "m").predict(X_test, topk=5), (1, 3, 5))
    assert all(abs(p_mem[k] - p_bundle[k]) < 1e-9 for k in ("P@1", "P@3", "P@5")), (p_mem, p_bundle)
    assert p_bundle["P@1"] > 40  # learnable: chance is about 9 (1.7 of 20 labels per document)

    preds = [json.loads(line) for line in (tmp / "preds.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == [r["id"] for r in heldout]
    assert all(len(p["labels"]) == 5 and p["scores"] == sorted(p["scores"], reverse=True) for p in preds)
    hits = np.mean([p["labels"][0] in r["labels"] for p, r in zip(preds, heldout, strict=True)])
    assert abs(100 * hits - p_bundle["P@1"]) < 1e-9
    manifest = json.loads((tmp / "m" / "manifest.json").read_text())
    assert "vectorizer/vocab.json" in manifest["files"]  # the vectorizer is checksummed with the model
    (tmp / "m" / "vectorizer" / "vocab.json").write_text("[]")
    with pytest.raises(BundleError, match="checksum mismatch"):
        XMCModel.load(tmp / "m")


BAD_LINES = [
    {"id": 1, "text": "first good record about apples", "labels": ["a"]},
    '{"id": 2, "text": "x", "labels": ["a"]',  # 2 malformed JSON
    {"text": "no id here", "labels": ["a"]},  # 3 missing id
    {"id": 4, "text": "   ", "labels": ["a"]},  # 4 empty text
    {"id": 5, "text": "fine text", "labels": [1, 2]},  # 5 non-string labels
    {"id": 1, "text": "same id again", "labels": ["a"]},  # 6 duplicate id
    "",  # 7 empty line
    "[1, 2]",  # 8 not an object
    {"id": True, "text": "bool id", "labels": ["a"]},  # 9
    {"id": 10, "text": 5, "labels": ["a"]},  # 10 text not a string
    {"id": 11, "text": "fine text", "labels": ["a", ""]},  # 11 empty label
    {"id": 12, "text": "second good record about apples", "labels": ["a", "b"]},
]


def test_bad_records_fail_clearly_or_are_skipped_and_reported(
    spark: Any, tmp_path: Path, capsys: Any
) -> None:
    from xmc.cli import main

    path = tmp_path / "bad.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in BAD_LINES))
    with pytest.raises(DataFormatError) as err:
        _featurize(spark, [path], tmp_path / "out", min_df=1)
    msg = str(err.value)
    assert msg.startswith(f"{path}:2: malformed JSON") and "10 bad record(s)" in msg and "--skip-bad" in msg
    for needle in (":3: [id] missing field 'id'", ":4: [text] text is empty",
                   ":5: [labels] labels must be a list of strings, got array<bigint>",
                   ":6: [id] duplicate id '1' (first seen at bad.jsonl:1)"):
        assert needle in msg
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    assert main(["featurize", "--input", str(path), "--out", str(tmp_path / "out"), "--min-df", "1"]) == 2
    assert f"{path}:2: malformed JSON" in capsys.readouterr().err

    manifest = _featurize(spark, [path], tmp_path / "out", min_df=1, skip_bad=True, max_examples=20)
    report = manifest["bad_records"]
    assert report["total"] == 10 and report["by_kind"] == {
        "malformed_json": 1, "missing_field": 1, "empty_text": 1, "bad_type": 3, "duplicate_id": 1,
        "empty_line": 1, "not_object": 1, "bad_label": 1}
    assert [e["line"] for e in report["examples"]] == list(range(2, 12))
    assert "got boolean" in report["examples"][7]["message"]
    assert report["examples"][0]["record"].startswith('{"id": 2')
    assert load_split(tmp_path / "out").doc_ids == ["1", "12"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left

    pq.write_table(pa.table({"id": [1, 2], "text": ["a b", "c d"], "labels": [[1], [2]]}),
                   tmp_path / "t.parquet")
    with pytest.raises(DataFormatError, match=r"\[labels\] column labels has type array<bigint>"):
        _featurize(spark, [tmp_path / "t.parquet"], tmp_path / "p")
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["apple pie", None], "labels": [["x"], ["y"]]}),
                   tmp_path / "n.parquet")
    with pytest.raises(DataFormatError, match=r"n.parquet:2: \[text\] missing field 'text'"):
        _featurize(spark, [tmp_path / "n.parquet"], tmp_path / "p")
    with pytest.raises(DataFormatError, match="Spark cannot read the input"):
        _featurize(spark, [str(tmp_path / "none*.jsonl")], tmp_path / "p")


def test_invalid_utf8_and_empty_labels_are_bad_records(spark: Any, tmp_path: Path) -> None:
    """Spark keeps a line's raw bytes: invalid UTF-8 is flagged per line, as is ``"labels": []``
    (README: refused); a folder that is not a bundle is never replaced."""
    good = b'{"id": 1, "text": "apples and pears", "labels": ["a"]}\n'
    path = tmp_path / "c.jsonl"
    path.write_bytes(good + b'{"id": 2, "text": "caf\xe9 au lait", "labels": ["a"]}\n'
                     + b'{"id": 3, "text": "no labels", "labels": []}\n')
    with pytest.raises(DataFormatError) as err:
        _featurize(spark, [path], tmp_path / "out", min_df=1)
    msg = str(err.value)
    assert msg.startswith(f"{path}:2: not valid UTF-8 text") and ":3: [labels] labels is empty" in msg
    assert not (tmp_path / "out").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(ParamError, match="not a features bundle"):
        _featurize(spark, [path], tmp_path / "mine", min_df=1, skip_bad=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


def test_xc_bow_input_gives_the_in_memory_matrices(spark: Any, tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()  # an earlier bundle (ours: its manifest says so) with a stray file
    (tmp_path / "b" / "manifest.json").write_text('{"format": "xmc-features"}')
    (tmp_path / "b" / "stale.txt").write_text("from an earlier run")
    manifest = _featurize(spark, [BIBTEX / "bibtex_train.txt.gz"], tmp_path / "b")
    assert not (tmp_path / "b" / "stale.txt").exists()  # a re-run replaces the whole bundle
    X, Y = read_xc(BIBTEX / "bibtex_train.txt.gz")
    got = load_split(tmp_path / "b")
    assert (got.X != X).nnz == 0 and (got.Y != Y).nnz == 0 and got.doc_ids[:2] == ["0", "1"]
    assert manifest["normalization"] == "none" and load_label_names(tmp_path / "b") is None
    assert np.array_equal(label_frequencies(tmp_path / "b"), np.asarray(Y.sum(axis=0)).ravel())
    from xmc.core.tree import pifa

    assert abs(load_pifa(tmp_path / "b") - pifa(X, Y)).max() < 1e-5

    # an XC bundle has no names: `xmc train --data B --label-names FILE` gives the model the file's
    from xmc.cli.train import main as train

    base = ["--data", str(tmp_path / "b"), "--rounds", "0", "--max-leaf-size", "100"]
    named = [*base, "--model", str(tmp_path / "m"), "--label-names", str(BIBTEX / "label_names.txt")]
    assert train(named) == 0
    names = (BIBTEX / "label_names.txt").read_text().split()
    assert XMCModel.load(tmp_path / "m").label_names == names
    (tmp_path / "few.txt").write_text("a\nb\n")
    assert train([*base, "--model", str(tmp_path / "m2"), "--label-names", str(tmp_path / "few.txt")]) == 2

    (tmp_path / "bad.txt").write_text("3 3 2\n0 1:1\n1 9:1\n1,x 0:1\n")
    with pytest.raises(DataFormatError) as err:
        _featurize(spark, [tmp_path / "bad.txt"], tmp_path / "x", input_format="xc")
    assert str(err.value).startswith(f"{tmp_path / 'bad.txt'}:3: [features] feature 9 out of range [0, 3)")
    assert ":4: [labels] 'x' is not an integer" in str(err.value)


def test_params_and_vectorizer_without_spark(tmp_path: Path) -> None:
    with pytest.raises(ParamError, match="ngram_max=3 is invalid"):
        FeaturizeParams(ngram_max=3)
    with pytest.raises(ParamError, match="sum < 1"):
        FeaturizeParams(valid_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ParamError, match="wrong type"):
        FeaturizeParams().replace(min_df="2")
    from xmc.engines.spark.featurize import split_of

    p = FeaturizeParams(test_fraction=0.25)
    assert split_of("d7", p) == ("test" if zlib.crc32(b"d7") % 10_000 < 2_500 else "train")
    # Java's (?U)\w keeps Hindi vowel signs and combining accents inside words; Python's \w does not
    import re

    text = "हिन्दी cafe\u0301 x_y ½ Ⓐb"
    assert re.findall(python_pattern(r"\w+"), text) == ["हिन्दी", "cafe\u0301", "x_y", "Ⓐb"]
    assert re.findall(r"\w+", text)[0] == "ह"
    assert python_pattern(r"[\w']+").startswith("[") and utf16_len("a\U0001F600") == 3
    vec = TextVectorizer(["apple", "pie", "apple pie"], np.array([1.0, 2.0, 3.0]), ngram_max=2)
    X = vec.transform(["Apple pie, apple!", "nothing known"])
    assert X.shape == (2, 3) and X[1].nnz == 0
    row = np.array([1 + np.log(2), 2.0, 3.0])
    assert np.allclose(X[0].toarray().ravel(), row / np.linalg.norm(row))
    vec.save(tmp_path / "v")
    assert TextVectorizer.load(tmp_path / "v").vocab == vec.vocab
    with pytest.raises(BundleError, match="no fitted vectorizer"):
        TextVectorizer.load(tmp_path)


def test_default_vocabulary_keeps_a_word_seen_once_and_stems_but_not_a_pair_seen_once(
    spark: Any, tmp_path: Path
) -> None:
    """The defaults (min_df 1, min_df_bigram 2, English stems): a rare word still matches new text;
    'crossings' and 'crossing' are one stem, so their pair with 'zebra' is seen twice; a one-off
    word pair does not enter the vocabulary (one featurization: each costs the suite ~12 s)."""
    path = tmp_path / "c.jsonl"
    write_jsonl(path, [{"id": "a", "text": "zebra crossings sign", "labels": ["road"]},
                       {"id": "b", "text": "Zebra crossing lights", "labels": ["road"]}])
    _featurize(spark, [path], tmp_path / "d")
    vec = TextVectorizer.load(tmp_path / "d" / "vectorizer")
    vocab = set(vec.vocab)
    assert {"sign", "light", "zebra cross"} <= vocab  # words seen once; the pair of stems seen twice
    assert {"<zeb", "<cro", "<sig"} <= vocab and "<zebra" not in vocab  # the default prefixes of 3
    assert not {"crossing", "crossings", "lights", "cross sign", "cross light"} & vocab
    assert vec.stemmer == "english"
    # bench/select_featurize.py's vectorizer (no Spark) is the one Spark fitted on the same records
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from select_featurize import fitted_vectorizer

    mirror = fitted_vectorizer(["zebra crossings sign", "Zebra crossing lights"], FeaturizeParams())
    assert mirror.vocab == vec.vocab and np.allclose(mirror.idf, vec.idf, rtol=1e-12)
    with pytest.raises(Exception, match="min_df_bigram=0"):
        FeaturizeParams(min_df_bigram=0)
