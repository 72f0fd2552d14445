"""Raw labelled text: JSONL or Parquet records ``{id, text, labels: [str]}``, and the label vocabulary.

This is the input of the Spark featurizer (and of ``xmc predict`` on raw text, where ``labels``
may be absent). Records are validated one by one; every error names the file, the line (JSONL)
or row (Parquet) and the field. Ids must be unique: a duplicate would silently merge documents.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from xmc.errors import DataFormatError
from xmc.io.files import atomic_file

RECORD_FIELDS = ("id", "text", "labels")


@dataclass(frozen=True)
class Record:
    """One document: a unique id, its text, and its label names (empty when unlabelled)."""

    id: str
    text: str
    labels: tuple[str, ...]


def _validate(obj: object, path: Path, line: int, require_labels: bool) -> Record:
    if not isinstance(obj, dict):
        raise DataFormatError("a record must be a JSON object", path=path, line=line)
    for key in ("id", "text") + (("labels",) if require_labels else ()):
        if key not in obj or obj[key] is None:
            raise DataFormatError(f"missing field {key!r}", path=path, line=line, field=key)
    doc_id = obj["id"]
    if isinstance(doc_id, bool) or not isinstance(doc_id, str | int):
        raise DataFormatError(f"id must be a string or integer, got {type(doc_id).__name__}",
                              path=path, line=line, field="id")
    text = obj["text"]
    if not isinstance(text, str):
        raise DataFormatError(f"text must be a string, got {type(text).__name__}", path=path,
                              line=line, field="text")
    if not text.strip():
        raise DataFormatError("text is empty", path=path, line=line, field="text")
    labels = obj.get("labels")
    labels = [] if labels is None else labels
    if not isinstance(labels, list | tuple):
        raise DataFormatError(f"labels must be a list of strings, got {type(labels).__name__}",
                              path=path, line=line, field="labels")
    if require_labels and not labels:
        raise DataFormatError("labels is empty (a training record needs at least one label)",
                              path=path, line=line, field="labels")
    for label in labels:
        if not isinstance(label, str) or not label.strip() or "\n" in label:
            raise DataFormatError(f"label {label!r} must be a non-empty one-line string",
                                  path=path, line=line, field="labels")
    return Record(str(doc_id), text, tuple(dict.fromkeys(labels)))


def _check_unique(records: list[Record], lines: list[int], path: Path) -> None:
    first: dict[str, int] = {}
    for rec, line in zip(records, lines, strict=True):
        if rec.id in first:
            raise DataFormatError(f"duplicate id {rec.id!r} (first seen at line {first[rec.id]})",
                                  path=path, line=line, field="id")
        first[rec.id] = line


def read_records(path: str | Path, *, require_labels: bool = True) -> list[Record]:
    """Read JSONL (one object per line; blank lines are errors) or Parquet records."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError("no such file", path=path)
    if path.suffix == ".parquet":
        return _read_parquet(path, require_labels)
    from xmc.io.xc import read_lines

    records: list[Record] = []
    lines: list[int] = []
    for lineno, raw in read_lines(path):
        if not raw.strip():
            raise DataFormatError("empty line (JSONL holds one object per line)", path=path,
                                  line=lineno)
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"malformed JSON: {e.msg} at column {e.colno}", path=path,
                                  line=lineno) from None
        except RecursionError:
            raise DataFormatError("malformed JSON: nested too deeply", path=path, line=lineno) from None
        records.append(_validate(obj, path, lineno, require_labels))
        lines.append(lineno)
    if not records:
        raise DataFormatError("empty file: no records", path=path)
    _check_unique(records, lines, path)
    return records


def _read_parquet(path: Path, require_labels: bool) -> list[Record]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several unrelated types for a bad file
        raise DataFormatError(f"unreadable Parquet ({e})", path=path) from None
    needed = ("id", "text") + (("labels",) if require_labels else ())
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise DataFormatError(f"missing column(s) {missing}; have {table.column_names}", path=path)
    try:
        rows = table.to_pylist()
    except (UnicodeDecodeError, ValueError) as e:  # a string column that is not valid UTF-8
        raise DataFormatError(f"unreadable Parquet values ({e})", path=path) from None
    if not rows:
        raise DataFormatError("empty file: no records", path=path)
    records = [_validate(row, path, i + 1, require_labels) for i, row in enumerate(rows)]
    _check_unique(records, list(range(1, len(rows) + 1)), path)
    return records


def write_jsonl(path: str | Path, rows: Iterable[dict[str, object]]) -> None:
    """Write JSON lines atomically."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


class LabelVocab:
    """Label name <-> index. Built frequency-ordered (most frequent first, ties by name)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.index = {name: i for i, name in enumerate(self.names)}
        if len(self.index) != len(self.names):
            dup = next(n for n, c in Counter(self.names).items() if c > 1)
            raise DataFormatError(f"label vocabulary repeats {dup!r}")

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def build(cls, records: Iterable[Record]) -> LabelVocab:
        counts = Counter(label for rec in records for label in rec.labels)
        return cls(sorted(counts, key=lambda name: (-counts[name], name)))

    def encode(self, labels: Iterable[str]) -> list[int]:
        """Indices of known labels; unknown ones raise (a silent drop would bias evaluation)."""
        out = []
        for label in labels:
            if label not in self.index:
                raise DataFormatError(f"label {label!r} is not in the vocabulary", field="labels")
            out.append(self.index[label])
        return out

    def save(self, path: str | Path) -> None:
        with atomic_file(path) as tmp:
            tmp.write_text("".join(name + "\n" for name in self.names), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> LabelVocab:
        from xmc.io.xc import read_lines

        names: list[str] = []
        for i, line in read_lines(path):
            name = line[:-1] if line.endswith("\n") else line
            if not name.strip():
                raise DataFormatError("empty label name", path=path, line=i)
            names.append(name)
        try:
            return cls(names)
        except DataFormatError as e:
            raise DataFormatError(e.message, path=path) from None
