"""PRIME, the dense part of a hybrid model: loss, training, fusion, bundle, resume (real Bibtex rows)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from tests.conftest import StopAtEpoch
from xmc import XMCParams
from xmc.core.dense.loss import dynamic_margin_triplet
from xmc.core.fit import fit
from xmc.core.metrics import evaluate
from xmc.core.model import XMCModel
from xmc.errors import BundleError, ParamError

SMALL = {"dense": "prime", "dense_dim": 64, "dense_epochs": 3, "dense_batch_size": 64}


def test_dynamic_margin_triplet_by_hand() -> None:
    """One anchor, positive 0.5: a negative at 0.45 (gap 0.05 -> margin 0.1) costs 0.05; one at 0.1
    (gap 0.4 -> margin clamped to 0.3) costs nothing; a second anchor without target is skipped."""
    S = torch.tensor([[0.5, 0.45, 0.1], [0.9, 0.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    loss = dynamic_margin_triplet(S, targets, n_negatives=2, margin_min=0.1, margin_max=0.3)
    assert loss.item() == pytest.approx(0.05, abs=1e-6)
    # a fixed margin (min = max = 0.3) charges both negatives: 0.25 + 0.0 (0.1 - 0.5 + 0.3 < 0)
    fixed = dynamic_margin_triplet(S, targets, n_negatives=2, margin_min=0.3, margin_max=0.3)
    assert fixed.item() == pytest.approx(0.25, abs=1e-6)
    S.requires_grad_(True)
    dynamic_margin_triplet(S, targets, n_negatives=2, margin_min=0.1, margin_max=0.3).backward()
    assert S.grad is not None and S.grad[0, 0] < 0 < S.grad[0, 1]  # pulls the positive up, the negative down


def test_fusion_takes_a_weight_only_for_a_gain_beyond_held_out_noise() -> None:
    """Held-out rows where the tree ranks a wrong label first and the dense part the right one: a
    weight that fixes 3 rows of 700 (+0.21 points, under 2 standard errors) is refused; one that
    fixes 100 is taken. The per-row measure averages to evaluate()'s (P@1 + P@5) / 2."""
    from xmc.core.dense.fusion import fit_fusion, per_row

    n, L = 700, 10
    truth = np.arange(n) % L
    wrong = (truth + 1) % L
    Y = sp.csr_matrix((np.ones(n), truth, np.arange(n + 1)), shape=(n, L))
    for fixed, taken in ((3, False), (100, True)):
        bad = np.arange(n) < fixed  # the tree puts these rows' label second
        first, second = np.where(bad, wrong, truth), np.where(bad, truth, wrong)
        tree = sp.csr_matrix((np.tile([0.9, 0.1], n), np.stack([first, second], 1).ravel(),
                              np.arange(0, 2 * n + 1, 2)), shape=(n, L))
        dense_idx = np.stack([truth, wrong], 1)
        dense_scores = np.tile([1.0, 0.0], (n, 1))
        fusion = fit_fusion(Y, tree, dense_idx, dense_scores, 0.0, 5)
        assert (fusion.alpha > 0) is taken, fusion
        e = evaluate(Y, tree, (1, 5))
        assert per_row(Y, tree).mean() == pytest.approx((e["P@1"] + e["P@5"]) / 2)


def kept_rank_rows(n: int = 700, L: int = 20) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray, np.ndarray]:
    """Rows with true labels a and b: the tree ranks a, four wrong labels, then b; the dense part ranks a
    wrong label w first, then b. Free fusion that trusts the dense part puts w first; kept ranks do not."""
    i = np.arange(n)
    a, b = i % L, (i + 1) % L
    wrong = [(i + 2 + j) % L for j in range(5)]  # wrong[0] is the dense part's first
    Y = sp.csr_matrix((np.ones(2 * n), np.stack([a, b], 1).ravel(), np.arange(0, 2 * n + 1, 2)), shape=(n, L))
    tree_idx = np.stack([a, *wrong[1:], b], 1)
    tree = sp.csr_matrix((np.tile([0.9, 0.5, 0.4, 0.3, 0.2, 0.1], n), tree_idx.ravel(),
                          np.arange(0, 6 * n + 1, 6)), shape=(n, L))
    tree.sort_indices()
    return Y, tree, np.stack([wrong[0], b, a], 1), np.tile([1.0, 0.9, 0.0], (n, 1))


