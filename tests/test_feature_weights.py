"""Feature weights from the labels (xmc.core.feature_weights): by hand, in the fit, at predict, saved."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from tests.conftest import same_model, topic_data
from xmc import XMCModel, XMCParams
from xmc.core.feature_weights import KL_SCALE, MIN_FEATURE_WEIGHT, feature_weights, weigh_rows
from xmc.core.fit import fit
from xmc.core.sparse import normalize_rows
from xmc.errors import BundleError


def test_kl_weights_by_hand() -> None:
    """The labels' share of all mass is p = (4, 3, 1, 1) / 9 (rows are labels here). Feature 0 only with
    label 0: KL = ln(1 / p_0), s = (1 - sqrt(p_0))^g = (1/3)^g. Feature 4 in exactly the proportions p:
    KL 0, the floor. Feature 1 evenly over labels 0 and 1: KL = (ln(9/8) + ln(3/2)) / 2. Feature 3 in no
    row: 1. Negative values count by their size."""
    X = sp.csr_matrix(np.array([[1.0, 2.0, -1.0, 0.0, 4.0],
                                [0.0, 2.0, 1.0, 0.0, 3.0],
                                [0.0, 0.0, 1.0, 0.0, 1.0],
                                [0.0, 0.0, 1.0, 0.0, 1.0]], dtype=np.float32))
    Y = sp.csr_matrix(np.eye(4, dtype=np.float32))
    p = np.array([8.0, 6.0, 2.0, 2.0]) / 18
    kl_2 = np.sum(0.25 * np.log(0.25 / p))
    for g in (0.25, 1.0):
        s = feature_weights(X, Y, g, "kl")
        assert s is not None
        kept = [1 - np.sqrt(p[0]), 1 - np.exp(-(np.log(0.5 / p[0]) + np.log(0.5 / p[1])) / 4),
                1 - np.exp(-kl_2 / KL_SCALE), 1.0, 0.0]
        np.testing.assert_allclose(s, np.maximum(np.array(kept) ** g, MIN_FEATURE_WEIGHT), rtol=1e-5)
    assert np.isclose(1 - np.sqrt(p[0]), 1 / 3) and KL_SCALE == 2.0  # the closed form above assumes tau 2
    assert feature_weights(X, Y, 0.0, "kl") is None
    assert feature_weights(X, sp.csr_matrix(np.ones((4, 1), np.float32)), 0.25, "kl") is None  # one label


def test_entropy_weights_by_hand() -> None:
    """Feature 0 only with label 0: entropy 0, weight 1. Feature 1 evenly over labels 0 and 1 of 4:
    H = ln 2, s = (1 - ln 2 / ln 4)^g = 0.5^g. Feature 2 evenly over all four (negative values count
    by their size): the floor. Feature 3 in no fitting row: 1."""
    X = sp.csr_matrix(np.array([[1.0, 2.0, -1.0, 0.0],
                                [0.0, 2.0, 1.0, 0.0],
                                [0.0, 0.0, 1.0, 0.0],
                                [0.0, 0.0, 1.0, 0.0]], dtype=np.float32))
    Y = sp.csr_matrix(np.eye(4, dtype=np.float32))
    for g in (0.25, 1.0):
        s = feature_weights(X, Y, g, "entropy")
        assert s is not None
        np.testing.assert_allclose(s, [1.0, 0.5**g, MIN_FEATURE_WEIGHT, 1.0], rtol=1e-6)
    assert feature_weights(X, Y, 0.0, "entropy") is None
    assert feature_weights(X, sp.csr_matrix(np.ones((4, 1), np.float32)), 0.25, "entropy") is None
    s = np.array([1.0, 0.5, 0.001, 1.0], np.float32)
    W = weigh_rows(X, s, normalize=True)
    expected = normalize_rows(sp.csr_matrix(X.toarray() * s)).toarray()
    np.testing.assert_allclose(W.toarray(), expected, rtol=1e-6)
    assert W.nnz == X.nnz  # no feature leaves a row
    assert weigh_rows(X, s, normalize=False).toarray()[0, 1] == pytest.approx(1.0)


def test_the_fit_is_the_unweighted_fit_of_the_weighed_rows_and_predict_weighs_them(tmp_path: Path) -> None:
    """The weights come from the fitting rows (a held-out share apart), every row is weighed with them
    and normalised again; a model at gamma 0 trained on rows weighed by hand is the same model, and
    each predicts the same from its own input. The weights travel with the saved model."""
    X, Y = topic_data(n=300, n_labels=20, d=60)
    params = XMCParams().replace(max_leaf_size=4, validation_fraction=0.2, feature_pairs=0)  # the input's own
    model = fit(X, Y, params)
    s = model.feature_weights
    assert s is not None and s.shape == (X.shape[1],) and 0 < s.min() < s.max() <= 1
    rows = normalize_rows(sp.csr_matrix(X, dtype=np.float32))
    held = fit(X, Y, params.replace(validation_fraction=0.0)).feature_weights  # other fitting rows
    assert held is not None and np.abs(held - s).max() > 1e-4
    by_hand = fit(weigh_rows(rows, s, True), Y, params.replace(feature_weight_exponent=0.0))
    assert by_hand.feature_weights is None
    for Wa, Wb in zip(model.weights, by_hand.weights, strict=True):
        assert abs(Wa - Wb).max() <= 1e-6
    P = model.predict(X, topk=5)
    assert abs(P - by_hand.predict(weigh_rows(rows, s, True), topk=5)).max() <= 1e-6
    assert abs(P - by_hand.predict(X, topk=5)).max() > 1e-3  # unweighed input: another ranking
    model.save(tmp_path / "m")
    loaded = XMCModel.load(tmp_path / "m")
    same_model(loaded, model, X)
    assert loaded.params.solver.feature_weight_exponent == XMCParams().solver.feature_weight_exponent > 0


def test_a_changed_weights_file_is_refused(tmp_path: Path) -> None:
    """features.npz is checksummed like the layers, and its shape checked against the model."""
    X, Y = topic_data(n=200, n_labels=12, d=40)
    fit(X, Y, XMCParams().replace(max_leaf_size=4, rounds=0, feature_pairs=0)).save(tmp_path / "m")
    path = tmp_path / "m" / "features.npz"
    np.savez(path, weights=np.ones(7, np.float32))
    with pytest.raises(BundleError, match="features.npz"):
        XMCModel.load(tmp_path / "m")
    manifest = tmp_path / "m" / "manifest.json"
    meta = json.loads(manifest.read_text())
    from xmc.io.files import sha256

    meta["files"]["features.npz"] = sha256(path)  # a consistent manifest, a wrong shape
    manifest.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="weights must be 40 finite numbers"):
        XMCModel.load(tmp_path / "m")


def test_a_model_weighed_by_entropy_before_the_measure_loads_as_entropy(tmp_path: Path) -> None:
    """A model saved before ``feature_weight_measure`` existed was weighed by entropy: its params say so
    on load (not today's default), and it predicts with the weights it stored."""
    X, Y = topic_data(n=200, n_labels=12, d=40)
    params = XMCParams().replace(max_leaf_size=4, rounds=0, feature_weight_exponent=0.15,
                                 feature_weight_measure="entropy")
    model = fit(X, Y, params)
    kl = fit(X, Y, params.replace(feature_weight_measure="kl")).feature_weights
    assert model.feature_weights is not None and kl is not None
    assert np.abs(model.feature_weights - kl).max() > 1e-3  # the measures weigh differently
    model.save(tmp_path / "m")
    manifest = tmp_path / "m" / "manifest.json"
    meta = json.loads(manifest.read_text())
    del meta["params"]["solver"]["feature_weight_measure"]
    manifest.write_text(json.dumps(meta))
    loaded = XMCModel.load(tmp_path / "m")
    measure = loaded.params.solver.feature_weight_measure
    assert measure == "entropy" != XMCParams().solver.feature_weight_measure
    same_model(loaded, model, X)
