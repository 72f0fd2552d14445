"""Feature pairs (xmc.core.feature_pairs): each row's top-m features also count as their products."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from tests.conftest import same_model, topic_data
from xmc import LocalExecutor, XMCModel, XMCParams
from xmc.core.feature_pairs import pair_vocabulary, pairs_of, row_entries, row_pairs, with_pairs
from xmc.core.fit import fit
from xmc.core.sharded import fit_sharded
from xmc.core.sparse import normalize_rows
from xmc.errors import BundleError, ParamError
from xmc.io.features import write_bundle
from xmc.research.explain import explain_label


def reference_pairs(X: sp.csr_matrix, m: int) -> list[tuple[int, int, float]]:
    """(row, key, product) by the definition: a row's m largest values, ties to the lower feature."""
    out = []
    D = X.shape[1]
    for i in range(X.shape[0]):
        row = X[i]
        entries = zip(row.indices.tolist(), row.data.tolist(), strict=True)
        best = sorted(entries, key=lambda e: (-e[1], e[0]))[:m]
        for (f, v), (g, w) in combinations(best, 2):
            out.append((i, min(f, g) * D + max(f, g), v * w))
    return sorted(out)


def test_each_row_pairs_its_top_m_features_ties_to_the_lower_index() -> None:
    X = sp.random(120, 30, density=0.2, random_state=3, format="csr", dtype=np.float32)
    X.data = np.ceil(X.data * 4) / 4  # many ties
    rows, keys, values = row_pairs(X, 4)
    got = sorted(zip(rows.tolist(), keys.tolist(), values.tolist(), strict=True))
    want = reference_pairs(X, 4)
    assert [g[:2] for g in got] == [w[:2] for w in want] and len(want) > 100
    np.testing.assert_allclose([g[2] for g in got], [w[2] for w in want], rtol=1e-6)
    assert len(row_pairs(X[:, :1], 4)[0]) == 0  # one feature per row makes no pair


def test_pair_columns_are_the_fitting_rows_pairs_weighted_then_renormalised() -> None:
    X = normalize_rows(sp.csr_matrix(np.array([[3, 4, 0, 0], [0, 1, 1, 1], [1, 0, 0, 1]], np.float32)))
    vocab = pair_vocabulary(X[:2], 2)  # rows 0 and 1: pairs (0, 1) and (1, 2) (ties to the lower index)
    assert vocab.tolist() == [0 * 4 + 1, 1 * 4 + 2]
    Z = with_pairs(X, vocab, 2, 0.5)
    assert Z.shape == (3, 6)
    own, pairs = Z[:, :4].toarray(), Z[:, 4:].toarray()
    assert pairs[2].tolist() == [0, 0]  # (0, 3) was not in the fitting rows: no column
    np.testing.assert_allclose(own[2], X[2].toarray()[0], rtol=1e-6)  # so row 2 is as it was
    for i in (0, 1):  # a unit pair block at 0.5 beside a unit row: norms 1 : 0.5, then unit length
        np.testing.assert_allclose(np.linalg.norm(pairs[i]) / np.linalg.norm(own[i]), 0.5, rtol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(Z[i].toarray()), 1.0, rtol=1e-6)


def test_pairs_apply_to_inputs_of_few_features_and_short_rows_only() -> None:
    solver = XMCParams().solver
    assert pairs_of(solver, 500, 6.0) == solver.feature_pairs >= 2
    assert pairs_of(solver, solver.pair_max_features + 1, 6.0) == 0
    assert pairs_of(solver, 500, solver.pair_max_row_features + 0.5) == 0
    anything = XMCParams().replace(pair_max_features=0, pair_max_row_features=0).solver
    assert pairs_of(anything, 10**6, 500.0) == solver.feature_pairs
    # rows of many labels take the larger limit; the limits of a user who asked for more or any stand
    between = (solver.pair_max_row_features + solver.pair_max_row_features_many_labels) / 2
    many, few = solver.pair_many_labels, solver.pair_many_labels - 0.5
    assert pairs_of(solver, 500, between, many) == 3 and pairs_of(solver, 500, between, few) == 0
    assert pairs_of(solver, 500, solver.pair_max_row_features_many_labels + 0.5, many) == 0
    assert pairs_of(anything, 500, 500.0, many) == 3
    wider = XMCParams().replace(pair_max_row_features=30.0).solver
    assert pairs_of(wider, 500, 25.0, many) == pairs_of(wider, 500, 25.0, few) == 3
    never = XMCParams().replace(pair_many_labels=0).solver
    assert pairs_of(never, 500, between, 100.0) == 0
    X = sp.csr_matrix(np.array([[1, 0, 2], [0, 0, 0], [1, 1, 1]], np.float32))
    X.data[0] = 0  # a stored zero is no feature of the row
    assert row_entries(X) == 4 / 3 and row_entries(X[:0]) == 0.0
    with pytest.raises(ParamError, match="pair_max_row_features"):
        XMCParams().replace(pair_max_row_features=float("nan"))


