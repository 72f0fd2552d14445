from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize as so
import scipy.sparse as sp

from xmc.params import SolverParams
from xmc.solver import solve_squared_hinge


def _objective(w: np.ndarray, X: np.ndarray, y: np.ndarray, C: float) -> tuple[float, np.ndarray]:
    slack = np.maximum(0, 1 - y * (X @ w))
    return 0.5 * w @ w + C * slack @ slack, w - 2 * C * X.T @ (y * slack)


@pytest.mark.parametrize("cost", [0.5, 1.0, 4.0])
def test_matches_an_independent_optimiser(cost: float) -> None:
    rng = np.random.default_rng(1)
    X = sp.random(60, 12, density=0.4, random_state=2, dtype=np.float64).tocsr()
    Y = (rng.random((60, 3)) < 0.3).astype(np.float32)
    params = SolverParams(cost=cost, bias=1.0, solver_tol=1e-4, dtype="float64", device="cpu")
    W = solve_squared_hinge(X, Y, params)
    Xa = np.hstack([X.toarray(), np.ones((60, 1))])
    for j in range(3):
        y = np.where(Y[:, j] > 0, 1.0, -1.0)
        ref = so.minimize(_objective, np.zeros(13), args=(Xa, y, cost), jac=True, method="L-BFGS-B",
                          options={"gtol": 1e-10, "maxiter": 5000})
        ours = _objective(W[:, j].astype(np.float64), Xa, y, cost)[0]
        assert ours == pytest.approx(ref.fun, rel=1e-5)
        np.testing.assert_allclose(W[:, j], ref.x, atol=2e-3)


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
