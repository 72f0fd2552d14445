"""Bibtex benchmark of the core engine (issue: XR-Linear-class baseline).

    python bench/bibtex.py [--seeds 3] [--max-leaf-size 100] [--json out.json]

Trains the default tree on the XC split (rows L2-normalised, beam 10) and prints P@1/3/5,
nDCG@5, PSP@5, fit and predict seconds and peak RSS, next to the bars and the PECOS
reference figures of the issue (constants; bench/compare.py runs PECOS, omikuji and napkinXC
themselves, side by side). Fit time is also given as a ratio to PECOS's 0.6 s.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from xmc import XMCParams
from xmc.core.fit import fit
from xmc.core.metrics import evaluate
from xmc.io.readers import read_npz
from xmc.log import peak_rss_mib

DATA = Path(__file__).resolve().parents[1] / "data" / "bibtex"
BARS = {"P@1": 63.5, "P@3": 38.8, "P@5": 28.4}
PECOS = {"P@1": 63.54, "P@3": 39.01, "P@5": 28.72, "fit_s": 0.6, "predict_s": 0.4}


def run(seed: int, max_leaf_size: int, rounds: int = 0) -> dict[str, float]:
    X, Y = read_npz(DATA / "X.trn.npz"), read_npz(DATA / "Y.trn.npz", binary=True)
    Xt, Yt = read_npz(DATA / "X.tst.npz"), read_npz(DATA / "Y.tst.npz", binary=True)
    params = XMCParams().replace(seed=seed, max_leaf_size=max_leaf_size, beam_size=10, rounds=rounds)
    t0 = time.perf_counter()
    model = fit(X, Y, params)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = model.predict(Xt, topk=5)
    predict_s = time.perf_counter() - t0
    m = evaluate(Yt, pred, (1, 3, 5), label_counts=model.label_counts, n_train=model.n_train)
    return {"seed": seed, **{k: m[k] for k in ("P@1", "P@3", "P@5", "nDCG@5", "PSP@5")},
            "fit_s": fit_s, "predict_s": predict_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="tree seeds to run (0..n-1)")
    ap.add_argument("--max-leaf-size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=0,
                    help="disentanglement rounds (0 = the XR-Linear-class baseline these bars are for)")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args()
    run(0, args.max_leaf_size, args.rounds)  # warm-up: imports, torch kernels
    rows = [run(s, args.max_leaf_size, args.rounds) for s in range(args.seeds)]
    cols = ["seed", "P@1", "P@3", "P@5", "nDCG@5", "PSP@5", "fit_s", "predict_s"]
    print(f"Bibtex XC split, max_leaf_size={args.max_leaf_size}, beam 10, rounds={args.rounds}, "
          "2515 test docs")
    print(" | ".join(f"{c:>8}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r[c]:>8.2f}" if c != "seed" else f"{r[c]:>8d}" for c in cols))
    mean = {c: float(np.mean([r[c] for r in rows])) for c in cols[1:]}
    print(" | ".join(["    mean"] + [f"{mean[c]:>8.2f}" for c in cols[1:]]))
    print(f"PECOS XR-Linear (reference): P@1/3/5 {PECOS['P@1']}/{PECOS['P@3']}/{PECOS['P@5']}, "
          f"fit {PECOS['fit_s']} s, predict {PECOS['predict_s']} s")
    print(f"fit time ratio to PECOS: {mean['fit_s'] / PECOS['fit_s']:.2f}x (target <= 3x); "
          f"predict ratio {mean['predict_s'] / PECOS['predict_s']:.2f}x")
    print(f"peak RSS: {peak_rss_mib():.0f} MiB (whole process, torch included)")
    if args.max_leaf_size == 100 and args.rounds == 0:
        for k, bar in BARS.items():
            worst = min(r[k] for r in rows)
            print(f"bar {k} >= {bar}: {'PASS' if worst >= bar else 'FAIL'} (worst seed {worst:.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "mean": mean, "peak_rss_mib": peak_rss_mib()},
                                              indent=2))


if __name__ == "__main__":
    main()
