"""MLflow tracking and registry on the real engines: SQLite stores in tmp dirs, a real `mlflow server`,
a real `mlflow models serve`, and a fresh Python process loading ``models:/NAME@champion``."""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from xmc import XMCModel, XMCParams
from xmc.core.fit import fit
from xmc.engines.tracking import (
    CHAMPION,
    TrackingParams,
    champion_uri,
    ensure_champion,
    metric_key,
    round_metrics,
)
from xmc.engines.training_run import log_training
from xmc.errors import DataFormatError, ParamError
from xmc.io.vectorizer import TextVectorizer
from xmc.research.synth import SynthSpec, generate

PARAMS = ["--max-leaf-size", "8", "--rounds", "1", "--validation-fraction", "0.2"]


def child_env(**extra: str) -> dict[str, str]:
    """This interpreter's bin folder first on PATH: mlflow execs `uvicorn` from there."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sqlite_uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    """Poll until the URL answers 200 (or the process died, or time ran out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group we started (server and its workers), then wait."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A model trained on raw text: synthetic documents written out as words, a fitted vectorizer."""
    folder = tmp_path_factory.mktemp("text")
    block = generate(SynthSpec(n_labels=60, n_features=500), 800)
    texts = [" ".join(f"w{j}" for j in block.X[i].indices) for i in range(block.X.shape[0])]
    vectorizer = TextVectorizer([f"w{j}" for j in range(500)], np.ones(500))
    vectorizer.save(folder / "vectorizer")
    names = [f"label-{j}" for j in range(60)]
    # an ensemble of two trees: the registry, pyfunc and serving tests below serve it unchanged
    params = XMCParams().replace(max_leaf_size=8, rounds=1, validation_fraction=0.2, n_trees=2)
    model = fit(vectorizer.transform(texts), block.Y, params, label_names=names)
    model.save(folder / "model", extra_dirs={"vectorizer": folder / "vectorizer"})
    return {"folder": folder, "model": model, "texts": texts, "Y": block.Y,
            "X": vectorizer.transform(texts)}


@pytest.fixture(scope="module")
def registered_text(text_model: dict[str, Any]) -> dict[str, Any]:
    """The text model logged to a temporary SQLite store and registered as ``xmc-text``."""
    uri = sqlite_uri(text_model["folder"])
    result = log_training(text_model["model"], text_model["folder"] / "model",
                          TrackingParams(tracking_uri=uri, experiment="text", register_as="xmc-text"),
                          text_model["X"], text_model["Y"], fit_seconds=1.0)
    return {**text_model, "uri": uri, "result": result}


def test_round_metrics_are_flat_mlflow_names() -> None:
    rec = {"round": 1, "labels_copied": 3, "copies": 13, "clusters_changed": 2,
           "leaf_sizes": {"min": 4, "max": 6}, "coverage_before": 0.5, "coverage_after": None,
           "validation": {"P@1": 50.0}, "seconds": {"gains": 0.25}}
    assert metric_key("nDCG@5") == "nDCG_at_5"
    assert round_metrics(rec) == {"labels_copied": 3.0, "copies": 13.0, "clusters_changed": 2.0,
                                  "coverage_before": 0.5, "leaf_size_min": 4.0, "leaf_size_max": 6.0,
                                  "val_P_at_1": 50.0, "seconds_gains": 0.25}


def test_tracking_params_name_the_bad_field(tmp_path: Path) -> None:
    from xmc.cli.train import main

    with pytest.raises(ParamError, match="experiment"):
        TrackingParams(experiment=" ")
    sp.save_npz(tmp_path / "X.npz", sp.identity(4, format="csr"))
    sp.save_npz(tmp_path / "Y.npz", sp.identity(4, format="csr"))
    args = ["--x", str(tmp_path / "X.npz"), "--y", str(tmp_path / "Y.npz"), "--model", str(tmp_path / "m")]
    assert main([*args, "--experiment", ""]) == 2  # refused before the fit, nothing written
    assert not (tmp_path / "m").exists()


def test_cli_logs_to_default_sqlite_and_registers_champion_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from xmc.cli.train import main

    block = generate(SynthSpec(n_labels=60, n_features=500), 800)
    sp.save_npz(tmp_path / "X.npz", block.X)
    sp.save_npz(tmp_path / "Y.npz", block.Y)
    monkeypatch.chdir(tmp_path)  # the default store is ./mlflow.db, as MLflow's own default
    assert main(["--x", "X.npz", "--y", "Y.npz", "--model", "m", "--register-as", "xmc-bow",
                 "--run-name", "nightly", *PARAMS]) == 0
    assert (tmp_path / "mlflow.db").is_file() and (tmp_path / "mlruns").is_dir()

    client = mlflow.MlflowClient(tracking_uri="sqlite:///mlflow.db")
    exp = client.get_experiment_by_name("xmc")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.info.run_name == "nightly")
    children = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
                      key=lambda r: r.info.run_name)
    assert [c.info.run_name for c in children] == ["round-0", "round-1"]
    assert children[1].data.params["round"] == "1" and "val_P_at_5" in children[1].data.metrics
    for key in ("val_PSP_at_5", "val_nDCG_at_3", "weight_bytes", "peak_rss_mib", "seconds_rankers"):
        assert children[1].data.metrics[key] > 0, key
    assert parent.data.params["tree.max_leaf_size"] == "8"
    assert len(parent.data.tags["data_fingerprint"]) == 64 and "version.mlflow" in parent.data.tags
    for key in ("model_bytes", "peak_rss_bytes", "heldout_PSP_at_5", "heldout_nDCG_at_3"):
        assert parent.data.metrics[key] > 0
    curve = client.get_metric_history(parent.info.run_id, "val_P_at_1")
    assert sorted(m.step for m in curve) == [0, 1]
    length, m = parent.data.metrics["pairs/row_features"], parent.data.metrics["pairs/m"]  # 500 features
    labels = parent.data.metrics["pairs/row_labels"]
    assert length > 0 and labels >= 1 and m == (3 if length <= (17 if labels >= 8 else 14) else 0)
    assert (parent.data.metrics["pairs/n_pairs"] > 0) == (m > 0)
    # logged as the training ran: real timestamps, child runs inside the parent, the parent spans the fit
    for run in [parent, *children]:
        for key in run.data.metrics:
            assert all(m.timestamp > 1e12 for m in client.get_metric_history(run.info.run_id, key)), key
        assert run.info.status == "FINISHED" and run.info.end_time >= run.info.start_time
    assert parent.info.start_time <= children[0].info.start_time <= children[1].info.start_time
    assert children[1].info.end_time <= parent.info.end_time
    assert (parent.info.end_time - parent.info.start_time) / 1000 >= parent.data.metrics["fit_seconds"]
    assert children[0].data.metrics["seconds_tree"] > 0 and children[0].data.metrics["seconds_train"] > 0
    files = {a.path for d in ("plots", "assignment", "rounds", "config")
             for a in client.list_artifacts(parent.info.run_id, d)}
    assert {"plots/precision_by_round.png", "plots/leaf_sizes.png", "plots/label_frequency_vs_precision.png",
            "assignment/summary.json", "assignment/copied_labels.csv", "rounds/rounds.json",
            "config/params.json", "plots/copies_by_round.png"} <= files
    champ = client.get_model_version_by_alias("xmc-bow", CHAMPION)
    assert str(champ.version) == "1" and "'indices'" in champ.description
    assert "60 labels" in (client.get_registered_model("xmc-bow").description or "")

    # a second version leaves the champion where it is (moving it is the promotion gate's job)
    first = client.get_model_version("xmc-bow", "1")
    second = client.create_model_version("xmc-bow", first.source, run_id=first.run_id)
    assert not ensure_champion(client, "xmc-bow", str(second.version))
    assert str(client.get_model_version_by_alias("xmc-bow", CHAMPION).version) == "1"
    model = XMCModel.load(tmp_path / "m")

    # a BoW model takes sparse rows; raw text is refused with the reason
    pyfunc = mlflow.pyfunc.load_model(champion_uri("xmc-bow"))
    rows = pd.DataFrame({"indices": [block.X[i].indices.tolist() for i in range(3)],
                         "values": [block.X[i].data.tolist() for i in range(3)]})
    out = pyfunc.predict(rows, params={"topk": 3})
    expected = model.predict(block.X[:3], topk=3).toarray().argmax(axis=1)
    assert [labels[0] for labels in out["labels"]] == [str(j) for j in expected]
    assert all(len(s) == 3 and s == sorted(s, reverse=True) for s in out["scores"])
    with pytest.raises(DataFormatError, match="no text vectorizer"):
        pyfunc.predict(["some raw text"])
    assert pyfunc.metadata.saved_input_example_info is not None  # what `mlflow models serve` shows


