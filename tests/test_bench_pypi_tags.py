"""bench/build_pypi_tags.py: the corpus recipe on a hand-written metadata dump (no network)."""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import build_pypi_tags as bpt  # noqa: E402


def project(name: str, summary: str, *classifiers: str) -> dict:
    return {"query": name, "record": {"name": name, "summary": summary, "classifiers": list(classifiers),
                                      "keywords": ""}}


def write_dump(path: Path, n_web: int) -> None:
    rows = [project(f"Web_Kit.{i}", f"  a   web\tframework {i} ", "Topic :: Internet :: WWW/HTTP",
                    "License :: OSI Approved :: MIT License", "Framework :: Django")
            for i in range(n_web)]
    rows += [
        project("rare-tag", "only it has this tag", "Topic :: Games/Entertainment :: Puzzle Games"),
        project("no-summary", "", "Topic :: Internet :: WWW/HTTP"),
        project("licence-only", "has no topic", "License :: OSI Approved :: MIT License"),
        {"query": "gone", "record": None},  # a 404: the project was deleted after the index listed it
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def read(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_recipe_text_labels_and_what_is_left_out(tmp_path: Path) -> None:
    write_dump(tmp_path / "dump.jsonl", n_web=40)
    stats = bpt.build(tmp_path / "dump.jsonl", tmp_path / "out", min_label_count=5)
    docs = read(tmp_path / "out" / "train.jsonl.gz") + read(tmp_path / "out" / "test.jsonl.gz")
    assert len(docs) == 40 == stats["n_train"] + stats["n_test"]  # rare tag, no summary, no topic, 404: out
    doc = next(d for d in docs if d["id"] == "web-kit-3")  # PEP 503 name
    assert doc["text"] == "Web Kit 3 . a web framework 3"
    assert doc["labels"] == ["framework :: django", "topic :: internet :: www/http"]  # licence dropped
    assert stats["n_labels"] == 2 and stats["projects_in_dump"] == 44


def test_split_by_name_and_bytes_are_deterministic(tmp_path: Path) -> None:
    share = sum(map(bpt.is_test, (f"p{i}" for i in range(2000)))) / 2000
    assert 0.17 < share < 0.24
    write_dump(tmp_path / "dump.jsonl", n_web=200)
    for out in ("a", "b"):
        bpt.build(tmp_path / "dump.jsonl", tmp_path / out, min_label_count=5)
    for name in ("train.jsonl.gz", "test.jsonl.gz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert all(bpt.is_test(d["id"]) == (name == "test.jsonl.gz") for d in read(tmp_path / "a" / name))


def test_reference_build_is_carried_with_its_checksums() -> None:
    folder = Path(__file__).resolve().parents[1] / "data" / "pypi-tags"
    text = (folder / "PROVENANCE.md").read_text()
    for name in ("train.jsonl.gz", "test.jsonl.gz", "stats.json"):
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() in text, name
