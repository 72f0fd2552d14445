"""The sharded fit (rows in shard files, shuffled per cluster) gives the in-process model, and its
driver never holds a row: every spec a unit reads is sized by the labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from tests.conftest import same_model, topic_data
from xmc import LocalExecutor, XMCModel, XMCParams
from xmc.cli import main as cli_main
from xmc.core.fit import fit
from xmc.core.rows import holdout_mask, holdout_threshold, split_validation
from xmc.core.shard_units import PartitionUnit
from xmc.core.sharded import fit_sharded
from xmc.core.tree import LabelTree
from xmc.errors import BundleError
from xmc.io.features import write_bundle


class RecordingExecutor(LocalExecutor):
    """A real local executor that keeps what every map shipped: its spec and its units."""

    def __init__(self) -> None:
        super().__init__(show_progress=False)
        self.maps: list[tuple[str, Any, list[Any]]] = []

    def map(self, fn: Any, shared: Any, units: Any, *, desc: str = "") -> list[Any]:
        self.maps.append((desc, shared, list(units)))
        return super().map(fn, shared, units, desc=desc)


def matrices(spec: Any) -> list[Any]:
    """Every matrix or array a spec holds, one level into lists and tuples (trees, weights)."""
    found = []
    for value in vars(spec).values():
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            for x in (item if isinstance(item, tuple) else (item,)):
                if sp.issparse(x) or isinstance(x, np.ndarray):
                    found.append(x)
                elif isinstance(x, LabelTree):  # label-sized arrays
                    found += [*x.parents, x.copy_label]
    return found


def test_sharded_fit_gives_the_in_process_model_and_ships_no_rows(tmp_path: Path, bibtex) -> None:  # type: ignore[no-untyped-def]
    X, Y = bibtex["X.trn"], bibtex["Y.trn"]
    write_bundle(tmp_path / "b", X, Y, max_rows=1500)  # 4 part files, cut into 7 shards below
    params = XMCParams().replace(validation_fraction=0.1)
    ex = RecordingExecutor()
    work = tmp_path / "work"
    sharded = fit_sharded(tmp_path / "b", params, executor=ex, work_dir=work, shard_rows=1000)
    inproc = fit(X, Y, params, executor=LocalExecutor(show_progress=False))
    same_model(sharded, inproc)
    for a, b in zip(sharded.info["rounds"], inproc.info["rounds"], strict=True):  # held-out, by shard
        assert a["validation"] == pytest.approx(b["validation"]) and a["copies"] == b["copies"]
    assert sharded.info["shards"]["count"] == 7 and list(work.iterdir()) == []  # its folder is gone
    n = X.shape[0]
    for desc, spec, _ in ex.maps:  # the driver ships label-sized state only, never rows
        assert all(n not in m.shape for m in matrices(spec)), desc
    assert {"shards", "gains", "coverage", "held-out"} <= {d for d, _, _ in ex.maps}


def test_ensemble_with_matcher_aware_negatives_and_deferred_rankers(tmp_path: Path) -> None:
    """Two trees, MAN rows from the beam in the shuffle, a round without validation (rankers
    trained after the loop): still the in-process model."""
    X, Y = topic_data(n=600, n_labels=40, d=120)
    write_bundle(tmp_path / "b", X, Y, max_rows=250)
    # liblinear's tolerance: the matcher the default 0.3 leaves on 600 toy rows sends a cluster half
    # of them, and the partition check below wants a matcher that tells the clusters apart
    params = XMCParams().replace(max_leaf_size=4, n_trees=2, negatives="tfn+man", beam_size=3, dual_tol=0.1)
    ex = RecordingExecutor()
    sharded = fit_sharded(tmp_path / "b", params, executor=ex, work_dir=tmp_path, shard_rows=100)
    leaves = [u for _, _, units in ex.maps for u in units if isinstance(u, PartitionUnit) and u.layer > 0]
    assert leaves and max(u.n_rows for u in leaves) < 0.5 * X.shape[0]  # a cluster reads its partition
    inproc = fit(X, Y, params, executor=ex)
    same_model(sharded, inproc)
    assert np.array_equal(sharded.predict(X, topk=5).toarray(), inproc.predict(X, topk=5).toarray())


def test_checkpoint_and_resume_of_a_sharded_fit(tmp_path: Path) -> None:
    """The driver holds stubs of the stored layers during the fit; a checkpoint still saves the
    layers' values, and a resumed fit ends with the model of an uninterrupted one."""
    X, Y = topic_data(n=500, n_labels=32, d=100)
    write_bundle(tmp_path / "b", X, Y, max_rows=200)
    params = XMCParams().replace(max_leaf_size=4, rounds=2, validation_fraction=0.2)
    ex = LocalExecutor(show_progress=False)
    whole = fit_sharded(tmp_path / "b", params, executor=ex, work_dir=tmp_path, shard_rows=128,
                        checkpoint_dir=tmp_path / "ckpt")
    assert all(r["weight_bytes"] > 0 for r in whole.info["rounds"])  # stubs report their files' size
    saved = XMCModel.load(tmp_path / "ckpt" / f"round_{whole.info['best_round']}")
    same_model(saved, whole)
    resumed = fit_sharded(tmp_path / "b", params, executor=ex, work_dir=tmp_path, shard_rows=128,
                          checkpoint_dir=tmp_path / "ckpt", resume=True)
    same_model(resumed, whole)
    same_model(whole, fit(X, Y, params, executor=ex))


