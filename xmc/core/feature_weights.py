"""Feature weights from the labels: a feature whose mass spreads like the labels' says little about any.

Feature j's mass over the L labels in the fitting rows, ``q_jl`` proportional to
``sum_i |x_ij| y_il``, is measured against one of two references (``SolverParams.feature_weight_measure``):

- ``"kl"``: its divergence from the labels' share of all feature mass ``p_l``, ``K_j = KL(q_j || p)``,
  and ``s_j = (1 - exp(-K_j / KL_SCALE))^gamma``. A word whose labels are the corpus's labels in the
  corpus's proportions (K 0) falls to ``MIN_FEATURE_WEIGHT``; one seen with a single rare label
  (K = -ln p_l, large) keeps nearly its value; one seen with a single common label keeps less, since
  a common label is already the prior's guess.
- ``"entropy"``: its spread, ``s_j = (1 - H(q_j) / ln L)^gamma``, against the uniform spread over
  every label: a word seen with one label keeps its value, one spread evenly falls to the floor.
  It weighs a word of the frequent labels as a generic one.

gamma is ``SolverParams.feature_weight_exponent``. The rows are scaled by s and normalised again, at
fit and at predict (the model stores s), so the squared hinge's one C regularises a label-specific
feature less than a generic one: TF-IDF's idf knows how many documents hold a word, not how many
labels. Measured on validation rows (docs/performance.md).

The mass sums ``Y^T |X|`` are label x feature, the size of PIFA: the sharded fit adds its shards'
sums and gets the in-process weights exactly (both references come from the summed mass).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from xmc.core.sparse import normalize_rows
from xmc.core.tree import pifa_sums
from xmc.params import FEATURE_WEIGHT_MEASURES, FeatureWeightMeasure

MIN_FEATURE_WEIGHT = 1e-3
"""The weight of a feature whose mass says nothing (spread as the labels' own under "kl", evenly over
every label under "entropy"): above 0, so a row keeps its features (their document frequency, the
sparsity the solver sees) and a row of such features alone keeps a direction."""

KL_SCALE = 2.0
"""tau of the ``"kl"`` measure's ``1 - exp(-K / tau)``: a feature whose divergence is tau keeps
(1 - 1/e)^gamma of its value. At gamma 0.25 on 6 validation splits of the nine real sets, mean P@1
over gamma 0: tau 1 +0.22, 2 +0.27, 4 +0.26 (docs/performance.md)."""


def label_mass(X: sp.csr_matrix, Y: sp.csr_matrix) -> sp.csr_matrix:
    """(L x D) ``Y^T |X|`` in float64 (``pifa_sums`` of the absolute values): shards' sums add up."""
    A = sp.csr_matrix(X, copy=True)
    A.data = np.abs(A.data)
    return pifa_sums(A, Y)


def weights_of_mass(mass: sp.spmatrix, gamma: float, measure: FeatureWeightMeasure) -> np.ndarray | None:
    """Each feature's ``s_j`` from the summed ``label_mass`` under ``measure`` (``"kl"`` or
    ``"entropy"``); None at gamma 0 or with one label (no spread to measure). A feature no fitting row
    holds keeps 1."""
    n_labels = mass.shape[0]
    if gamma == 0 or n_labels < 2:
        return None
    M = sp.csc_matrix(mass, dtype=np.float64)
    M.eliminate_zeros()
    total = np.asarray(M.sum(axis=0)).ravel()
    per_feature = np.diff(M.indptr)
    q = M.data / np.repeat(np.where(total > 0, total, 1.0), per_feature)
    feature = np.repeat(np.arange(M.shape[1]), per_feature)
    if measure == "kl":
        p = np.asarray(M.sum(axis=1)).ravel()
        p /= max(p.sum(), np.finfo(np.float64).tiny)
        divergence = np.bincount(feature, weights=q * np.log(q / p[M.indices]), minlength=M.shape[1])
        kept = 1.0 - np.exp(-np.maximum(divergence, 0.0) / KL_SCALE)
    elif measure == "entropy":
        entropy = np.bincount(feature, weights=-q * np.log(q), minlength=M.shape[1])
        kept = 1.0 - np.clip(entropy / np.log(n_labels), 0.0, 1.0)
    else:
        raise ValueError(f"feature weight measure {measure!r}: use one of {FEATURE_WEIGHT_MEASURES}")
    s = np.maximum(kept**gamma, MIN_FEATURE_WEIGHT)
    s[total == 0] = 1.0
    return s.astype(np.float32)


def feature_weights(X: sp.csr_matrix, Y: sp.csr_matrix, gamma: float,
                    measure: FeatureWeightMeasure) -> np.ndarray | None:
    """``weights_of_mass`` of the fitting rows ``X``, ``Y`` (the in-process fit)."""
    if gamma == 0:
        return None
    return weights_of_mass(label_mass(X, Y), gamma, measure)


def weigh_rows(X: sp.csr_matrix, s: np.ndarray | None, normalize: bool) -> sp.csr_matrix:
    """Rows scaled feature by feature by ``s`` (None: unchanged), L2-normalised again if ``normalize``."""
    if s is None:
        return X
    W = sp.csr_matrix(X, copy=True)
    W.data = (W.data * s[W.indices]).astype(W.data.dtype)
    return normalize_rows(W) if normalize else W
