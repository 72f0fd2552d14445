"""Label side in Spark: vocabulary, frequencies, top-k co-occurrence and PIFA embeddings.

Nothing here is L x L or dense: co-occurrence counts only the label pairs that occur in some
document (pairs built per document with array functions, then summed), and PIFA sums the
(label, feature, value) triples of ``Y^T X``'s non-zeros.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def label_vocabulary(train: DataFrame) -> DataFrame:
    """``(label, label_idx, freq)``: most frequent first, ties by name (as ``xmc.io.readers.LabelVocab``)."""
    counts = (train.select(F.explode("labels").alias("label"))
              .groupBy("label").agg(F.count(F.lit(1)).alias("freq")))
    order = Window.orderBy(F.desc("freq"), F.asc("label"))
    return counts.select("label", (F.row_number().over(order) - 1).cast("int").alias("label_idx"), "freq")


def encode_labels(docs: DataFrame, vocab: DataFrame) -> DataFrame:
    """``(key, label_idx array<int> sorted, unseen int)``; labels outside the vocabulary (seen only
    in a valid/test split) are counted in ``unseen``, so the manifest can report them."""
    pairs = docs.select("key", F.explode("labels").alias("label")).join(
        vocab.select("label", "label_idx"), "label", "left")
    return pairs.groupBy("key").agg(
        F.array_sort(F.collect_list("label_idx")).alias("label_idx"),
        F.sum(F.col("label_idx").isNull().cast("int")).alias("unseen"))


def cooccurrence(rows: DataFrame, k: int) -> DataFrame:
    """``(label_idx, cooc_idx array<int>, cooc_count array<long>)``: per label, the k labels sharing
    the most documents with it (count desc, index asc)."""
    pairs = rows.select(F.explode(F.flatten(F.transform(
        "label_idx", lambda a: F.transform(F.filter("label_idx", lambda b: b != a),
                                           lambda b: F.struct(a.alias("a"), b.alias("b")))))).alias("p"))
    counts = pairs.groupBy(F.col("p.a").alias("label_idx"), F.col("p.b").alias("other")).agg(
        F.count(F.lit(1)).alias("n"))
    rank = F.row_number().over(Window.partitionBy("label_idx").orderBy(F.desc("n"), F.asc("other")))
    top = counts.withColumn("rank", rank).filter(F.col("rank") <= k)
    ranked = top.groupBy("label_idx").agg(
        F.array_sort(F.collect_list(F.struct("rank", "other", "n"))).alias("t"))
    return ranked.select("label_idx", F.transform("t", lambda x: x["other"]).alias("cooc_idx"),
                         F.transform("t", lambda x: x["n"]).alias("cooc_count"))


def pifa(rows: DataFrame) -> DataFrame:
    """``(label_idx, feat_idx array<int>, feat_val array<float>)``: rows of ``normalize(Y^T X)``.

    A label's embedding is the L2-normalised sum of its documents' feature rows; only its
    non-zero features are stored.
    """
    triples = (rows.select(F.explode("label_idx").alias("label_idx"), "feat_idx", "feat_val")
               .select("label_idx", F.inline(F.arrays_zip(F.col("feat_idx").alias("f"),
                                                          F.col("feat_val").alias("v")))))
    sums = triples.groupBy("label_idx", "f").agg(F.sum(F.col("v").cast("double")).alias("s"))
    per_label = sums.groupBy("label_idx").agg(
        F.array_sort(F.collect_list(F.struct("f", "s"))).alias("fs"),
        F.sqrt(F.sum(F.col("s") * F.col("s"))).alias("norm"))
    return per_label.select(  # norm: one aggregate per label, not recomputed inside the lambda
        "label_idx", F.transform("fs", lambda x: x["f"]).alias("feat_idx"),
        F.transform("fs", lambda x: F.when(F.col("norm") > 0, x["s"] / F.col("norm")).otherwise(0.0)
                    .cast("float")).alias("feat_val"))