def test_cli_data_plane_shards_is_the_driver_model_and_records_memory(tmp_path: Path, bibtex,  # type: ignore[no-untyped-def]
                                                                      capsys) -> None:
    write_bundle(tmp_path / "b", bibtex["X.trn"], bibtex["Y.trn"], max_rows=2000)
    for plane in ("shards", "driver"):
        assert cli_main(["train", "--data", str(tmp_path / "b"), "--model", str(tmp_path / plane),
                         "--data-plane", plane, "--work-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "rows stay in the bundle's shards" in err
    same_model(XMCModel.load(tmp_path / "shards"), XMCModel.load(tmp_path / "driver"))
    info = json.loads((tmp_path / "shards" / "manifest.json").read_text())["info"]
    assert info["peak_rss_mib"]["driver"] > 0 and info["shards"]["count"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "driver", "shards"]
    # shards need a bundle: --x with --data-plane shards is refused before any work
    assert cli_main(["train", "--x", "data/bibtex/X.trn.npz", "--y", "data/bibtex/Y.trn.npz",
                     "--model", str(tmp_path / "m"), "--data-plane", "shards"]) == 2
    assert "--data BUNDLE" in capsys.readouterr().err


def test_a_bad_part_file_names_itself_and_leaves_no_work_folder(tmp_path: Path) -> None:
    X, Y = topic_data(n=300)
    write_bundle(tmp_path / "b", X, Y, max_rows=100)
    part = sorted((tmp_path / "b" / "train").glob("part-*.parquet"))[1]
    part.write_bytes(part.read_bytes()[:-200])  # truncated: footer gone
    with pytest.raises(BundleError, match=part.name):
        fit_sharded(tmp_path / "b", XMCParams().replace(max_leaf_size=4), work_dir=tmp_path / "w",
                    executor=LocalExecutor(show_progress=False))
    assert not (tmp_path / "w").exists() or list((tmp_path / "w").iterdir()) == []
    # a readable part whose label ids run past the bundle's labels: caught by the worker that reads it
    bad = XMCParams().replace(max_leaf_size=4)
    write_bundle(tmp_path / "c", X, Y, max_rows=100)
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    manifest["n_labels"] -= 1
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"part-0000\d.parquet \(rows 0..100\): index out of range"):
        fit_sharded(tmp_path / "c", bad, work_dir=tmp_path / "w", executor=LocalExecutor(show_progress=False))
    assert list((tmp_path / "w").iterdir()) == []


def test_holdout_is_a_hash_of_the_position_so_shards_agree_with_the_whole() -> None:
    seed, n = 7, 50_000
    t = holdout_threshold(seed, n, 0.1)
    whole = holdout_mask(seed, 0, n, t)
    pieces = np.concatenate([holdout_mask(seed, a, min(a + 999, n), t) for a in range(0, n, 999)])
    assert np.array_equal(whole, pieces) and abs(whole.mean() - 0.1) < 0.01
    assert not np.array_equal(whole, holdout_mask(seed + 1, 0, n, t))  # the seed matters
    X, Y = topic_data(n=12)  # tiny: 0.01 of 12 rows is no row by the hash, but one is asked for
    _, _, Xv, _ = split_validation(X, Y, 0.01, seed)
    assert Xv is not None and Xv.shape[0] == 1


def test_predict_a_bundle_split_as_a_map_over_shards(tmp_path: Path, bibtex, capsys) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    from xmc.core.metrics import evaluate

    X, Y = bibtex["X.tst"], bibtex["Y.tst"]
    write_bundle(tmp_path / "b", X, Y, max_rows=1000)  # its "train" split: 3 parts, scored as shards
    model = fit(bibtex["X.trn"], bibtex["Y.trn"], XMCParams().replace(rounds=0),
                executor=LocalExecutor(show_progress=False))
    model.save(tmp_path / "m")
    assert cli_main(["predict", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "b"), "--split",
                     "train", "--out", str(tmp_path / "pred"), "--topk", "5"]) == 0
    parts = sorted((tmp_path / "pred").glob("part-*.parquet"))
    table = pq.read_table(parts[0]).to_pylist() + [r for p in parts[1:] for r in pq.read_table(p).to_pylist()]
    assert len(parts) == 3 and [r["id"] for r in table] == [f"trn-{i}" for i in range(X.shape[0])]
    pred = model.predict(X, topk=5)
    first = pred[0].toarray().ravel()
    assert [int(x) for x in table[0]["labels"]] == np.argsort(-first, kind="stable")[:5].tolist()
    report = json.loads((tmp_path / "pred" / "manifest.json").read_text())
    whole = evaluate(Y, pred, (1, 3, 5), label_counts=model.label_counts, n_train=model.n_train)
    assert report["rows"] == X.shape[0] and report["metrics"] == pytest.approx(whole)
    assert f"P@1 {whole['P@1']:.2f}" in capsys.readouterr().err
    # a model of other data is refused before any task, and the output folder is not made
    write_bundle(tmp_path / "c", X[:, :100], Y, max_rows=1000)
    assert cli_main(["predict", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "c"), "--split",
                     "train", "--out", str(tmp_path / "pred2")]) == 2
    assert "1836" in capsys.readouterr().err and not (tmp_path / "pred2").exists()