def test_fusion_keeps_the_tree_s_first_labels_in_place() -> None:
    """kept=1: every row's first label is the tree's whatever the weight, and the dense part lifts b
    into the top 5 (P@5 up, P@1 exactly the tree's); kept=0 at the same weight lets w take rank 1."""
    from xmc.core.dense.fusion import FREE_ALPHA_MAX, fit_fusion, fuse
    from xmc.core.sparse import topk_rows

    Y, tree, dense_idx, dense_scores = kept_rank_rows()
    tree_top = topk_rows(tree, 2)[0]
    for kept in (1, 2):
        hybrid = topk_rows(fuse(tree, dense_idx, dense_scores, 0.9, 20.0, 5, kept), 5)[0]
        assert (hybrid[:, :kept] == tree_top[:, :kept]).all()
        assert (hybrid == dense_idx[:, 1:2]).any(axis=1).all()  # b is in every row's top 5
    free = topk_rows(fuse(tree, dense_idx, dense_scores, 0.9, 20.0, 5, 0), 5)[0]
    assert (free[:, 0] == dense_idx[:, 0]).all()
    fusion = fit_fusion(Y, tree, dense_idx, dense_scores, 0.0, 5, kept=1)
    held = fusion.record
    assert fusion.alpha > 0 and fusion.kept == 1
    assert held["hybrid_P@1"] == held["tree_P@1"] and held["hybrid_P@5"] > held["tree_P@5"] + 5
    free_fit = fit_fusion(Y, tree, dense_idx, dense_scores, 0.0, 5, kept=0)
    assert 0 < free_fit.alpha <= FREE_ALPHA_MAX and free_fit.record["hybrid_P@1"] == held["tree_P@1"]


@pytest.fixture(scope="module")
def hybrid(bibtex: dict[str, sp.csr_matrix]) -> XMCModel:
    return fit(bibtex["X.trn"], bibtex["Y.trn"], XMCParams().replace(**SMALL))


def test_hybrid_learns_and_never_costs_held_out_precision(hybrid: XMCModel, bibtex: dict[str, sp.csr_matrix]
                                                          ) -> None:
    info = hybrid.info["dense"]
    assert [e["epoch"] for e in info["epochs"]] == [1, 2, 3]
    held = info["held_out"]
    assert held["hybrid_P@1"] >= held["tree_P@1"]  # alpha = 0 (the tree alone) is on the grid
    # the dense part alone is far above the most-frequent-labels ranking (Bibtex: ~17 P@1)
    X, Y = bibtex["X.tst"], bibtex["Y.tst"]
    dense = evaluate(Y, hybrid.predict(X, topk=5, components="dense"), (1,))["P@1"]
    freq = np.argsort(-hybrid.label_counts)[:5]
    prior = evaluate(Y, sp.csr_matrix((np.tile([5.0, 4, 3, 2, 1], X.shape[0]), np.tile(freq, X.shape[0]),
                                       np.arange(0, 5 * X.shape[0] + 1, 5)), shape=Y.shape), (1,))["P@1"]
    assert dense > prior + 25, (dense, prior)
    tree = hybrid.predict(X[:300], topk=5, components="tree")
    both = hybrid.predict(X[:300], topk=5)
    if info["alpha"] == 0:
        assert (both != tree).nnz == 0
    else:
        assert (both != tree).nnz > 0
    from xmc.core.sparse import topk_rows  # the tree's first label keeps its rank (fusion_keeps = 1)

    assert hybrid.dense is not None and hybrid.dense.kept == info["kept"] == 1
    assert (topk_rows(both, 1)[0] == topk_rows(tree, 1)[0]).all()
    # whatever weight the fit took: at the heaviest one the first label is still the tree's, and the
    # rest of the top 5 moved on some rows (so the check above is not the tree alone)
    from xmc.core.dense.fusion import fuse

    X = hybrid.preprocess(bibtex["X.tst"][:300])
    tree10 = hybrid.predict(bibtex["X.tst"][:300], topk=10, components="tree")
    idx, vals = hybrid.dense.topk(X, 10)
    heavy = fuse(tree10, idx, vals, 0.9, 20.0, 5, kept=1)
    assert (topk_rows(heavy, 1)[0] == topk_rows(tree, 1)[0]).all()
    assert (topk_rows(heavy, 5)[0] != topk_rows(tree, 5)[0]).any()


