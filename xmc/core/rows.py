"""Where the training rows live, behind one interface: the driver's matrices, or shards in storage.

The fit loop (``xmc.core.fit``) and a round (``xmc.core.disentangle``) ask the rows only for what
is sized by the labels: a layer's weights, the gains G (L x K), coverage, held-out scores.
``disentangle.InMemoryRows`` answers from the driver's X and Y (small data, tests); ``ShardedRows``
(``xmc.core.sharded``) from shard files that the executor's workers read, so the driver never
holds a row. Both run the same work units on the same rows, so they give the same model.

The held-out split is a seeded hash of each row's position (``holdout_mask``): a shard decides
its own rows without the driver drawing a permutation of N.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from xmc.core.tree import LabelTree
from xmc.params import PredictParams, SolverParams

Member = tuple[LabelTree, Sequence[sp.csc_matrix]]
"""One tree of a model and its layer weights."""
Matching = Any
"""A round's gain matching M (rows x leaf clusters), as the rows keep it: the matrix itself in
memory, per-shard files in storage."""


class TrainingRows(Protocol):
    """The training rows of a fit (held-out rows apart), wherever they are."""

    n_features: int
    label_counts: np.ndarray
    """Positives of each label among the training rows."""
    has_validation: bool

    def train_layers(self, tree: LabelTree, solver: SolverParams, predict: PredictParams,
                     layers: list[int] | None = None, weights: list[sp.csc_matrix] | None = None,
                     routed: Matching | None = None) -> list[sp.csc_matrix]:
        """``xmc.core.train.train_layers`` on these rows; ``routed`` (a round's matching) gives
        the matcher its routed copy targets (``disentangle.routed_copy_targets``)."""
        ...

    def train_rankers(self, tree: LabelTree, new_tree: LabelTree, W_old: sp.csc_matrix,
                      changed: np.ndarray, solver: SolverParams, predict: PredictParams,
                      matcher: Sequence[sp.csc_matrix], desc: str) -> sp.csc_matrix:
        """New last layer: the ``changed`` clusters' rankers trained (with matcher-aware
        negatives from ``matcher`` when the solver asks), the others' columns moved over."""
        ...

    def gains(self, tree: LabelTree, weights: Sequence[sp.csc_matrix], predict: PredictParams,
              bias: float, keep: int) -> tuple[sp.csr_matrix, Matching]:
        """(G = Y^T M summed over the rows, the matching M kept for this round)."""
        ...

    def coverage(self, matching: Matching, C: sp.csr_matrix) -> float:
        """Share of true (row, label) pairs the matching reaches under label -> cluster map C."""
        ...

    def validate(self, members: Sequence[Member], predict: PredictParams, bias: float,
                 label_counts: np.ndarray, n_train: int) -> dict[str, float] | None:
        """P@1/3/5 (and PSP, nDCG, R) of the model's top 5 on the held-out rows; None without any."""
        ...

    def drop(self, matching: Matching) -> None:
        """The round is over: its matching is no longer read."""
        ...

    def resolve(self, weights: Sequence[sp.csc_matrix]) -> list[sp.csc_matrix]:
        """The layer matrices with their values (a sharded fit hands out stored stubs until the
        end, so its driver never holds two models at once)."""
        ...


def _unit_hash(seed: int, start: int, stop: int) -> np.ndarray:
    """A uniform draw in [0, 1) per row position ``[start, stop)``: splitmix64 of (seed, position)."""
    z = np.arange(start, stop, dtype=np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


HASH_BLOCK = 1 << 20
"""Rows hashed at a time where the driver must look at every position (tiny held-out shares)."""


def holdout_threshold(seed: int, n_rows: int, fraction: float) -> float:
    """The draw below which a row is held out: ``fraction``, or for tiny data where no row's draw
    falls below it, just above the smallest draw (so at least one row is held out, as asked)."""
    if fraction <= 0 or n_rows == 0:
        return 0.0
    if n_rows * fraction >= 64:  # P(no row held out) < e^-64: not worth a pass
        return fraction
    smallest = min(float(_unit_hash(seed, a, min(a + HASH_BLOCK, n_rows)).min())
                   for a in range(0, n_rows, HASH_BLOCK))
    return fraction if smallest < fraction else float(np.nextafter(smallest, 1.0))


def holdout_mask(seed: int, start: int, stop: int, threshold: float) -> np.ndarray:
    """Which of rows ``[start, stop)`` are held out (``holdout_threshold`` gives ``threshold``)."""
    return _unit_hash(seed, start, stop) < threshold


def split_validation(
    X: sp.csr_matrix, Y: sp.csr_matrix, fraction: float, seed: int
) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix | None, sp.csr_matrix | None]:
    """Seeded row split (train, validation) by ``holdout_mask``; no validation when fraction is 0."""
    if fraction <= 0:
        return X, Y, None, None
    held = holdout_mask(seed, 0, X.shape[0], holdout_threshold(seed, X.shape[0], fraction))
    return X[~held], Y[~held], X[held], Y[held]
