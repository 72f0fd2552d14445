"""Batched one-vs-rest L2-loss SVM (squared hinge + L2) by Newton-CG in torch: the GPU path.

All labels (children) of one cluster share the cluster's instance matrix ``X`` (n x d), so we
solve their m problems together as one matrix problem: every Hessian-vector product is one
sparse x dense product ``X @ V`` with V of m columns, which is what makes the solver fast from
Python and lets the same code run on a GPU. For each column j:

    min_w  0.5 ||w||^2 + C * sum_i r_i max(0, 1 - y_ij * x_i . w)^2          (y in {-1, +1})

with r_i a row's factor on C (1 unless ``row_cost_exponent``). The bias is the weight of a
constant feature of value ``bias`` appended to every row, and is regularised like the others (as
in liblinear, which PECOS uses). Newton steps solve ``(I + 2C X^T D X) p = -g`` by conjugate
gradient, D the rows with positive loss (times r), and take the largest step 2^-s that passes
an Armijo test. Columns stop independently once their gradient norm falls below
``tol * max(min(n_pos, n_neg), 1) / n`` times its norm at w = 0: liblinear's primal criterion,
which tightens the test for rare labels (their gradient at 0 is dominated by negatives, so a
plain relative test stops long before the positives are fitted).

Problems with few rows (leaf clusters at 1M labels hold ~25 documents) are solved in the span
of their rows instead (``_newton_rowspace``): the same objective, optimum and stopping test,
but exact Newton steps from small dense n x n systems, a few dozen kernel calls in place of
hundreds.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

from xmc.params import SolverParams

_ARMIJO = 0.01
_CG_FORCING = 0.1
_MAX_HALVINGS = 20
ROWSPACE_MAX_ROWS = 40
"""Problems with at most this many rows are solved in the span of their rows (exact Newton on
n x n systems). At 1M labels the median leaf has 24 rows and 62 labels, and Newton-CG over the
features spent its 3-5 ms there mostly on per-call overhead; on those leaves the row-space path
took about half the time up to 40 rows and was slower from 50 (its Cholesky factorisations
grow as n^3). ``python bench/solver_small.py`` times both paths by rows."""


def _to_torch_csr(X: sp.csr_matrix, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    with warnings.catch_warnings():  # "CSR support is in beta": it is what we rely on, knowingly
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(X.indptr.astype(np.int64)),
            torch.from_numpy(X.indices.astype(np.int64)),
            torch.from_numpy(X.data).to(dtype),
            size=X.shape,
            check_invariants=False,  # built from a canonical scipy CSR, so they hold
        ).to(device)


def solve_newton(X_aug: sp.csr_matrix, Y: np.ndarray, params: SolverParams,
                 device: torch.device, cost: float | np.ndarray | None = None,
                 row_cost: np.ndarray | None = None) -> np.ndarray:
    """Weights (d + 1, m) by Newton-CG over the features, or in the row span for small problems.

    ``cost``: one C per label (m), or one for all; ``params.cost`` when None. ``row_cost`` (n): a
    factor on C per row (None: 1)."""
    dtype = torch.float32 if params.dtype == "float32" else torch.float64
    given = np.asarray(params.cost if cost is None else cost, dtype=np.float64)
    C = np.array(np.broadcast_to(given, (Y.shape[1],)))  # a writable copy for torch
    costs = torch.from_numpy(C).to(dtype=dtype, device=device)
    r = np.ones(Y.shape[0]) if row_cost is None else np.asarray(row_cost, dtype=np.float64)
    rows = torch.from_numpy(r.reshape(-1, 1)).to(dtype=dtype, device=device)
    if X_aug.shape[0] <= ROWSPACE_MAX_ROWS:
        return _newton_rowspace(X_aug, Y, params, costs, rows)
    Xt = _to_torch_csr(X_aug, dtype, device)
    XtT = _to_torch_csr(sp.csr_matrix(X_aug.T), dtype, device)
    sign = torch.from_numpy(np.where(Y > 0, 1.0, -1.0)).to(dtype=dtype, device=device)
    W = _newton_cg(Xt, XtT, sign, params, costs, rows)
    return W.cpu().numpy().astype(np.float32)


def _newton_cg(
    X: torch.Tensor, XT: torch.Tensor, sign: torch.Tensor, params: SolverParams, costs: torch.Tensor,
    rows: torch.Tensor,
) -> torch.Tensor:
    """Newton-CG from W = 0 until every column passes its gradient test.

    The columns still running are kept as one compact working set (Wa, Za, sa), cut down only
    when some column stops: gathering a (d x m) block every step was 15 % of a leaf's solve.
    ``costs`` (m): column j's C; ``rows`` (n x 1): each row's factor on it.
    """
    d = X.shape[1]
    m = sign.shape[1]
    n = sign.shape[0]
    W = torch.zeros((d, m), dtype=sign.dtype, device=sign.device)
    n_pos = (sign > 0).sum(0)
    balance = torch.clamp(torch.minimum(n_pos, n - n_pos), min=1).to(sign.dtype) / n
    g0_norm = torch.linalg.vector_norm(2 * costs * (XT @ (rows * sign)), dim=0)
    g_stop = params.solver_tol * balance * g0_norm  # liblinear: eps * max(min(pos, neg), 1) / n
    active = torch.arange(m, device=sign.device)
    Wa, sa, C = W, sign, costs
    Za = torch.zeros_like(sign)  # X @ Wa, kept up to date
    for _ in range(params.max_newton_iter):
        slack = torch.clamp(1 - sa * Za, min=0)  # (1 - y z)+ ; D = slack > 0
        G = Wa - XT @ (2 * C * sa * slack * rows)
        g_norm = (G * G).sum(0).sqrt_()
        keep = g_norm > g_stop[active]
        if not bool(keep.all()):
            if not bool(keep.any()):
                break
            if Wa is not W:  # columns that stop leave the working set with their final weights
                W.index_copy_(1, active, Wa)
            idx = keep.nonzero().squeeze(1)
            active, g_norm = active[idx], g_norm[idx]
            Wa, Za, sa, slack, G = _columns(idx, Wa, Za, sa, slack, G)
            C = C[idx]
        D = (slack > 0).to(sa.dtype) * rows
        P = _conjugate_gradient(X, XT, D, G.neg_(), C, _CG_FORCING * g_norm, params.max_cg_iter)
        XP = X @ P
        step = _armijo_step(Wa, Za, sa, P, XP, G, C, rows)  # G holds -grad now
        Wa.addcmul_(P, step)  # in place: W itself until the first column stops
        Za.addcmul_(XP, step)
    if Wa is not W:
        W.index_copy_(1, active, Wa)
    return W


def _conjugate_gradient(
    X: torch.Tensor, XT: torch.Tensor, D: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    tol: torch.Tensor, max_iter: int,
) -> torch.Tensor:
    """Solve (I + 2 C_j X^T D_j X) P_j = B_j column by column, all columns in one batch (D_j diagonal,
    held as the columns of D).

    Columns that converge are frozen (alpha = 0) and, once fewer than half of the batch still
    runs, dropped from it, so a few slow columns do not keep the whole batch's products busy.
    """
    P = torch.zeros_like(B)
    R = B.clone()
    Q = R.clone()
    rs = (R * R).sum(0)  # column norms: vector_norm(dim=0) is 3x slower on CPU
    tol_sq = tol.square()
    running = rs > tol_sq
    cols = torch.arange(B.shape[1], device=B.device)  # columns of P that R, Q, D, ... hold
    Pc, Dc = P, D
    for _ in range(max_iter):
        n_running = int(running.sum())
        if n_running == 0:
            break
        if n_running * 2 < len(cols):  # compact: finished columns of Pc go back to P
            if Pc is not P:
                P.index_copy_(1, cols, Pc)
            idx = running.nonzero().squeeze(1)
            cols, rs, tol_sq, running, C = cols[idx], rs[idx], tol_sq[idx], running[idx], C[idx]
            Pc, R, Q, Dc = _columns(idx, Pc, R, Q, Dc)
        HQ = Q + XT @ ((2 * C) * Dc * (X @ Q))
        qhq = (Q * HQ).sum(0)
        alpha = torch.where(running, rs / torch.clamp(qhq, min=1e-30), torch.zeros_like(rs))
        Pc.addcmul_(Q, alpha)
        R.addcmul_(HQ, alpha, value=-1)
        rs_new = (R * R).sum(0)
        running = running & (rs_new > tol_sq)
        beta = rs_new / torch.clamp(rs, min=1e-30)
        Q.mul_(beta).add_(R)
        rs = rs_new
    if Pc is not P:
        P.index_copy_(1, cols, Pc)
    return P


def _columns(idx: torch.Tensor, *blocks: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The given columns of each block (index_select: 6x faster than a boolean mask on CPU)."""
    return tuple(b.index_select(1, idx) for b in blocks)


