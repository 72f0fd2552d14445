from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from tests.conftest import topic_data
from xmc import LocalExecutor, XMCModel, XMCParams
from xmc.core.disentangle import (
    InMemoryRows,
    assign,
    coverage,
    disentangle_round,
    gain_matching,
    precision_gains,
    routed_copy_targets,
    tree_with_assignment,
)
from xmc.core.fit import fit
from xmc.core.predict import _merge_copies, match
from xmc.core.tree import LabelTree
from xmc.params import DisentangleParams
from xmc.research.composite import make_composite, variation_of_information


def _m(rows: list[list[float]]) -> sp.csr_matrix:
    return sp.csr_matrix(np.array(rows, np.float32))


def test_assign_by_hand() -> None:
    # 3 labels x 3 clusters; label 0 has 10 positives, label 1 has 4, label 2 has 5.
    G = _m([[6, 5, 1], [0, 3, 1], [0, 0, 0]])
    C_old = _m([[1, 0, 0], [0, 0, 1], [0, 1, 0]])
    n_pos = np.array([10, 4, 5])
    p = DisentangleParams(max_copies=2, min_gain=2, min_gain_share=0.3)
    C = assign(G, C_old, n_pos, p, capacity=0).toarray()
    # label 0: (0,0)=6 and (0,1)=5 pass; (0,2)=1 fails min_gain. label 1: (1,1)=3 passes,
    # (1,2)=1 fails. label 2: no gain -> keeps its old cluster 1.
    assert C.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    # Capacity 1 per leaf: greedy by gain: (0,0)=6, then (0,1)=5, then (1,1)=3 refused -> label 1
    # gets nothing and keeps its old cluster 2.
    C = assign(G, C_old, n_pos, p, capacity=1).toarray()
    assert C.tolist() == [[1, 1, 0], [0, 0, 1], [0, 1, 0]]
    C = assign(G, C_old, n_pos, DisentangleParams(max_copies=1, min_gain=1, min_gain_share=0), 0)
    assert C.toarray().tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 0]]


def test_tree_with_assignment_and_coverage() -> None:
    tree = LabelTree((np.array([0, 0]), np.array([0, 0, 1])), np.array([0, 1, 2]), 3)
    C = _m([[1, 1], [1, 0], [0, 1]])
    new = tree_with_assignment(tree, C)
    assert new.parents[-1].tolist() == [0, 0, 1, 1] and new.copy_label.tolist() == [0, 1, 0, 2]
    assert (new.label_cluster_matrix() != C).nnz == 0
    Y = _m([[1, 0, 1], [0, 1, 0]])
    M = _m([[0, 1], [0, 1]])  # both instances matched to cluster 1 only
    assert coverage(Y, M, tree.label_cluster_matrix()) == pytest.approx(1 / 3)  # only (0, label 2)
    assert coverage(Y, M, C) == pytest.approx(2 / 3)  # label 0 now also in cluster 1


def test_matcher_targets_follow_the_routing_per_row_and_label() -> None:
    """A positive counts for the copies of its label the gain matching routed its row to; where it
    routed the row to none of them, for every copy. Decided per (row, label): another label of the
    same row that was routed does not change it."""
    # leaf 0: label 0; leaf 1: labels 0 and 2; leaf 2: label 1 (copies 0-3)
    tree = LabelTree((np.array([0, 0, 0]), np.array([0, 1, 1, 2])), np.array([0, 0, 2, 1]), 3)
    Y = _m([[1, 1, 0], [1, 0, 0], [1, 0, 1]])
    M = _m([[0, 1, 0], [0, 0, 1], [1, 0, 0]])  # the leaf each row was routed to
    got = routed_copy_targets(Y, M, tree).toarray()
    assert got.tolist() == [[0, 1, 0, 1],   # label 0 to leaf 1's copy; label 1 unrouted: its copy
                            [1, 1, 0, 0],   # label 0 routed to neither copy: both
                            [1, 0, 1, 0]]   # label 0 to leaf 0's copy; label 2 unrouted: its copy


def test_merge_copies_max_and_mean() -> None:
    copy_label = np.array([5, 7, 5])
    idx = np.array([[0, 1, 2, -1]])
    score = np.array([[0.2, 0.5, 0.6, -np.inf]], np.float32)
    labels, s = _merge_copies(idx, score, copy_label, False, "max")
    got = {int(label): float(v) for label, v in zip(labels[0], s[0], strict=True) if label >= 0}
    assert got == pytest.approx({5: 0.6, 7: 0.5})
    labels, s = _merge_copies(idx, score, copy_label, False, "mean")
    got = {int(label): float(v) for label, v in zip(labels[0], s[0], strict=True) if label >= 0}
    assert got == pytest.approx({5: 0.4, 7: 0.5})


