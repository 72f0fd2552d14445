"""Disentangled prototypes on the synthetic multi-sense truth: per-sense routing VI and precision.

    python bench/prime_senses.py [--labels 400] [--train 20000] [--test 5000] [--params JSON]
                                 [--out bench/results]

One world of ``xmc synth`` (20 % of labels have two senses in two topics). A hybrid is trained
twice with the same seed, so the same tree and the same dense network: once with one prototype per
label, once with ``sense_prototypes`` (one per label copy of the tree). For every two-sense label
with two or more copies, each test pair (document, label) is routed to a copy by (a) the tree's
matcher (the copy whose leaf scores highest) and (b) the sense prototypes (the copy whose prototype
scores highest); the Variation of Information of each routing against the true sense is averaged
over labels, beside a random routing of the same proportions (a permutation). Dense-only and hybrid
test P@1/P@5, and R@5 over the two-sense labels' pairs, are reported for both prototype kinds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent


def recall_on(Y: sp.csr_matrix, pred: sp.csr_matrix, labels: np.ndarray) -> float:
    """Share of the test pairs of ``labels`` found in the top-5 (R@5 restricted to those labels)."""
    mask = np.zeros(Y.shape[1], bool)
    mask[labels] = True
    Yl = sp.csr_matrix(Y.multiply(mask[None, :]))
    hit = Yl.multiply(pred > 0)
    return 100.0 * hit.nnz / max(Yl.nnz, 1)


def routing_vi(model: Any, X: sp.csr_matrix, sense: sp.csr_matrix, multi: np.ndarray, seed: int = 0
               ) -> dict[str, float]:
    """Mean VI (nats) against the true sense of tree, sense-prototype and random routing."""
    from xmc.core.predict import leaf_beam_scores
    from xmc.research.composite import variation_of_information

    rng = np.random.default_rng(seed)
    Xp = model.preprocess(X)
    leaf = leaf_beam_scores(Xp, model.tree, model.weights[:-1], model.params.predict,
                            bias=model.params.solver.bias).toarray()
    dense = model.dense
    E = dense.embed(Xp)
    P = dense.arrays["prototypes"]
    owner = dense.row_label
    S = sp.csc_matrix(sense)
    vis: dict[str, list[float]] = {"tree": [], "dense": [], "random": []}
    for label in np.flatnonzero(multi):
        rows = S[:, label].indices
        truth = S[:, label].data.astype(np.int64) - 1
        copies = np.flatnonzero(owner == label)
        if len(copies) < 2 or len(rows) < 2:
            continue
        tree_copies = np.flatnonzero(model.tree.copy_label == label)
        by_tree = leaf[np.ix_(rows, model.tree.parents[-1][tree_copies])].argmax(axis=1)
        by_dense = (E[rows] @ P[copies].T).argmax(axis=1)
        vis["tree"].append(variation_of_information(truth, by_tree))
        vis["dense"].append(variation_of_information(truth, by_dense))
        vis["random"].append(variation_of_information(truth, rng.permutation(by_dense)))
    return {"labels": len(vis["dense"]), **{f"vi_{k}": round(float(np.mean(v)), 4) if v else 0.0
                                             for k, v in vis.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", type=int, default=400)
    ap.add_argument("--train", type=int, default=20000)
    ap.add_argument("--test", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--params", default="{}",
                    help='fields changed for both runs, e.g. \'{"margin_min": 0.1}\'')
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    changes = json.loads(args.params)
    from xmc import XMCParams
    from xmc.core.fit import fit
    from xmc.core.metrics import evaluate
    from xmc.research.synth import SynthSpec, generate, sense_table

    spec = SynthSpec(n_labels=args.labels, n_features=10000)
    train, test = generate(spec, args.train), generate(spec, args.test, "test")
    multi = sense_table(spec).multi_sense
    rows = []
    for kind, senses in (("one prototype per label", False), ("one prototype per copy", True)):
        params = XMCParams().replace(dense="prime", dense_epochs=args.epochs, sense_prototypes=senses,
                                     refit_trees=False, **changes)  # the same trees for both kinds
        model = fit(train.X, train.Y, params)
        row: dict[str, Any] = {"prototypes": kind, "copies": int(len(model.tree.copy_label)),
                               "labels": int(model.n_labels), "alpha": model.info["dense"]["alpha"]}
        for part in ("tree", "dense", "all"):
            pred = model.predict(test.X, topk=5, components=part)
            e = evaluate(test.Y, pred, (1, 5))
            row[part] = {"P@1": round(e["P@1"], 2), "P@5": round(e["P@5"], 2),
                         "R@5 two-sense": round(recall_on(test.Y, pred, np.flatnonzero(multi)), 2)}
        if senses:
            row["routing"] = routing_vi(model, test.X, test.sense, multi)
        print(json.dumps(row), flush=True)
        rows.append(row)
    lines = [f"# bench/prime_senses.py ({spec}, {args.train} train / {args.test} test docs; "
             f"changed: {changes})", "",
             "| prototypes | dense P@1 | dense P@5 | dense R@5 two-sense | hybrid P@1 / P@5 "
             "| tree P@1 / P@5 | alpha |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['prototypes']} | {r['dense']['P@1']} | {r['dense']['P@5']} "
                     f"| {r['dense']['R@5 two-sense']} | {r['all']['P@1']} / {r['all']['P@5']} "
                     f"| {r['tree']['P@1']} / {r['tree']['P@5']} | {r['alpha']} |")
    vi = rows[-1].get("routing", {})
    lines += ["", f"Routing of two-sense labels' test pairs to copies ({vi.get('labels', 0)} labels "
              f"with >= 2 copies), mean VI against the true sense (nats, lower is better): tree matcher "
              f"{vi.get('vi_tree')}, sense prototypes {vi.get('vi_dense')}, random {vi.get('vi_random')}."]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "prime_senses.md").write_text(text + "\n")
    (out / "prime_senses.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
