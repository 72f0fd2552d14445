"""A user's pretrained text encoder (xmc/io/text_encoder.py), tested with a tiny randomly initialised
BERT written here: its folder is checked before Spark starts, its embedding joins the TF-IDF rows in
Spark exactly as the predict-time vectorizer computes it, and a hybrid trained on those rows
predicts raw text through the copy the model carries."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xmc.engines.spark.params import FeaturizeParams
from xmc.errors import BundleError, DataFormatError
from xmc.io.features import load_split, read_manifest
from xmc.io.readers import write_jsonl
from xmc.io.text_encoder import TextEncoder
from xmc.io.vectorizer import TextVectorizer

PYPI = Path(__file__).resolve().parents[1] / "data" / "pypi-tags" / "train.jsonl.gz"
DIM = 32


def tiny_encoder(folder: Path, texts: list[str], seed: int = 0) -> Path:
    """A 2-layer, 32-wide BERT with random weights and a WordPiece vocabulary of the corpus' words."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = [w for w, _ in Counter(re.findall(r"[a-z]+", " ".join(texts).lower())).most_common(300)]
    letters = list("abcdefghijklmnopqrstuvwxyz")
    vocab = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters,
                                *[f"##{c}" for c in letters], *words]))
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=DIM, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """400 real pypi-tags records (short text, tags) and a tiny encoder of their words."""
    tmp = tmp_path_factory.mktemp("encoder")
    with gzip.open(PYPI, "rt", encoding="utf-8") as f:
        records = [json.loads(line) for _, line in zip(range(400), f, strict=False)]
    write_jsonl(tmp / "corpus.jsonl", records)
    return {"tmp": tmp, "records": records,
            "encoder": tiny_encoder(tmp / "tiny", [r["text"] for r in records])}


def test_embeddings_are_unit_rows_in_input_order_and_pooling_is_the_folders(corpus: dict[str, Any]) -> None:
    texts = [r["text"] for r in corpus["records"][:50]]
    encoder = TextEncoder.from_pretrained(corpus["encoder"], max_length=64)
    assert encoder.dim == DIM and encoder.pooling == "mean"
    E = encoder.encode(texts)
    assert E.shape == (50, DIM) and E.dtype == np.float32
    assert np.allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5)
    # batching by length (and its padding) does not change a document's embedding
    assert np.abs(encoder.encode(texts, batch_size=3) - E).max() < 1e-5
    assert np.abs(encoder.encode(texts[7:8]) - E[7:8]).max() < 1e-5
    assert np.abs(E[0] - E[1]).max() > 1e-3  # different texts, different vectors
    pooling = corpus["tmp"] / "cls"
    tiny_encoder(pooling, texts)
    (pooling / "1_Pooling").mkdir()
    (pooling / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True,
                                                                    "pooling_mode_mean_tokens": False}))
    cls = TextEncoder.from_pretrained(pooling, max_length=64)
    assert cls.pooling == "cls" and np.abs(cls.encode(texts[:5]) - E[:5]).max() > 1e-3


def test_bad_encoder_folders_and_xc_input_are_refused_before_spark(corpus: dict[str, Any], tmp_path: Path
                                                                   ) -> None:
    from xmc.engines.spark.featurize import check_inputs

    corpus_file = str(corpus["tmp"] / "corpus.jsonl")

    def check(folder: Path | str, inputs: str = corpus_file) -> None:
        check_inputs([inputs], tmp_path / "out", FeaturizeParams(text_encoder=str(folder)))

    with pytest.raises(DataFormatError, match="no such model folder"):
        check(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="no config.json"):
        check(tmp_path / "empty")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((corpus["encoder"] / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04 not loaded")
    with pytest.raises(DataFormatError, match=r"pytorch_model\.bin: pickled weights"):
        check(pickled)
    bibtex = Path(__file__).resolve().parents[1] / "data" / "bibtex" / "bibtex_train.txt.gz"
    with pytest.raises(DataFormatError, match="XC input is BoW with no text"):
        check(corpus["encoder"], str(bibtex))
    assert not (tmp_path / "out").exists()


def test_featurize_with_an_encoder_then_a_hybrid_predicts_raw_text(spark: Any, corpus: dict[str, Any]
                                                                    ) -> None:
    from xmc.cli import main
    from xmc.core.model import XMCModel
    from xmc.engines.spark.featurize import featurize

    tmp, records = corpus["tmp"], corpus["records"]
    (corpus["encoder"] / "pytorch_model.bin").write_bytes(b"pickle: never copied")  # beside the safetensors
    params = FeaturizeParams(text_encoder=str(corpus["encoder"]), text_encoder_weight=0.5)
    manifest = featurize(spark, [tmp / "corpus.jsonl"], tmp / "bundle", params)
    n_terms = manifest["text_encoder"]["columns"][0]
    assert manifest["n_features"] == n_terms + DIM and manifest["features"] == "tfidf + text encoder"
    assert "vectorizer/encoder/model.safetensors" in manifest["files"]
    assert not any(name.endswith(".bin") for name in manifest["files"])
    read_manifest(tmp / "bundle")  # every encoder file is checksummed

    train = load_split(tmp / "bundle")
    vec = TextVectorizer.load(tmp / "bundle" / "vectorizer")
    assert vec.n_features == manifest["n_features"] and vec.encoder_weight == 0.5
    text = {str(r["id"]): r["text"] for r in records}
    texts = [text[i] for i in train.doc_ids]
    X = vec.transform(texts)  # the predict-time path: same columns, same values as Spark's rows
    assert X.shape == train.X.shape and abs(X - train.X).max() < 1e-5
    assert np.allclose(np.sqrt(np.asarray(train.X.multiply(train.X).sum(axis=1))).ravel(), 1.0, atol=1e-5)
    # the embedding block holds weight * E / norm: its share of a row with words is 0.5 / sqrt(1.25)
    block = train.X[:, n_terms:].toarray()
    has_words = np.diff(train.X[:, :n_terms].indptr) > 0
    assert np.allclose(np.linalg.norm(block[has_words], axis=1), 0.5 / np.sqrt(1.25), atol=1e-5)
    E = TextEncoder.from_pretrained(corpus["encoder"], 128).encode(texts)
    assert np.abs(block / np.linalg.norm(block, axis=1, keepdims=True) - E).max() < 1e-4

    write_jsonl(tmp / "new.jsonl", [{"id": r["id"], "text": r["text"]} for r in records[:20]])
    assert main(["train", "--data", str(tmp / "bundle"), "--model", str(tmp / "m"), "--rounds", "0",
                 "--dense", "prime", "--dense-epochs", "1", "--dense-dim", "16"]) == 0
    assert main(["predict", "--model", str(tmp / "m"), "--input", str(tmp / "new.jsonl"), "--topk", "3",
                 "--out", str(tmp / "p.jsonl")]) == 0
    preds = [json.loads(line) for line in (tmp / "p.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == [r["id"] for r in records[:20]] and all(len(p["labels"]) == 3
                                                                                 for p in preds)
    model = XMCModel.load(tmp / "m")
    assert model.n_features == n_terms + DIM and model.vectorizer is not None
    weights = tmp / "m" / "vectorizer" / "encoder" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"tampered")
    with pytest.raises(BundleError, match="checksum mismatch"):
        XMCModel.load(tmp / "m")
