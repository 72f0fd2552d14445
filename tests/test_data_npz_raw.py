from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from xmc.errors import DataFormatError
from xmc.io.readers import LabelVocab, read_npz, read_records, write_npz


def test_npz_roundtrip_and_validation(tmp_path: Path) -> None:
    M = sp.csr_matrix(np.array([[0, 1], [1, 0]], np.float32))
    write_npz(tmp_path / "y.npz", M)
    assert (read_npz(tmp_path / "y.npz", binary=True) != M).nnz == 0
    sp.save_npz(tmp_path / "bad.npz", sp.csr_matrix(np.array([[0, 2.0]])))
    with pytest.raises(DataFormatError, match=r"bad.npz.*row 0, column 1 holds 2"):
        read_npz(tmp_path / "bad.npz", binary=True)
    sp.save_npz(tmp_path / "nan.npz", sp.csr_matrix(np.array([[0, np.nan]])))
    with pytest.raises(DataFormatError, match="NaN or inf value at row 0"):
        read_npz(tmp_path / "nan.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataFormatError, match="junk.npz: not a scipy sparse"):
        read_npz(tmp_path / "junk.npz")


def _jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_records_and_vocab(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "c.jsonl", [
        {"id": 1, "text": "red apple pie", "labels": ["fruit", "food"]},
        {"id": "b", "text": "apple iphone", "labels": ["brand"]},
        {"id": 3, "text": "banana", "labels": ["fruit"]},
    ])
    recs = read_records(path)
    assert [r.id for r in recs] == ["1", "b", "3"] and recs[0].labels == ("fruit", "food")
    vocab = LabelVocab.build(recs)
    assert vocab.names == ["fruit", "brand", "food"]  # by frequency, ties by name
    assert vocab.encode(["food", "fruit"]) == [2, 0]
    with pytest.raises(DataFormatError, match="'pear' is not in the vocabulary"):
        vocab.encode(["pear"])
    vocab.save(tmp_path / "v.txt")
    assert LabelVocab.load(tmp_path / "v.txt").names == vocab.names


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ('{"id": 1, "text": "x", "labels": ["a"]', "malformed JSON"),
        ({"text": "x", "labels": ["a"]}, "missing field 'id'"),
        ({"id": 2, "labels": ["a"]}, "missing field 'text'"),
        ({"id": 2, "text": "  ", "labels": ["a"]}, "text is empty"),
        ({"id": 2, "text": "x", "labels": "a"}, "labels must be a list"),
        ({"id": 2, "text": "x", "labels": [3]}, "non-empty one-line string"),
        ({"id": 1, "text": "x", "labels": ["a"]}, "duplicate id '1' (first seen at line 1)"),
    ],
)
def test_record_errors_name_line_and_field(tmp_path: Path, row: object, needle: str) -> None:
    path = _jsonl(tmp_path / "c.jsonl", [{"id": 1, "text": "ok", "labels": ["a"]}, row])
    with pytest.raises(DataFormatError) as err:
        read_records(path)
    assert "c.jsonl:2" in str(err.value) and needle in str(err.value)


def test_parquet_records(tmp_path: Path) -> None:
    table = pa.table({"id": ["a", "b"], "text": ["one doc", "two doc"], "labels": [["x"], ["x", "y"]]})
    pq.write_table(table, tmp_path / "c.parquet")
    assert [r.labels for r in read_records(tmp_path / "c.parquet")] == [("x",), ("x", "y")]
    pq.write_table(table.drop(["labels"]), tmp_path / "nolab.parquet")
    with pytest.raises(DataFormatError, match="missing column"):
        read_records(tmp_path / "nolab.parquet")
    assert len(read_records(tmp_path / "nolab.parquet", require_labels=False)) == 2


def test_empty_jsonl(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(DataFormatError, match="empty file"):
        read_records(tmp_path / "e.jsonl")