def test_hybrid_trees_are_refit_on_every_row(hybrid: XMCModel, bibtex_model: XMCModel,
                                              bibtex: dict[str, sp.csr_matrix]) -> None:
    """The fusion's held-out rows serve it only: the hybrid's trees are trained again on every row, so
    they are the trees of the same fit without --dense (refit_trees off: trees of 90 % of the rows)."""
    assert hybrid.info["dense"]["trees_refit"]
    X = bibtex["X.tst"][:400]
    tree, alone = hybrid.predict(X, topk=5, components="tree"), bibtex_model.predict(X, topk=5)
    assert (tree != alone).nnz == 0
    held = XMCParams().replace(**{**SMALL, "dense_epochs": 1}, refit_trees=False)
    kept = fit(bibtex["X.trn"], bibtex["Y.trn"], held)
    assert "trees_refit" not in kept.info["dense"]
    assert (kept.predict(X, topk=5, components="tree") != alone).nnz > 0


def test_hybrid_bundle_round_trip_and_corruption(hybrid: XMCModel, bibtex: dict[str, sp.csr_matrix],
                                                 tmp_path: Path) -> None:
    hybrid.save(tmp_path / "m")
    again = XMCModel.load(tmp_path / "m")
    X = bibtex["X.tst"][:200]
    for part in ("tree", "dense", "all"):
        a, b = hybrid.predict(X, topk=5, components=part), again.predict(X, topk=5, components=part)
        assert (a != b).nnz == 0, part
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert "dense/dense.npz" in manifest["files"]  # checksummed like every weight file
    with np.load(tmp_path / "m" / "dense" / "dense.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    (tmp_path / "old").mkdir()  # a bundle saved before kept ranks: three fusion constants, a free fusion
    np.savez(tmp_path / "old" / "dense.npz", **{**arrays, "fusion": arrays["fusion"][:3]})
    from xmc.core.dense.model import DenseModel

    assert DenseModel.load(tmp_path / "old", hybrid.n_features, hybrid.n_labels).kept == 0
    arrays["prototypes"][0, 0] = np.nan
    np.savez(tmp_path / "m" / "dense" / "dense.npz", **arrays)
    with pytest.raises(BundleError, match="dense"):
        XMCModel.load(tmp_path / "m")


def test_components_on_a_tree_model_and_bad_values(bibtex_model: XMCModel, bibtex: dict[str, sp.csr_matrix]
                                                   ) -> None:
    X = bibtex["X.tst"][:20]
    assert (bibtex_model.predict(X, components="tree") != bibtex_model.predict(X)).nnz == 0
    with pytest.raises(ParamError, match="no dense part"):
        bibtex_model.predict(X, components="dense")
    with pytest.raises(ParamError, match="components"):
        bibtex_model.predict(X, components="both")
    with pytest.raises(ParamError, match="dense_workers"):
        XMCParams().replace(dense="prime", dense_workers=0)


def test_dense_checkpoint_resumes_after_the_last_epoch(bibtex: dict[str, sp.csr_matrix],
                                                       tmp_path: Path) -> None:
    X, Y = bibtex["X.trn"][:1500], bibtex["Y.trn"][:1500]
    params = XMCParams().replace(**SMALL)
    with pytest.raises(KeyboardInterrupt):
        fit(X, Y, params, checkpoint_dir=tmp_path, observer=StopAtEpoch(3))
    saved = json.loads((tmp_path / "dense" / "history.json").read_text())
    assert saved["epochs_done"] == 2
    heard = StopAtEpoch(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = fit(X, Y, params, checkpoint_dir=tmp_path, resume=True, observer=heard)
    assert heard.heard == [3]  # only epoch 3 ran
    assert not [w for w in caught if "lr_scheduler" in str(w.message)]  # the schedule's replay is quiet
    assert [e["epoch"] for e in model.info["dense"]["epochs"]] == [1, 2, 3]
    assert model.info["dense"]["epochs"][:2] == saved["history"]
    assert (tmp_path / "dense" / "best.npz").exists()  # the best epoch so far survives a resume too
    from xmc.core.dense.fit import best_epoch_of

    assert model.info["dense"]["best_epoch"] == best_epoch_of(model.info["dense"]["epochs"]) >= 1
    # the optimizers' moments and the positives' sampler were restored: the resumed run took the
    # steps of an uninterrupted one, so its network and records are the same
    whole = fit(X, Y, params)
    assert whole.info["dense"]["epochs"] == model.info["dense"]["epochs"]
    for name, array in whole.dense.arrays.items():
        assert np.array_equal(array, model.dense.arrays[name]), name


def test_the_best_epoch_is_kept_and_patience_stops_training() -> None:
    """The criterion is held-out (P@1 + P@5) / 2 averaged over the last 3 epochs, so a one-epoch spike
    (epoch 3 here) does not win; training stops ``patience`` epochs after the best smoothed epoch,
    whose weights are the ones kept. Without held-out rows the last epoch is kept."""
    from xmc.core.dense.fit import BestEpoch, best_epoch_of

    scores = [10.0, 30.0, 32.0, 60.0, 31.0, 33.0, 34.0, 20.0, 20.0, 20.0]
    # trailing means: 10, 20, 24, 40.7, 41, 41.3, 32.7, 29, 24.7, 20: best at epoch index 5
    net = torch.nn.Linear(2, 1)
    best = BestEpoch(patience=2, scored=True)
    stopped = -1
    for epoch, s in enumerate(scores):
        with torch.no_grad():
            net.weight.fill_(float(epoch))
        best.update({"epoch": epoch + 1, "val_P@1": s, "val_P@5": s}, net)
        if best.stop():
            stopped = epoch
            break
    assert stopped == 7 and best.epoch == 5
    assert best_epoch_of(best.history) == 6
    best.load_into(net)
    assert float(net.weight[0, 0]) == 5.0
    unscored = BestEpoch(patience=2, scored=False)
    for epoch in range(4):
        with torch.no_grad():
            net.weight.fill_(float(epoch))
        unscored.update({"epoch": epoch + 1, "val_P@1": 0.0, "val_P@5": 0.0}, net)
        assert not unscored.stop()
    unscored.load_into(net)
    assert float(net.weight[0, 0]) == 3.0


def test_label_text_rows_use_the_vectorizer_vocabulary() -> None:
    from xmc.core.dense.fit import label_text_rows

    class Vocab:  # the one method label_text_rows reads of a TextVectorizer
        def transform(self, texts: list[str]) -> sp.csr_matrix:
            words = {"python3": 0, "numpy": 1, "lib": 2}
            rows = [[words[w] for w in t.lower().split() if w in words] for t in texts]
            ids = np.array([i for r in rows for i in r], dtype=np.int64)
            indptr = np.cumsum([0, *map(len, rows)])
            return sp.csr_matrix((np.ones(len(ids)), ids, indptr), shape=(len(texts), 3))

    T = label_text_rows(["python3-numpy", "zzz"], Vocab())
    assert T is not None and T[0].indices.tolist() == [0, 1] and T[1].nnz == 0
    assert np.isclose(np.linalg.norm(T[0].toarray()), 1.0)
    assert label_text_rows(None, Vocab()) is None


def test_cli_trains_a_hybrid_and_predicts_with_each_component(tmp_path: Path, capsys: Any) -> None:
    from mlflow.tracking import MlflowClient

    from xmc.cli import main  # the CLI in this process: a subprocess each (torch's import) cost ~8 s

    bib = Path(__file__).resolve().parents[1] / "data" / "bibtex"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    capsys.readouterr()
    assert main(["train", "--x", str(bib / "bibtex_train.txt.gz"), "--model", str(tmp_path / "m"), "--dense",
                 "prime", "--dense-epochs", "2", "--dense-dim", "32", "--fusion-keeps", "0", "--json",
                 "--tracking-uri", store, "--experiment", "prime"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert {"alpha", "gamma", "held_out", "epochs"} <= set(record["dense"]) and record["dense"]["kept"] == 0
    client = MlflowClient(store)
    history = client.get_metric_history(record["mlflow"]["run_id"], "dense/loss")
    assert sorted(m.step for m in history) == [1, 2]  # one point per epoch
    assert {"dense/alpha", "dense/kept"} <= set(client.get_run(record["mlflow"]["run_id"]).data.metrics)
    scores = {}
    for part in ("tree", "dense", "all"):
        assert main(["predict", "--model", str(tmp_path / "m"), "--x", str(bib / "X.tst.npz"), "--topk", "5",
                     "--components", part, "--out", str(tmp_path / f"{part}.npz")]) == 0
        scores[part] = sp.load_npz(tmp_path / f"{part}.npz")
        assert scores[part].getnnz(axis=1).max() == 5
    assert (scores["tree"] != scores["dense"]).nnz > 0  # two different rankers
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:  # argparse's exit: code 2, the choices on stderr
        main(["train", "--x", str(bib / "bibtex_train.txt.gz"), "--model", str(tmp_path / "m2"),
              "--dense", "dense-ish"])
    assert stop.value.code == 2 and "--dense" in capsys.readouterr().err and not (tmp_path / "m2").exists()


def test_sense_prototypes_one_row_per_copy_routed_pairs_and_round_trip(tmp_path: Path) -> None:
    from xmc.core.dense.senses import copy_rows
    from xmc.research.synth import SynthSpec, generate

    data = generate(SynthSpec(n_labels=120, n_features=3000), 3000)
    # balanced leaves: on this small set the round copies labels there (k-means leaves: none); with
    # every row at C and the features as given the round also beats the baseline on the fusion's
    # held-out rows, so it is kept (with row costs or feature weights the baseline is kept: no copies;
    # so with the default solver tolerance 0.3, whose rankers decide it the other way here)
    params = XMCParams().replace(**{**SMALL, "sense_prototypes": True, "max_leaf_size": 16,
                                    "clustering": "balanced", "row_cost_exponent": 0.0,
                                    "feature_weight_exponent": 0.0, "dual_tol": 0.1})
    model = fit(data.X, data.Y, params)
    copy_label = model.tree.copy_label
    assert len(copy_label) > model.n_labels  # the round made copies
    assert np.array_equal(model.dense.arrays["copy_label"], copy_label)
    assert model.dense.arrays["prototypes"].shape[0] == len(copy_label)
    X = model.preprocess(data.X[:500])
    Yc = copy_rows(X, data.Y[:500], model.tree, model.weights, params)
    assert Yc.nnz == data.Y[:500].nnz  # every pair kept, each on exactly one copy
    back = sp.csr_matrix((Yc.data, copy_label[Yc.indices], Yc.indptr), shape=data.Y[:500].shape)
    assert (back != sp.csr_matrix(data.Y[:500])).nnz == 0  # ... a copy of its own label
    pred = model.predict(data.X[:200], topk=5, components="dense")
    assert pred.shape[1] == model.n_labels and pred.getnnz(axis=1).max() == 5  # copies merged to labels
    model.save(tmp_path / "m")
    again = XMCModel.load(tmp_path / "m")
    assert (again.predict(data.X[:200], topk=5, components="dense") != pred).nnz == 0
