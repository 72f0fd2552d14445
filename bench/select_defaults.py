"""Choose defaults on validation splits of the training data of every real set (never a test split).

    python bench/select_defaults.py [--sets bibtex,debian-deps,...] [--splits 3] [--first-split 100]
                                    [--variants NAME ...] [--params '{"cost": 0.7}' ...] [--out DIR]

Each real set's *training* file is split 80/20 by ``split_validation(X, Y, 0.2, 100 + s)`` for
s < --splits (the same rows for every variant: paired; ``--first-split`` moves the 100, so a chosen
default can be confirmed on rows it was not chosen on). Every variant is the product's
defaults (``XMCParams()``, the one source) with a few fields changed; it is fitted on each 80 %
and scored on the 20 %. Prints, per set and averaged over sets, validation P@1 / P@5 and the fit
seconds, and writes OUT/select_defaults.{md,json}. A variant becomes a default only where it
wins on the mean over sets without losing a set by more than noise (docs/performance.md).

Text sets (debian-deps, pypi-tags) are featurized once by ``xmc featurize`` at its defaults
(bench/compare.py's bundle, cached under runs/bench), and again as the reference TF-IDF
(``*-tfidf``, fitted on the training file) and its words alone (``*-words``: short rows); Bibtex
is its XC BoW, bibtex-composite the same rows with sibling labels merged, debian-deps-2hop
debian-deps with many labels per row (compare.two_hop).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from compare import DATASETS, RESULTS, featurized_bundle  # bench/ is on sys.path when run as a script

from xmc import XMCParams
from xmc.core.fit import fit
from xmc.core.metrics import evaluate
from xmc.core.rows import split_validation

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "single-partition": {"rounds": 0},
    "cost-as-given": {"recurring_df": 0},
    "cost-0.35": {"cost": 0.35},
    "cost-0.7": {"cost": 0.7},
    "cost-1": {"cost": 1.0},
    "leaf-50": {"max_leaf_size": 50},
    "leaf-200": {"max_leaf_size": 200},
    "branching-8": {"branching_factor": 8},
    "beam-20": {"beam_size": 20},
    "l3-hinge": {"post_processor": "l3-hinge"},
    "three-copies": {"max_copies": 3},
    "trees-3": {"n_trees": 3},
    "teacher-forced": {"negatives": "tfn"},
    "man-top-2": {"man_top": 2},
    "man-beam": {"man_top": 0},
    "label-cost-0.1": {"label_cost_exponent": -0.1},
    "label-cost-0.2": {"label_cost_exponent": -0.2},
}
"""Named variants: fields of XMCParams changed from the defaults (flat names, as the CLI's flags)."""
REAL_SETS = ("bibtex", "debian-deps", "pypi-tags", "debian-deps-tfidf", "pypi-tags-tfidf", "bibtex-composite",
             "debian-tags", "debian-tags-tfidf", "debian-deps-2hop", "pypi-tags-words", "debian-tags-words")
"""The *-tfidf sets are the text corpora as a plain scikit-learn-style TF-IDF (bench/tfidf.py), the
form in which users (and the hidden sets of issue 16) hand `xmc train` their features; the
composite set is Bibtex with sibling labels merged (labels with two senses); debian-deps-2hop is
debian-deps in the hidden bookmarks set's shape (~12 labels per row, 500 features; compare.two_hop); the
*-words sets are the tag corpora's word TF-IDFs (scikit-learn's default range), rows of 8-10 features."""
VALIDATION_FRACTION = 0.2


def training_rows(name: str) -> tuple[Any, Any]:
    """(X, Y) of a real set's training file: never its test split."""
    from xmc.io.features import load_split

    if name in ("bibtex", "bibtex-composite", "debian-deps-2hop") or name.endswith(("-tfidf", "-words")):
        # compare.py's builder, its test half dropped here (a TF-IDF's vocabulary and IDF come from the
        # training file alone)
        X, Y, *_ = DATASETS[name].build()
        return X, Y
    split = load_split(featurized_bundle(name), "train")  # our featurizer's cached bundle, train only
    return split.X, split.Y


def unseen_dropped(Xt: Any, Yt: Any, Xv: Any, Yv: Any) -> tuple[Any, Any, Any, Any]:
    """The split with the validation rows' features that no fitting row has removed.

    A text set's vocabulary is fitted on the whole training file, so a validation row keeps words
    that only it (or other validation rows) has; a test row loses such words (out of vocabulary)
    and is normalised over the rest. Without this, validation rows spend part of their norm on
    features the model cannot know, which favours a larger C (docs/performance.md)."""
    seen = np.bincount(Xt.indices, minlength=Xt.shape[1]) > 0
    Xv = Xv.tocsr(copy=True)
    Xv.data[~seen[Xv.indices]] = 0
    Xv.eliminate_zeros()
    return Xt, Yt, Xv, Yv


def score(splits: list[tuple[Any, ...]], changes: dict[str, Any]) -> dict[str, Any]:
    """Mean validation P@1, P@5 and fit seconds of one variant over the paired splits, and the
    per-split P@1 and P@5 (``split_P@1``, ``split_P@5``) for the paired changes."""
    rows = []
    for Xt, Yt, Xv, Yv in splits:
        start = time.perf_counter()
        model = fit(Xt, Yt, XMCParams().replace(**changes))
        seconds = time.perf_counter() - start
        m = evaluate(Yv, model.predict(Xv, topk=5), (1, 5))
        rows.append((m["P@1"], m["P@5"], seconds))
    p1, p5, seconds = np.mean(rows, axis=0)
    return {"P@1": float(p1), "P@5": float(p5), "fit_s": float(seconds),
            "split_P@1": [float(r[0]) for r in rows], "split_P@5": [float(r[1]) for r in rows]}


FIRST_SPLIT = 100
"""Split s is ``split_validation(X, Y, VALIDATION_FRACTION, FIRST_SPLIT + s)``: the defaults were chosen
on these; ``--first-split`` 500 gives rows no default was chosen on (as bench/validate_peers.py)."""


NOISE_SE = 2.0
"""A set is lost beyond noise when its paired P@1 change is below -NOISE_SE standard errors (over the
splits) and below -0.05 (a change of a few rows is noise however steady)."""


def paired(variant: dict[str, Any], default: dict[str, Any], metric: str) -> tuple[float, float]:
    """(mean change, its standard error) of a metric over the paired splits."""
    d = np.subtract(variant[f"split_{metric}"], default[f"split_{metric}"])
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()), se


