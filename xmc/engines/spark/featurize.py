"""``featurize``: a labelled corpus -> the features bundle of ``xmc.io.features``, all in Spark.

    records (JSONL / Parquet {id, text, labels}, or XC BoW), every bad one flagged
      -> fail with counts and examples, or skip them (``skip_bad``) and report them
      -> split by crc32(id) -> terms -> vocabulary and IDF on train -> TF-IDF rows
      -> label vocabulary and frequencies on train -> label_idx rows
      -> shards per split, co-occurrence top-k, PIFA, manifest   (one atomic folder)

The same function serves ``xmc featurize``, ``spark-submit jobs/featurize.py`` and notebooks;
the caller owns the SparkSession. Only vocabularies and counts reach the driver.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pyspark import StorageLevel
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from xmc.engines.spark.labels import cooccurrence, encode_labels, label_vocabulary, pifa
from xmc.engines.spark.params import FeaturizeParams
from xmc.engines.spark.read import (
    ORDER,
    BadRecords,
    LineNumbers,
    bad_records,
    detect_format,
    mark_duplicate_ids,
    preflight,
    read_jsonl,
    read_parquet,
    scan_lines,
)
from xmc.engines.spark.text import (
    add_terms,
    embed_column,
    fit_vocabulary,
    stop_words,
    tfidf,
    vectorizer_of,
    with_embedding,
)
from xmc.engines.spark.xc import check_row_count, read_xc_rows
from xmc.errors import DataFormatError
from xmc.io.features import FORMAT, SCHEMA_VERSION, SHARD_COLUMNS, input_fingerprint
from xmc.io.files import atomic_dir, check_target, manifest_format_is, sha256
from xmc.io.text_encoder import TextEncoder
from xmc.io.vectorizer import ENCODER_DIR

BUCKETS = 10_000
SPLIT_RULE = ("bucket = crc32(utf8(id)) % 10000; test if bucket < 10000 * test_fraction, "
              "valid if bucket < 10000 * (test_fraction + valid_fraction), else train")
# Spark's conditions for input it cannot find or read as the declared format (user errors, not bugs).
_UNREADABLE = ("PATH_NOT_FOUND", "UNABLE_TO_INFER_SCHEMA")
# Parquet columns of a split shard: the Spark -> trainer contract.


def split_of(doc_id: str, params: FeaturizeParams) -> str:
    """The split of a document, as Spark assigns it (``SPLIT_RULE``), for use outside Spark."""
    bucket = zlib.crc32(doc_id.encode("utf-8")) % BUCKETS
    test, valid = _cuts(params)
    return "test" if bucket < test else "valid" if bucket < valid else "train"


def _cuts(params: FeaturizeParams) -> tuple[int, int]:
    test = round(params.test_fraction * BUCKETS)
    return test, test + round(params.valid_fraction * BUCKETS)


def split_column(params: FeaturizeParams) -> Column:
    bucket = F.crc32(F.col("id").cast("binary")) % BUCKETS
    test, valid = _cuts(params)
    return F.when(bucket < test, "test").when(bucket < valid, "valid").otherwise("train")


log = logging.getLogger("xmc.featurize")


class _Run:
    """One featurization: persisted frames (released at the end) and per-phase seconds."""

    def __init__(self, spark: SparkSession, params: FeaturizeParams, tmp: Path) -> None:
        self.spark, self.params, self.tmp = spark, params, tmp
        self.persisted: list[DataFrame] = []
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def keep(self, df: DataFrame, *, small: bool = False) -> DataFrame:
        """Persist a frame used more than once. Large ones go to local disk: cached blocks in memory
        would take the heap that the shuffles and aggregations need (memory stays bounded)."""
        df = df.persist(StorageLevel.MEMORY_AND_DISK if small else StorageLevel.DISK_ONLY)
        self.persisted.append(df)
        return df

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = round(now - self._t, 3)
        self._t = now

    def release(self, df: DataFrame | None = None) -> None:
        """Unpersist ``df``, or every frame kept so far."""
        for kept in [df] if df is not None else self.persisted:
            kept.unpersist()

    def check_bad(self, records: DataFrame, line_of: LineNumbers) -> BadRecords:
        report = bad_records(records, self.params.max_examples, line_of)
        if report.total and not self.params.skip_bad:
            raise report.error()
        if report.total:
            log.info(f"skipped {report.total} bad record(s): {report.by_kind} (examples in the manifest)")
        self.lap("read_validate")
        return report


def check_inputs(paths: Sequence[str], out: str | Path, params: FeaturizeParams) -> str:
    """What can be checked before Spark starts: the inputs exist, their format, each gzip stream
    whole and each Parquet footer readable, and ``out`` is a folder we may replace. Returns the format."""
    if not paths:
        raise DataFormatError("no input given")
    for p in paths:  # local paths checked here (clear message); URIs and globs are Spark's to resolve
        if "://" not in p and not any(c in p for c in "*?[") and not Path(p).exists():
            raise DataFormatError("no such file or folder", path=p)
    check_target(out, folder=True, owned=manifest_format_is(FORMAT), what="a features bundle")
    for p in paths:
        if "://" not in p and Path(p).exists() and Path(p).resolve() == Path(out).resolve():
            raise DataFormatError("the input is also --out: it would be replaced", path=p)
    fmt = detect_format(paths, params.input_format)
    if params.text_encoder and fmt == "xc":
        raise DataFormatError("text_encoder embeds raw text, and XC input is BoW with no text: drop "
                              "--text-encoder or featurize {id, text, labels} records", path=paths[0])
    if params.text_encoder:  # the folder and its weights, checked before any Spark work
        TextEncoder.from_pretrained(params.text_encoder, params.text_encoder_max_length)
    preflight(paths, fmt)
    return fmt


def featurize(
    spark: SparkSession, inputs: Sequence[str | Path], out: str | Path, params: FeaturizeParams | None = None,
    *, checked_format: str | None = None,
) -> dict[str, Any]:
    """Featurize ``inputs`` into the bundle folder ``out`` (replaced atomically); returns the manifest.

    ``checked_format``: the format ``check_inputs`` returned for these inputs (the checks are not
    repeated)."""
    params = params or FeaturizeParams()
    paths = [str(p) for p in inputs]
    fmt = checked_format or check_inputs(paths, out, params)
    start = time.perf_counter()
    with atomic_dir(out, owned=manifest_format_is(FORMAT), what="a features bundle") as tmp:
        run = _Run(spark, params, tmp)
        try:
            body = _xc(run, paths) if fmt == "xc" else _text(run, paths, fmt)
        except AnalysisException as e:
            if e.getCondition() not in _UNREADABLE:
                raise
            raise DataFormatError(f"Spark cannot read the input: {e.getMessage()}", path=paths[0]) from None
        finally:
            run.release()
        manifest = {
            "format": FORMAT, "schema_version": SCHEMA_VERSION,
            "input": {"paths": paths, "format": fmt, **input_fingerprint(paths)},
            "params": params.to_dict(), **body, "split_rule": SPLIT_RULE,
            "spark": {"version": spark.version, "master": spark.sparkContext.master},
            "seconds": {**run.seconds, "total": round(time.perf_counter() - start, 3)},
            "files": {f.relative_to(tmp).as_posix(): sha256(f) for f in sorted(tmp.rglob("*"))
                      if f.is_file() and (f.parent == tmp or f.relative_to(tmp).parts[0] == "vectorizer")},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def _text(run: _Run, paths: list[str], fmt: str) -> dict[str, Any]:
    p = run.params
    if fmt == "jsonl":
        lines = scan_lines(run.spark, paths)
        parsed, line_of = run.keep(read_jsonl(lines)), LineNumbers(lines)
    else:
        parsed, line_of = run.keep(read_parquet(run.spark, paths)), LineNumbers()
    records = mark_duplicate_ids(parsed)
    report = run.check_bad(records, line_of)
    good = records.filter(F.col("bad").isNull()).select(
        *ORDER, "id", "text", "labels", split_column(p).alias("split"))
    stop = stop_words(p)
    # Hash-partitioned by document: every later per-document step (term counts, TF-IDF rows,
    # label indices, their joins) then runs in one stage without another shuffle; the number of
    # partitions grows with the corpus, so each task's memory stays bounded.
    parts = max(run.spark.sparkContext.defaultParallelism,
                math.ceil((report.records - report.total) / p.docs_per_partition))
    terms = add_terms(good, p, stop)
    docs = run.keep((terms if p.text_encoder else terms.drop("text")).repartition(parts, "key"))
    train = docs.filter(F.col("split") == "train")
    n_train = train.count()
    run.release(parsed)  # the documents are materialised: their text is no longer needed
    if n_train == 0:
        raise DataFormatError("no training documents (every record is bad or in valid/test)", path=paths[0])
    vocab = run.keep(fit_vocabulary(train, n_train, p), small=True)
    vectorizer = vectorizer_of(vocab, n_train, p, stop)
    if vectorizer.n_terms == 0:
        raise DataFormatError(f"empty vocabulary: no word is in min_df={p.min_df} training documents "
                              f"(no word pair in min_df_bigram={p.min_df_bigram}); lower --min-df",
                              path=paths[0])
    if p.text_encoder:  # saved first: the executors' embedding step reads the bundle's own copy
        vectorizer.encoder = TextEncoder.from_pretrained(p.text_encoder, p.text_encoder_max_length)
        vectorizer.encoder_weight = p.text_encoder_weight
    vectorizer.save(run.tmp / "vectorizer")
    run.lap("vocabulary")
    label_vocab = run.keep(label_vocabulary(train), small=True)
    table = label_vocab.orderBy("label_idx").select("label", "freq").toArrow()
    names = table.column("label").to_pylist()
    (run.tmp / "labels.txt").write_text("".join(n + "\n" for n in names), encoding="utf-8")
    np.savez(run.tmp / "label_stats.npz", freq=table.column("freq").to_numpy().astype(np.int64))
    log.info(f"{n_train} training documents, {vectorizer.n_features} features, {len(names)} labels")
    labels = encode_labels(docs, label_vocab)
    embedding = ([embed_column(str(run.tmp / "vectorizer" / ENCODER_DIR)).alias("embedding")]
                 if p.text_encoder else [])
    rows = (docs.select(*ORDER, F.col("id").alias("doc_id"), "split", *embedding)
            .join(tfidf(docs, vocab, p), "key", "left").join(labels, "key", "left"))
    rows = _fill_empty(rows, *(["embedding"] if embedding else []))
    if embedding:
        rows = with_embedding(rows, vectorizer.n_terms, p.text_encoder_weight, p.l2_normalize)
    body = _write(run, rows, vectorizer.n_features, len(names))
    n_terms, n_features = vectorizer.n_terms, vectorizer.n_features
    encoder = ({"text_encoder": {"source": p.text_encoder, "dim": n_features - n_terms,
                                 "columns": [n_terms, n_features]}} if p.text_encoder else {})
    return {"features": "tfidf" + (" + text encoder" if p.text_encoder else ""), **encoder,
            "normalization": "l2" if p.l2_normalize else "none",
            "tf": "1 + ln(count)" if p.sublinear_tf else "count", "idf": "ln((1 + N) / (1 + df)) + 1",
            "vectorizer": "vectorizer", **body, "bad_records": report.to_dict()}


def _xc(run: _Run, paths: list[str]) -> dict[str, Any]:
    if len(paths) != 1:
        raise DataFormatError("XC input is one file with its own 'N D L' header; give one", path=paths[1])
    rows0, lines, (n, d, n_labels) = read_xc_rows(run.spark, paths[0])
    records = run.keep(rows0)
    check_row_count(records, paths[0], n)
    report = run.check_bad(records, LineNumbers(lines))
    rows = records.filter(F.col("bad").isNull()).select(
        *ORDER, F.col("id").alias("doc_id"), split_column(run.params).alias("split"),
        "feat_idx", "feat_val", "label_idx", F.lit(0).alias("unseen"))
    counts = (rows.filter(F.col("split") == "train").select(F.explode("label_idx").alias("l"))
              .groupBy("l").count().collect())
    freq = np.zeros(n_labels, np.int64)
    for r in counts:
        freq[r["l"]] = r["count"]
    np.savez(run.tmp / "label_stats.npz", freq=freq)
    body = _write(run, rows, d, n_labels)
    return {"features": "given (XC BoW)", "normalization": "none", **body, "bad_records": report.to_dict()}


def _fill_empty(rows: DataFrame, *extra: str) -> DataFrame:
    """Documents with no known term or no label keep their row, with empty arrays."""
    return rows.select(
        *ORDER, "doc_id", "split", *extra,
        F.coalesce("feat_idx", F.array().cast("array<int>")).alias("feat_idx"),
        F.coalesce("feat_val", F.array().cast("array<float>")).alias("feat_val"),
        F.coalesce("label_idx", F.array().cast("array<int>")).alias("label_idx"),
        F.coalesce("unseen", F.lit(0)).cast("int").alias("unseen"))


def _write(run: _Run, rows: DataFrame, n_features: int, n_labels: int) -> dict[str, Any]:
    """Shards per split (input order), co-occurrence and PIFA on train, and their statistics."""
    rows = run.keep(rows)
    stats = rows.groupBy("split").agg(
        F.count(F.lit(1)).alias("rows"), F.sum(F.size("feat_idx")).alias("feat_nnz"),
        F.sum(F.size("label_idx")).alias("label_nnz"),
        F.sum((F.size("feat_idx") == 0).cast("int")).alias("empty_rows"),
        F.sum("unseen").alias("unseen_labels")).collect()
    keys = ("rows", "feat_nnz", "label_nnz", "empty_rows", "unseen_labels")
    by_split = {r["split"]: {k: int(r[k]) for k in keys} for r in stats}
    wanted = ["train"] + [s for s, f in (("valid", run.params.valid_fraction),
                                         ("test", run.params.test_fraction)) if f > 0]
    # One sort in input order and one write for all splits: rows already sorted by split are
    # written in order into split=<name>/ (part files in row order), renamed to <name>/.
    (rows.orderBy("split", *ORDER).select("split", *SHARD_COLUMNS)
     .write.partitionBy("split").parquet(str(run.tmp / "shards")))
    splits: dict[str, Any] = {}
    for split in wanted:
        splits[split] = by_split.get(split, dict.fromkeys(keys, 0))
        written = run.tmp / "shards" / f"split={split}"
        if written.is_dir():
            os.replace(written, run.tmp / split)
        log.info(f"{split}: {splits[split]['rows']} rows, {splits[split]['feat_nnz']} feature non-zeros")
    shutil.rmtree(run.tmp / "shards")
    run.lap("write_shards")
    train = rows.filter(F.col("split") == "train")
    cooccurrence(train, run.params.cooc_topk).write.parquet(str(run.tmp / "label_cooc"))
    run.lap("cooccurrence")
    pifa(train).write.parquet(str(run.tmp / "pifa"))
    run.lap("pifa")
    return {"n_features": n_features, "n_labels": n_labels, "splits": splits,
            "shard_columns": dict(SHARD_COLUMNS)}

