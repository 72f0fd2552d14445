"""Every fusion weight of the hybrid, on held-out and test rows: can any weight buy the moonshot?

    python bench/prime_fusion_grid.py [--sets bibtex,pypi-tags,debian] [--out bench/results]

Issue 17's moonshot asks a hybrid for P@1 >= tree + 0.3, or PSP@5 >= tree + 1.0 without costing
P@1 (>= tree - 0.1). ``fit_fusion`` picks one (alpha, beta) on held-out rows by (P@1 + P@5) / 2;
this script trains one default hybrid per set (``bench/prime.py``'s data and params) and scores
the whole grid (alpha 0 = the tree alone, and every alpha x beta of ``xmc.core.dense.fusion``, free
(kept 0) and with the tree's first label kept in place (kept 1, the default)) on the same held-out
rows the fit used and on the test split, so a weight that trades P@1 for tail labels (PSP@5) shows.
Test figures are reported, never used to choose. Writes prime_fusion_grid.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("P@1", "P@5", "PSP@5")


def grid(name: str) -> list[dict[str, Any]]:
    """One row per (split, alpha, beta): the hybrid's P@1, P@5 and PSP@5."""
    from prime import load_set

    from xmc import XMCParams
    from xmc.core.dense.fusion import ALPHAS, BETAS, fuse
    from xmc.core.fit import fit
    from xmc.core.metrics import evaluate
    from xmc.core.model import prepare_features
    from xmc.core.rows import split_validation
    from xmc.core.sparse import csr

    X, Y, Xt, Yt, text, _ = load_set(name)
    params = XMCParams().replace(dense="prime", refit_trees=False)  # the trees the fusion was fitted with
    model = fit(X, Y, params, label_text=text)
    assert model.dense is not None
    Xp = prepare_features(X, params, X.shape[1])
    held = params.dense.held_out_fraction(params.disentangle.validation_fraction)
    _, _, Xv, Yv = split_validation(Xp, csr(Y), held, params.tree.seed)  # the fit's own held-out rows
    k = max(params.predict.topk, 10)
    rows = []
    splits = {"held-out": (Xv, Yv), "test": (prepare_features(Xt, params, X.shape[1]), Yt)}
    for split, (A, B) in splits.items():
        tree = model.predict(A, topk=k, components="tree")
        idx, vals = model.dense.topk(A, k)
        for kept in (0, 1):
            for beta in BETAS:
                for alpha in (0.0,) + ALPHAS:
                    hybrid = fuse(tree, idx, vals, alpha, beta, k, kept)
                    e = evaluate(B, hybrid, (1, 5), label_counts=model.label_counts, n_train=model.n_train)
                    rows.append({"set": name, "split": split, "kept": kept, "alpha": alpha, "beta": beta,
                                 **{m: round(e[m], 2) for m in METRICS}})
    return rows


def write(rows: list[dict[str, Any]], out: Path) -> None:
    """The grid as gains over the tree alone, per set and split; the best PSP@5 gain that keeps P@1."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "prime_fusion_grid.json").write_text(json.dumps(rows, indent=1))
    lines = ["# bench/prime_fusion_grid.py", "",
             "Gains over the tree alone (alpha 0) of each fusion weight, in points.", "",
             "| set | split | kept | alpha | beta | P@1 | P@5 | PSP@5 |", "|---|---|---|---|---|---|---|---|"]
    summary = ["", "| set | split | kept | tree P@1 / PSP@5 | best PSP@5 gain with P@1 >= tree - 0.1 "
               "(alpha, beta) |", "|---|---|---|---|---|"]
    for key in dict.fromkeys((r["set"], r["split"], r.get("kept", 0)) for r in rows):
        part = [r for r in rows if (r["set"], r["split"], r.get("kept", 0)) == key]
        tree = next(r for r in part if r["alpha"] == 0)
        for r in part:
            if r["alpha"] > 0:
                lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {r['alpha']} | {r['beta']} | "
                             + " | ".join(f"{r[m] - tree[m]:+.2f}" for m in METRICS) + " |")
        ok = [r for r in part if r["alpha"] > 0 and r["P@1"] >= tree["P@1"] - 0.1]
        best = max(ok, key=lambda r: r["PSP@5"], default=None)
        summary.append(f"| {key[0]} | {key[1]} | {key[2]} | {tree['P@1']} / {tree['PSP@5']} | "
                       + (f"{best['PSP@5'] - tree['PSP@5']:+.2f} ({best['alpha']}, {best['beta']})" if best
                          else "none keeps P@1") + " |")
    text = "\n".join(lines + summary) + "\n"
    (out / "prime_fusion_grid.md").write_text(text)
    print(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="bibtex,pypi-tags,debian")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--from-json", default="", help="only rewrite the tables from a saved grid")
    args = ap.parse_args()
    if args.from_json:
        rows = json.loads(Path(args.from_json).read_text())
    else:
        rows = [r for name in args.sets.split(",") for r in grid(name)]
    write(rows, Path(args.out))


if __name__ == "__main__":
    main()
