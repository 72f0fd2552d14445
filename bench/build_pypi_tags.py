"""Build the pypi-tags corpus (short text, multi-label tagging) from the Python Package Index.

    python bench/build_pypi_tags.py --dump FILE --fetch N      # sample N project names, fetch their metadata
    python bench/build_pypi_tags.py --dump FILE --out DIR      # build the corpus from the dump

Why: the real sets we had (Bibtex, debian-deps) are two; the sets we are judged on include a
short-text tagging set, and a default is chosen across every real set we have. PyPI's metadata
is such a set, public, and reachable from the package registry this machine may use.

A document is one project: its name with ``-``, ``_`` and ``.`` as spaces, then `` . ``, then its
one-line ``summary``. Its labels are its ``Topic ::`` and ``Framework ::`` trove classifiers, each
whole (``Topic :: Scientific/Engineering :: GIS``) and lower-cased. The other classifiers
(licence, Python versions, status) say nothing a description carries. A project with no such
classifier, or no summary, is left out; so is a label that fewer than ``--min-label-count``
projects carry (a tag nobody else uses cannot be learnt or tested). The split is by name: a project whose
sha1(name) starts with a byte below 52 (20.3 %) is test, so it stays on its side of the split
whatever else a later sample holds.

``--fetch`` samples names uniformly (seeded) from the index's project list and reads
``https://pypi.org/pypi/<name>/json`` for each, keeping only name, summary, classifiers and
keywords in the dump (JSON lines); it resumes a dump it finds. The index changes by the day: the
dump is the source of record, and data/pypi-tags holds the reference build with its provenance.
Standard library only.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import gzip
import json
import random
import re
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from build_debian_deps import is_test  # the same split rule: sha1(name)[0] < 52 is test

INDEX_URL = "https://pypi.org/simple/"
PROJECT_URL = "https://pypi.org/pypi/{name}/json"
LABEL_PREFIXES = ("Topic ::", "Framework ::")
"""The trove classifiers that describe what a project is about (the rest: licence, versions, status)."""


def project_names() -> list[str]:
    """Every project name of the index's simple page, in its order."""
    with urllib.request.urlopen(INDEX_URL, timeout=120) as response:
        html = response.read().decode("utf-8")
    return re.findall(r'<a href="([^"/]+)/">', html)


def fetch_one(name: str) -> dict[str, Any] | None:
    """A project's name, summary, classifiers and keywords; None where it is gone (404)."""
    for attempt in range(4):
        try:
            with urllib.request.urlopen(PROJECT_URL.format(name=name), timeout=30) as response:
                info = json.loads(response.read())["info"]
            return {
                "name": info.get("name") or name,
                "summary": info.get("summary") or "",
                "classifiers": info.get("classifiers") or [],
                "keywords": info.get("keywords") or "",
            }
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
        except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError):
            pass
        time.sleep(2.0 * (attempt + 1))
    raise RuntimeError(f"{PROJECT_URL.format(name=name)}: no answer after 4 tries")


def fetch(dump: Path, n_projects: int, seed: int, workers: int) -> None:
    """Append the metadata of a seeded sample of ``n_projects`` names to ``dump`` (resumable)."""
    names = project_names()
    sample = random.Random(seed).sample(names, min(n_projects, len(names)))
    done: set[str] = set()
    if dump.exists():
        with dump.open() as lines:
            done = {json.loads(line)["query"] for line in lines}
    todo = [name for name in sample if name not in done]
    print(f"{len(names):,} projects in the index; sample {len(sample):,}; {len(todo):,} to fetch", flush=True)
    start = time.time()
    with dump.open("a") as out, cf.ThreadPoolExecutor(workers) as pool:
        for i, (name, record) in enumerate(zip(todo, pool.map(fetch_one, todo), strict=True), 1):
            out.write(json.dumps({"query": name, "record": record}) + "\n")
            if i % 2000 == 0:
                out.flush()
                print(f"{i:,}/{len(todo):,} in {time.time() - start:.0f} s", flush=True)


def document(record: dict[str, Any]) -> tuple[str, list[str]] | None:
    """(text, labels) of one project, or None where it has no summary or no label."""
    summary = " ".join(record["summary"].split())
    labels = sorted({c.strip().lower() for c in record["classifiers"] if c.startswith(LABEL_PREFIXES)})
    if not summary or not labels:
        return None
    return f"{re.sub(r'[-_.]+', ' ', record['name'])} . {summary}", labels


def build(dump: Path, out: Path, min_label_count: int) -> dict[str, Any]:
    """Write out/train.jsonl.gz, out/test.jsonl.gz and out/stats.json from the dump."""
    docs: dict[str, tuple[str, list[str]]] = {}
    n_dump = 0
    with dump.open() as lines:
        for line in lines:
            n_dump += 1
            record = json.loads(line)["record"]
            if record is None:
                continue
            made = document(record)
            key = re.sub(r"[-_.]+", "-", record["name"].lower())  # PEP 503 normal form
            if made is not None:
                docs[key] = made
    counts = Counter(label for _, labels in docs.values() for label in labels)
    kept = {label for label, n in counts.items() if n >= min_label_count}
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    for key in sorted(docs):
        text, labels = docs[key]
        labels = [label for label in labels if label in kept]
        if labels:
            splits["test" if is_test(key) else "train"].append({"id": key, "text": text, "labels": labels})
    out.mkdir(parents=True, exist_ok=True)
    for split, records in splits.items():
        # mtime 0: the same dump gives the same bytes
        with gzip.GzipFile(out / f"{split}.jsonl.gz", "wb", compresslevel=9, mtime=0) as handle:
            for record in records:
                handle.write((json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
    every = [r for records in splits.values() for r in records]
    n_labels = [len(r["labels"]) for r in every]
    stats = {
        "n_train": len(splits["train"]),
        "n_test": len(splits["test"]),
        "n_labels": len(kept),
        "labels_per_doc": round(sum(n_labels) / max(len(n_labels), 1), 3),
        "words_per_doc": round(sum(len(r["text"].split()) for r in every) / max(len(every), 1), 2),
        "min_label_count": min_label_count,
        "top_labels": Counter(label for r in splits["train"] for label in r["labels"]).most_common(10),
        "projects_in_dump": n_dump,
        "projects_with_labels": len(docs),
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dump", type=Path, required=True, help="JSON lines of fetched metadata")
    parser.add_argument("--fetch", type=int, default=0, help="sample and fetch this many project names")
    parser.add_argument("--seed", type=int, default=0, help="seed of the name sample")
    parser.add_argument("--workers", type=int, default=64, help="concurrent requests")
    parser.add_argument("--out", type=Path, help="build the corpus here from the dump")
    parser.add_argument("--min-label-count", type=int, default=5, help="drop labels fewer projects carry")
    args = parser.parse_args(argv)
    if args.fetch:
        fetch(args.dump, args.fetch, args.seed, args.workers)
    if args.out:
        print(json.dumps(build(args.dump, args.out, args.min_label_count), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