def test_merge_copies_matches_a_per_row_reference_with_ties_and_padding() -> None:
    """The compiled merge against a dict per row: every label once, with the max (or the mean over
    finite scores) of its copies; tied scores and -inf copies included."""
    rng = np.random.default_rng(0)
    copy_label = rng.integers(0, 40, size=120)  # 120 copies of 40 labels: most labels have several
    idx = rng.integers(-1, 120, size=(50, 60))
    score = rng.choice(np.array([0.0, 0.25, 0.5, 1.0, -np.inf], np.float32), size=(50, 60))
    for how in ("max", "mean"):
        labels, s = _merge_copies(idx, score, copy_label, False, how)
        for i in range(idx.shape[0]):
            copies: dict[int, list[float]] = {}
            for c, v in zip(idx[i], score[i], strict=True):
                if c >= 0:
                    copies.setdefault(int(copy_label[c]), []).append(float(v))
            if how == "max":
                want = {label: max(v) for label, v in copies.items()}
            else:
                want = {label: float(np.mean([x for x in v if np.isfinite(x)])) if any(np.isfinite(v))
                        else -np.inf for label, v in copies.items()}
            got = {int(label): float(v) for label, v in zip(labels[i], s[i], strict=True) if label >= 0}
            assert got == pytest.approx(want), (how, i)


@pytest.mark.parametrize("how", ["max", "mean"])
@pytest.mark.parametrize("k", [1, 3, 25])
def test_a_single_trees_merged_top_k_is_the_merge_then_topk_dense(how: str, k: int) -> None:
    """``merge_topk`` (a tree on its own) against the merged blocks' ``topk_dense``: the same labels in
    the same order and the same scores, ties at every score to the lower label, rows with fewer
    labels than k padded -1 / -inf, a row with no candidate all padding."""
    from xmc.core.kernels import merge_topk
    from xmc.core.sparse import topk_dense

    rng = np.random.default_rng(9)
    copy_label = rng.integers(0, 20, size=60)
    idx = rng.integers(-1, 60, size=(40, 30))
    idx[3] = -1
    score = rng.choice(np.array([0.0, 0.25, 0.5, 1.0], np.float32), size=(40, 30))
    labels, merged = _merge_copies(idx, score, copy_label, False, how)
    want_idx, want_vals = topk_dense(merged, labels, k)
    got_idx, got_vals = merge_topk(idx, score, copy_label, how, k)
    assert np.array_equal(got_idx, want_idx) and np.array_equal(got_vals, want_vals)
    assert (got_idx[3] == -1).all()


def test_gains_are_a_sum_over_shards(toy) -> None:  # type: ignore[no-untyped-def]
    X, Y = toy
    model = fit(X, Y, XMCParams().replace(max_leaf_size=4, rounds=0, beam_size=2))
    Xp = model.preprocess(X)
    args = (Xp, Y, model.tree, model.weights, model.params.predict, 1.0, LocalExecutor())
    G_one, M_one = precision_gains(*args, shard_rows=10**6)
    G_many, M_many = precision_gains(*args, shard_rows=37)
    M = match(Xp, model.tree, model.weights[:-1], model.params.predict, bias=1.0)
    assert abs(G_one - G_many).max() == 0 and (M_many != M).nnz == 0
    assert abs(G_one - (Y.T @ M)).max() == 0


