"""Build the debian-tags corpus (raw short text, a few hundred labels) from Debian's package index.

    apt-get update && python bench/build_debian_tags.py --out DIR [--dump FILE] [--compare REF_DIR]

The documents of debian-deps (``bench/build_debian_deps.py``: a binary package's name with dashes
as spaces, `` . ``, its description; the same split by sha1 of the name), labelled with the
package's debtags instead of its dependencies: the ``Tag`` field's facet::value terms
(``role::program``, ``implemented-in::c``, ``interface::commandline``, ...). Packages without a
tag are left out. About 600 labels, 3-4 per document, most with hundreds of documents: a tagging
set, the shape of issue 16's hidden short-text tagging set, which our other sets are not (Bibtex
has 159 labels on long abstracts, pypi-tags 243 labels at 1.9 per document, debian-deps 31.7K).

Writes DIR/train.jsonl.gz, DIR/test.jsonl.gz and DIR/stats.json as debian-deps' builder does
(standard library only). The index changes by the day: compare scores only within one build;
data/debian-tags holds the reference build.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_debian_deps import Record, document, main  # noqa: E402


def tags(fields: dict[str, str]) -> set[str]:
    """The facet::value terms of the ``Tag`` field (comma-separated, folded over lines)."""
    return {t.strip() for t in fields.get("Tag", "").replace("\n", " ").split(",") if t.strip()}


def tagged_document(fields: dict[str, str]) -> Record | None:
    """A stanza as a document labelled with its debtags, or None when it has no tag."""
    return document(fields, tags)

if __name__ == "__main__":
    sys.exit(main(make=tagged_document, doc=__doc__))
