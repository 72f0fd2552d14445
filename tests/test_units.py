"""How a layer's parents become work units (xmc.core.train.spread_children)."""

from __future__ import annotations

import numpy as np

from xmc.core.train import MIN_UNITS, SPLIT_MIN_WORK, ClusterUnit, spread_children


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
