"""The SVM cost C of a fit, per unit of the row mass that can generalise.

A feature seen in a single training row lets a ranker memorise that row and nothing else, yet it
takes its share of the row's unit norm. Plain TF-IDFs put 35-60 % of a row's squared norm on
such features (every word pair is kept), the product's own featurization about 13-30 %, a
bag-of-words of frequent terms (Bibtex) none. The margin must then be reached with the
remaining mass, so the same C regularises those rows harder. ``recurring_df`` = m scales C by
1 / rho, rho the mean share of a training row's squared norm on features that occur in at least
m training rows: Bibtex keeps C, pypi-tags' TF-IDF gets 2.5x. The factor is capped at
``MAX_COST_SCALE``, the largest measured. It is off by default (``recurring_df`` 0): measured on
validation rows cut to the fitting rows' vocabulary, as test rows are, it gained P@1 on one set
and lost P@5 on two (docs/performance.md, "The cost per unit of recurring mass, and a leak in the selection").

The fit resolves C once, on its training rows (held-out rows apart), and the model records the
C it was trained with (``recurring_df`` 0 in its params) and ``info["cost"]``; the sharded fit adds
the shards' document frequencies and shares, so both give the same C.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from xmc.params import SolverParams, XMCParams

MAX_COST_SCALE = 4.0
"""C is never scaled by more than this (rho below 1/4): C = 2, the largest measured, at the default 0.5."""
MAX_LABEL_COST_SCALE = 4.0
"""A label's C stays within [C / this, C * this] under ``label_cost_exponent``."""


def document_frequency(X: sp.csr_matrix) -> np.ndarray:
    """Rows in which each feature occurs (int64, one per feature)."""
    return np.bincount(X.indices, minlength=X.shape[1]).astype(np.int64)


def recurring_share_sum(X: sp.csr_matrix, df: np.ndarray, min_df: int) -> tuple[float, int]:
    """(sum over non-empty rows of the share of the squared norm on features with df >= min_df, rows).

    Sums, not a mean, so shards add up (``xmc.core.sharded``); float64 throughout."""
    sq = X.data.astype(np.float64) ** 2
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    total = np.bincount(rows, weights=sq, minlength=X.shape[0])
    recurring = np.bincount(rows, weights=sq * (df[X.indices] >= min_df), minlength=X.shape[0])
    filled = total > 0
    return float((recurring[filled] / total[filled]).sum()), int(filled.sum())


def resolve_cost(params: XMCParams, share_sum: float, n_rows: int) -> tuple[XMCParams, dict[str, Any]]:
    """The params to train with (C scaled, ``recurring_df`` 0) and the record of how C was chosen.

    With ``recurring_df`` 0 (or no non-empty row) C stays as given and the record is empty. C is
    rounded to 4 significant digits, so summing the shares in another order gives the same model."""
    m = params.solver.recurring_df
    if m == 0 or n_rows == 0:
        return params, {}
    rho = share_sum / n_rows
    scale = MAX_COST_SCALE if rho * MAX_COST_SCALE <= 1 else 1 / rho
    cost = float(f"{params.solver.cost * scale:.4g}")
    record = {"given": params.solver.cost, "recurring_df": m, "recurring_share": rho, "effective": cost}
    return params.replace(cost=cost, recurring_df=0), record


def resolve_cost_of_rows(params: XMCParams, X: sp.csr_matrix) -> tuple[XMCParams, dict[str, Any]]:
    """``resolve_cost`` on in-memory training rows (the fit's ``Xt``)."""
    if params.solver.recurring_df == 0:
        return params, {}
    return resolve_cost(params, *recurring_share_sum(X, document_frequency(X), params.solver.recurring_df))


def label_costs(n_pos: np.ndarray, solver: SolverParams) -> float | np.ndarray:
    """C of each ranker of a leaf from its positives ``n_pos`` there: ``C (n / r)^g``, the factor
    within [1 / ``MAX_LABEL_COST_SCALE``, ``MAX_LABEL_COST_SCALE``]; the plain C when g is 0.

    Why: with one C, a label with a handful of positives is regularised towards a score below its
    frequent neighbours' whatever its evidence (g < 0 lets its few rows count more, and a label
    with thousands of rows is smoothed more).
    """
    g = solver.label_cost_exponent
    if g == 0:
        return solver.cost
    scale = (np.maximum(np.asarray(n_pos, dtype=np.float64), 1.0) / solver.label_cost_reference) ** g
    return solver.cost * np.clip(scale, 1 / MAX_LABEL_COST_SCALE, MAX_LABEL_COST_SCALE)


def row_sizes(n_labels: np.ndarray) -> np.ndarray:
    """How many rows have k labels, for k = 0, 1, ... (int64), from each row's label count: what
    ``row_costs`` normalises by.

    Counts, not a mean of floats, so shards add up exactly (``add_row_sizes``) and the sharded fit
    gives the in-process fit's row costs bit for bit."""
    return np.bincount(n_labels, minlength=2).astype(np.int64)


def add_row_sizes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two ``row_sizes`` histograms added (their lengths may differ)."""
    out = np.zeros(max(len(a), len(b)), dtype=np.int64)
    out[:len(a)] += a
    out[:len(b)] += b
    return out


def row_costs(n_labels: np.ndarray, sizes: np.ndarray, solver: SolverParams) -> np.ndarray | None:
    """The factor on C of each row with ``n_labels`` labels: ``n^-g / mean(n^-g)``, n at least 1 and
    the mean over the fit's rows (``sizes``, their ``row_sizes``), so C keeps its mean; None at g 0.

    Why: the squared hinge gives every (row, label) pair the same C, so a document tagged with ten
    labels pulls as hard on each of their rankers as a document that is about one thing; its
    features speak for each label more weakly. Measured on validation rows (docs/performance.md)."""
    g = solver.row_cost_exponent
    if g == 0:
        return None
    k = np.maximum(np.arange(len(sizes), dtype=np.float64), 1.0) ** -g
    mean = float((sizes * k).sum() / max(int(sizes.sum()), 1))
    return np.maximum(np.asarray(n_labels, dtype=np.float64), 1.0) ** -g / mean


def row_costs_of(Y: sp.spmatrix, solver: SolverParams) -> np.ndarray | None:
    """``row_costs`` of the fit's rows ``Y`` themselves (the in-process fit)."""
    n = np.diff(sp.csr_matrix(Y).indptr)
    return row_costs(n, row_sizes(n), solver)
