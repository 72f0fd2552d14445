"""Fetch public XMC benchmarks as features bundles: ``xmc datasets fetch eurlex-4k --out data/eurlex-4k``."""

from __future__ import annotations

import argparse
import sys

from xmc.cli.common import job_main, print_json

DESCRIPTION = """Download the XMC benchmarks PECOS distributes (TF-IDF npz, AttentionXML splits),
verify their sha256 and unpack them into a features bundle that `xmc train --data` reads.

  xmc datasets list                     the known datasets, published sizes, what is cached
  xmc datasets fetch NAME [--out DIR]   download (or reuse the cached archive), verify, unpack

Archives come from https://archive.org/download/pecos-dataset/xmc-base/NAME.tar.gz, or from
--mirror DIR_OR_URL (env XMC_DATASETS_MIRROR) holding NAME.tar.gz: a folder, file:// or http(s).
They are cached in --cache-dir (env XMC_CACHE_DIR, default ~/.cache/xmc/datasets).
Checksums: no published sha256 of these archives is known, so unless one is pinned (--sha256)
the first download's sha256 is recorded in <cache>/checksums.json and every later fetch is
checked against it (trust on first use); the output says which applied.
Example:
  xmc datasets fetch eurlex-4k --out data/eurlex-4k
  xmc train --data data/eurlex-4k --model runs/eurlex-4k
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from xmc.ops.datasets.fetch import DEFAULT_FEATURES, REGISTRY

    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    lst = sub.add_parser("list", help="the known datasets, their published sizes and what is cached")
    lst.add_argument("--cache-dir", help="archive cache (default: $XMC_CACHE_DIR or ~/.cache/xmc/datasets)")
    lst.add_argument("--json", action="store_true", help="print JSON instead of a table")

    f = sub.add_parser("fetch", help="download, verify and unpack one dataset into a features bundle",
                       description=f"Known: {', '.join(REGISTRY)}. Any other NAME needs --mirror.")
    f.add_argument("name", metavar="NAME", help="dataset name, e.g. eurlex-4k (see `xmc datasets list`)")
    f.add_argument("--out", help="bundle folder to write (replaced atomically; default: data/NAME)")
    f.add_argument("--mirror", metavar="DIR_OR_URL",
                   help="folder or base URL holding NAME.tar.gz, instead of archive.org "
                        "(default: $XMC_DATASETS_MIRROR)")
    f.add_argument("--cache-dir", help="archive cache (default: $XMC_CACHE_DIR or ~/.cache/xmc/datasets)")
    f.add_argument("--sha256", metavar="HEX", help="pin the archive's sha256 (overrides the recorded one)")
    f.add_argument("--features", default=DEFAULT_FEATURES,
                   help=f"feature folder inside the archive (default: {DEFAULT_FEATURES})")
    f.add_argument("--no-pifa", dest="pifa", action="store_false",
                   help="skip the bundle's pifa/ (normalize(Y^T X)); training does not read it, and "
                        "on wiki-500k / amazon-3m it holds over a billion non-zeros")
    f.add_argument("--skip-registry-check", dest="check_facts", action="store_false",
                   help="accept label and document counts that differ from the published ones")
    f.add_argument("--force", action="store_true", help="rebuild the bundle even if it is up to date")
    f.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default: 60)")


def run(args: argparse.Namespace) -> int:
    from xmc.ops.datasets import fetch as datasets

    if args.action == "list":
        rows = datasets.listing(args.cache_dir)
        if args.json:
            print_json({"cache_dir": str(datasets.cache_dir(args.cache_dir)), "datasets": rows})
        else:
            _table(rows, str(datasets.cache_dir(args.cache_dir)))
        return 0
    out = args.out or f"data/{args.name}"
    result = datasets.fetch(args.name, out, cache=args.cache_dir, mirror=args.mirror, sha256_pin=args.sha256,
                            features=args.features, pifa=args.pifa, check_facts=args.check_facts,
                            force=args.force, timeout=args.timeout)
    m = result.manifest
    print_json({"dataset": result.name, "bundle": str(result.bundle), "archive": str(result.archive),
                "sha256": result.sha256, "checksum": result.checksum, "reused_archive": result.reused_archive,
                "reused_bundle": result.reused_bundle, "n_features": m["n_features"],
                "n_labels": m["n_labels"], "splits": {k: v["rows"] for k, v in m["splits"].items()},
                "checked_against_registry": m["registry"]["checked"], "seconds": m["seconds"]})
    return 0


def _table(rows: list[dict[str, object]], cache: str) -> None:
    def num(v: object) -> str:
        return f"{v:,}" if isinstance(v, int) else "?"

    def size(v: object) -> str:
        return f"{v / 2**20:,.1f} MiB" if isinstance(v, int) else "-"

    head = ("name", "labels", "train", "test", "features", "cached", "sha256")
    body = [(str(r["name"]), num(r["labels"]), num(r["train"]), num(r["test"]), num(r["features"]),
             size(r["cached_bytes"]), str(r["sha256"] or "-")) for r in rows]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    for row in [head, *body]:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                          strict=True))))
    print(f"\ncache: {cache}  (sha256: pinned = in the registry, recorded = trusted on first fetch)")


def main(argv: list[str] | None = None) -> int:
    return job_main("xmc datasets", DESCRIPTION, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