def multi_sense(seed: int = 0) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Toy data where labels 0..3 each also carry the positives of an unrelated label 12..15."""
    X, Y = topic_data(n=600, n_labels=24, d=60, seed=seed)
    Y = Y.tolil()
    for a, b in zip(range(4), range(12, 16), strict=True):
        Y[:, a] = Y[:, a].maximum(Y[:, b])
    return X, sp.csr_matrix(Y[:, :20].tocsr())


def test_rounds_end_to_end(tmp_path: Path) -> None:
    X, Y = multi_sense()
    params = XMCParams().replace(max_leaf_size=4, rounds=2, max_copies=2, gain_beam_size=1,
                                 validation_fraction=0.2)
    model = fit(X, Y, params)
    records = model.info["rounds"]
    assert records[0]["round"] == 0 and records[0]["validation"]["P@1"] > 0
    assert 2 <= len(records) <= 3 and model.info["best_round"] in {r["round"] for r in records}
    r1 = records[1]
    assert r1["clusters_changed"] > 0 and r1["labels_copied"] > 0
    assert r1["coverage_after"] >= r1["coverage_before"]
    assert set(r1["seconds"]) >= {"gains", "assign", "matcher", "rankers", "validate"}
    pred = model.predict(X, topk=3)
    assert pred.shape == Y.shape and np.all(np.diff(pred.indptr) == 3)  # real labels, merged
    model.save(tmp_path / "m")
    loaded = XMCModel.load(tmp_path / "m")
    assert (loaded.predict(X, topk=3) != pred).nnz == 0
    assert loaded.info["rounds"] == records


def test_deferred_rankers_give_the_model_of_the_plain_round() -> None:
    """Without validation the baseline's rankers are never trained (nothing reads them); the
    model must be the one a round on the fully trained baseline gives, rankers and all."""
    X, Y = multi_sense()
    params = XMCParams().replace(max_leaf_size=4, rounds=1, gain_beam_size=1)
    deferred = fit(X, Y, params)
    assert "rankers_pending" not in deferred.info and deferred.info["rounds"][1]["seconds"]["rankers"] > 0
    base = fit(X, Y, params.replace(rounds=0))
    Xn = base.preprocess(X)
    rows = InMemoryRows(Xn, sp.csr_matrix(Y), None, None, LocalExecutor(show_progress=False))
    tree, weights, record = disentangle_round(
        rows, base.tree, base.weights, params.solver, params.predict, params.disentangle,
        params.tree.max_leaf_size, 1, "changed")
    assert 0 < record.clusters_changed < tree.n_clusters  # some rankers were moved over, not retrained
    assert np.array_equal(tree.copy_label, deferred.tree.copy_label)
    for a, b in zip(weights, deferred.weights, strict=True):
        assert abs(a - b).max() < 1e-6
    # two rounds: round 1's rankers are skipped too, the final model is complete
    two = fit(X, Y, params.replace(rounds=2))
    assert "rankers_pending" not in two.info and two.weights[-1].nnz > 0
    assert two.predict(X, topk=3).nnz == 3 * X.shape[0]


def test_matcher_aware_negatives_of_a_round_come_from_the_new_matchers_beam() -> None:
    """With 'tfn+man' a round's rankers must see the rows the retrained matcher's full beam sends
    to each leaf, exactly as train_layers gives them, not the gain matching's single top leaf
    under the old matcher (which made 'tfn+man' rounds train as plain 'tfn' on Bibtex)."""
    from xmc.core.train import train_layers

    X, Y = multi_sense()
    params = XMCParams().replace(max_leaf_size=4, rounds=0, negatives="tfn+man", man_top=0, beam_size=3)
    base = fit(X, Y, params)
    Xn, Yc, ex = base.preprocess(X), sp.csr_matrix(Y), LocalExecutor(show_progress=False)
    tree, weights, _ = disentangle_round(
        InMemoryRows(Xn, Yc, None, None, ex), base.tree, base.weights, params.solver, params.predict,
        params.disentangle, params.tree.max_leaf_size, 1, "changed")
    last = tree.n_layers - 1
    reference = train_layers(Xn, Yc, tree, params.solver, params.predict, ex, layers=[last],
                             weights=weights)
    assert abs(weights[last] - reference[last]).max() < 1e-6
    teacher_forced = train_layers(Xn, Yc, tree, replace(params.solver, negatives="tfn"),
                                  params.predict, ex, layers=[last], weights=weights)
    assert abs(weights[last] - teacher_forced[last]).max() > 1e-3  # the matcher's rows did change it


class RecordingExecutor(LocalExecutor):
    """A real local executor that keeps the units of every map it runs."""

    def __init__(self) -> None:
        super().__init__(show_progress=False)
        self.units: dict[str, list[Any]] = {}

    def map(self, fn: Any, shared: Any, units: Any, *, desc: str = "") -> list[Any]:
        self.units[desc] = list(units)
        return super().map(fn, shared, units, desc=desc)


def test_man_top_takes_negatives_from_the_best_nodes_of_the_beam() -> None:
    """Rows per parent: teacher-forced ones are in every variant; the top-1 node's matched rows
    are a subset of the whole beam's; and narrowing does drop rows somewhere."""
    from xmc.core.train import train_layers

    X, Y = multi_sense()
    params = XMCParams().replace(max_leaf_size=4, rounds=0, beam_size=3)
    base = fit(X, Y, params)
    Xn, Yc = base.preprocess(X), sp.csr_matrix(Y)
    rows = {}
    man = replace(params.solver, negatives="tfn+man", man_top=0)
    tfn = replace(params.solver, negatives="tfn")
    for name, solver in (("tfn", tfn), ("top1", replace(man, man_top=1)), ("beam", man)):
        ex = RecordingExecutor()
        train_layers(Xn, Yc, base.tree, solver, params.predict, ex, layers=[base.tree.n_layers - 1],
                     weights=base.weights)
        (units,) = (u for desc, u in ex.units.items() if not desc.endswith("matching"))
        rows[name] = {u.parent: set(u.rows.tolist()) for u in units}
    assert all(rows["tfn"][p] <= rows["top1"][p] <= rows["beam"][p] for p in rows["tfn"])
    assert sum(map(len, rows["top1"].values())) < sum(map(len, rows["beam"].values()))
    assert sum(map(len, rows["tfn"].values())) < sum(map(len, rows["top1"].values()))


