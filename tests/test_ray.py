"""Ray executor on a real local Ray: same model as the local executor, retries a killed worker;
the cluster configs it ships are well formed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import REPO, same_model
from xmc import LocalExecutor, XMCModel, XMCParams
from xmc.core.fit import fit
from xmc.engines.ray_executor import RayExecutor, balanced_batches
from xmc.params import ExecutorParams
from xmc.research.synth import SynthSpec, generate

PARAMS = XMCParams().replace(max_leaf_size=16, rounds=1)


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    return generate(SynthSpec(n_labels=160, n_features=3000), 3000)


@pytest.fixture(scope="module")
def ray_executor() -> Iterator[RayExecutor]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ex = RayExecutor(ExecutorParams(executor="ray", num_workers=2), show_progress=False)
    yield ex
    ex.shutdown()


@pytest.fixture(scope="module")
def local_model(data) -> XMCModel:  # type: ignore[no-untyped-def]
    return fit(data.X, data.Y, PARAMS, executor=LocalExecutor(show_progress=False))


def test_balanced_batches_pack_heaviest_first() -> None:
    batches = balanced_batches([10, 1, 1, 1, 9, 2, 8], 3)
    assert sorted(i for b in batches for i in b) == list(range(7))
    loads = sorted(sum([10, 1, 1, 1, 9, 2, 8][i] for i in b) for b in batches)
    assert loads == [10, 11, 11]
    assert balanced_batches([1.0], 4) == [[0]]


def test_ray_executor_gives_the_local_model(data, ray_executor, local_model) -> None:  # type: ignore[no-untyped-def]
    model = fit(data.X, data.Y, PARAMS, executor=ray_executor)
    same_model(model, local_model, data.X[:500])
    rankers = [s for s in ray_executor.stats if s["desc"].startswith("round 1")]
    assert rankers and rankers[0]["batches"] <= 4 and rankers[0]["workers_used"] >= 1
    assert all(s["worker_peak_rss_mib"] > 0 for s in ray_executor.stats)


def test_killed_worker_is_retried_and_the_model_is_unchanged(  # type: ignore[no-untyped-def]
    data, ray_executor, local_model, tmp_path: Path
) -> None:
    marker = tmp_path / "killed"
    ray_executor.kill_once = str(marker)  # the first task to start SIGKILLs its own worker
    try:
        model = fit(data.X, data.Y, PARAMS, executor=ray_executor)
    finally:
        ray_executor.kill_once = None
    assert marker.exists()  # a worker process really died mid-run
    same_model(model, local_model, data.X[:500])


def test_cluster_configs_parse_with_required_fields() -> None:
    cluster = yaml.safe_load((REPO / "cluster_configs/ray/cluster.yaml").read_text())
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type",
                "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in cluster, key
    assert cluster["head_node_type"] in cluster["available_node_types"]
    job = yaml.safe_load((REPO / "cluster_configs/ray/rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert "--executor ray" in spec["entrypoint"] and "xmc.cli.train" in spec["entrypoint"]
    heads = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"]
    workers = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert heads[0]["image"] and workers[0]["replicas"] >= 1
    assert all(w["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] for w in workers)


def test_a_units_bad_input_error_comes_back_as_itself(ray_executor, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A shard with label ids past the bundle's labels fails in a Ray task: the driver raises the
    unit's own BundleError (file and rows), not Ray's wrapped traceback, and keeps no work folder."""
    import json

    import pytest

    from xmc.core.sharded import fit_sharded
    from xmc.errors import BundleError
    from xmc.io.features import write_bundle

    data = generate(SynthSpec(n_labels=20, n_features=200), 300)
    write_bundle(tmp_path / "b", data.X, data.Y, max_rows=100)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    manifest["n_labels"] = int(data.Y.indices.max())  # the largest label id is now out of range
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as caught:
        fit_sharded(tmp_path / "b", PARAMS, executor=ray_executor, work_dir=tmp_path / "w")
    message = str(caught.value)
    assert type(caught.value) is BundleError and "part-0000" in message and "index out of range" in message
    assert "ray::" not in message and list((tmp_path / "w").iterdir()) == []


def test_prime_on_ray_train_with_two_workers(ray_executor: RayExecutor, tmp_path: Path) -> None:
    """The dense part trained by 2 Ray Train workers (DDP over gloo): every epoch reported with a
    checkpoint, the same network as a 1-process fit (the ranks split one process's step; the
    weights agree to float rounding), a dense part that learnt, a bundle that loads."""
    from tests.conftest import BIBTEX
    from xmc.core.metrics import evaluate
    from xmc.io.readers import read_npz

    X, Y = read_npz(BIBTEX / "X.trn.npz")[:2000], read_npz(BIBTEX / "Y.trn.npz", binary=True)[:2000]
    params = XMCParams().replace(dense="prime", dense_dim=32, dense_epochs=2, dense_batch_size=64,
                                 dense_workers=2, refit_trees=False)  # the refit: tests/test_prime.py
    model = fit(X, Y, params, executor=ray_executor, checkpoint_dir=tmp_path / "ckpt")
    info = model.info["dense"]
    assert info["workers"] == 2 and [e["epoch"] for e in info["epochs"]] == [1, 2]
    assert (tmp_path / "ckpt" / "dense" / "epoch.npz").exists()
    # resumed with every epoch done: no worker group, the same network from the checkpoint
    resumed = fit(X, Y, params, executor=ray_executor, checkpoint_dir=tmp_path / "ckpt", resume=True)
    assert resumed.dense is not None and model.dense is not None
    assert resumed.info["dense"]["epochs"] == info["epochs"]
    for name, weights in model.dense.arrays.items():
        assert np.array_equal(resumed.dense.arrays[name], weights), name
    # a run of 3 epochs resumed from that checkpoint: the ranks load it and train the third epoch only
    shutil.copytree(tmp_path / "ckpt" / "dense", tmp_path / "more" / "dense")
    more = fit(X, Y, params.replace(dense_epochs=3), executor=ray_executor, checkpoint_dir=tmp_path / "more",
               resume=True)
    assert more.info["dense"]["epochs"][:2] == info["epochs"] and len(more.info["dense"]["epochs"]) == 3
    alone = fit(X, Y, params.replace(dense_workers=1))
    assert model.dense is not None and alone.dense is not None
    for name, weights in alone.dense.arrays.items():
        np.testing.assert_allclose(model.dense.arrays[name], weights, atol=1e-5, err_msg=name)
    losses = [e["loss"] for e in alone.info["dense"]["epochs"]]
    assert [e["loss"] for e in info["epochs"]] == pytest.approx(losses, rel=1e-5)
    Xt, Yt = read_npz(BIBTEX / "X.tst.npz"), read_npz(BIBTEX / "Y.tst.npz", binary=True)
    assert evaluate(Yt, model.predict(Xt, topk=5, components="dense"), (1,))["P@1"] > 35
    model.save(tmp_path / "m")
    again = XMCModel.load(tmp_path / "m")
    assert (again.predict(Xt[:100], topk=5) != model.predict(Xt[:100], topk=5)).nnz == 0