def test_champion_loads_in_a_fresh_process_on_raw_text(registered_text: dict[str, Any]) -> None:
    assert registered_text["result"].champion_set
    assert (registered_text["folder"] / "mlruns").is_dir()  # artifacts beside the db, not in the cwd
    code = ("import json, sys, mlflow, pandas as pd\n"
            f"m = mlflow.pyfunc.load_model({champion_uri('xmc-text')!r})\n"
            "texts = json.loads(sys.stdin.read())\n"
            "out = m.predict(texts, params={'topk': 2})\n"
            "framed = m.predict(pd.DataFrame({'text': texts}), params={'topk': 2})\n"
            "assert framed['labels'].tolist() == out['labels'].tolist()\n"
            f"deps = open(mlflow.pyfunc.get_model_dependencies({champion_uri('xmc-text')!r})).read()\n"
            "print(json.dumps({'labels': out['labels'].tolist(), 'scores': out['scores'].tolist(), "
            "'deps': deps}))\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered_text["uri"]}
    r = subprocess.run([sys.executable, "-c", code], input=json.dumps(registered_text["texts"][:4]),
                       capture_output=True, text=True, env=env, timeout=120,
                       cwd=registered_text["folder"])
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    model: XMCModel = registered_text["model"]
    top = model.predict(registered_text["X"][:4], topk=2).toarray().argmax(axis=1)
    assert [labels[0] for labels in out["labels"]] == [f"label-{j}" for j in top]
    assert all(len(labels) == 2 for labels in out["labels"])
    # its vocabulary holds Snowball stems: serving it elsewhere installs the stemmer version that made them
    assert f"snowballstemmer=={importlib.metadata.version('snowballstemmer')}" in out["deps"].split()


@contextmanager
def models_serve(uri: str, name: str, folder: Path) -> Iterator[str]:
    """`mlflow models serve --env-manager local` on NAME's champion, on a free port; stopped after."""
    port = free_port()
    log = folder / f"serve-{name}.log"
    env = child_env(MLFLOW_TRACKING_URI=uri)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", champion_uri(name),
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=log.open("wb"), start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def post(url: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of a POST, errors included."""
    req = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def served(registered_text: dict[str, Any]) -> Iterator[str]:
    with models_serve(registered_text["uri"], "xmc-text", registered_text["folder"]) as url:
        yield url


def test_served_feature_model_answers_bad_requests_with_400_and_the_reason(tmp_path: Path) -> None:
    """A model trained on feature matrices, served: sparse rows answered with names; raw text and an
    out-of-range feature id answered HTTP 400 whose top-level message says what is wrong."""
    block = generate(SynthSpec(n_labels=30, n_features=200), 300)
    model = fit(block.X, block.Y, XMCParams().replace(max_leaf_size=8, rounds=0),
                label_names=[f"tag-{j}" for j in range(30)])
    model.save(tmp_path / "m")
    uri = sqlite_uri(tmp_path)
    log_training(model, tmp_path / "m", TrackingParams(tracking_uri=uri, register_as="xmc-feat"),
                 block.X, block.Y, fit_seconds=1.0)
    with models_serve(uri, "xmc-feat", tmp_path) as url:
        row = block.X[0]
        status, answer = post(f"{url}/invocations", {"dataframe_split": {
            "columns": ["indices", "values"], "data": [[row.indices.tolist(), row.data.tolist()]]}})
        assert status == 200 and answer["predictions"][0]["labels"][0].startswith("tag-"), answer
        status, answer = post(f"{url}/invocations", {"inputs": ["a raw document"]})
        assert status == 400 and "no text vectorizer" in answer["message"], answer
        assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
        status, answer = post(f"{url}/invocations", {"dataframe_split": {
            "columns": ["indices", "values"], "data": [[[5, 999], [1.0, 1.0]]]}})
        assert status == 400 and "feature id out of range [0, 200)" in answer["message"], answer


def test_rounds_are_logged_while_they_run(tmp_path: Path) -> None:
    """Each round's child run is RUNNING while the round works and FINISHED after; the parent is
    open before the fit starts."""
    import mlflow

    from xmc.engines.training_run import TrainingRun

    seen: list[tuple[str, int, str]] = []

    class Watching(TrainingRun):
        def round_started(self, r: int, tree: int = 0) -> None:
            seen.append(("parent", r, self.client.get_run(self.run_id).info.status))
            super().round_started(r, tree)

        def round_finished(self, record: dict[str, Any]) -> None:
            r = int(record["round"])
            seen.append(("child", r, self.client.get_run(self.children[(0, r)]).info.status))
            super().round_finished(record)
            seen.append(("after", r, self.client.get_run(self.children[(0, r)]).info.status))

    block = generate(SynthSpec(n_labels=40, n_features=300), 400)
    params = XMCParams().replace(max_leaf_size=8, rounds=2, validation_fraction=0.2)
    uri = sqlite_uri(tmp_path)
    with Watching(TrackingParams(tracking_uri=uri, experiment="live"), params, block.X, block.Y) as run:
        model = fit(block.X, block.Y, params, observer=run)
        model.save(tmp_path / "m")
        result = run.finish(model, tmp_path / "m", fit_seconds=1.0)
    rounds = len(model.info["rounds"])
    assert rounds >= 2
    assert seen[:4] == [("parent", 0, "RUNNING"), ("child", 0, "RUNNING"), ("after", 0, "FINISHED"),
                        ("parent", 1, "RUNNING")]
    assert [s for s in seen if s[0] == "child"] == [("child", r, "RUNNING") for r in range(rounds)]
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert client.get_run(result.run_id).info.status == "FINISHED"
    curve = client.get_metric_history(result.run_id, "val_P_at_1")
    assert sorted(m.step for m in curve) == list(range(rounds)) and min(m.timestamp for m in curve) > 1e12


def test_an_ensemble_logs_each_trees_rounds(tmp_path: Path) -> None:
    """Child runs tree-<t>-round-<r>; the parent's curves per tree (tree<t>/...), step = round."""
    import mlflow

    from xmc.engines.training_run import TrainingRun

    block = generate(SynthSpec(n_labels=40, n_features=300), 400)
    params = XMCParams().replace(max_leaf_size=8, rounds=1, validation_fraction=0.2, n_trees=2)
    uri = sqlite_uri(tmp_path)
    with TrainingRun(TrackingParams(tracking_uri=uri, experiment="trees"), params, block.X, block.Y) as run:
        model = fit(block.X, block.Y, params, observer=run)
        model.save(tmp_path / "m")
        result = run.finish(model, tmp_path / "m", fit_seconds=1.0)
    client = mlflow.MlflowClient(tracking_uri=uri)
    children = client.search_runs([result.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'")
    expected = [f"tree-{t}-round-{r}" for t, m in enumerate(model.trees)
                for r in range(len(m.info["rounds"]))]
    assert sorted(c.info.run_name for c in children) == sorted(expected)
    assert {c.data.params["tree"] for c in children} == {"0", "1"}
    parent = client.get_run(result.run_id)
    assert parent.data.metrics["n_trees"] == 2 and parent.data.params["tree.n_trees"] == "2"
    for t, m in enumerate(model.trees):
        curve = client.get_metric_history(result.run_id, f"tree{t}/val_P_at_1")
        assert sorted(p.step for p in curve) == list(range(len(m.info["rounds"])))


def test_models_serve_answers_raw_text(served: str, registered_text: dict[str, Any]) -> None:
    body = json.dumps({"inputs": registered_text["texts"][:2], "params": {"topk": 3}}).encode()
    req = urllib.request.Request(f"{served}/invocations", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        answer = json.loads(r.read())
    rows = answer["predictions"]
    assert len(rows) == 2 and all(len(row["labels"]) == 3 and len(row["scores"]) == 3 for row in rows)
    assert all(name.startswith("label-") for row in rows for name in row["labels"])


def test_mlflow_server_receives_run_and_registry(tmp_path: Path, text_model: dict[str, Any]) -> None:
    import mlflow

    port = free_port()
    env = child_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", sqlite_uri(tmp_path),
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=(tmp_path / "server.log").open("wb"),
        start_new_session=True)
    try:
        uri = f"http://127.0.0.1:{port}"
        wait_http(f"{uri}/health", proc, tmp_path / "server.log")
        result = log_training(text_model["model"], text_model["folder"] / "model",
                              TrackingParams(tracking_uri=uri, experiment="served", register_as="xmc-srv"),
                              text_model["X"], text_model["Y"], fit_seconds=1.0)
        client = mlflow.MlflowClient(tracking_uri=uri)
        assert client.get_run(result.run_id).data.metrics["heldout_P_at_1"] > 0
        assert str(client.get_model_version_by_alias("xmc-srv", CHAMPION).version) == "1"
        assert any(a.path == "plots" for a in client.list_artifacts(result.run_id))
    finally:
        stop(proc)
    assert proc.returncode is not None