def test_a_fit_with_pairs_predicts_the_same_after_a_round_trip_and_refuses_a_bad_pairs_file(
    tmp_path: Path,
) -> None:
    X, Y = topic_data(n=300, n_labels=20, d=60)
    model = fit(X, Y, XMCParams().replace(max_leaf_size=4), executor=LocalExecutor(show_progress=False))
    assert model.pairs is not None and len(model.pairs) > 0
    assert model.weights[0].shape[0] == X.shape[1] + len(model.pairs) + 1  # features, pairs, bias
    assert model.feature_weights is not None and len(model.feature_weights) == model.n_columns
    model.save(tmp_path / "m")
    loaded = XMCModel.load(tmp_path / "m")
    assert np.array_equal(loaded.pairs, model.pairs)
    assert (loaded.predict(X, topk=5) != model.predict(X, topk=5)).nnz == 0
    plain = fit(X, Y, XMCParams().replace(max_leaf_size=4, feature_pairs=0))
    assert plain.pairs is None and plain.weights[0].shape[0] == X.shape[1] + 1
    manifest = tmp_path / "m" / "manifest.json"
    saved = manifest.read_text()
    meta = json.loads(saved)
    meta["params"]["solver"]["feature_pairs"] = 0  # pairs stored, but params that make none
    manifest.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="pair columns but its params say feature_pairs=0"):
        XMCModel.load(tmp_path / "m")
    manifest.write_text(saved)
    path = tmp_path / "m" / "pairs.npz"
    z = dict(np.load(path))
    np.savez(path, first=z["second"], second=z["first"])  # first > second
    meta = json.loads(manifest.read_text())
    from xmc.io.files import sha256

    meta["files"]["pairs.npz"] = sha256(path)  # consistent checksums, a wrong content
    manifest.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="pairs.npz.*first < second"):
        XMCModel.load(tmp_path / "m")


def test_the_sharded_fit_makes_the_in_process_pairs(tmp_path: Path) -> None:
    X, Y = topic_data(n=400, n_labels=24, d=80)
    write_bundle(tmp_path / "b", X, Y, max_rows=150)
    params = XMCParams().replace(max_leaf_size=4, validation_fraction=0.1)
    ex = LocalExecutor(show_progress=False)
    sharded = fit_sharded(tmp_path / "b", params, executor=ex, work_dir=tmp_path, shard_rows=100)
    inproc = fit(X, Y, params, executor=ex)
    assert sharded.pairs is not None and inproc.pairs is not None
    assert np.array_equal(sharded.pairs, inproc.pairs)
    same_model(sharded, inproc)


def test_long_rows_make_no_pairs_in_process_or_sharded(tmp_path: Path) -> None:
    """Rows of more features than ``pair_max_row_features`` on average: neither fit makes pairs, and
    at a limit above their length both do, as where their labels count as many and the many-labels
    limit is above it (the sharded fit counts the features and labels its shards' rows hold)."""
    X, Y = topic_data(n=400, n_labels=24, d=80)  # about 6 features a row
    write_bundle(tmp_path / "b", X, Y, max_rows=150)
    ex = LocalExecutor(show_progress=False)
    for limit, many, paired in ((5.0, 0.0, False), (7.0, 0.0, True), (5.0, 1.0, True)):
        params = XMCParams().replace(max_leaf_size=4, validation_fraction=0.1, pair_max_row_features=limit,
                                     pair_many_labels=many, pair_max_row_features_many_labels=7.0, rounds=0)
        sharded = fit_sharded(tmp_path / "b", params, executor=ex, work_dir=tmp_path, shard_rows=100)
        inproc = fit(X, Y, params, executor=ex)
        assert (sharded.pairs is not None) == (inproc.pairs is not None) == paired, limit
        record, shards = inproc.info["pairs"], sharded.info["pairs"]  # what `xmc train` and MLflow report
        assert record["row_features"] == pytest.approx(shards["row_features"])
        assert record["row_labels"] == pytest.approx(shards["row_labels"]) and record["row_labels"] >= 1
        assert 5 < record["row_features"] < 7
        assert record["m"] == shards["m"] == (3 if paired else 0)
        if paired:
            assert inproc.pairs is not None and record["n_pairs"] == len(inproc.pairs)
            assert f"{len(inproc.pairs)} pair columns" in record["why"]
        else:
            assert record["n_pairs"] == 0 and "> pair_max_row_features 5 " in record["why"], record["why"]
    wide = fit_sharded(tmp_path / "b", params.replace(pair_max_features=50), executor=ex, work_dir=tmp_path)
    assert wide.info["pairs"]["row_features"] is None  # past the feature limit the rows are not counted
    assert wide.info["pairs"]["why"] == "none: 80 features > pair_max_features 50"


def test_explain_names_a_pair_column_by_its_two_features() -> None:
    X, Y = topic_data(n=300, n_labels=20, d=60)
    model = fit(X, Y, XMCParams().replace(max_leaf_size=4, rounds=0))
    names = [f"w{j}" for j in range(X.shape[1])]
    found = explain_label(model, X, Y, 0, feature_names=names, top=40)
    features = [f["feature"] for c in found["clusters"] for f in c["top_features"]]
    assert any(" & " in f for f in features), features
    a, b = next(f for f in features if " & " in f).split(" & ")
    assert a in names and b in names and names.index(a) < names.index(b)
