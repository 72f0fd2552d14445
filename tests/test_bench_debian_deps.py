"""bench/build_debian_deps.py: the corpus recipe on a hand-written package index."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import build_debian_deps as bdd  # noqa: E402
import build_debian_tags as bdt  # noqa: E402

DUMP = """\
Package: foo-utils
Version: 1.0
Depends: libc6 (>= 2.34), python3:any, libfoo1 | libfoo2 [amd64], foo-utils
Pre-Depends: dpkg (>= 1.15)
Description: tools for foo
 Foo does things.
 .
 It does more things.
Tag: a::b,
 c::d

Package: foo-utils
Version: 0.9
Depends: oldlib
Description: an older version, ignored

Package: lonely
Description: depends on nothing

Package: selfish
Depends: selfish
Description: names only itself
"""


def test_recipe_labels_text_and_first_stanza() -> None:
    train, test = bdd.build(DUMP)
    docs = {r["id"]: r for r in train + test}
    assert set(docs) == {"foo-utils"}  # no deps, or only itself: left out; first stanza wins
    doc = docs["foo-utils"]
    assert doc["labels"] == ["dpkg", "libc6", "libfoo1", "libfoo2", "python3"]
    assert doc["text"] == "foo utils . tools for foo Foo does things. It does more things."


def test_split_is_by_name_hash() -> None:
    names = [f"pkg{i}" for i in range(2000)]
    share = sum(map(bdd.is_test, names)) / len(names)
    assert 0.17 < share < 0.24
    assert bdd.is_test("pkg7") == bdd.is_test("pkg7")


def test_main_writes_files_and_stats(tmp_path: Path) -> None:
    dump = tmp_path / "dump.txt"
    dump.write_text(DUMP)
    assert bdd.main(["--out", str(tmp_path / "out"), "--dump", str(dump)]) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["train"] + stats["test"] == 1
    with gzip.open(tmp_path / "out" / ("train.jsonl.gz" if stats["train"] else "test.jsonl.gz"), "rt") as f:
        assert json.loads(f.readline())["id"] == "foo-utils"


def test_tags_recipe_labels_a_package_with_its_debtags() -> None:
    """The same documents and split, labelled with the Tag field (folded over lines); a package
    without tags is left out, whatever its dependencies."""
    train, test = bdd.build(DUMP, bdt.tagged_document)
    docs = {r["id"]: r for r in train + test}
    assert set(docs) == {"foo-utils"} and docs["foo-utils"]["labels"] == ["a::b", "c::d"]
    assert docs["foo-utils"]["text"] == bdd.build(DUMP)[0 if train else 1][0]["text"]


@pytest.mark.parametrize("corpus", ["debian-deps", "debian-tags"])
def test_reference_build_is_carried_with_its_checksums(corpus: str) -> None:
    import hashlib

    folder = Path(__file__).resolve().parents[1] / "data" / corpus
    text = (folder / "PROVENANCE.md").read_text()
    for name in ("train.jsonl.gz", "test.jsonl.gz", "stats.json"):
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() in text, name