def changes_table(results: dict[str, dict[str, dict[str, Any]]], sets: list[str]) -> str:
    """Markdown: each variant's P@1 change +- paired standard error and P@5 change per set against
    'default', the mean P@1 change, and the sets lost beyond noise (the selection rule: a variant
    becomes a default only where the mean gains and no set is lost beyond noise)."""
    base = results["default"]
    head = ("| variant | " + " | ".join(f"{s} P@1 +- se / P@5" for s in sets)
            + " | mean P@1 | lost beyond noise |")
    lines = [head, "|" + "---|" * (len(sets) + 3)]
    for variant, per_set in results.items():
        if variant == "default":
            continue
        cells, lost, mean = [], [], []
        for s in sets:
            d1, se = paired(per_set[s], base[s], "P@1")
            d5, _ = paired(per_set[s], base[s], "P@5")
            cells.append(f"{d1:+.2f} +- {se:.2f} / {d5:+.2f}")
            mean.append(d1)
            if d1 < -0.05 and d1 < -NOISE_SE * se:
                lost.append(s)
        lines.append(f"| {variant} | " + " | ".join(cells)
                     + f" | {np.mean(mean):+.2f} | {', '.join(lost) or 'none'} |")
    return "\n".join(lines)


def table(results: dict[str, dict[str, dict[str, float]]], sets: list[str]) -> str:
    """Markdown: a row per variant, P@1 / P@5 per set, the mean P@1 and its change from default."""
    head = "| variant | " + " | ".join(f"{s} P@1 / P@5 (fit s)" for s in sets) + " | mean P@1 | vs default |"
    lines = [head, "|" + "---|" * (len(sets) + 3)]
    base = np.mean([results["default"][s]["P@1"] for s in sets]) if "default" in results else None
    for variant, per_set in results.items():
        cells = [f"{r['P@1']:.2f} / {r['P@5']:.2f} ({r['fit_s']:.1f})" for r in (per_set[s] for s in sets)]
        mean = float(np.mean([per_set[s]["P@1"] for s in sets]))
        delta = "" if base is None else f"{mean - base:+.2f}"
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {mean:.2f} | {delta} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join(REAL_SETS), help="comma list of " + ", ".join(REAL_SETS))
    ap.add_argument("--splits", type=int, default=3, help="seeded 80/20 splits of each training file")
    ap.add_argument("--first-split", type=int, default=FIRST_SPLIT,
                    help=f"seed of the first split (default {FIRST_SPLIT}: the rows the defaults were "
                         "chosen on; 500, as validate_peers.py, confirms a default on others)")
    ap.add_argument("--variants", nargs="*", default=["default", "single-partition"],
                    help="named variants: " + ", ".join(VARIANTS))
    ap.add_argument("--params", nargs="*", default=[], help="more variants as JSON objects of changed fields")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    sets = args.sets.split(",")
    unknown = [s for s in sets if s not in REAL_SETS] + [v for v in args.variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown set or variant: {', '.join(unknown)}")
    variants = {name: VARIANTS[name] for name in args.variants}
    variants.update({text: json.loads(text) for text in args.params})
    for changes in variants.values():
        XMCParams().replace(**changes)  # a bad field fails here, before any fit
    results: dict[str, dict[str, dict[str, float]]] = {v: {} for v in variants}
    for name in sets:
        X, Y = training_rows(name)
        splits = [unseen_dropped(*split_validation(X, Y, VALIDATION_FRACTION, args.first_split + s))
                  for s in range(args.splits)]
        for variant, changes in variants.items():
            results[variant][name] = score(splits, changes)
            r = results[variant][name]
            print(f"{name} {variant}: validation P@1 {r['P@1']:.2f} P@5 {r['P@5']:.2f} "
                  f"fit {r['fit_s']:.1f} s", flush=True)
    text = table(results, sets)
    if "default" in results and len(results) > 1 and args.splits > 1:
        text += ("\n\nPaired changes against the default (mean over the splits):\n\n"
                 + changes_table(results, sets))
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "select_defaults.md").write_text(
        f"`python bench/select_defaults.py --sets {args.sets} --splits {args.splits} --first-split "
        f"{args.first_split}`: validation splits of "
        "the training files only; mean over the splits.\n\n" + text + "\n")
    (args.out / "select_defaults.json").write_text(json.dumps(
        {"sets": sets, "splits": args.splits, "first_split": args.first_split, "variants": variants,
         "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
