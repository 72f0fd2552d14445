"""Synthetic multi-sense data: streaming, determinism, ground truth, and the model recovering it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xmc import XMCParams
from xmc.core.fit import fit
from xmc.errors import ParamError
from xmc.io.readers import read_xc
from xmc.research.composite import leaf_scores, split_vi
from xmc.research.synth import BLOCK, SynthSpec, generate, sense_splits, sense_table, write

SPEC = SynthSpec(n_labels=160, n_features=3000)


def test_blocks_are_a_deterministic_prefix_stream() -> None:
    long, short = generate(SPEC, BLOCK + 300), generate(SPEC, 700)
    assert long.X.shape == (BLOCK + 300, 3000) and long.Y.shape == (BLOCK + 300, 160)
    for a, b in ((long.X, short.X), (long.Y, short.Y), (long.sense, short.sense)):
        assert (a[:700] != b).nnz == 0
    test = generate(SPEC, 700, "test")
    assert (test.X != short.X).nnz > 0  # splits are different streams
    assert np.all(np.diff(long.Y.indptr) >= 1)  # every document has a label


def test_ground_truth_senses_come_from_two_unrelated_topics() -> None:
    table = sense_table(SPEC)
    multi = table.multi_sense
    assert 0.1 < multi.mean() < 0.3  # multi_sense_share 0.2
    assert np.all(table.topic[multi, 0] != table.topic[multi, 1])
    b = generate(SPEC, 3000)
    rows, labels = b.sense.nonzero()
    sense = np.asarray(b.sense[rows, labels]).ravel() - 1
    # each positive pair's document was drawn from the topic of the sense it records
    assert np.array_equal(b.topic[rows], table.topic[labels, sense])
    assert set(np.unique(sense[~multi[labels]])) == {0}
    both = [lab for lab in np.flatnonzero(multi) if len(set(b.sense[:, lab].data)) == 2]
    assert len(both) > 0.8 * multi.sum()  # multi-sense labels really show both senses


def test_disentangled_model_copies_multi_sense_labels_and_routes_senses_apart() -> None:
    train, test = generate(SPEC, 6000), generate(SPEC, 1500, "test")
    table = sense_table(SPEC)
    model = fit(train.X, train.Y, XMCParams().replace(max_leaf_size=16, rounds=1))
    copies = np.bincount(model.tree.copy_label, minlength=SPEC.n_labels)
    assert (copies[table.multi_sense] > 1).mean() > 0.8
    assert (copies[~table.multi_sense] > 1).mean() < 0.5
    S = leaf_scores(model.preprocess(test.X), model.tree, model.weights, model.params.predict, 1.0)
    vi = split_vi(S, model.tree, sense_splits(test.sense, table), n_permutations=50)
    assert vi["labels_with_copies"] > 10
    assert vi["vi_model"] < 0.5 * vi["vi_random"] and vi["p_value"] < 0.05


def test_reassignment_round_keeps_unchanged_clusters_weights() -> None:
    spec = SynthSpec(n_labels=160, n_features=3000, multi_sense_share=0.03)
    train = generate(spec, 4000)
    base = XMCParams().replace(max_leaf_size=16, retrain_matcher=False)
    m0 = fit(train.X, train.Y, base.replace(rounds=0))
    m1 = fit(train.X, train.Y, base.replace(rounds=1))
    rec = m1.info["rounds"][-1]
    assert 0 < rec["clusters_changed"] < m1.tree.n_clusters
    # a cluster whose labels did not change has exactly the baseline's ranker columns
    t0, t1 = m0.tree, m1.tree
    p0, p1 = t0.children_ptr(t0.n_layers - 1), t1.children_ptr(t1.n_layers - 1)
    same = [k for k in range(t1.n_clusters)
            if np.array_equal(t0.copy_label[p0[k]:p0[k + 1]], t1.copy_label[p1[k]:p1[k + 1]])]
    assert len(same) == t1.n_clusters - rec["clusters_changed"]
    W0, W1 = m0.weights[-1], m1.weights[-1]
    for k in same:
        assert (W0[:, p0[k]:p0[k + 1]] != W1[:, p1[k]:p1[k + 1]]).nnz == 0


def test_write_formats_stream_the_same_documents(tmp_path: Path) -> None:
    spec = SynthSpec(n_labels=50, n_features=500)
    write(spec, tmp_path / "xc", 300, 100, "xc")
    X, Y = read_xc(tmp_path / "xc" / "train.txt")
    ref = generate(spec, 300)
    assert abs(X - ref.X).max() == 0 and (Y != ref.Y).nnz == 0
    write(spec, tmp_path / "j", 20, 5, "jsonl")
    lines = (tmp_path / "j" / "train.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    names = (tmp_path / "j" / "label_names.txt").read_text().split()
    assert len(lines) == 20 and first["id"] == "train-0"
    assert first["labels"] == [names[j] for j in generate(spec, 1).Y[0].indices]
    assert len(first["text"].split()) == int(generate(spec, 1).X[0].sum())
    assert json.loads((tmp_path / "j" / "spec.json").read_text())["n_labels"] == 50
    with pytest.raises(ParamError, match="multi_sense_share"):
        SynthSpec(multi_sense_share=1.5)
