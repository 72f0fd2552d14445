"""Build the debian-deps corpus (raw text, extreme multi-label) from Debian's package index.

    apt-get update && python bench/build_debian_deps.py --out DIR [--dump FILE] [--compare REF_DIR]

A document is one binary package: its name with dashes as spaces, then `` . ``, then its
description (the short line, and the long text where the index carries one). Its labels are the
packages named in its ``Depends`` and ``Pre-Depends`` fields: version constraints (``(>= 1.2)``),
architecture lists (``[amd64]``), build profiles (``<!nocheck>``) and architecture qualifiers
(``python3:any``) are dropped, and every alternative of ``a | b`` is kept. A package that names
only itself, or nothing, is left out. The split is by the package's name: the documents whose
sha1(name) starts with a byte below 52 (52/256 = 20.3 %) are test, so a package stays on its
side of the split whatever else the index holds on another day.

Writes DIR/train.jsonl.gz and DIR/test.jsonl.gz (records ``{"id", "text", "labels"}``, sorted by
id, labels sorted) and DIR/stats.json, and prints the stats. ``--compare`` prints how they differ
from another build's (data/debian-deps holds the reference build). Standard library only, so the
system python3 of a Debian machine runs it. The index (``apt-cache dumpavail``) changes by the
day: compare scores only within one build.

Debian 12's ``Packages`` index carries only the short description of most packages (the long
text moved to the ``Translation-*`` files, which ``apt-cache dumpavail`` does not merge), so most
documents are the name and one line.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

TEST_BYTE_BELOW = 52
"""A package is in test when the first byte of sha1(name) is below this (52/256 = 20.3 %)."""
DEP_FIELDS = ("Depends", "Pre-Depends")
_QUALIFIERS = re.compile(r"\([^)]*\)|\[[^\]]*\]|<[^>]*>")
"""Version constraints, architecture lists and build profiles inside one dependency."""

Record = dict[str, Any]
"""One document: {"id": package name, "text": str, "labels": sorted package names}."""


def stanzas(dump: str) -> Iterator[dict[str, str]]:
    """The fields of each package stanza of a Debian control file (RFC-822 style).

    A continuation line (leading space or tab) extends the previous field; it is kept on a line
    of its own (stripped) so a multi-line field can be told apart from a folded one.
    """
    fields: dict[str, str] = {}
    key: str | None = None
    for line in dump.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, key = {}, None
        elif line[0] in " \t":
            if key is not None:
                fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    if fields:
        yield fields


def dependencies(fields: dict[str, str]) -> set[str]:
    """Package names in Depends and Pre-Depends: every alternative, no version or arch qualifier."""
    names: set[str] = set()
    for field in DEP_FIELDS:
        for clause in fields.get(field, "").replace("\n", " ").split(","):
            for alternative in clause.split("|"):
                name = _QUALIFIERS.sub("", alternative).strip().split(":", 1)[0].strip()
                if name:
                    names.add(name)
    names.discard(fields.get("Package", ""))
    return names


def description(fields: dict[str, str]) -> str:
    """Short and long description on one line; the long text's ``.`` paragraph breaks dropped."""
    lines = fields.get("Description", "").split("\n")
    return " ".join(line for line in (s.strip() for s in lines) if line and line != ".")


def document(fields: dict[str, str],
             labels_of: Callable[[dict[str, str]], set[str]] = dependencies) -> Record | None:
    """A stanza as a document labelled by ``labels_of`` (its dependencies here), or None when it
    names no package or has no label."""
    name = fields.get("Package", "")
    labels = labels_of(fields)
    if not name or not labels:
        return None
    return {"id": name, "text": f"{name.replace('-', ' ')} . {description(fields)}", "labels": sorted(labels)}


def is_test(name: str) -> bool:
    """The split rule: by a hash of the name alone, so it does not depend on the rest of the index."""
    return hashlib.sha1(name.encode("utf-8")).digest()[0] < TEST_BYTE_BELOW


def build(dump: str, make: Callable[[dict[str, str]], Record | None] = document,
          ) -> tuple[list[Record], list[Record]]:
    """Train and test documents of a ``dumpavail`` text (``make`` turns a stanza into one, or
    None); a package's first stanza wins."""
    docs: dict[str, Record] = {}
    seen: set[str] = set()
    for fields in stanzas(dump):
        name = fields.get("Package", "")
        if not name or name in seen:
            continue
        seen.add(name)
        doc = make(fields)
        if doc is not None:
            docs[name] = doc
    train = [docs[n] for n in sorted(docs) if not is_test(n)]
    test = [docs[n] for n in sorted(docs) if is_test(n)]
    return train, test


def stats(train: list[Record], test: list[Record]) -> dict[str, Any]:
    """Sizes and label figures (same keys as data/debian-deps/stats.json)."""
    freq = Counter(label for r in train for label in r["labels"])
    return {"train": len(train), "test": len(test), "labels_in_train": len(freq),
            "labels_per_doc": round(sum(len(r["labels"]) for r in train) / max(1, len(train)), 2),
            "labels_seen_once": sum(1 for c in freq.values() if c == 1),
            "most_common": [[name, count] for name, count in freq.most_common(10)]}


def write_jsonl_gz(path: Path, records: Iterable[Record]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_jsonl_gz(path: Path) -> list[Record]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def compare(out: Path, ref: Path) -> dict[str, Any]:
    """How a build differs from a reference build: stats side by side, and document overlap."""
    mine = {r["id"]: r for split in ("train", "test") for r in read_jsonl_gz(out / f"{split}.jsonl.gz")}
    theirs = {r["id"]: r for split in ("train", "test") for r in read_jsonl_gz(ref / f"{split}.jsonl.gz")}
    both = mine.keys() & theirs.keys()
    ref_stats = json.loads((ref / "stats.json").read_text())
    new_stats = json.loads((out / "stats.json").read_text())
    return {"stats": {k: [ref_stats.get(k), new_stats.get(k)] for k in new_stats if k != "most_common"},
            "docs_only_in_reference": len(theirs.keys() - mine.keys()),
            "docs_only_in_this_build": len(mine.keys() - theirs.keys()),
            "docs_in_both": len(both),
            "same_labels": sum(mine[n]["labels"] == theirs[n]["labels"] for n in both),
            "same_text": sum(mine[n]["text"] == theirs[n]["text"] for n in both)}


def main(argv: list[str] | None = None, make: Callable[[dict[str, str]], Record | None] = document,
         doc: str | None = __doc__) -> int:
    """The command line of this builder, and of another corpus of the same index (``make``, ``doc``)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--dump", type=Path, help="read this saved `apt-cache dumpavail` text instead")
    ap.add_argument("--compare", type=Path, help="a reference build's folder to compare with")
    args = ap.parse_args(argv)
    if args.dump:
        dump = args.dump.read_text(encoding="utf-8", errors="replace")
    else:
        dump = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True,
                              errors="replace").stdout
    train, test = build(dump, make)
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl_gz(args.out / "train.jsonl.gz", train)
    write_jsonl_gz(args.out / "test.jsonl.gz", test)
    figures = stats(train, test)
    (args.out / "stats.json").write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures))
    if args.compare:
        print(json.dumps(compare(args.out, args.compare), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
