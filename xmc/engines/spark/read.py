"""Read the featurizer's input in Spark and flag every bad record with its file, line and field.

Records are never dropped silently: each row carries a ``bad`` struct (kind, field, message),
null when the record is fine. The job then either fails with counts and examples, or (with
``skip_bad``) skips exactly the flagged rows and reports them in the manifest. Everything is
native Spark SQL (JSON parsed to VARIANT, so the type of each field is known), no Python UDF.

Input order is ``(path, block, key)``: ``block`` is the byte offset of a line's file split (a
Parquet row's index) and ``key`` a ``monotonically_increasing_id``, consecutive within a split.
Line numbers are only needed to report bad records, so they are computed then (one pass over
the text): ``line = key - first key of the split + lines in the earlier splits of the file + 1``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from xmc.errors import DataFormatError

ORDER = ("path", "block", "key")  # input order: file, split (Parquet: row), position in the split
RECORD_COLUMNS = ("path", "block", "key", "id", "text", "labels", "bad", "snippet", "first")
_BLANK = r"(?U)^\s*$"
_INTEGER_TYPES = r"^(TINYINT|SMALLINT|INT|BIGINT|DECIMAL\(\d+,0\))$"


def local_path(uri: str) -> str:
    """``file:/a/b%20c`` (how Spark names files) -> ``/a/b c``; other schemes unchanged."""
    if uri.startswith("file:"):
        return urllib.parse.unquote(urllib.parse.urlparse(uri).path)
    return uri


def bad(kind: str, field_name: str | None, message: Column | str) -> Column:
    """The ``bad`` struct of a flagged record."""
    msg = F.lit(message) if isinstance(message, str) else message
    return F.struct(F.lit(kind).alias("kind"), F.lit(field_name).cast("string").alias("field"),
                    msg.alias("message"))


def first_bad(checks: Sequence[tuple[Column, Column]]) -> Column:
    """The first failing check's ``bad`` struct (checks in order of precedence), else null."""
    expr = F.when(checks[0][0], checks[0][1])
    for cond, value in checks[1:]:
        expr = expr.when(cond, value)
    return expr


def scan_lines(spark: SparkSession, paths: Sequence[str]) -> DataFrame:
    """Text lines as ``(path, block, key, value)`` (see the module docstring)."""
    return spark.read.text(list(paths)).select(
        F.col("_metadata.file_path").alias("path"), F.col("_metadata.file_block_start").alias("block"),
        F.monotonically_increasing_id().alias("key"), "value")


def _blocks(lines: DataFrame) -> DataFrame:
    """Per file split: its first key and the number of lines in the file's earlier splits."""
    earlier = Window.partitionBy("path").orderBy("block").rowsBetween(Window.unboundedPreceding, -1)
    return (lines.groupBy("path", "block").agg(F.count(F.lit(1)).alias("n"), F.min("key").alias("key0"))
            .select("path", "block", "key0", F.coalesce(F.sum("n").over(earlier), F.lit(0)).alias("before")))


def with_line_numbers(lines: DataFrame) -> DataFrame:
    """``scan_lines`` plus the 1-based ``line`` of each line in its file (for formats that need it)."""
    return lines.join(F.broadcast(_blocks(lines)), ["path", "block"]).select(
        "path", "block", "key", (F.col("key") - F.col("key0") + F.col("before") + 1).alias("line"), "value")


class LineNumbers:
    """``(path, block, key) -> line`` for the few records a report names, computed on first use.

    Built from ``scan_lines`` output for text; without it, ``block`` is a Parquet row index.
    """

    def __init__(self, lines: DataFrame | None = None) -> None:
        self._lines = lines
        self._table: dict[tuple[str, int], tuple[int, int]] | None = None

    def __call__(self, path: str, block: int, key: int) -> int:
        if self._lines is None:
            return block + 1
        if self._table is None:
            rows = _blocks(self._lines).collect()
            self._table = {(r["path"], r["block"]): (r["key0"], r["before"]) for r in rows}
        key0, before = self._table[(path, block)]
        return key - key0 + before + 1


