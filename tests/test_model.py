from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from xmc import LocalExecutor, XMCModel, XMCParams
from xmc.core.fit import fit
from xmc.core.metrics import evaluate
from xmc.errors import BundleError, DataFormatError


def test_bibtex_end_to_end_is_sane(bibtex, bibtex_model) -> None:  # type: ignore[no-untyped-def]
    pred = bibtex_model.predict(bibtex["X.tst"], topk=5)
    assert pred.shape == bibtex["Y.tst"].shape and np.all(np.diff(pred.indptr) == 5)
    m = evaluate(bibtex["Y.tst"], pred)
    # Bars live in bench/bibtex.py; here: far above chance (P@1 of the most frequent label ~ 7).
    assert m["P@1"] > 60 and m["P@5"] > 27


def test_save_load_predicts_identically(tmp_path: Path, bibtex, bibtex_model) -> None:  # type: ignore[no-untyped-def]
    bibtex_model.save(tmp_path / "m")
    loaded = XMCModel.load(tmp_path / "m")
    a = bibtex_model.predict(bibtex["X.tst"], topk=10)
    b = loaded.predict(bibtex["X.tst"], topk=10)
    assert (a != b).nnz == 0
    assert loaded.params == bibtex_model.params
    assert not any(p.suffix in (".pkl", ".pickle") for p in (tmp_path / "m").iterdir())
    bibtex_model.save(tmp_path / "m")  # overwriting is clean: no temp folders left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def _saved(tmp_path: Path, toy) -> Path:  # type: ignore[no-untyped-def]
    fit(*toy, XMCParams().replace(max_leaf_size=4)).save(tmp_path / "m")
    return tmp_path / "m"


def test_corrupt_bundles_fail_clearly(tmp_path: Path, toy) -> None:  # type: ignore[no-untyped-def]
    path = _saved(tmp_path, toy)
    with open(path / "layer_1.npz", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(BundleError, match="layer_1.npz: checksum mismatch"):
        XMCModel.load(path)
    path = _saved(tmp_path, toy)
    (path / "tree.npz").unlink()
    with pytest.raises(BundleError, match="tree.npz listed in the manifest is missing"):
        XMCModel.load(path)
    path = _saved(tmp_path, toy)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="schema_version 99 is not supported"):
        XMCModel.load(path)
    (path / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(BundleError, match="not an xmc model manifest"):
        XMCModel.load(path)
    shutil.rmtree(path)
    path.mkdir()
    with pytest.raises(BundleError, match="no manifest.json"):
        XMCModel.load(path)


class ReversedExecutor:
    """Runs units last-first: a model must not depend on the order units run in."""

    def map(self, fn, shared, units, *, desc=""):  # type: ignore[no-untyped-def]
        return [fn(shared, u) for u in reversed(units)][::-1]


def test_executor_and_chunking_do_not_change_the_model(toy) -> None:  # type: ignore[no-untyped-def]
    X, Y = toy
    params = XMCParams().replace(max_leaf_size=4, branching_factor=2, beam_size=3)
    a = fit(X, Y, params, executor=LocalExecutor())
    b = fit(X, Y, params, executor=ReversedExecutor())
    assert len(a.weights) == 4  # 24 labels, leaves of 3 -> 8 leaves -> binary levels 2, 4, 8
    for Wa, Wb in zip(a.weights, b.weights, strict=True):
        assert abs(Wa - Wb).max() == 0
    small = XMCModel(a.params.replace(chunk_size=7), a.tree, a.weights, a.n_features,
                     a.label_counts, a.n_train, feature_weights=a.feature_weights, pairs=a.pairs)
    assert abs(a.predict(X) - small.predict(X)).max() == 0


def test_deep_tree_beam_and_man_on_separable_data(toy) -> None:  # type: ignore[no-untyped-def]
    X, Y = toy
    for negatives in ("tfn", "tfn+man"):
        model = fit(X, Y, XMCParams().replace(max_leaf_size=4, branching_factor=2,
                                                        negatives=negatives))
        m = evaluate(Y, model.predict(X, topk=1))
        assert m["P@1"] > 95, negatives  # each label owns two features: near-perfect
    narrow = evaluate(Y, model.predict(X, topk=1, beam_size=1))["P@1"]
    assert narrow <= m["P@1"]


def test_input_errors(toy) -> None:  # type: ignore[no-untyped-def]
    X, Y = toy
    with pytest.raises(DataFormatError, match="X has 400 rows but Y has 399"):
        fit(X, Y[:399])
    bad = X.copy()
    bad.data[0] = np.nan
    with pytest.raises(DataFormatError, match="NaN or inf"):
        fit(bad, Y)
    model = fit(X, Y, XMCParams().replace(max_leaf_size=8))
    with pytest.raises(DataFormatError, match="trained on 60"):
        model.predict(sp.csr_matrix((2, 61), dtype=np.float32))


def test_scoring_layers_are_kept_between_predictions_and_rebuilt_for_new_weights(toy) -> None:  # type: ignore[no-untyped-def]
    """A served model predicts request after request: its layers are built once. A model whose
    weights were replaced (the fit's last ranker layer, a resumed run) scores with the new ones, and a
    pickled copy carries no layers but predicts the same."""
    import pickle
    from dataclasses import replace

    X, Y = toy
    model = fit(X, Y, XMCParams().replace(max_leaf_size=4))
    first = model.predict(X, topk=3)
    layers = model.scoring()
    assert model.predict(X[:5], topk=3).nnz and model.scoring() is layers  # kept, not rebuilt
    flipped = [W.copy() for W in model.weights]
    flipped[-1].data = -flipped[-1].data  # rankers that say the opposite
    model.weights = flipped
    assert model.scoring() is not layers
    assert (model.predict(X, topk=3) != first).nnz > 0
    assert (model.predict(X, topk=3) != replace(model, weights=flipped).predict(X, topk=3)).nnz == 0
    copy = pickle.loads(pickle.dumps(model))
    assert copy._layers is None and (copy.predict(X, topk=3) != model.predict(X, topk=3)).nnz == 0
