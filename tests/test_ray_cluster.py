"""A real two-node Ray cluster on this machine running `ray job submit -- python jobs/train.py`.

The head (`ray start --head`) and a second node (`ray start --address=<head>`) get 1 CPU, their
own ports and their own temp folder each, so two tasks at a time means one on each node. The
job trains Bibtex from a features bundle on the cluster, its rows in shards (the driver reads none;
``xmc.core.sharded``); the test checks that both nodes ran units (the executor's
``model.info["executor_nodes"]``) and that the model is the in-process one.

Each `ray start` runs in a session of its own, and every process of that session (GCS, raylets,
agents, workers) is killed afterwards, pass or fail: no other Ray on the machine is touched.
Its own module, so the local Ray of tests/test_ray.py is shut down before this cluster starts
(two Ray instances on a 2-core machine miss each other's heartbeats).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, free_ports
from xmc import XMCModel
from xmc.io.features import write_bundle

RAY = str(Path(sys.executable).parent / "ray")
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
STORE_BYTES = 256 * 1024 * 1024
"""Object store of each node: Bibtex is a few MB; the default (30% of RAM) twice is wasteful."""


def _node_flags(temp: Path) -> list[str]:
    """Flags every node needs to share the machine: its own ports (two nodes would otherwise both
    take the fixed defaults, e.g. 52365 for the agent) and its own temp folder (short: Ray's
    socket paths must stay under 108 bytes)."""
    p = free_ports(14)
    return ["--node-ip-address=127.0.0.1", "--num-cpus=1", f"--temp-dir={temp}",
            f"--object-store-memory={STORE_BYTES}", f"--node-manager-port={p[0]}",
            f"--object-manager-port={p[1]}", f"--dashboard-agent-listen-port={p[2]}",
            f"--dashboard-agent-grpc-port={p[3]}", f"--runtime-env-agent-port={p[4]}",
            f"--metrics-export-port={p[5]}", "--worker-port-list=" + ",".join(map(str, p[6:])),
            "--disable-usage-stats"]


def _session_pids(sessions: list[int]) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.getsid(int(name)) in sessions:
                    pids.append(int(name))
            except OSError:  # gone meanwhile
                pass
    return pids


def _kill_sessions(sessions: list[int], timeout: float = 30.0) -> list[int]:
    """SIGKILL every process of these sessions (what `ray stop --force` does, for our nodes
    only); the pids still there after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (pids := _session_pids(sessions)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.2)
    return pids


def _alive_nodes(dashboard: int) -> dict[str, bool]:
    """{node id: is head} of the cluster's alive nodes, from the dashboard's state API."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{dashboard}/api/v0/nodes", timeout=5) as r:
            rows = json.load(r)["data"]["result"]["result"]
    except (OSError, KeyError, ValueError):
        return {}
    return {row["node_id"]: bool(row["is_head_node"]) for row in rows if row["state"] == "ALIVE"}


@dataclass
class Cluster:
    gcs_port: int
    dashboard: int
    nodes: dict[str, bool] = field(default_factory=dict)
    """{node id: is head} once both nodes are up."""


def _start(args: list[str], sessions: list[int]) -> None:
    """Run `ray start ...` in a new session (its daemons stay in it) and wait for it to return."""
    proc = subprocess.Popen([RAY, "start", *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    sessions.append(proc.pid)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, f"ray start {args[0]} failed:\n{out[-3000:]}"


@pytest.fixture
def two_nodes() -> Iterator[Cluster]:
    gcs_port, dashboard = free_ports(2)
    head_temp, worker_temp = Path(f"/tmp/xmcrh{gcs_port}"), Path(f"/tmp/xmcrw{gcs_port}")
    sessions: list[int] = []
    cluster = Cluster(gcs_port, dashboard)
    try:
        _start(["--head", f"--port={gcs_port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                *_node_flags(head_temp)], sessions)
        _start([f"--address=127.0.0.1:{gcs_port}", *_node_flags(worker_temp)], sessions)
        deadline = time.monotonic() + 120
        while len(cluster.nodes) < 2 and time.monotonic() < deadline:
            cluster.nodes = _alive_nodes(dashboard)
            time.sleep(0.5)
        assert sorted(cluster.nodes.values()) == [False, True], f"nodes alive: {cluster.nodes}"
        yield cluster
    finally:
        left = _kill_sessions(sessions)
        shutil.rmtree(head_temp, ignore_errors=True)
        shutil.rmtree(worker_temp, ignore_errors=True)
    assert not left, f"Ray processes still running after SIGKILL: {left}"


def test_ray_job_on_two_nodes_gives_the_in_process_model(  # type: ignore[no-untyped-def]
    two_nodes: Cluster, tmp_path: Path, bibtex, bibtex_model
) -> None:
    model_dir, bundle = tmp_path / "model", tmp_path / "bundle"
    write_bundle(bundle, bibtex["X.trn"], bibtex["Y.trn"], max_rows=1500)  # 4 parts: 4 shards
    # 2 tasks at a time, 1 CPU each, 4 batches a map, every batch spread over the nodes (SPREAD)
    entry = (f"cd {REPO} && {sys.executable} jobs/train.py --data {bundle} --model {model_dir} "
             "--executor ray --num-workers 2 --cpus-per-worker 1 --batches-per-worker 2")
    submit = [RAY, "job", "submit", "--address", f"http://127.0.0.1:{two_nodes.dashboard}", "--",
              "bash", "-c", entry]
    out = subprocess.run(submit, env=ENV, capture_output=True, text=True, timeout=600)
    logs = out.stdout + out.stderr
    assert out.returncode == 0, logs[-3000:]
    assert "succeeded" in logs
    line = next(x for x in logs.splitlines() if "executor:" in x)
    assert "ray cluster at" in line and f":{two_nodes.gcs_port}," in line  # joined the cluster, started none

    model = XMCModel.load(model_dir)
    assert model.info["shards"]["count"] == 4  # --data with Ray: the rows stayed in shards
    ran = model.info["executor_nodes"]
    assert set(ran) == set(two_nodes.nodes) and min(ran.values()) > 0, ran  # both nodes ran units
    # the same model as `fit` in-process with the local executor (bibtex_model: same data, defaults)
    assert model.params == bibtex_model.params
    assert np.array_equal(model.tree.copy_label, bibtex_model.tree.copy_label)
    parents = zip(model.tree.parents, bibtex_model.tree.parents, strict=True)
    assert all(np.array_equal(p, q) for p, q in parents)
    for Wa, Wb in zip(model.weights, bibtex_model.weights, strict=True):
        assert Wa.shape == Wb.shape and abs(Wa - Wb).max() <= 1e-6
    X = bibtex["X.tst"]
    assert abs(model.predict(X, topk=10) - bibtex_model.predict(X, topk=10)).max() <= 1e-6
