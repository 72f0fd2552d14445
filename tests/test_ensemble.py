"""Ensembles of label trees (``n_trees`` T): averaged scores, one bundle, resume, tracking, explain."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from xmc import LocalExecutor, XMCModel, XMCParams
from xmc.core.fit import fit
from xmc.core.predict import predict
from xmc.errors import BundleError
from xmc.research.explain import explain_label
from xmc.research.synth import SynthSpec, generate

PARAMS = XMCParams().replace(max_leaf_size=8, rounds=1, validation_fraction=0.2, n_trees=3)


@pytest.fixture(scope="module")
def data() -> Any:
    return generate(SynthSpec(n_labels=60, n_features=400, seed=5), 900)


@pytest.fixture(scope="module")
def ensemble(data: Any) -> XMCModel:
    return fit(data.X, data.Y, PARAMS, executor=LocalExecutor(show_progress=False))


def test_trees_differ_and_scores_are_their_average(ensemble: XMCModel, data: Any) -> None:
    """Each tree from its own seed; a label's score is the mean over trees of its path score,
    0 where a tree's beam misses it (computed here from each tree's own full candidate list)."""
    assert len(ensemble.trees) == 3 and ensemble.params.tree.n_trees == 3
    assert [m.params.tree.seed for m in ensemble.trees] == [0, 1, 2]
    assert not np.array_equal(ensemble.trees[0].tree.parents[-1], ensemble.trees[1].tree.parents[-1])
    Xp = ensemble.preprocess(data.X[:200])
    p = ensemble.params
    full = [predict(Xp, m.tree, m.weights, p.predict, bias=p.solver.bias, topk=m.n_labels).toarray()
            for m in ensemble.trees]
    mean = np.mean(full, axis=0)
    got = ensemble.predict(data.X[:200], topk=5)
    for i in range(200):
        row = got[i]
        expected = np.sort(mean[i])[::-1][:5]
        np.testing.assert_allclose(np.sort(row.data)[::-1], expected[expected > 0], rtol=1e-5)
        np.testing.assert_allclose(row.data, mean[i, row.indices], rtol=1e-5)
    single = ensemble.trees[0]
    alone = predict(Xp, single.tree, single.weights, p.predict, bias=p.solver.bias, topk=5)
    assert (alone != got).nnz > 0  # the other trees change the answer


def test_records_say_their_tree_and_the_ensemble_is_scored_held_out(ensemble: XMCModel) -> None:
    for t, m in enumerate(ensemble.trees):
        assert m.info["rounds"] and all(r["tree"] == t for r in m.info["rounds"])
    assert [s["tree"] for s in ensemble.info["trees"]] == [0, 1, 2]
    assert 0 < ensemble.info["validation"]["P@1"] <= 100


def test_bundle_round_trip_and_tampering(ensemble: XMCModel, data: Any, tmp_path: Path) -> None:
    ensemble.save(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert any(f.startswith("trees/2/") for f in manifest["files"])
    back = XMCModel.load(tmp_path / "m")
    assert len(back.trees) == 3
    assert abs(back.predict(data.X[:100], topk=5) - ensemble.predict(data.X[:100], topk=5)).max() == 0
    # a tree of another training set swapped in (checksums redone by saving the whole bundle)
    other = fit(data.X[:600], data.Y[:600], PARAMS.replace(n_trees=1, validation_fraction=0.0))
    other.save(tmp_path / "other")
    mixed = XMCModel.load(tmp_path / "m")
    mixed.members[1] = XMCModel.load(tmp_path / "other")
    mixed.save(tmp_path / "mixed")
    with pytest.raises(BundleError, match="another training set"):
        XMCModel.load(tmp_path / "mixed")
    (tmp_path / "m" / "trees" / "2" / "layer_0.npz").write_bytes(b"garbage")
    with pytest.raises(BundleError, match="layer_0.npz"):
        XMCModel.load(tmp_path / "m")


def test_resume_trains_only_the_trees_not_finished(ensemble: XMCModel, data: Any, tmp_path: Path) -> None:
    """A run killed during tree 2 resumes with trees 0 and 1 read back, not refitted."""
    ckpt = tmp_path / "ckpt"
    first = fit(data.X, data.Y, PARAMS, executor=LocalExecutor(show_progress=False), checkpoint_dir=ckpt)
    assert sorted(p.name for p in ckpt.iterdir()) == ["tree_0", "tree_1", "tree_2"]
    shutil.rmtree(ckpt / "tree_2")  # as if the driver died before tree 2's first checkpoint
    state_0 = (ckpt / "tree_0" / "state.json").read_text()
    resumed = fit(data.X, data.Y, PARAMS, executor=LocalExecutor(show_progress=False),
                  checkpoint_dir=ckpt, resume=True)
    assert (ckpt / "tree_0" / "state.json").read_text() == state_0
    assert resumed.info["rounds"] == first.info["rounds"]  # tree 0's own records, timings included
    assert abs(resumed.predict(data.X[:100]) - ensemble.predict(data.X[:100])).max() < 1e-6
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="checkpoint folder"):
        fit(data.X, data.Y, PARAMS, checkpoint_dir=tmp_path / "foreign")


def test_explain_reports_every_tree(ensemble: XMCModel, data: Any) -> None:
    label = int(np.argmax(np.asarray(data.Y.sum(axis=0)).ravel()))
    out = explain_label(ensemble, data.X, data.Y, label, top=3)
    assert [t["tree"] for t in out["trees"]] == [0, 1, 2]
    assert out["clusters"] == out["trees"][0]["clusters"]
    for t, tree in enumerate(out["trees"]):
        cluster_of = ensemble.trees[t].tree.parents[-1]
        copies = np.flatnonzero(ensemble.trees[t].tree.copy_label == label)
        assert sorted(c["cluster"] for c in tree["clusters"]) == sorted(cluster_of[copies].tolist())
        assert sum(c["instances"] for c in tree["clusters"]) + tree["unrouted"] == out["positives"]


def test_one_tree_is_the_plain_model(data: Any) -> None:
    """n_trees=1 writes no trees/ folder and predicts by the plain beam search."""
    m = fit(data.X, data.Y, PARAMS.replace(n_trees=1))
    assert m.members == [] and "trees" not in m.info
    p = m.params
    direct = predict(m.preprocess(data.X[:50]), m.tree, m.weights, p.predict, bias=p.solver.bias)
    assert abs(m.predict(data.X[:50]) - direct).max() == 0
    assert sp.issparse(direct)
