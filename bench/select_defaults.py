"""Pick disentanglement defaults on validation data only (never the test split).

    python bench/select_defaults.py [--seeds 3]

Bibtex training split -> 80 % train / 20 % validation (seeded), max leaf 16, beam 10. Prints
validation P@1/P@5 of the baseline and of one round for a small grid of the knobs whose
defaults live in xmc/params.py (gain_beam_size, max_copies, min_gain_share, copy_merge).
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
from disentangle import load  # bench/ is on sys.path when run as a script

from xmc import XMCParams
from xmc.core.fit import fit
from xmc.core.metrics import evaluate
from xmc.core.rows import split_validation

GRID = {"gain_beam_size": (1, 2), "max_copies": (2, 3), "min_gain_share": (0.0, 0.05, 0.1),
        "copy_merge": ("max", "mean")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    X, Y, _, _ = load()
    base = XMCParams().replace(max_leaf_size=16, beam_size=10)
    splits = [split_validation(X, Y, 0.2, seed=100 + s) for s in range(args.seeds)]

    def score(params: XMCParams) -> tuple[float, float]:
        ms = []
        for s, (Xt, Yt, Xv, Yv) in enumerate(splits):
            m = fit(Xt, Yt, params.replace(seed=s))
            ms.append(evaluate(Yv, m.predict(Xv, topk=5), (1, 5)))
        return float(np.mean([m["P@1"] for m in ms])), float(np.mean([m["P@5"] for m in ms]))

    p1, p5 = score(base.replace(rounds=0))
    print(f"baseline (R=0): validation P@1 {p1:.2f} P@5 {p5:.2f}")
    rows = []
    for values in itertools.product(*GRID.values()):
        knobs = dict(zip(GRID, values, strict=True))
        p1, p5 = score(base.replace(rounds=1, **knobs))
        rows.append((p1, p5, knobs))
        print(f"R=1 {knobs}: validation P@1 {p1:.2f} P@5 {p5:.2f}", flush=True)
    best = max(rows, key=lambda r: (r[0], r[1]))
    print(f"best on validation: {best[2]} (P@1 {best[0]:.2f}, P@5 {best[1]:.2f})")


if __name__ == "__main__":
    main()
