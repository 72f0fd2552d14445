"""Ray executor on a real local Ray: same model as the local executor, retries a killed worker;
the cluster configs it ships are well formed."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import REPO, beyond_loopback, listening_sockets, same_model
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
    """The local Ray of ``--executor ray``. Its GCS declares the raylet dead after 5 missed health
    checks (3 s apart), and the driver (this pytest process) then exits 1 with no report: the CI run
    of 74cbf85 ended so in this module. The other test worker's Spark shares the 2 cores, so the
    GCS started here waits 30 checks."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with pytest.MonkeyPatch.context() as env:  # read by the GCS and raylet this executor starts
        env.setenv("RAY_health_check_failure_threshold", "30")
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


def test_local_ray_listens_on_loopback_only(data, ray_executor) -> None:  # type: ignore[no-untyped-def]
    """The local Ray that ``--executor ray`` starts (this module's, after a fit ran units on its
    workers): its GCS, raylet, agents and workers, all descendants of this process, listen on
    loopback only (the same check of the embedded Spark: tests/test_loopback.py)."""
    fit(data.X[:500], data.Y[:500], PARAMS, executor=ray_executor)
    seen = listening_sockets(os.getpid())
    names = set(seen.values())
    assert any("raylet" in n for n in names) and any("gcs" in n for n in names), seen  # we saw Ray itself
    assert beyond_loopback(seen) == []


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


def test_prime_on_ray_train_with_two_workers(
    ray_executor: RayExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dense part trained by 2 Ray Train workers (DDP over gloo), resumed from a checkpoint: the
    ranks load it and train only the epochs left, every epoch is reported with a checkpoint, and the
    network is the one an uninterrupted 1-process fit makes (the ranks split one process's step and
    restore its optimizer and sampler; the weights agree to float rounding).

    One worker group only (each costs 10-20 s here): the resumed run takes every step a fresh one
    does (wrap, all-gather, reports, the best epoch back to the driver), plus the ranks' load of the
    checkpoint; a fresh start differs only in starting from the seed, as the 1-process fit does."""
    from tests.conftest import BIBTEX, StopAtEpoch
    from xmc.core.metrics import evaluate
    from xmc.io.readers import read_npz

    # Ray Train's controller polls its workers every 2 s by default: each state change of these
    # second-long runs waited for a poll (a bare 2-worker run took 15-19 s, 10-13 s at 0.2 s)
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    # the group's start waits for its processes (torch imported in each): 60 s by default, which a
    # busy 2-core machine running the other test worker's Spark beside it may need
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")
    X, Y = read_npz(BIBTEX / "X.trn.npz")[:2000], read_npz(BIBTEX / "Y.trn.npz", binary=True)[:2000]
    params = XMCParams().replace(dense="prime", dense_dim=32, dense_epochs=2, dense_batch_size=64,
                                 dense_workers=2, refit_trees=False)  # the refit: tests/test_prime.py
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):  # epoch 1 of the 2-epoch schedule, in one process
        fit(X, Y, params.replace(dense_workers=1), checkpoint_dir=ckpt, observer=StopAtEpoch(2))
    first = json.loads((ckpt / "dense" / "history.json").read_text())
    assert first["epochs_done"] == 1
    model = fit(X, Y, params, executor=ray_executor, checkpoint_dir=ckpt, resume=True)
    info = model.info["dense"]
    assert info["workers"] == 2 and [e["epoch"] for e in info["epochs"]] == [1, 2]
    assert info["epochs"][:1] == first["history"]
    done = json.loads((ckpt / "dense" / "history.json").read_text())["epochs_done"]
    assert done == 2  # the ranks' last checkpoint, copied back to the user's folder
    # resumed with every epoch done: no worker group, the same network from the checkpoint
    resumed = fit(X, Y, params, executor=ray_executor, checkpoint_dir=ckpt, resume=True)
    assert resumed.dense is not None and model.dense is not None
    assert resumed.info["dense"]["epochs"] == info["epochs"]
    for name, weights in model.dense.arrays.items():
        assert np.array_equal(resumed.dense.arrays[name], weights), name
    alone = fit(X, Y, params.replace(dense_workers=1))  # both epochs, one process, uninterrupted
    assert alone.dense is not None
    for name, weights in alone.dense.arrays.items():
        np.testing.assert_allclose(model.dense.arrays[name], weights, atol=1e-5, err_msg=name)
    losses = [e["loss"] for e in alone.info["dense"]["epochs"]]
    assert [e["loss"] for e in info["epochs"]] == pytest.approx(losses, rel=1e-5)
    Xt, Yt = read_npz(BIBTEX / "X.tst.npz"), read_npz(BIBTEX / "Y.tst.npz", binary=True)
    assert evaluate(Yt, model.predict(Xt, topk=5, components="dense"), (1,))["P@1"] > 35
    model.save(tmp_path / "m")
    again = XMCModel.load(tmp_path / "m")
    assert (again.predict(Xt[:100], topk=5) != model.predict(Xt[:100], topk=5)).nnz == 0
