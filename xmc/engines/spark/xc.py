"""XC-format BoW (``N D L`` header, lines ``l1,l2 f:v ...``) read in Spark, with the checks of
``xmc.io.xc.read_xc`` per line (file, line, field) and the same bundle rows as text input.

Features and label indices are given, so there is no vectorizer; a document's id is its
0-based row number, as in the in-memory reader.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from xmc.engines.spark.read import bad, first_bad, local_path, scan_lines, with_line_numbers
from xmc.errors import DataFormatError
from xmc.io.xc import read_lines


def read_header(path: str) -> tuple[int, int, int]:
    """``N D L`` from the first line (read on the driver; gzip is detected by its magic bytes)."""
    header = next(read_lines(path), (1, ""))[1]
    parts = header.split()
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts):
        raise DataFormatError(f"header {header.strip()!r} must be 'N D L'", path=path, line=1, field="header")
    n, d, n_labels = (int(p) for p in parts)
    if max(d, n_labels) >= 2**31:
        raise DataFormatError("D and L must be < 2^31", path=path, line=1, field="header")
    return n, d, n_labels


def _first(arr: Column, pred: Callable[[Column], Column]) -> Column:
    """The first element of ``arr`` satisfying ``pred``, else null."""
    return F.try_element_at(F.filter(arr, pred), F.lit(1))


def read_xc_rows(spark: SparkSession, path: str) -> tuple[DataFrame, DataFrame, tuple[int, int, int]]:
    """Rows ``(path, block, key, id, feat_idx, feat_val, label_idx, bad, snippet, first)``, the
    ``scan_lines`` they come from (for line numbers), and the header ``(N, D, L)``."""
    n, d, n_labels = read_header(path)
    scanned = scan_lines(spark, [path])
    lines = with_line_numbers(scanned).filter(F.col("line") > 1)
    tok = F.split("value", " ")
    head = tok[0]
    has_labels = (head != "") & ~head.contains(":")
    df = lines.select(
        "path", "block", "key", (F.col("line") - 2).cast("string").alias("id"),
        F.substring(F.make_valid_utf8("value"), 1, 200).alias("snippet"),
        (F.col("value") == "").alias("empty"), F.is_valid_utf8("value").alias("utf8"),
        F.when(has_labels, F.split(head, ",")).otherwise(F.array().cast("array<string>")).alias("lt"),
        F.filter(F.when(has_labels, F.slice(tok, 2, 1 << 30)).otherwise(tok), lambda t: t != "").alias("ft"))
    df = df.select(
        "*", F.transform("lt", lambda t: t.try_cast("int")).alias("labels"),
        F.transform("ft", lambda t: F.struct(
            F.size(F.split(t, ":")).alias("parts"), F.split(t, ":")[0].try_cast("int").alias("i"),
            F.element_at(F.split(t, ":"), -1).try_cast("double").alias("v"), t.alias("tok"))).alias("fs"))
    labels, fs = F.col("labels"), F.col("fs")
    bad_label = _first(F.arrays_zip("lt", "labels"), lambda z: z["labels"].isNull())
    out_label = _first(labels, lambda x: (x < 0) | (x >= n_labels))
    not_pair = _first(fs, lambda x: x["parts"] != 2)
    bad_index = _first(fs, lambda x: x["i"].isNull())
    bad_value = _first(fs, lambda x: x["v"].isNull() | F.isnan(x["v"]) | (F.abs(x["v"]) == float("inf")))
    out_index = _first(fs, lambda x: (x["i"] < 0) | (x["i"] >= d))
    checks = [
        (~F.col("utf8"), bad("invalid_utf8", None, "not valid UTF-8 text")),
        (F.col("empty"), bad("empty_line", None, "empty line (a point with no labels starts with a space)")),
        (bad_label.isNotNull(), bad("bad_label", "labels", F.format_string("'%s' is not an integer",
                                                                           bad_label["lt"]))),
        (out_label.isNotNull(), bad("bad_label", "labels", F.format_string(
            f"label %d out of range [0, {n_labels})", out_label))),
        (F.size(F.array_distinct(labels)) != F.size(labels),
         bad("bad_label", "labels", "a label is repeated")),
        (not_pair.isNotNull(), bad("bad_feature", "features", F.format_string(
            "'%s' is not 'index:value'", not_pair["tok"]))),
        (bad_index.isNotNull(), bad("bad_feature", "features", F.format_string(
            "'%s' is not an integer index", bad_index["tok"]))),
        (out_index.isNotNull(), bad("bad_feature", "features", F.format_string(
            f"feature %d out of range [0, {d})", out_index["i"]))),
        (bad_value.isNotNull(), bad("bad_feature", "features", F.format_string(
            "value of feature %s is not a finite number", bad_value["tok"]))),
        (F.size(F.array_distinct(F.transform(fs, lambda x: x["i"]))) != F.size(fs),
         bad("bad_feature", "features", "a feature index is repeated")),
    ]
    sorted_fs = F.array_sort(F.transform(fs, lambda x: F.struct(x["i"].alias("i"), x["v"].alias("v"))))
    rows = df.select(
        "path", "block", "key", "id",
        F.transform(sorted_fs, lambda x: x["i"]).alias("feat_idx"),
        F.transform(sorted_fs, lambda x: x["v"].cast("float")).alias("feat_val"),
        F.array_sort(labels).alias("label_idx"), first_bad(checks).alias("bad"), "snippet",
        F.lit(None).alias("first"))
    return rows, scanned, (n, d, n_labels)


def check_row_count(rows: DataFrame, path: str, n: int) -> None:
    """The header's N must match the lines (a truncated file fails even with skip_bad)."""
    got = rows.count()
    if got != n:
        raise DataFormatError(f"header says N={n} points but the file has {got}", path=local_path(path),
                              line=got + 2)
