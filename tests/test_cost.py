"""The fit's C per unit of recurring row mass, the rankers' C per label and the rows' C by their label
count (``xmc.core.cost``): by hand, in the fit, in the sharded fit, and in a saved model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from tests.conftest import same_model, topic_data
from xmc import LocalExecutor, XMCModel, XMCParams
from xmc.core.cost import (
    MAX_COST_SCALE,
    MAX_LABEL_COST_SCALE,
    add_row_sizes,
    document_frequency,
    label_costs,
    recurring_share_sum,
    resolve_cost,
    resolve_cost_of_rows,
    row_costs_of,
    row_sizes,
)
from xmc.core.feature_weights import weigh_rows
from xmc.core.fit import fit
from xmc.core.sharded import fit_sharded
from xmc.core.sparse import csr
from xmc.errors import ParamError
from xmc.io.features import write_bundle

SCALED = XMCParams().replace(recurring_df=2)
"""C divided by the share of the rows' mass on features in >= 2 training rows (off by default)."""


def test_recurring_share_by_hand() -> None:
    """Row 0 has 0.36 of its squared norm on feature 0 (in 2 rows) and 0.64 on feature 1 (in 1 row);
    row 1 is all feature 0; row 2 all feature 2 (1 row); row 3 is empty and does not count."""
    X = sp.csr_matrix(np.array([[0.6, 0.8, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]))
    df = document_frequency(X)
    assert df.tolist() == [2, 1, 1]
    total, rows = recurring_share_sum(X, df, 2)
    assert rows == 3 and total == pytest.approx(1.36)
    params, record = resolve_cost(SCALED, total, rows)
    assert params.solver.cost == pytest.approx(0.5 * 3 / 1.36, rel=1e-3)
    assert params.solver.recurring_df == 0  # the model's params say the C it trained with
    assert record == {"given": 0.5, "recurring_df": 2, "recurring_share": pytest.approx(1.36 / 3),
                      "effective": params.solver.cost}
    assert recurring_share_sum(X, df, 1) == (pytest.approx(3.0), 3)  # every feature recurs at m = 1


def test_the_scale_is_capped_and_can_be_switched_off() -> None:
    params, _ = resolve_cost(SCALED, 0.01, 100)  # rho 1e-4
    assert params.solver.cost == 0.5 * MAX_COST_SCALE
    as_given = XMCParams()  # the default: C as given
    assert resolve_cost(as_given, 0.01, 100) == (as_given, {})
    assert resolve_cost(SCALED, 1.0, 1)[0].solver.cost == 0.5  # all mass recurs: C as given


def with_singletons(X: sp.csr_matrix, weight: float = 2.5) -> sp.csr_matrix:
    """Each row also gets a feature of its own (seen in no other row), as a TF-IDF's rare word pairs."""
    n = X.shape[0]
    own = sp.csr_matrix((np.full(n, weight, np.float32), (np.arange(n), np.arange(n))), shape=(n, n))
    return sp.hstack([X, own], format="csr")


def test_fit_trains_with_the_scaled_cost_and_records_it(tmp_path: Path) -> None:
    X, Y = topic_data(n=300, n_labels=20, d=60)
    Xs = with_singletons(X)
    params = SCALED.replace(max_leaf_size=4, feature_weight_exponent=0.0, feature_pairs=0)  # rows as given
    ex = LocalExecutor(show_progress=False)
    model = fit(Xs, Y, params, executor=ex)
    rows = Xs.multiply(1 / np.sqrt(Xs.multiply(Xs).sum(axis=1))).tocsr()  # the fit's normalised rows
    rho = float(np.mean(1 - 2.5**2 / np.asarray(Xs.multiply(Xs).sum(axis=1)).ravel()))
    assert resolve_cost_of_rows(params, rows)[1]["recurring_share"] == pytest.approx(rho)
    assert model.info["cost"]["recurring_share"] == pytest.approx(rho) and rho < 0.6
    weighed = fit(Xs, Y, params.replace(feature_weight_exponent=0.25), executor=ex)  # C of the weighed rows
    assert weighed.feature_weights is not None
    share = resolve_cost_of_rows(params, weigh_rows(csr(rows), weighed.feature_weights, True))[1]
    assert weighed.info["cost"]["recurring_share"] == pytest.approx(share["recurring_share"])
    assert abs(share["recurring_share"] - rho) > 1e-3
    assert model.params.solver.cost == pytest.approx(0.5 / rho, rel=1e-3) == model.info["cost"]["effective"]
    given = fit(Xs, Y, params.replace(recurring_df=0), executor=ex)  # C as given: another model
    assert given.params.solver.cost == 0.5 and "cost" not in given.info
    assert any(abs(a - b).max() > 1e-3 for a, b in zip(model.weights, given.weights, strict=True))
    again = fit(Xs, Y, model.params, executor=ex)  # the recorded params refit the same model
    same_model(again, model)
    model.save(tmp_path / "m")
    loaded = XMCModel.load(tmp_path / "m")
    assert loaded.params == model.params and loaded.info["cost"] == model.info["cost"]


def test_a_model_saved_before_the_scale_row_costs_and_weights_loads_with_its_own(tmp_path: Path) -> None:
    X, Y = topic_data(n=200, n_labels=12, d=40)
    # an old model: trained on the features as given, so no features.npz
    fit(X, Y, XMCParams().replace(max_leaf_size=4, rounds=0, cost=0.8, feature_weight_exponent=0.0)
        ).save(tmp_path / "m")
    manifest = tmp_path / "m" / "manifest.json"
    meta = json.loads(manifest.read_text())
    assert "features.npz" not in meta["files"]
    for name in ("recurring_df", "row_cost_exponent", "feature_weight_exponent"):
        del meta["params"]["solver"][name]
    manifest.write_text(json.dumps(meta))
    model = XMCModel.load(tmp_path / "m")
    params = model.params
    assert params.solver.cost == 0.8 and params.solver.recurring_df == 0
    assert params.solver.row_cost_exponent == 0.0 != XMCParams().solver.row_cost_exponent  # every row at C
    assert params.solver.feature_weight_exponent == 0.0 != XMCParams().solver.feature_weight_exponent
    assert model.feature_weights is None


def test_the_sharded_fit_resolves_the_same_cost(tmp_path: Path) -> None:
    X, Y = topic_data(n=400, n_labels=20, d=60, seed=3)
    Xs = with_singletons(X, weight=1.0)
    write_bundle(tmp_path / "b", Xs, Y, max_rows=150)
    params = SCALED.replace(max_leaf_size=4, validation_fraction=0.1)
    ex = LocalExecutor(show_progress=False)
    sharded = fit_sharded(tmp_path / "b", params, executor=ex, work_dir=tmp_path, shard_rows=100)
    inproc = fit(Xs, Y, params, executor=ex)
    assert sharded.info["cost"] == pytest.approx(inproc.info["cost"])
    assert sharded.params == inproc.params and sharded.params.solver.cost > 0.55
    same_model(sharded, inproc)


def test_label_costs_by_hand() -> None:
    solver = XMCParams().solver
    assert label_costs(np.array([3, 500]), solver) == 0.5  # the default: one C for every label
    per_label = XMCParams().replace(label_cost_exponent=-0.5, label_cost_reference=100).solver
    costs = label_costs(np.array([0, 1, 25, 100, 400, 10**6]), per_label)
    # (n / 100)^-0.5: 0 counts as 1 and is clipped at 4x, like 1; 25 -> 2x, 400 -> 0.5x, 1e6 -> 1/4
    np.testing.assert_allclose(costs, 0.5 * np.array([4, 4, 2, 1, 0.5, 1 / MAX_LABEL_COST_SCALE]))
    with pytest.raises(ParamError, match="label_cost_reference=0.0 is invalid: use a positive number"):
        XMCParams().replace(label_cost_reference=0.0)
    with pytest.raises(ParamError, match="label_cost_exponent=nan is invalid"):
        XMCParams().replace(label_cost_exponent=float("nan"))


def test_one_cost_per_label_trains_the_rankers_only_in_both_fits(tmp_path: Path) -> None:
    """The matcher layers keep C (the same weights as with one C); the rankers change; the sharded
    fit, with a round and held-out rows, gives the in-process model; the model keeps its params."""
    X, Y = topic_data(n=400, n_labels=20, d=60, seed=4)
    ex = LocalExecutor(show_progress=False)
    per_label = XMCParams().replace(max_leaf_size=4, rounds=0, label_cost_exponent=-0.5,
                                    label_cost_reference=100)
    a = fit(X, Y, per_label, executor=ex)
    b = fit(X, Y, per_label.replace(label_cost_exponent=0.0), executor=ex)
    assert a.tree.n_layers >= 2
    for Wa, Wb in zip(a.weights[:-1], b.weights[:-1], strict=True):
        assert (Wa != Wb).nnz == 0
    assert abs(a.weights[-1] - b.weights[-1]).max() > 1e-2
    params = per_label.replace(rounds=1, validation_fraction=0.1)
    write_bundle(tmp_path / "b", X, Y, max_rows=150)
    sharded = fit_sharded(tmp_path / "b", params, executor=ex, work_dir=tmp_path, shard_rows=100)
    same_model(sharded, fit(X, Y, params, executor=ex))
    sharded.save(tmp_path / "m")
    assert XMCModel.load(tmp_path / "m").params.solver.label_cost_exponent == -0.5


def test_row_costs_by_hand() -> None:
    """n^-g over the mean of the fit's rows' n^-g, n at least 1; None (one C) at the default g 0."""
    Y = sp.csr_matrix(np.array([[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 1, 1, 1]]))
    sizes = row_sizes(np.diff(Y.indptr))
    np.testing.assert_array_equal(sizes, [1, 1, 0, 1, 1])  # one row each with 0, 1, 3 and 4 labels
    np.testing.assert_array_equal(add_row_sizes(sizes, np.array([0, 2])), [1, 3, 0, 1, 1])
    solver = XMCParams().replace(row_cost_exponent=0.5).solver
    raw = np.array([1, 4**-0.5, 1, 3**-0.5])
    np.testing.assert_allclose(row_costs_of(Y, solver), raw / raw.mean())
    assert row_costs_of(Y, XMCParams().replace(row_cost_exponent=0.0).solver) is None
    with pytest.raises(ParamError, match="row_cost_exponent=inf is invalid"):
        XMCParams().replace(row_cost_exponent=float("inf"))


def test_row_costs_train_every_layer_in_both_fits(tmp_path: Path) -> None:
    """Rows weighted by their label count change the matcher and the rankers; the sharded fit (its
    shards' row counts added up, a round, held-out rows) gives the in-process model weight for weight."""
    X, Y = topic_data(n=400, n_labels=20, d=60, seed=5)
    ex = LocalExecutor(show_progress=False)
    by_row = XMCParams().replace(max_leaf_size=4, rounds=0, row_cost_exponent=0.5)
    a = fit(X, Y, by_row, executor=ex)
    b = fit(X, Y, by_row.replace(row_cost_exponent=0.0), executor=ex)
    assert a.tree.n_layers >= 2 and np.diff(sp.csr_matrix(Y).indptr).max() > 1
    for Wa, Wb in zip(a.weights, b.weights, strict=True):
        assert abs(Wa - Wb).max() > 1e-3
    params = by_row.replace(rounds=1, validation_fraction=0.1)
    write_bundle(tmp_path / "b", X, Y, max_rows=150)
    sharded = fit_sharded(tmp_path / "b", params, executor=ex, work_dir=tmp_path, shard_rows=100)
    same_model(sharded, fit(X, Y, params, executor=ex))
