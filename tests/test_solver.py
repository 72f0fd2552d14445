from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize as so
import scipy.sparse as sp

from xmc.core import newton_cg, solver
from xmc.core.newton_cg import ROWSPACE_MAX_ROWS
from xmc.core.solver import solve_squared_hinge
from xmc.params import SolverParams


def _objective(w: np.ndarray, X: np.ndarray, y: np.ndarray, C: float) -> tuple[float, np.ndarray]:
    slack = np.maximum(0, 1 - y * (X @ w))
    return 0.5 * w @ w + C * slack @ slack, w - 2 * C * X.T @ (y * slack)


@pytest.mark.parametrize("algorithm", ["newton-cg", "dual-cd"])
@pytest.mark.parametrize("n", [ROWSPACE_MAX_ROWS // 2, 2 * ROWSPACE_MAX_ROWS])  # both Newton paths
@pytest.mark.parametrize("cost", [0.5, 1.0, 4.0])
def test_matches_an_independent_optimiser(cost: float, n: int, algorithm: str) -> None:
    rng = np.random.default_rng(1)
    X = sp.random(n, 12, density=0.4, random_state=2, dtype=np.float64).tocsr()
    Y = (rng.random((n, 3)) < 0.3).astype(np.float32)
    params = SolverParams(cost=cost, bias=1.0, solver_tol=1e-4, dtype="float64", device="cpu",
                          algorithm=algorithm, dual_tol=1e-7, dual_max_iter=100_000)  # type: ignore[arg-type]
    W = solve_squared_hinge(X, Y, params)
    Xa = np.hstack([X.toarray(), np.ones((n, 1))])
    for j in range(3):
        y = np.where(Y[:, j] > 0, 1.0, -1.0)
        ref = so.minimize(_objective, np.zeros(13), args=(Xa, y, cost), jac=True, method="L-BFGS-B",
                          options={"gtol": 1e-10, "maxiter": 5000})
        ours = _objective(W[:, j].astype(np.float64), Xa, y, cost)[0]
        assert ours == pytest.approx(ref.fun, rel=1e-5)
        np.testing.assert_allclose(W[:, j], ref.x, atol=2e-3)


@pytest.mark.parametrize("algorithm", ["newton-cg", "dual-cd"])
@pytest.mark.parametrize("n", [ROWSPACE_MAX_ROWS // 2, 2 * ROWSPACE_MAX_ROWS])
def test_one_cost_per_label_is_each_label_s_own_optimum(n: int, algorithm: str) -> None:
    """``label_cost_exponent`` hands the solver one C per column: column j reaches the optimum at
    its own C (0.3, 1, 3), which differs from the optimum at the others'."""
    rng = np.random.default_rng(4)
    X = sp.random(n, 12, density=0.4, random_state=5, dtype=np.float64).tocsr()
    Y = (rng.random((n, 3)) < 0.3).astype(np.float32)
    costs = np.array([0.3, 1.0, 3.0])
    params = SolverParams(bias=1.0, solver_tol=1e-4, dtype="float64", device="cpu", algorithm=algorithm,
                          dual_tol=1e-7, dual_max_iter=100_000)  # type: ignore[arg-type]
    W = solve_squared_hinge(X, Y, params, costs)
    Xa = np.hstack([X.toarray(), np.ones((n, 1))])
    for j, cost in enumerate(costs):
        y = np.where(Y[:, j] > 0, 1.0, -1.0)
        ref = so.minimize(_objective, np.zeros(13), args=(Xa, y, cost), jac=True, method="L-BFGS-B",
                          options={"gtol": 1e-10, "maxiter": 5000})
        assert _objective(W[:, j].astype(np.float64), Xa, y, cost)[0] == pytest.approx(ref.fun, rel=1e-5)
        other = solve_squared_hinge(X, Y[:, [j]], params, costs[(j + 1) % 3])
        assert np.abs(other[:, 0] - W[:, j]).max() > 1e-2


def test_separable_columns_rank_their_positives_first() -> None:
    X = sp.csr_matrix(np.eye(6, dtype=np.float32))
    Y = np.zeros((6, 2), np.float32)
    Y[[0, 1], 0] = 1
    Y[[4], 1] = 1
    W = solve_squared_hinge(X, Y, SolverParams(device="cpu"))
    scores = np.hstack([X.toarray(), np.ones((6, 1))]) @ W
    assert scores[[0, 1], 0].min() > scores[2:, 0].max()
    assert scores[4, 1] > np.delete(scores[:, 1], 4).max()


def test_empty_inputs() -> None:
    assert solve_squared_hinge(sp.csr_matrix((0, 4)), np.zeros((0, 2)), SolverParams()).shape == (5, 2)


def test_row_space_and_feature_space_paths_agree_at_the_default_tolerance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a leaf of the 1M-label shape: few rows, many sparse features, rare labels
    rng = np.random.default_rng(5)
    n, d, m = 30, 600, 40
    X = sp.random(n, d, density=0.05, random_state=6, dtype=np.float32).tocsr()
    Y = np.zeros((n, m), np.float32)
    Y[rng.integers(0, n, size=m), np.arange(m)] = 1
    Xa = np.hstack([X.toarray(), np.ones((n, 1))])
    sign = np.where(Y > 0, 1.0, -1.0)

    def objective(W: np.ndarray) -> np.ndarray:
        slack = np.maximum(0, 1 - sign * (Xa @ W))
        return 0.5 * (W * W).sum(0) + (slack * slack).sum(0)

    params = SolverParams(device="cpu", algorithm="newton-cg", cost=1.0)
    monkeypatch.setattr(newton_cg, "ROWSPACE_MAX_ROWS", n)
    rows = solve_squared_hinge(X, Y, params)
    monkeypatch.setattr(newton_cg, "ROWSPACE_MAX_ROWS", 0)
    features = solve_squared_hinge(X, Y, params)
    np.testing.assert_allclose(objective(rows), objective(features), rtol=2e-2)
    assert np.all(objective(rows) <= objective(features) * (1 + 1e-4))  # exact steps: never worse
    assert np.array_equal(np.argmax(Xa @ rows, 0), np.argmax(Xa @ features, 0))


def test_dual_cd_is_the_cpu_default_and_reaches_newtons_optimum_on_a_leaf_sized_problem() -> None:
    """Thousands of rows, a few positives per label (a real leaf): both solvers, run tight, give the
    same objective; the default (auto on the CPU) is coordinate descent, and it is deterministic."""
    rng = np.random.default_rng(3)
    X = sp.random(2000, 300, density=0.03, random_state=4, dtype=np.float32).tocsr()
    Y = (rng.random((2000, 8)) < 0.01).astype(np.float32)
    assert solver.use_dual_cd(SolverParams(), solver.resolve_device("cpu"))
    tight = {"cost": 0.5, "solver_tol": 1e-5, "dual_tol": 1e-5, "dual_max_iter": 10_000,
             "max_newton_iter": 100, "max_cg_iter": 500, "device": "cpu", "dtype": "float64"}
    Xa = np.hstack([X.toarray(), np.ones((2000, 1))])
    objectives = {}
    for algorithm in ("newton-cg", "dual-cd"):
        W = solve_squared_hinge(X, Y, SolverParams(algorithm=algorithm, **tight))  # type: ignore[arg-type]
        objectives[algorithm] = [_objective(W[:, j].astype(np.float64), Xa, np.where(Y[:, j] > 0, 1.0, -1.0),
                                            0.5)[0] for j in range(8)]
    np.testing.assert_allclose(objectives["dual-cd"], objectives["newton-cg"], rtol=1e-4)
    a = solve_squared_hinge(X, Y, SolverParams(cost=0.5))
    b = solve_squared_hinge(X, Y, SolverParams(cost=0.5))
    np.testing.assert_array_equal(a, b)


def test_dual_cd_solves_each_label_alone_whatever_block_it_shares() -> None:
    """Labels are solved in blocks with one visiting order: a label's weights are the same alone,
    in a block of 3, and in a problem wider than one block (BLOCK + 6 labels, two blocks)."""
    from xmc.core.dual_cd import BLOCK

    params = SolverParams(cost=0.5)  # dual CD on the CPU, its tolerance 0.1 and 20 passes
    assert solver.use_dual_cd(params, solver.resolve_device("cpu"))
    rng = np.random.default_rng(5)
    X = sp.random(600, 120, density=0.05, random_state=6, dtype=np.float32).tocsr()
    Y = (rng.random((600, BLOCK + 6)) < 0.05).astype(np.float32)
    wide = solve_squared_hinge(X, Y, params)
    for j in (0, 7, BLOCK + 3):
        np.testing.assert_allclose(solve_squared_hinge(X, Y[:, [j]], params)[:, 0], wide[:, j], atol=1e-5)
        trio = solve_squared_hinge(X, Y[:, [j, (j + 1) % Y.shape[1], (j + 2) % Y.shape[1]]], params)
        np.testing.assert_allclose(trio[:, 0], wide[:, j], atol=1e-5)
    assert np.abs(wide).max() > 0.1  # the labels learnt something


@pytest.mark.parametrize("threshold", [0.0, 0.1])
def test_a_unit_pruned_block_by_block_keeps_the_dense_solutions_entries(threshold: float) -> None:
    """``fit_rows`` prunes each block of labels as the dual CD hands it over (never the dense weights of
    all the unit's labels): the same stored entries as solving densely and pruning after, over more
    labels than one block, with no stored zeros even at threshold 0 (a feature stored with value 0)."""
    from xmc.core.dual_cd import BLOCK
    from xmc.core.train import fit_rows

    rng = np.random.default_rng(4)
    used = sp.random(300, 30, density=0.15, random_state=5, dtype=np.float32, format="csr")
    X = sp.hstack([used, sp.csr_matrix((300, 10), dtype=np.float32)], format="csr")  # 10 unused features
    X.data[X.indices == 5] = 0.0  # stored zeros: feature 5 is in the unit's features, its weights exactly 0
    m = 2 * BLOCK + 5
    Y = sp.csr_matrix((rng.random((300, m)) < 0.1).astype(np.float32))
    params = SolverParams(weight_threshold=threshold, device="cpu")
    got = fit_rows(X, Y, 7, 7 + m, params)
    W = solve_squared_hinge(X[:, :30], Y.toarray(), params)  # the used features, then the bias row
    W[np.abs(W) < threshold] = 0.0
    r, c = np.nonzero(W)
    want = {(int(f if f < 30 else 40), int(j)): float(W[f, j]) for f, j in zip(r, c, strict=True)}
    stored = {(int(f), int(j)): float(v) for f, j, v in zip(got.feature, got.child, got.value, strict=True)}
    assert stored == want and len(got.value) == len(want) > 0
    assert (got.value != 0).all() and got.child.max() >= 2 * BLOCK


@pytest.mark.parametrize("algorithm", ["newton-cg", "dual-cd"])
@pytest.mark.parametrize("n", [ROWSPACE_MAX_ROWS // 2, 2 * ROWSPACE_MAX_ROWS])  # both Newton paths
def test_a_row_costing_twice_is_the_row_twice(n: int, algorithm: str) -> None:
    """``row_cost`` (``row_cost_exponent``) scales C per row: a row at 2 is that row duplicated, at
    per-label costs too; and the weights differ from those with every row at 1."""
    rng = np.random.default_rng(7)
    X = sp.random(n, 12, density=0.4, random_state=8, dtype=np.float64).tocsr()
    Y = (rng.random((n, 3)) < 0.3).astype(np.float32)
    costs = np.array([0.3, 1.0, 3.0])
    row_cost = np.ones(n)
    row_cost[: n // 4] = 2.0
    params = SolverParams(bias=1.0, solver_tol=1e-6, dtype="float64", device="cpu", algorithm=algorithm,
                          dual_tol=1e-7, dual_max_iter=100_000)  # type: ignore[arg-type]
    weighted = solve_squared_hinge(X, Y, params, costs, row_cost)
    X2, Y2 = sp.vstack([X, X[: n // 4]]).tocsr(), np.vstack([Y, Y[: n // 4]])
    twice = solve_squared_hinge(X2, Y2, params, costs)
    np.testing.assert_allclose(weighted, twice, atol=2e-4)
    assert np.abs(weighted - solve_squared_hinge(X, Y, params, costs)).max() > 1e-2
    with pytest.raises(ValueError, match="row_cost has 3"):
        solve_squared_hinge(X, Y, params, costs, np.ones(3))
