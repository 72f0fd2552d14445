"""Every system at its defaults on validation splits of the real sets' training files.

    python bench/validate_peers.py [--sets pypi-tags,debian-tags-tfidf] [--splits 4]
                                   [--systems xmc-disentangled,omikuji-bonsai,...] [--first-split 500]
                                   [--out DIR]

bench/compare.py ranks the systems on each set's test split, once per seed; a gap of 0.2 P@1 there is
a few test documents (one of pypi-tags' 1,805 is 0.055). This script asks whether a gap between us and
a peer holds on other rows: split s holds out ``split_validation(X, Y, 0.2, first_split + s)`` of the
training file (the test file is never read), every system trains on the rest and is scored on the
held-out rows, through the same runner, metric code and prepared files as compare.py
(bench/harness.py). It prints each system's P@1 / P@5 and our paired lead over it with its standard
error over the splits.

Splits 100, 101, ... are the ones bench/select_defaults.py chose the defaults on, so a lead measured
there favours us; the default ``--first-split`` 500 gives rows no default was chosen on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from harness import RESULTS, SYSTEMS, WORK, prepare, run  # bench/ is on sys.path when run as a script
from select_defaults import REAL_SETS, VALIDATION_FRACTION, paired, training_rows, unseen_dropped

from xmc.core.rows import split_validation

OURS = "xmc-disentangled"
"""The system every lead is measured from: the product's defaults."""


def standings(name: str, systems: list[str], splits: int, first_split: int) -> dict[str, dict[str, Any]]:
    """Per system: P@1 and P@5 of each split (``split_P@1``, ``split_P@5``) and mean fit seconds."""
    X, Y = training_rows(name)
    out: dict[str, dict[str, Any]] = {s: {"split_P@1": [], "split_P@5": [], "fit_s": []} for s in systems}
    for s in range(splits):
        Xt, Yt, Xv, Yv = unseen_dropped(*split_validation(X, Y, VALIDATION_FRACTION, first_split + s))
        # rows left with no known word stay, as compare.py keeps such test rows: every system ranks them
        data = prepare(WORK / "validate" / f"{name}-{first_split + s}", Xt, Yt, Xv, Yv,
                       {"name": name, "validation_split": first_split + s})
        for system in systems:
            o = run(SYSTEMS[system], data, WORK / "validate" / system)
            if o.status != "ok":
                raise SystemExit(f"{system} on {name}, split {first_split + s}: {o.status}")
            out[system]["split_P@1"].append(o.metrics["P@1"])
            out[system]["split_P@5"].append(o.metrics["P@5"])
            out[system]["fit_s"].append(o.fit_s)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join(REAL_SETS), help="comma list of " + ", ".join(REAL_SETS))
    ap.add_argument("--splits", type=int, default=4, help="seeded 80/20 splits of each training file")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma list; ours is always run first")
    ap.add_argument("--first-split", type=int, default=500,
                    help="seed of the first split (100: the splits the defaults were chosen on)")
    ap.add_argument("--out", type=Path, default=RESULTS / "validate_peers")
    args = ap.parse_args(argv)
    sets = args.sets.split(",")
    systems = [OURS] + [s for s in args.systems.split(",") if s != OURS]
    if unknown := [s for s in sets if s not in REAL_SETS] + [s for s in systems if s not in SYSTEMS]:
        ap.error(f"unknown set or system: {', '.join(unknown)}")
    if args.splits < 2:
        ap.error("--splits must be 2 or more: a lead needs its standard error")
    lines = ["| set | system | P@1 / P@5 (fit s) | our P@1 lead +- se |", "|---|---|---|---|"]
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for name in sets:
        per_system = results[name] = standings(name, systems, args.splits, args.first_split)
        for system, r in per_system.items():
            gap = "" if system == OURS else "{:+.2f} +- {:.2f}".format(*paired(per_system[OURS], r, "P@1"))
            p1, p5, fit_s = (np.mean(r[key]) for key in ("split_P@1", "split_P@5", "fit_s"))
            lines.append(f"| {name} | {system} | {p1:.2f} / {p5:.2f} ({fit_s:.2f}) | {gap} |")
            print(lines[-1], flush=True)
    command = (f"`python bench/validate_peers.py --sets {args.sets} --splits {args.splits} "
               f"--first-split {args.first_split}`")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "validate_peers.md").write_text(
        f"{command}: validation splits of the training files, every system at its defaults; mean over "
        "the splits, leads paired per split.\n\n" + "\n".join(lines) + "\n")
    (args.out / "validate_peers.json").write_text(json.dumps(
        {"sets": sets, "splits": args.splits, "first_split": args.first_split, "results": results},
        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
