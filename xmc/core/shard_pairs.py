"""The sharded fit's feature pairs (``xmc.core.feature_pairs``): the pair vocabulary gathered from the
shards' fitting rows, then every shard's rows given their pair columns, as the in-process fit makes them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xmc.core.feature_pairs import pair_vocabulary, with_pairs
from xmc.core.shard_units import PreparedShard, PrepareSpec, feature_sums, load_rows
from xmc.io.shards import load_matrices, rows_file, save_matrices


@dataclass(frozen=True)
class PairSpec:
    prepare: PrepareSpec
    m: int
    weight: float
    vocabulary: np.ndarray | None = None
    """The pair columns (None while the keys are being gathered)."""


def shard_row_entries(spec: PrepareSpec, shard: PreparedShard) -> tuple[int, int, int]:
    """(nonzero features, nonzero labels, rows) of the shard's train rows: summed over the shards, the
    in-process fit's ``feature_pairs.row_entries`` of its fitting rows' features and labels."""
    X, Y = load_rows(spec.root, "train", shard.shard)
    return int(np.count_nonzero(X.data)), int(np.count_nonzero(Y.data)), X.shape[0]


def shard_pair_keys(spec: PairSpec, shard: PreparedShard) -> np.ndarray:
    """The pair keys the shard's train rows hold (``feature_pairs.pair_vocabulary``): their union over
    the shards is the in-process fit's vocabulary."""
    X, _ = load_rows(spec.prepare.root, "train", shard.shard)
    return pair_vocabulary(X, spec.m)


def pair_shard(spec: PairSpec, shard: PreparedShard) -> None:
    """The shard's rows (train and held-out) with their pair columns, as the in-process fit pairs its
    rows; the feature sums redone from them (the label counts stand)."""
    assert spec.vocabulary is not None, "pair_shard needs the vocabulary"
    for split in ("train", "valid"):
        X, Y = load_rows(spec.prepare.root, split, shard.shard)
        X = with_pairs(X, spec.vocabulary, spec.m, spec.weight, spec.prepare.normalize)
        save_matrices(rows_file(spec.prepare.root, split, shard.shard), X=X, Y=Y)
        if split == "train":
            sums = {k: v for k, v in load_matrices(shard.sums).items() if k not in ("pifa", "df", "mass")}
            save_matrices(shard.sums, **sums, **feature_sums(spec.prepare, X, Y))
