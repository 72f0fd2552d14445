"""`spark-submit jobs/featurize.py` against a real standalone Spark cluster on 127.0.0.1.

The fixture starts a master and two workers of 1 core each from the pyspark package
(`spark-class ...Master`, `...Worker`), each on its own free ports (workers: their own work dir),
and always stops them (by process group of the pids it started). The job asks for two 1-core
executors, so it runs on both workers; its event log says which executor (worker) ran each task.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import REPO, free_ports
from xmc.engines.spark.session import read_conf_file
from xmc.errors import ParamError
from xmc.io.features import load_split, read_manifest
from xmc.io.readers import write_jsonl
from xmc.io.vectorizer import TextVectorizer
from xmc.research.synth import SynthSpec, write

CONF = REPO / "cluster_configs" / "spark" / "spark-defaults.conf"
QUICK_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
"""For the test's short-lived JVMs (master, 2 workers, 2 executors, driver on 2 cores): no C2 JIT,
no parallel GC threads. Measured: the test's CPU time 178 s -> 94 s, wall 121 s -> 83 s."""


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def _env() -> dict[str, str]:
    return {**os.environ, "SPARK_HOME": str(_spark_home()), "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_DAEMON_JAVA_OPTS": QUICK_JVM}


def _master_state(ui_port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as r:
            state: dict[str, object] = json.load(r)
            return state
    except OSError:
        return None


def _tasks_per_worker(events: Path) -> dict[int, int]:
    """Successful tasks per worker (its web UI port) from the application's event log: an
    executor's log URLs point at the UI of the worker that runs it.

    Spark 4 writes a rolling log, a folder ``eventlog_v2_<app>/events_<n>_<app>``; a single
    ``<app>`` file (rolling off) reads the same."""
    worker_of: dict[str, int | None] = {}
    tasks: dict[str, int] = {}
    for f in sorted(events.rglob("*")):
        if not f.is_file() or f.name.startswith((".", "appstatus")):
            continue
        for line in f.read_text().splitlines():
            event = json.loads(line)
            if event["Event"] == "SparkListenerExecutorAdded":
                worker_of[event["Executor ID"]] = urlsplit(event["Executor Info"]["Log Urls"]["stderr"]).port
            elif event["Event"] == "SparkListenerTaskEnd" and event["Task End Reason"]["Reason"] == "Success":
                executor = event["Task Info"]["Executor ID"]
                tasks[executor] = tasks.get(executor, 0) + 1
    ran: dict[int, int] = {}
    for executor, n in tasks.items():
        port = worker_of.get(executor)
        assert port is not None, f"executor {executor} ran tasks but its worker is unknown"
        ran[port] = ran.get(port, 0) + n
    return ran


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


@dataclass
class Standalone:
    master: str
    """spark://127.0.0.1:<port>"""
    ui: int
    """The master's web UI port."""
    worker_uis: list[int]
    """Each worker's web UI port (also in the log URLs of the executors it runs)."""


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[Standalone]:
    """A running master with two alive workers of 1 core each, every one on its own ports and
    (workers) its own work dir: two executors of 1 core can only run on different workers."""
    port, ui, *worker_ports = free_ports(6)
    spark_class = str(_spark_home() / "bin" / "spark-class")
    cluster = Standalone(f"spark://127.0.0.1:{port}", ui, worker_ports[1::2])
    names = ["master", "worker0", "worker1"]
    commands = [["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                 "--webui-port", str(ui)]]
    for i, (wport, wui) in enumerate(zip(worker_ports[::2], worker_ports[1::2], strict=True)):
        commands.append(["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--port", str(wport),
                         "--cores", "1", "--memory", "1g", "--webui-port", str(wui),
                         "--work-dir", str(tmp_path / f"work{i}"), cluster.master])
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for name, args in zip(names, commands, strict=True):
            log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed in finally
            logs.append(log)
            procs.append(subprocess.Popen([spark_class, *args], stdout=log, stderr=subprocess.STDOUT,
                                          env=_env(), start_new_session=True))
        deadline = time.monotonic() + 120
        state = None
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            state = _master_state(ui)
            if state and state.get("aliveworkers") == 2:
                break
            time.sleep(0.5)
        if not state or state.get("aliveworkers") != 2:
            pytest.fail("standalone cluster did not start:\n" + "\n".join(
                (tmp_path / f"{n}.log").read_text(errors="replace")[-2000:] for n in names))
        yield cluster
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


def test_spark_submit_featurize_on_standalone_cluster(standalone: Standalone, tmp_path: Path) -> None:
    write(SynthSpec(n_labels=10, n_features=400, seed=7), tmp_path / "synth", 300, 0, "jsonl")
    records = [json.loads(line) for line in (tmp_path / "synth" / "train.jsonl").read_text().splitlines()]
    write_jsonl(tmp_path / "corpus.jsonl", records)
    events = tmp_path / "events"
    events.mkdir()
    submit = str(_spark_home() / "bin" / "spark-submit")
    quick: list[str] = []  # the file's JVM options (the locale) kept, QUICK_JVM added
    for key in ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions"):
        quick += ["--conf", f"{key}={read_conf_file(CONF)[key]} {QUICK_JVM}"]
    # one 1-core executor per worker; the first job waits (up to 2 min) until both registered
    cmd = [submit, "--master", standalone.master, "--properties-file", str(CONF),
           "--conf", "spark.executor.memory=512m", "--conf", "spark.executor.memoryOverhead=256m",
           "--conf", "spark.executor.cores=1", "--conf", "spark.cores.max=2",
           "--conf", "spark.driver.memory=1g", *quick,
           "--conf", "spark.scheduler.minRegisteredResourcesRatio=1.0",
           "--conf", "spark.scheduler.maxRegisteredResourcesWaitingTime=120s",
           "--conf", "spark.eventLog.enabled=true", "--conf", f"spark.eventLog.dir={events.as_uri()}",
           "--conf", "spark.eventLog.compress=false",
           "--conf", "spark.sql.shuffle.partitions=2", "--conf", "spark.ui.enabled=false",
           str(REPO / "jobs" / "featurize.py"), "--input", str(tmp_path / "corpus.jsonl"),
           "--out", str(tmp_path / "bundle"), "--test-fraction", "0.2"]
    r = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["splits"]["train"]["rows"] + summary["splits"]["test"]["rows"] == 300

    manifest = read_manifest(tmp_path / "bundle")
    assert manifest["spark"]["master"] == standalone.master
    state = _master_state(standalone.ui) or {}
    assert [app["name"] for app in state.get("completedapps", [])] == ["xmc-featurize"]  # type: ignore[union-attr]
    ran = _tasks_per_worker(events)
    assert set(ran) == set(standalone.worker_uis) and min(ran.values()) > 0, ran  # both workers ran tasks
    # the cluster's rows are what the predict-time vectorizer computes from the same text
    vec = TextVectorizer.load(tmp_path / "bundle" / "vectorizer")
    train = load_split(tmp_path / "bundle", "train")
    by_id = {str(rec["id"]): str(rec["text"]) for rec in records}
    assert abs(vec.transform(by_id[i] for i in train.doc_ids) - train.X).max() < 1e-6
