"""Feature weights from the labels: a feature whose mass spreads over many labels says little about any.

Feature j's weight is ``s_j = (1 - H_j / ln L)^gamma`` (``SolverParams.feature_weight_exponent``
gamma), H_j the entropy of its mass over the L labels in the fitting rows: ``q_jl`` proportional
to ``sum_i |x_ij| y_il``. A word seen with one label keeps its value (H 0, s 1); one spread evenly
over every label falls to ``MIN_FEATURE_WEIGHT``. The rows are scaled by s and normalised again,
at fit and at predict (the model stores s), so the squared hinge's one C regularises a
label-specific feature less than a generic one: TF-IDF's idf knows how many documents hold a
word, not how many labels. Measured on validation rows (docs/performance.md).

The mass sums ``Y^T |X|`` are label x feature, the size of PIFA: the sharded fit adds its shards'
sums and gets the in-process weights exactly.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from xmc.core.sparse import normalize_rows
from xmc.core.tree import pifa_sums

MIN_FEATURE_WEIGHT = 1e-3
"""The weight of a feature whose mass is even over every label: above 0, so a row keeps its
features (their document frequency, the sparsity the solver sees) and a row of such features alone
keeps a direction."""


def label_mass(X: sp.csr_matrix, Y: sp.csr_matrix) -> sp.csr_matrix:
    """(L x D) ``Y^T |X|`` in float64 (``pifa_sums`` of the absolute values): shards' sums add up."""
    A = sp.csr_matrix(X, copy=True)
    A.data = np.abs(A.data)
    return pifa_sums(A, Y)


def weights_of_mass(mass: sp.spmatrix, gamma: float) -> np.ndarray | None:
    """Each feature's ``s_j`` from the summed ``label_mass``; None at gamma 0 or with one label
    (no entropy to measure). A feature no fitting row holds keeps 1."""
    n_labels = mass.shape[0]
    if gamma == 0 or n_labels < 2:
        return None
    M = sp.csc_matrix(mass, dtype=np.float64)
    M.eliminate_zeros()
    total = np.asarray(M.sum(axis=0)).ravel()
    q = M.data / np.repeat(np.where(total > 0, total, 1.0), np.diff(M.indptr))
    entropy = np.bincount(np.repeat(np.arange(M.shape[1]), np.diff(M.indptr)), weights=-q * np.log(q),
                          minlength=M.shape[1])
    spread = np.clip(entropy / np.log(n_labels), 0.0, 1.0)
    s = np.maximum((1.0 - spread) ** gamma, MIN_FEATURE_WEIGHT)
    s[total == 0] = 1.0
    return s.astype(np.float32)


def feature_weights(X: sp.csr_matrix, Y: sp.csr_matrix, gamma: float) -> np.ndarray | None:
    """``weights_of_mass`` of the fitting rows ``X``, ``Y`` (the in-process fit)."""
    if gamma == 0:
        return None
    return weights_of_mass(label_mass(X, Y), gamma)


def weigh_rows(X: sp.csr_matrix, s: np.ndarray | None, normalize: bool) -> sp.csr_matrix:
    """Rows scaled feature by feature by ``s`` (None: unchanged), L2-normalised again if ``normalize``."""
    if s is None:
        return X
    W = sp.csr_matrix(X, copy=True)
    W.data = (W.data * s[W.indices]).astype(W.data.dtype)
    return normalize_rows(W) if normalize else W
