"""Time the solver's two paths on small one-vs-rest problems: where should the row-space path end?

    python bench/solver_small.py [--rows 8,16,32,64,128,256] [--labels 62] [--repeats 20]

Leaf clusters at 1M labels hold a few dozen documents (median 24 rows, 62 labels on the scale
curve's 1M x 400K set). Each problem here has that shape: sparse rows of 30 features from a
vocabulary 20x the rows, each label positive on 1-3 rows. Prints ms per problem for Newton-CG over
the features and for exact Newton in the span of the rows (``xmc.core.newton_cg.ROWSPACE_MAX_ROWS`` picks
between them), and the row-space objective relative to Newton-CG's (both stop at the same test).
One torch thread, as in the local executor's units.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp
import torch

from xmc.core import newton_cg, solver
from xmc.core.sparse import normalize_rows
from xmc.params import SolverParams


def problem(n: int, m: int, rng: np.random.Generator) -> tuple[sp.csr_matrix, np.ndarray]:
    d = 20 * n
    cols = rng.integers(0, d, size=(n, 30))
    X = sp.csr_matrix((rng.random(n * 30).astype(np.float32), (np.repeat(np.arange(n), 30), cols.ravel())),
                      shape=(n, d))
    Y = np.zeros((n, m), np.float32)
    for j in range(m):
        Y[rng.choice(n, size=min(n, int(rng.integers(1, 4))), replace=False), j] = 1
    return normalize_rows(X), Y


def objective(X: sp.csr_matrix, Y: np.ndarray, W: np.ndarray, C: float, bias: float) -> float:
    Xa = sp.hstack([X, np.full((X.shape[0], 1), bias)], format="csr")
    slack = np.maximum(0, 1 - np.where(Y > 0, 1, -1) * (Xa @ W))
    return float(0.5 * (W * W).sum() + C * (slack * slack).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="8,16,32,64,128,256")
    ap.add_argument("--labels", type=int, default=62)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    params = SolverParams(device="cpu")
    rng = np.random.default_rng(0)
    default = newton_cg.ROWSPACE_MAX_ROWS
    print(f"rows  newton-cg ms  row-space ms  speed-up  objective row-space / newton-cg  (m = {args.labels})")
    for n in map(int, args.rows.split(",")):
        problems = [problem(n, args.labels, rng) for _ in range(args.repeats)]
        out = {}
        for name, limit in (("cg", 0), ("rows", 10**9)):
            newton_cg.ROWSPACE_MAX_ROWS = limit
            solver.solve_squared_hinge(*problems[0], params)  # warm-up
            t0 = time.perf_counter()
            Ws = [solver.solve_squared_hinge(X, Y, params) for X, Y in problems]
            out[name] = ((time.perf_counter() - t0) / len(problems) * 1e3,
                         sum(objective(X, Y, W, params.cost, params.bias) for (X, Y), W in zip(problems, Ws,
                                                                                            strict=True)))
        newton_cg.ROWSPACE_MAX_ROWS = default
        print(f"{n:4d}  {out['cg'][0]:12.2f}  {out['rows'][0]:12.2f}  {out['cg'][0] / out['rows'][0]:7.2f}x"
              f"  {out['rows'][1] / out['cg'][1]:.5f}")


if __name__ == "__main__":
    main()