def _armijo_step(
    W: torch.Tensor, Z: torch.Tensor, sign: torch.Tensor, P: torch.Tensor, XP: torch.Tensor,
    neg_G: torch.Tensor, C: torch.Tensor, rows: torch.Tensor,
) -> torch.Tensor:
    """Per-column step 2^-s: the largest that decreases f by at least 1% of the linear model.

    The regulariser along the step is the quadratic ||W||^2 + 2t W.P + t^2 ||P||^2, so each trial
    touches only the (n x m) margins, never the (d x m) weights.
    """
    ww, wp, pp = (W * W).sum(0), (W * P).sum(0), (P * P).sum(0)
    return _armijo(ww, wp, pp, -(neg_G * P).sum(0), sign * Z, sign * XP, C, rows)


def _armijo(
    ww: torch.Tensor, wp: torch.Tensor, pp: torch.Tensor, slope: torch.Tensor, margin: torch.Tensor,
    slope_margin: torch.Tensor, C: torch.Tensor, rows: torch.Tensor,
) -> torch.Tensor:
    """The Armijo backtracking from the inner products along the step and the margins y z, y dz
    (``rows``, n x 1: each row's factor on C)."""

    def f(t: torch.Tensor) -> torch.Tensor:
        slack = torch.clamp(1 - margin - t * slope_margin, min=0)
        return 0.5 * (ww + 2 * t * wp + t * t * pp) + C * (rows * slack * slack).sum(0)

    f0 = f(torch.zeros_like(ww))
    step = torch.ones_like(f0)
    accepted = torch.zeros_like(f0, dtype=torch.bool)
    for _ in range(_MAX_HALVINGS):
        ok = f(step) <= f0 + _ARMIJO * step * slope
        accepted = accepted | ok
        if bool(accepted.all()):
            break
        step = torch.where(accepted, step, step * 0.5)
    return torch.where(accepted, step, torch.zeros_like(step))