def read_jsonl(lines: DataFrame) -> DataFrame:
    """``scan_lines`` of JSON lines -> records ``(path, block, key, id, text, labels, bad, snippet)``."""
    lines = lines.withColumn("v", F.try_parse_json("value"))

    def kind_of(name: str) -> Column:
        return F.schema_of_variant(F.try_variant_get("v", f"$.{name}", "variant"))

    df = lines.select(
        "path", "block", "key", F.substring(F.make_valid_utf8("value"), 1, 200).alias("snippet"),
        F.is_valid_utf8("value").alias("utf8"), F.col("value").rlike(_BLANK).alias("blank"),
        F.col("v").isNull().alias("malformed"),
        F.schema_of_variant("v").alias("t_record"),
        kind_of("id").alias("t_id"), kind_of("text").alias("t_text"), kind_of("labels").alias("t_labels"),
        F.try_variant_get("v", "$.id", "string").alias("id"),
        F.try_variant_get("v", "$.text", "string").alias("text"),
        F.try_variant_get("v", "$.labels", "array<string>").alias("labels"),
    )

    def missing(t: str) -> Column:
        return F.col(t).isNull() | (F.col(t) == "VOID")

    def got(what: str, t: str) -> Column:
        return F.concat(F.lit(what + ", got "), F.lower(F.col(t)))

    checks = [
        (~F.col("utf8"), bad("invalid_utf8", None, "not valid UTF-8 text")),
        (F.col("blank"), bad("empty_line", None, "empty line (JSONL holds one object per line)")),
        (F.col("malformed"), bad("malformed_json", None, "malformed JSON")),
        (~F.col("t_record").startswith("OBJECT"), bad("not_object", None, "a record must be a JSON object")),
        (missing("t_id"), bad("missing_field", "id", "missing field 'id'")),
        (~F.col("t_id").rlike(_INTEGER_TYPES) & (F.col("t_id") != "STRING"),
         bad("bad_type", "id", got("id must be a string or integer", "t_id"))),
        (missing("t_text"), bad("missing_field", "text", "missing field 'text'")),
        (F.col("t_text") != "STRING", bad("bad_type", "text", got("text must be a string", "t_text"))),
        (missing("t_labels"), bad("missing_field", "labels", "missing field 'labels'")),
        (~F.col("t_labels").isin("ARRAY<STRING>", "ARRAY<VOID>"),
         bad("bad_type", "labels", got("labels must be a list of strings", "t_labels"))),
    ]
    return _common_checks(df, checks)


def read_parquet(spark: SparkSession, paths: Sequence[str]) -> DataFrame:
    """Parquet ``{id, text, labels}`` -> records; a wrongly typed column fails at once (every row is bad)."""
    df = spark.read.parquet(*paths)
    where = local_path(paths[0])
    types = {f.name: f.dataType for f in df.schema.fields}
    expected = {"id": "string or integer", "text": "string", "labels": "array<string>"}
    for name in expected:
        if name not in types:
            raise DataFormatError(f"missing column {name!r}; have {sorted(types)}", path=where, field=name)
    ok = {
        "id": isinstance(types["id"], T.StringType | T.IntegralType),
        "text": isinstance(types["text"], T.StringType),
        "labels": isinstance(types["labels"], T.ArrayType)
        and isinstance(types["labels"].elementType, T.StringType),
    }
    for name, good in ok.items():
        if not good:
            raise DataFormatError(f"column {name} has type {types[name].simpleString()}, expected "
                                  f"{expected[name]}", path=where, field=name)
    df = df.select(
        F.col("_metadata.file_path").alias("path"), F.col("_metadata.row_index").alias("block"),
        F.monotonically_increasing_id().alias("key"), F.col("id").cast("string").alias("id"),
        "text", "labels",
        F.substring(F.to_json(F.struct(F.col("id"), F.substring("text", 1, 100).alias("text"), "labels")),
                    1, 200).alias("snippet"))
    def utf8(c: Column) -> Column:
        return F.coalesce(F.is_valid_utf8(c), F.lit(True))

    invalid = (~utf8(F.col("id")) | ~utf8(F.col("text"))
               | F.coalesce(F.exists("labels", lambda x: ~F.is_valid_utf8(x)), F.lit(False)))
    checks = [
        (invalid, bad("invalid_utf8", None, "not valid UTF-8 text")),
        (F.col("id").isNull(), bad("missing_field", "id", "missing field 'id'")),
        (F.col("text").isNull(), bad("missing_field", "text", "missing field 'text'")),
        (F.col("labels").isNull(), bad("missing_field", "labels", "missing field 'labels'")),
    ]
    return _common_checks(df, checks)


def _common_checks(df: DataFrame, checks: list[tuple[Column, Column]]) -> DataFrame:
    """Checks of both formats: empty text, bad label values (duplicate ids: ``mark_duplicate_ids``)."""
    label_bad = F.filter("labels", lambda x: x.isNull() | x.rlike(_BLANK) | x.contains("\n"))
    first_label_bad = F.coalesce(F.try_element_at(label_bad, F.lit(1)), F.lit("null"))
    checks = checks + [
        (F.col("text").rlike(_BLANK), bad("empty_text", "text", "text is empty")),
        (F.size("labels") == 0, bad("empty_labels", "labels",
                                    "labels is empty (a training record needs at least one label)")),
        (F.size(label_bad) > 0, bad("bad_label", "labels", F.format_string(
            "label '%s' must be a non-empty one-line string", first_label_bad))),
    ]
    return df.select("path", "block", "key", "id", "text", F.array_distinct("labels").alias("labels"),
                     first_bad(checks).alias("bad"), "snippet")


