from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from xmc.core.metrics import evaluate, propensity


def _m(rows: list[list[float]]) -> sp.csr_matrix:
    return sp.csr_matrix(np.array(rows, np.float32))


# Row 0: truth {0, 2}; ranking 2 (0.9), 1 (0.5), 0 (0.1) -> hits 1, 0, 1.
# Row 1: truth {1};    ranking 0 (0.8), 1 (0.7)          -> hits 0, 1.
Y = _m([[1, 0, 1, 0], [0, 1, 0, 0]])
P = _m([[0.1, 0.5, 0.9, 0], [0.8, 0.7, 0, 0]])


def test_precision_recall_by_hand() -> None:
    m = evaluate(Y, P, ks=(1, 2, 3))
    assert m["P@1"] == pytest.approx(100 * (1 + 0) / 2)
    assert m["P@2"] == pytest.approx(100 * (1 / 2 + 1 / 2) / 2)
    assert m["P@3"] == pytest.approx(100 * (2 / 3 + 1 / 3) / 2)
    assert m["R@1"] == pytest.approx(100 * (1 / 2 + 0) / 2)
    assert m["R@3"] == pytest.approx(100 * (2 / 2 + 1 / 1) / 2)


def test_ndcg_by_hand() -> None:
    m = evaluate(Y, P, ks=(3,))
    row0 = (1 + 1 / 2) / (1 + 1 / math.log2(3))  # hits at ranks 1, 3; ideal: ranks 1, 2
    row1 = (1 / math.log2(3)) / 1.0  # hit at rank 2; ideal: rank 1
    assert m["nDCG@3"] == pytest.approx(100 * (row0 + row1) / 2)


def test_psp_by_hand_and_perfect_is_100() -> None:
    counts = np.array([10, 1, 100, 5])
    p = propensity(counts, 1000)
    c = (math.log(1000) - 1) * 2.5**0.55
    assert p[1] == pytest.approx(1 / (1 + c * math.exp(-0.55 * math.log(1 + 1.5))))
    m = evaluate(Y, P, ks=(1,), label_counts=counts, n_train=1000)
    best = (max(1 / p[0], 1 / p[2]) + 1 / p[1])
    assert m["PSP@1"] == pytest.approx(100 * (1 / p[2]) / best)
    assert evaluate(Y, Y, ks=(1, 3), label_counts=counts, n_train=1000)["PSP@3"] == pytest.approx(100)


def test_row_without_labels_scores_zero_and_empty_prediction() -> None:
    m = evaluate(_m([[0, 0], [1, 0]]), _m([[1, 0], [0, 0]]), ks=(1,))
    assert m["P@1"] == 0 and m["nDCG@1"] == 0


def test_evaluating_leaves_the_callers_unsorted_float64_scores_intact() -> None:
    """Scores with unsorted column indices (as top-k lists give them) in float64: the float32
    canonical copy evaluate() makes must not reorder the caller's indices under its values."""
    Y = sp.csr_matrix(np.eye(3, dtype=np.float32))
    pred = sp.csr_matrix((np.array([0.9, 0.1] * 3), np.array([0, 1, 1, 2, 2, 0]), np.arange(0, 7, 2)),
                         shape=(3, 3))
    before = pred.toarray()
    assert evaluate(Y, pred, (1,))["P@1"] == 100.0
    assert np.array_equal(pred.toarray(), before)
    assert evaluate(Y, pred, (1,))["P@1"] == 100.0


def test_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="truth is"):
        evaluate(Y, P[:, :3])