def _newton_rowspace(X_aug: sp.csr_matrix, Y: np.ndarray, params: SolverParams,
                     C: torch.Tensor, rows: torch.Tensor) -> np.ndarray:
    """Newton's method with W = X^T A: the optimum lies in the span of the rows (the bias is a
    feature and is regularised, so the representer theorem holds), and every quantity of the
    primal solver has an n-space form through the Gram matrix K = X X^T:

        z = K A,  grad_j = X^T g_j with g = A - 2C s y*slack,  |grad_j|^2 = g_j' K g_j,

    s (``rows``, n x 1) each row's factor on C. The Newton direction p_j = X^T b_j with
    (I + 2C S D_j K) b_j = -g_j solves (I + 2C X^T S D_j X) p_j = -grad_j exactly. Rows outside
    D_j (zero loss) give b = -g there; dividing the others by s leaves the SPD system
    (E + 2C D_j K D_j) b = -E g + 2C D_j K (1 - D_j) g, E = D_j / s + (1 - D_j) (the identity
    when s is 1): one batched Cholesky over the columns still running. Same stopping test and
    Armijo search as ``_newton_cg``. ``C`` (m): column j's cost.
    """
    dtype, device = C.dtype, C.device
    n, m = Y.shape
    K = torch.from_numpy((X_aug @ X_aug.T).toarray()).to(dtype=dtype, device=device)
    sign = torch.from_numpy(np.where(Y > 0, 1.0, -1.0)).to(dtype=dtype, device=device)
    n_pos = (sign > 0).sum(0)
    balance = torch.clamp(torch.minimum(n_pos, n - n_pos), min=1).to(dtype) / n
    weighted = rows * sign
    g_stop = params.solver_tol * balance * (2 * C) * (weighted * (K @ weighted)).sum(0).clamp(min=0).sqrt()
    A = torch.zeros((n, m), dtype=dtype, device=device)
    Z = torch.zeros_like(A)
    for _ in range(params.max_newton_iter):
        slack = torch.clamp(1 - sign * Z, min=0)
        R = A - 2 * C * sign * slack * rows
        KR = K @ R
        run = ((R * KR).sum(0).clamp(min=0).sqrt() > g_stop).nonzero().squeeze(1)
        if len(run) == 0:
            break
        D = (slack[:, run] > 0).to(dtype)  # (n x r)
        E = D / rows + (1 - D)
        rhs = -E * R[:, run] + 2 * C[run] * D * (K @ ((1 - D) * R[:, run]))
        DKD = D.T[:, :, None] * K[None, :, :] * D.T[:, None, :]  # (r x n x n)
        H = torch.diag_embed(E.T) + 2 * C[run, None, None] * DKD
        B = torch.zeros_like(A)
        B[:, run] = torch.cholesky_solve(rhs.T.unsqueeze(2), torch.linalg.cholesky(H)).squeeze(2).T
        KB = K @ B
        step = _armijo((A * Z).sum(0), (A * KB).sum(0), (B * KB).sum(0), (KR * B).sum(0), sign * Z,
                       sign * KB, C, rows)
        A.addcmul_(B, step)
        Z.addcmul_(KB, step)
    W = X_aug.T @ A.cpu().numpy().astype(np.float64)
    return np.asarray(W, dtype=np.float32)