def test_the_fits_matching_in_shards_on_threads_is_the_one_call_matching(toy) -> None:  # type: ignore[no-untyped-def]
    """The matcher-aware negatives' rows come from ``matched_rows`` (chunk-sized shards on the
    executor): the same matrix as one ``match`` call, with a shard that ends mid-chunk."""
    from xmc.core.train import matched_rows

    X, Y = toy
    model = fit(X, Y, XMCParams().replace(max_leaf_size=4, rounds=0, beam_size=3))
    Xp, tree, weights = model.preprocess(X), model.tree, model.weights[:-1]
    small = replace(model.params.predict, chunk_size=37)  # 4+ shards, the last one short
    assert Xp.shape[0] % 37 != 0
    ex = RecordingExecutor()
    got = matched_rows(Xp, tree, weights, small, ex, bias=1.0, keep=2, desc="matching")
    want = match(Xp, tree, weights, model.params.predict, bias=1.0, keep=2)
    assert len(ex.units["matching"]) == -(-Xp.shape[0] // 37) > 1
    assert got.shape == want.shape and (got != want).nnz == 0 and want.nnz == 2 * Xp.shape[0]


def test_zero_rounds_is_the_baseline(toy) -> None:  # type: ignore[no-untyped-def]
    X, Y = toy
    model = fit(X, Y, XMCParams().replace(max_leaf_size=4, rounds=0))
    assert len(model.tree.copy_label) == Y.shape[1] and "rounds" not in model.info


def test_composite_pairs_sibling_leaves_and_vi() -> None:
    X, Y = topic_data(n=300, n_labels=16, d=50)
    comp = make_composite(X, Y, XMCParams().replace(max_leaf_size=4).tree)
    paired = comp.halves[comp.halves[:, 1] >= 0]
    assert len(paired) == 8 and sorted(comp.halves.ravel().tolist()) == list(range(16))
    Yc = comp.apply(Y)
    assert Yc.shape == (300, 8)
    a, b = paired[0]
    assert (Yc[:, 0] != Y[:, a].maximum(Y[:, b])).nnz == 0
    assert variation_of_information(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0])) == 0
    assert variation_of_information(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])) == pytest.approx(
        2 * np.log(2))


def test_explain_lists_each_copy_with_its_gain() -> None:
    from xmc.research.explain import explain_label

    X, Y = multi_sense()
    model = fit(X, Y, XMCParams().replace(max_leaf_size=4, gain_beam_size=1))
    copied = np.flatnonzero(np.bincount(model.tree.copy_label) > 1)
    assert len(copied) > 0
    label = int(copied[0])
    info = explain_label(model, X, Y, label, top=3)
    assert len(info["clusters"]) >= 2 and info["positives"] == Y[:, label].nnz
    assert sum(c["instances"] for c in info["clusters"]) + info["unrouted"] == info["positives"]
    assert all(c["gain"] >= c["instances"] for c in info["clusters"])
    assert all(len(c["top_features"]) <= 3 for c in info["clusters"])


def test_gain_matching_keeps_the_top_leaf_of_a_wide_search() -> None:
    """In a deep tree a greedy (beam 1) descent can misroute (at L = 100K it reached a quarter of
    the training pairs); the gains take the best leaf of a beam-10 search instead: one leaf per
    instance, inside the wide beam, and not always the greedy one."""
    from xmc.research.synth import SynthSpec, generate

    data = generate(SynthSpec(n_labels=1500, n_features=4000, seed=5), 3000)
    params = XMCParams().replace(max_leaf_size=8, branching_factor=4, rounds=0)
    model = fit(data.X, data.Y, params)
    assert model.tree.n_layers >= 4
    X, Y, C = model.preprocess(data.X), sp.csr_matrix(data.Y), model.tree.label_cluster_matrix()
    search, keep = gain_matching(DisentangleParams(), params.predict)
    assert (search.beam_size, keep) == (params.predict.beam_size, 1)
    top = match(X, model.tree, model.weights[:-1], search, bias=params.solver.bias, keep=keep)
    wide = match(X, model.tree, model.weights[:-1], search, bias=params.solver.bias)
    greedy = match(X, model.tree, model.weights[:-1], search, bias=params.solver.bias, beam_size=1)
    assert np.all(np.diff(top.indptr) == 1) and top.multiply(wide).nnz == X.shape[0]
    assert 0 < (top != greedy).nnz and coverage(Y, top, C) >= coverage(Y, greedy, C) - 0.01
