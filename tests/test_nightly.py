"""Nightly retrain and promotion gate on the real engines (local Spark, MLflow on SQLite in tmp dirs),
plus the parquet batch prediction job; the gate itself on hand-made scores."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xmc import XMCParams
from xmc.engines.tracking import CHAMPION
from xmc.errors import DataFormatError, ParamError
from xmc.ops.nightly.config import (
    EXIT_LOCKED,
    EXIT_REJECTED,
    PREVIOUS_CHAMPION,
    LockHeldError,
    NightlyParams,
    load_config,
    nightly_lock,
    params_from_dict,
)
from xmc.ops.nightly.gate import Scores, decide
from xmc.ops.nightly.run import run_nightly

BIBTEX = Path(__file__).resolve().parents[1] / "data" / "bibtex"


def scores(p1: float, ms: float = 10.0, size: int = 1000) -> Scores:
    return Scores({"P@1": p1, "P@3": p1 / 2}, ms, size)


def test_gate_promotes_only_a_clear_winner_within_latency_and_size() -> None:
    params = NightlyParams(margin=0.5, max_latency_ratio=1.5, max_size_ratio=2.0)
    assert decide(scores(60.0), None, params) == decide(scores(0.0), None, params)  # no champion: promote
    assert decide(scores(60.5), scores(60.0), params).promote  # gain 0.5 == margin
    assert decide(scores(61.0, ms=15.0, size=2000), scores(60.0), params).promote  # ratios at the limits
    tie = decide(scores(60.4), scores(60.0), params)
    assert not tie.promote and "gain +0.40 < margin 0.5" in tie.reason
    slow_big = decide(scores(70.0, ms=16.0, size=2001), scores(60.0), params)
    assert not slow_big.promote
    assert "latency x1.60 > max_latency_ratio 1.5" in slow_big.reason and "size x2.00" in slow_big.reason
    assert decide(scores(70.0), scores(60.0), dataclasses.replace(params, metric="P@3")).promote


def test_config_errors_name_the_file_and_field(tmp_path: Path) -> None:
    cfg = tmp_path / "night.json"
    cases = {
        '{"margin": "big"}': "[margin] margin='big' has the wrong type: expected float",
        '{"executor": {"num_workers": "2"}}': "[executor] num_workers='2' has the wrong type: expected int",
        '{"executor": {"workers": 2}}': "[executor] unknown executor parameter 'workers'",
        '{"colour": 1}': "[colour] unknown field",
        '{"train": {"rounds": -1}}': "[train]",
        '{"metric": "P@2"}': "metric='P@2' is invalid",
        '{"margin": 1,\n "x": }': ":2: not valid JSON",
    }
    for text, expected in cases.items():
        cfg.write_text(text)
        with pytest.raises(DataFormatError) as e:
            load_config(cfg)
        assert str(e.value).startswith(str(cfg)) and expected in str(e.value), str(e.value)
    cfg.write_text('{"x": "data/X.npz", "eval_x": "/abs/X.npz", "train": {"rounds": 2}, "max_size_ratio": 3}')
    p = load_config(cfg)
    assert p.x == str(tmp_path / "data" / "X.npz") and p.eval_x == "/abs/X.npz"  # relative to the file
    assert p.train.disentangle.rounds == 2 and p.max_size_ratio == 3.0 and p.margin == NightlyParams.margin
    with pytest.raises(ParamError, match="either input"):
        NightlyParams().require_data()
    with pytest.raises(ParamError, match="needs eval_input"):
        NightlyParams(input="a.jsonl").require_data()


def test_lock_refuses_a_second_nightly_and_dies_with_its_holder(tmp_path: Path) -> None:
    from xmc.cli.nightly import main

    lock = tmp_path / "n.lock"
    params = NightlyParams(x=str(BIBTEX / "X.trn.npz"), y=str(BIBTEX / "Y.trn.npz"),
                           eval_x=str(BIBTEX / "X.tst.npz"), eval_y=str(BIBTEX / "Y.tst.npz"),
                           work_dir=str(tmp_path / "w"), lock_path=str(lock))
    with nightly_lock(lock):
        with pytest.raises(LockHeldError, match=f"pid {os.getpid()}"):
            run_nightly(params)
        cfg = tmp_path / "c.json"
        cfg.write_text(json.dumps({k: v for k, v in params_dict(params).items() if k != "train"}))
        assert main(["--config", str(cfg)]) == EXIT_LOCKED
    # released: a plain flock now succeeds at once (a dead holder's lock is released by the kernel too)
    with open(lock) as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert not (tmp_path / "w" / params.night).exists()  # nothing ran under the held lock


def params_dict(p: NightlyParams) -> dict[str, Any]:
    return {f.name: getattr(p, f.name) for f in dataclasses.fields(p)
            if isinstance(getattr(p, f.name), str | float | int)}


def test_bibtex_nightly_registers_promotes_then_rejects_a_worse_config(tmp_path: Path) -> None:
    """Bar: parent run, a child per round, per-step metrics, plots and a version in the store; a worse
    config is rejected and `champion` stays; re-running a finished night touches nothing."""
    import mlflow

    from xmc.cli.nightly import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = {"x": str(BIBTEX / "X.trn.npz"), "y": str(BIBTEX / "Y.trn.npz"),
            "label_names": str(BIBTEX / "label_names.txt"), "eval_x": str(BIBTEX / "X.tst.npz"),
            "eval_y": str(BIBTEX / "Y.tst.npz"), "model_name": "bibtex", "tracking_uri": uri,
            "experiment": "nightly", "work_dir": str(tmp_path / "nights"),
            "train": {"rounds": 1, "validation_fraction": 0.2}, "latency_repeats": 1}
    good = run_nightly(params_from_dict({**base, "run_id": "good"}))
    assert good["decision"] == "promoted" and good["version"] == "1", good
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("nightly").experiment_id])
    parent = next(r for r in runs if r.info.run_id == good["run_id"])
    pid = parent.info.run_id
    children = sorted(r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == pid)
    manifest = tmp_path / "nights" / "good" / "model" / "manifest.json"
    rounds = json.loads(manifest.read_text())["info"]["rounds"]
    assert children == [f"round-{r['round']}" for r in rounds] and len(children) >= 2
    history = client.get_metric_history(pid, "val_P_at_1")
    assert [m.step for m in history] == list(range(len(rounds)))
    assert "plots/precision_by_round.png" in {a.path for a in client.list_artifacts(pid, "plots")}
    assert parent.data.metrics["frozen_candidate_P_at_1"] > 50
    assert parent.data.tags["nightly.decision"] == "promoted"

    worse = tmp_path / "worse.json"
    worse.write_text(json.dumps({**base, "run_id": "worse",
                                 "train": {"rounds": 0, "max_newton_iter": 1, "cost": 0.01}}))
    assert main(["--config", str(worse)]) == EXIT_REJECTED
    v2 = client.get_model_version("bibtex", "2")
    assert v2.tags["decision"] == "rejected" and "< margin 0.2" in v2.tags["reason"]
    assert str(client.get_model_version_by_alias("bibtex", CHAMPION).version) == "1"
    assert client.get_model_version("bibtex", "1").tags["decision"] == "promoted"
    assert main(["--config", str(worse)]) == EXIT_REJECTED  # finished night: recorded answer
    assert len(client.search_model_versions("name='bibtex'")) == 2
    # the good config again with margin 0 and loose limits: it ties v1, so it is promoted, v1 kept aside
    tie = run_nightly(params_from_dict({**base, "run_id": "tie", "margin": 0.0, "max_latency_ratio": 100.0,
                                        "max_size_ratio": 100.0}))
    assert tie["decision"] == "promoted" and tie["version"] == "3", tie
    assert str(client.get_model_version_by_alias("bibtex", CHAMPION).version) == "3"
    assert str(client.get_model_version_by_alias("bibtex", PREVIOUS_CHAMPION).version) == "1"


@pytest.fixture(scope="module")
def raw_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from xmc.research.synth import SynthSpec, write

    return write(SynthSpec(n_labels=24, n_features=300, seed=1), tmp_path_factory.mktemp("raw") / "corpus",
                 500, 120, "jsonl")


def test_raw_nightly_pyfunc_by_alias_and_parquet_batch_predict(raw_corpus: Path, tmp_path: Path) -> None:
    """Spark featurize -> train -> register; the champion loads as a pyfunc predicting raw text, and
    the batch job scores parquet in row batches with the registered model."""
    import mlflow

    from xmc.cli.predict import main as predict_main
    from xmc.engines.spark.session import spark_session

    spark, created = spark_session("local[2]", {"spark.ui.enabled": "false",
                                                "spark.sql.shuffle.partitions": "2"})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = NightlyParams(input=str(raw_corpus / "train.jsonl"), eval_input=str(raw_corpus / "test.jsonl"),
                           model_name="tags", tracking_uri=uri, work_dir=str(tmp_path / "nights"),
                           run_id="d1", latency_repeats=1,
                           train=XMCParams().replace(max_leaf_size=8, rounds=1))
    try:
        first = run_nightly(params)
    finally:
        if created:
            spark.stop()
    assert first["decision"] == "promoted"
    assert (tmp_path / "nights" / "d1" / "bundle" / "manifest.json").is_file()
    assert first["candidate"]["metrics"]["P@1"] > 30, first

    mlflow.set_tracking_uri(uri)
    texts = [json.loads(line)["text"] for line in (raw_corpus / "test.jsonl").read_text().splitlines()[:7]]
    out = mlflow.pyfunc.load_model(f"models:/tags@{CHAMPION}").predict(texts, params={"topk": 3})
    assert len(out) == 7 and all(len(labels) == 3 for labels in out["labels"])

    docs = tmp_path / "docs.parquet"
    ids = [f"d{i}" for i in range(len(texts))]
    pq.write_table(pa.table({"id": ids, "text": texts}), docs, row_group_size=3)
    pred = tmp_path / "out" / "pred.parquet"
    assert predict_main(["--model", f"models:/tags@{CHAMPION}", "--tracking-uri", uri, "--input", str(docs),
                         "--out", str(pred), "--topk", "3", "--batch-rows", "2"]) == 0
    table = pq.read_table(pred)
    assert table.column("id").to_pylist() == [f"d{i}" for i in range(7)]
    assert table.column("labels").to_pylist() == out["labels"].tolist()
    assert table.schema.field("scores").type == pa.list_(pa.float32())
    assert sorted(p.name for p in pred.parent.iterdir()) == ["pred.parquet"]  # no temp file left


def test_nightly_holds_out_rows_by_default() -> None:
    """Held-out curves per round unless the config says otherwise (0 trains on every row)."""
    assert NightlyParams().train.disentangle.validation_fraction == 0.1
    assert params_from_dict({"train": {"rounds": 2}}).train.disentangle.validation_fraction == 0.1
    assert params_from_dict({"train": {"validation_fraction": 0}}).train.disentangle.validation_fraction == 0
