"""How a layer's parents become work units (xmc.core.train.spread_children), and how their weights
become the layer's matrix again (xmc.core.train.assemble)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from xmc.core.train import (
    MIN_UNITS,
    SPLIT_MIN_WORK,
    ClusterUnit,
    ClusterWeights,
    assemble,
    fit_rows,
    spread_children,
    weights_of,
)
from xmc.params import SolverParams
from xmc.research.synth import SynthSpec, generate


def unit(parent: int, start: int, stop: int, n_rows: int) -> ClusterUnit:
    return ClusterUnit(1, parent, start, stop, np.arange(n_rows))


def covered(units: list[ClusterUnit]) -> dict[int, list[tuple[int, int]]]:
    out: dict[int, list[tuple[int, int]]] = {}
    for u in units:
        out.setdefault(u.parent, []).append((u.child_start, u.child_stop))
    return out


def test_few_heavy_units_are_cut_to_give_every_core_work() -> None:
    units = spread_children([unit(0, 0, 100, 10_000)])
    assert len(units) == MIN_UNITS and covered(units)[0][0][0] == 0 and units[-1].child_stop == 100
    light = unit(0, 0, 10, 100)
    assert spread_children([light]) == [light]  # below SPLIT_MIN_WORK: passes over the rows cost more


def test_a_unit_with_most_of_the_layers_work_is_cut_the_rest_kept() -> None:
    # a reassignment round's shape: one cluster got the copies and most rows (pypi-tags: 181 x 6498)
    units = [unit(0, 0, 181, 6498), unit(1, 181, 229, 660), unit(2, 229, 278, 1022), unit(3, 278, 300, 500)]
    out = spread_children(units)
    total = sum(u.n_rows * u.n_children for u in units)
    cap = max(SPLIT_MIN_WORK, total / MIN_UNITS)
    assert all(u.n_rows * u.n_children <= cap for u in out)
    pieces = covered(out)
    assert len(pieces[0]) > 1 and [len(pieces[p]) for p in (1, 2, 3)] == [1, 1, 1]
    flat = sorted(r for ranges in pieces.values() for r in ranges)  # contiguous, every child once
    assert flat[0][0] == 0 and flat[-1][1] == 300
    assert all(a[1] == b[0] for a, b in zip(flat, flat[1:], strict=False))


def test_balanced_layers_are_left_whole() -> None:
    units = [unit(p, 10 * p, 10 * p + 10, 5000) for p in range(8)]
    assert spread_children(units) == units


def scipy_assembled(results: list[ClusterWeights], n_features: int, n_children: int) -> sp.csc_matrix:
    """The layer's matrix by scipy's COO route: what ``assemble`` must equal."""
    feature = np.concatenate([r.feature for r in results])
    child = np.concatenate([r.child + r.child_start for r in results])
    W = sp.csc_matrix((np.concatenate([r.value for r in results]), (feature, child)),
                      shape=(n_features + 1, n_children))
    W.sort_indices()
    return W


def same(A: sp.csc_matrix, B: sp.csc_matrix) -> bool:
    return (A.shape == B.shape and A.has_sorted_indices and np.array_equal(A.indptr, B.indptr)
            and np.array_equal(A.indices, B.indices) and np.array_equal(A.data, B.data))


def test_units_weights_assemble_in_any_order_into_the_sorted_layer() -> None:
    data = generate(SynthSpec(n_labels=12, n_features=40), 300)
    X, Y = sp.csr_matrix(data.X, dtype=np.float32), sp.csr_matrix(data.Y)
    solver = SolverParams(weight_threshold=0.01)
    units = [fit_rows(X[rows], Y[rows][:, a:b], a, b, solver)
             for rows, (a, b) in [(np.arange(150), (0, 5)), (np.arange(100, 300), (5, 9)),
                                  (np.arange(0, 300, 2), (9, 12))]]
    assert all(len(u.value) > 0 for u in units)
    expected = scipy_assembled(units, 40, 14)  # children 12 and 13: no unit, empty columns
    for order in ([0, 1, 2], [2, 0, 1]):
        W = assemble([units[i] for i in order], 40, 14)
        assert same(W, expected) and W.indices.dtype == np.int32
    moved = weights_of(expected, 5, 9, 10)  # a kept cluster's columns at a new place, beside others
    W = assemble([units[0], moved], 40, 14)
    assert same(W[:, 10:14], expected[:, 5:9]) and same(W[:, :5], expected[:, :5]) and W[:, 5:10].nnz == 0
    shuffled = units[1]  # entries out of CSC order: the COO route, same matrix
    perm = np.random.default_rng(0).permutation(len(shuffled.value))
    disordered = ClusterWeights(shuffled.child_start, shuffled.child_stop, shuffled.feature[perm],
                                shuffled.child[perm], shuffled.value[perm])
    assert same(assemble([units[0], disordered, units[2]], 40, 14), expected)