def mark_duplicate_ids(df: DataFrame) -> DataFrame:
    """Flag every good record whose id an earlier good record (in input order) already has;
    ``first`` holds where that earlier record is.

    Only the (small) table of repeated ids is built and joined back, so the text is not shuffled;
    ``df`` is read twice, so persist it first (else the input is parsed twice).
    """
    first = (df.filter(F.col("bad").isNull()).groupBy("id")
             .agg(F.count(F.lit(1)).alias("n"), F.min(F.struct(*ORDER)).alias("first"))
             .filter(F.col("n") > 1).select("id", "first"))
    dup = bad("duplicate_id", "id", F.format_string("duplicate id '%s'", F.col("id")))
    is_dup = F.col("bad").isNull() & F.col("first").isNotNull() & (F.struct(*ORDER) != F.col("first"))
    return df.join(first, "id", "left").select(
        *[F.when(is_dup, dup).otherwise(F.col("bad")).alias("bad") if c == "bad"
          else F.when(is_dup, F.col("first")).alias("first") if c == "first" else F.col(c)
          for c in RECORD_COLUMNS])


@dataclass
class BadRecords:
    """What was wrong with the input: counts per kind and the first examples (file, line, field)."""

    records: int = 0
    """Records read, good and bad."""
    total: int = 0
    """Bad records."""
    by_kind: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"records": self.records, "total": self.total, "by_kind": self.by_kind,
                "examples": self.examples}

    def error(self) -> DataFormatError:
        """The job's failure: the first bad record as the error, every count and example after it."""
        first = self.examples[0]
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.by_kind.items()))
        lines = [f"  {e['path']}:{e['line']}: " + (f"[{e['field']}] " if e["field"] else "") + e["message"]
                 for e in self.examples]
        more = (f"\n{self.total} bad record(s) ({kinds}); first {len(self.examples)}:\n" + "\n".join(lines)
                + "\nfix them, or rerun with --skip-bad to skip them (they are counted in the manifest)")
        return DataFormatError(first["message"] + more, path=first["path"], line=first["line"],
                               field=first["field"])


def bad_records(records: DataFrame, max_examples: int, line_of: Callable[[str, int, int], int]) -> BadRecords:
    """Count the records and the flagged ones by kind; fetch the first examples in input order."""
    by_kind = records.groupBy(F.col("bad.kind").alias("kind")).count().collect()
    n_records = sum(int(r["count"]) for r in by_kind)
    counts = {r["kind"]: int(r["count"]) for r in by_kind if r["kind"] is not None}
    if not counts:
        return BadRecords(n_records)
    flagged = records.filter(F.col("bad").isNotNull())
    rows = (flagged.orderBy(*ORDER).limit(max_examples)
            .select(*ORDER, "bad.field", "bad.message", "snippet", "first").collect())
    examples = []
    for r in rows:
        message = r["message"]
        if r["first"] is not None:
            where = Path(local_path(r["first"]["path"])).name
            message += f" (first seen at {where}:{line_of(*r['first'])})"
        examples.append({"path": local_path(r["path"]), "line": line_of(r["path"], r["block"], r["key"]),
                         "field": r["field"], "message": message, "record": r["snippet"]})
    return BadRecords(n_records, sum(counts.values()), counts, examples)


def local_files(paths: Sequence[str]) -> list[Path]:
    """The local files behind ``paths`` (folders expanded as Spark reads them; URIs and globs skipped)."""
    out: list[Path] = []
    for p in paths:
        if "://" in p or any(c in p for c in "*?["):
            continue
        path = Path(p)
        if path.is_dir():
            out += sorted(f for f in path.rglob("*") if f.is_file() and not f.name.startswith((".", "_")))
        elif path.is_file():
            out.append(path)
    return out


def preflight(paths: Sequence[str], fmt: str) -> None:
    """Checks on the driver that Spark would only fail on with a Java stack: each local gzip member
    decompresses to its end (a truncated .gz), each Parquet file has a readable footer."""
    from xmc.io.xc import is_gzip, verify_gzip

    for f in local_files(paths):
        if fmt == "parquet":
            import pyarrow.parquet as pq

            try:
                pq.ParquetFile(f)
            except Exception as e:  # pyarrow raises several unrelated types for a bad file
                raise DataFormatError(f"unreadable Parquet ({e})", path=f) from None
        elif is_gzip(f):
            verify_gzip(f)


def detect_format(inputs: Sequence[str], declared: str) -> str:
    """'jsonl', 'parquet' or 'xc' from the declared format, else from the name and the first line."""
    if declared != "auto":
        return declared
    first = inputs[0]
    name = Path(first).name.lower()
    if name.endswith(".parquet") or (Path(first).is_dir() and any(Path(first).glob("*.parquet"))):
        return "parquet"
    jsonl = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson", ".ndjson.gz")
    folder = Path(first).is_dir()
    if name.endswith(jsonl) or (folder and any(f.name.endswith(jsonl) for f in Path(first).iterdir())):
        return "jsonl"
    if Path(first).is_file():
        from xmc.io.xc import read_lines

        head = next(read_lines(first), (1, ""))[1].split()
        if len(head) == 3 and all(t.isascii() and t.isdigit() for t in head):
            return "xc"
        if head and head[0].startswith("{"):
            return "jsonl"
    raise DataFormatError("cannot tell the input format from the name or first line; "
                          "pass --input-format jsonl|parquet|xc", path=first)
