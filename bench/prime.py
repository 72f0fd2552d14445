"""PRIME beside the tree: dense-only, tree-only and hybrid test P@k of one model per set, and ablations.

    python bench/prime.py [--sets bibtex,debian,pypi-tags] [--ablations] [--workers 1,2] [--seeds 0,1,2]
                          [--out bench/results]

For each real set one hybrid model is trained with the product's defaults plus ``--dense prime``
(the tree trained on the same rows, held-out rows apart for the fusion): ``components`` tree, dense
and all are scored on the test split, so "tree" is the same tree the hybrid fuses. With
``--ablations`` each of label text, centroids, free vectors, the dynamic margin, cluster batches
and the prototype transformer is switched from its default in turn (the dense part's test P@1 is what moves).
With ``--workers 1,2`` the dense part is trained by 1 and by 2 Ray Train workers (DDP, gloo).
With ``--seeds 0,1,2`` each set's default hybrid is trained once per seed (``--seed``: the tree, the
held-out rows, the dense part's initialisation and batches), so a fusion weight's test effect shows
beside its spread.
Prints a markdown table; writes prime_<sets>[_ablations].{md,json} under --out. Peak RSS is this process's
(the fit runs in it), read after each fit.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent

ABLATIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "label text on": {"label_text": True},
    "no centroids": {"centroids": False},
    "no free vectors": {"free_vectors": False},
    "dynamic margin (PRIME's 0.1 to 0.3)": {"margin_min": 0.1},
    "cluster batches on": {"cluster_batches": True},
    "prototype transformer (1 layer)": {"prototype_layers": 1},
    "PRIME's softmax weighting (tau 0.1)": {"softmax_tau": 0.1},
    "every epoch (patience 0; the best epoch still kept)": {"dense_patience": 0},
    "sense prototypes (one per label copy)": {"sense_prototypes": True},
}


def load_set(name: str) -> tuple[Any, ...]:
    """(X, Y, X_test, Y_test, label text rows or None, description)."""
    from xmc.io.readers import read_npz

    if name == "bibtex":
        d = ROOT / "data" / "bibtex"
        return (read_npz(d / "X.trn.npz"), read_npz(d / "Y.trn.npz", binary=True),
                read_npz(d / "X.tst.npz"), read_npz(d / "Y.tst.npz", binary=True), None,
                "Bibtex (data/bibtex, XC features: no vocabulary)")
    from compare import TEXT_CORPORA, featurized, featurized_bundle

    from xmc.core.dense.fit import label_text_rows
    from xmc.io.features import load_label_names
    from xmc.io.vectorizer import TextVectorizer

    corpus = {"debian": "debian-deps"}.get(name, name)
    if corpus not in TEXT_CORPORA:
        raise SystemExit(f"unknown set {name!r}: use bibtex, debian or one of {sorted(TEXT_CORPORA)}")
    X, Y, Xt, Yt, desc = featurized(corpus)()
    bundle = featurized_bundle(corpus)
    text = label_text_rows(load_label_names(bundle), TextVectorizer.load(bundle / "vectorizer"))
    return X, Y, Xt, Yt, text, desc


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(name: str, data: tuple[Any, ...], dense: dict[str, Any], executor: Any = None) -> dict[str, Any]:
    from xmc import XMCParams
    from xmc.core.fit import fit
    from xmc.core.metrics import evaluate

    X, Y, Xt, Yt, text, _ = data
    params = XMCParams().replace(dense="prime", **dense)
    t0 = time.perf_counter()
    model = fit(X, Y, params, label_text=text, executor=executor)
    seconds = time.perf_counter() - t0
    row: dict[str, Any] = {"set": name, "change": dense, "fit_s": round(seconds, 1),
                           "dense_s": round(model.info["dense"]["seconds"], 1),
                           "peak_rss_mib": round(peak_mib()),
                           "alpha": model.info["dense"]["alpha"], "gamma": model.info["dense"]["gamma"],
                           "held_out": model.info["dense"]["held_out"]}
    for part in ("tree", "dense", "all"):
        e = evaluate(Yt, model.predict(Xt, topk=5, components=part), (1, 5), label_counts=model.label_counts,
                     n_train=model.n_train)
        row[part] = {k: round(e[k], 2) for k in ("P@1", "P@5", "PSP@5")}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="bibtex,debian")
    ap.add_argument("--ablations", action="store_true")
    ap.add_argument("--variants", default="", help="with --ablations: only these (comma-separated names)")
    ap.add_argument("--workers", default="", help="e.g. 1,2: Ray Train workers compared on the first set")
    ap.add_argument("--epochs", type=int, default=0, help="dense_epochs override (0 = the default)")
    ap.add_argument("--seeds", default="0", help="e.g. 0,1,2: the default hybrid once per seed")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # one line per PRIME epoch
    rows = []
    base = {"dense_epochs": args.epochs} if args.epochs else {}
    for name in args.sets.split(","):
        data = load_set(name)
        seeds = [int(v) for v in args.seeds.split(",")]
        runs = ABLATIONS if args.ablations else {"default": {}}
        if len(seeds) > 1:
            runs = {f"seed {s}": {"seed": s} for s in seeds}
        if args.variants:
            runs = {k: v for k, v in runs.items() if k in args.variants.split(",")}
        for label, change in runs.items():
            rows.append({"variant": label, **run(name, data, {**base, **change})})
        if args.workers:
            from xmc.engines.ray_executor import RayExecutor
            from xmc.params import ExecutorParams

            executor = RayExecutor(ExecutorParams(executor="ray"), show_progress=False)
            for w in (int(v) for v in args.workers.split(",")):
                rows.append({"variant": f"Ray Train, {w} worker(s)",
                             **run(name, data, {**base, "dense_workers": w}, executor)})
    write(rows, Path(args.out))


def write(rows: list[dict[str, Any]], out: Path) -> None:
    lines = ["| set | variant | tree P@1 | dense P@1 | hybrid P@1 | tree P@5 | dense P@5 | hybrid P@5 | "
             "tree PSP@5 | hybrid PSP@5 | alpha | gamma | fit s (dense s) | peak RSS MiB |",
             "|" + "---|" * 14]
    for r in rows:
        lines.append(f"| {r['set']} | {r['variant']} | {r['tree']['P@1']} | {r['dense']['P@1']} "
                     f"| {r['all']['P@1']} "
                     f"| {r['tree']['P@5']} | {r['dense']['P@5']} | {r['all']['P@5']} | {r['tree']['PSP@5']} "
                     f"| {r['all']['PSP@5']} | {r['alpha']} | {r['gamma']} | {r['fit_s']} ({r['dense_s']}) "
                     f"| {r['peak_rss_mib']} |")
    table = "\n".join(lines)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    stem = "prime_" + "_".join(sorted({r["set"] for r in rows}))
    variants = {r["variant"] for r in rows}
    if len(variants) > 1:
        stem += "_seeds" if all(v.startswith("seed ") for v in variants) else "_ablations"
    (out / f"{stem}.md").write_text("# bench/prime.py\n\n" + table + "\n")
    (out / f"{stem}.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
