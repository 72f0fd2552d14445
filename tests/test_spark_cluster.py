"""`spark-submit jobs/featurize.py` against a real standalone Spark cluster on 127.0.0.1.

The fixture starts a master and one worker from the pyspark package (`spark-class ...Master`,
`...Worker`) on free ports, and always stops them (by process group of the pids it started).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from xmc.engines.spark.session import read_conf_file
from xmc.errors import ParamError
from xmc.io.features import load_split, read_manifest
from xmc.io.readers import write_jsonl
from xmc.io.vectorizer import TextVectorizer
from xmc.research.synth import SynthSpec, write

CONF = REPO / "cluster_configs" / "spark" / "spark-defaults.conf"


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    return {**os.environ, "SPARK_HOME": str(_spark_home()), "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}


def _master_state(ui_port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as r:
            state: dict[str, object] = json.load(r)
            return state
    except OSError:
        return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group we started (the JVM and any executor it spawned), then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """(master URL, master web UI port) of a running master with one alive worker."""
    port, ui, worker_ui = _free_port(), _free_port(), _free_port()
    spark_class = str(_spark_home() / "bin" / "spark-class")
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for name, args in (
            ("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                        "--webui-port", str(ui)]),
            ("worker", ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "2",
                        "--memory", "1g", "--webui-port", str(worker_ui), "--work-dir",
                        str(tmp_path / "work"), f"spark://127.0.0.1:{port}"]),
        ):
            log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed in finally
            logs.append(log)
            procs.append(subprocess.Popen([spark_class, *args], stdout=log, stderr=subprocess.STDOUT,
                                          env=_env(), start_new_session=True))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            state = _master_state(ui)
            if state and state.get("aliveworkers") == 1:
                break
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.5)
        else:
            state = None
        if not state or state.get("aliveworkers") != 1:
            pytest.fail("standalone cluster did not start:\n" + "\n".join(
                (tmp_path / f"{n}.log").read_text(errors="replace")[-2000:] for n in ("master", "worker")))
        yield f"spark://127.0.0.1:{port}", ui
    finally:
        for proc in reversed(procs):
            _stop(proc)
        for log in logs:
            log.close()


def test_cluster_config_parses() -> None:
    conf = read_conf_file(CONF)
    assert conf["spark.executor.memory"] == "8g" and conf["spark.sql.adaptive.enabled"] == "true"
    assert "-Duser.language=en" in conf["spark.executor.extraJavaOptions"]
    assert all(key.startswith("spark.") and value for key, value in conf.items())


def test_conf_file_errors_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "bad.conf").write_text("# ok\nspark.a 1\nnot_a_spark_key 2\n")
    with pytest.raises(ParamError, match=r"bad.conf:3: expected 'spark.some.key value'"):
        read_conf_file(tmp_path / "bad.conf")


def test_spark_submit_featurize_on_standalone_cluster(standalone: tuple[str, int], tmp_path: Path) -> None:
    master, ui = standalone
    write(SynthSpec(n_labels=10, n_features=400, seed=7), tmp_path / "synth", 300, 0, "jsonl")
    records = [json.loads(line) for line in (tmp_path / "synth" / "train.jsonl").read_text().splitlines()]
    write_jsonl(tmp_path / "corpus.jsonl", records)
    submit = str(_spark_home() / "bin" / "spark-submit")
    cmd = [submit, "--master", master, "--properties-file", str(CONF),
           "--conf", "spark.executor.memory=512m", "--conf", "spark.executor.memoryOverhead=256m",
           "--conf", "spark.executor.cores=2", "--conf", "spark.driver.memory=1g",
           "--conf", "spark.sql.shuffle.partitions=2", "--conf", "spark.ui.enabled=false",
           str(REPO / "jobs" / "featurize.py"), "--input", str(tmp_path / "corpus.jsonl"),
           "--out", str(tmp_path / "bundle"), "--test-fraction", "0.2"]
    r = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["splits"]["train"]["rows"] + summary["splits"]["test"]["rows"] == 300

    manifest = read_manifest(tmp_path / "bundle")
    assert manifest["spark"]["master"] == master
    state = _master_state(ui) or {}
    assert [app["name"] for app in state.get("completedapps", [])] == ["xmc-featurize"]  # type: ignore[union-attr]
    # the cluster's rows are what the predict-time vectorizer computes from the same text
    vec = TextVectorizer.load(tmp_path / "bundle" / "vectorizer")
    train = load_split(tmp_path / "bundle", "train")
    by_id = {str(rec["id"]): str(rec["text"]) for rec in records}
    assert abs(vec.transform(by_id[i] for i in train.doc_ids) - train.X).max() < 1e-6
