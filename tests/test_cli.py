"""The CLI as a user runs it: real subprocesses, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import scipy.sparse as sp

from tests.conftest import BIBTEX


def xmc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xmc.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_train_predict_evaluate(tmp_path: Path) -> None:
    r = xmc("train", "--x", str(BIBTEX / "bibtex_train.txt.gz"), "--model", "m",
            "--label-names", str(BIBTEX / "label_names.txt"), "--max-leaf-size", "16",
            "--beam-size", "4", "--rounds", "1", "--max-copies", "2", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    layers = json.loads(r.stdout)["layers"]
    assert layers[0] == [1837, 16] and 159 < layers[1][1] <= 2 * 159  # label copies, lambda = 2
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["params"]["tree"]["max_leaf_size"] == 16
    assert manifest["params"]["predict"]["beam_size"] == 4

    r = xmc("predict", "--model", "m", "--x", str(BIBTEX / "X.tst.npz"), "--topk", "5",
            "--out", "pred.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    pred = sp.load_npz(tmp_path / "pred.npz")
    assert pred.shape == (2515, 159) and pred.getnnz(axis=1).max() == 5  # copies merged to labels

    r = xmc("evaluate", "--y", str(BIBTEX / "Y.tst.npz"), "--pred", "pred.npz", "--model", "m",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    metrics = json.loads(r.stdout)
    assert metrics["P@1"] > 55 and {"P@5", "R@5", "nDCG@5", "PSP@5"} <= set(metrics)

    r = xmc("predict", "--model", "m", "--x", str(BIBTEX / "X.tst.npz"), "--topk", "3",
            "--out", "pred.jsonl", cwd=tmp_path)
    first = json.loads((tmp_path / "pred.jsonl").read_text().splitlines()[0])
    names = (BIBTEX / "label_names.txt").read_text().split()
    assert first["id"] == 0 and len(first["labels"]) == 3 and first["labels"][0] in names
    assert first["scores"] == sorted(first["scores"], reverse=True)
    best = pred[0].indices[pred[0].data.argmax()]
    assert first["labels"][0] == names[best]


def test_bad_input_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_text("2 3 2\n0 1:1\n1 9:1\n")
    r = xmc("train", "--x", "bad.txt", "--model", "m", cwd=tmp_path)
    assert r.returncode == 2
    assert "bad.txt:3: [features] feature 9 out of range [0, 3)" in r.stderr
    assert not (tmp_path / "m").exists()
    r = xmc("train", "--x", "bad.txt", "--model", "m", "--branching-factor", "3", cwd=tmp_path)
    assert r.returncode == 2 and "branching_factor=3 is invalid" in r.stderr
    r = xmc("predict", "--model", "nope", "--x", "bad.txt", "--out", "p.npz", cwd=tmp_path)
    assert r.returncode == 2 and "no such model folder" in r.stderr


def test_help_lists_commands_and_param_defaults(tmp_path: Path) -> None:
    r = xmc("--help", cwd=tmp_path)
    assert all(c in r.stdout for c in ("train", "predict", "evaluate"))
    r = xmc("train", "--help", cwd=tmp_path)
    text = " ".join(r.stdout.split())  # argparse wraps a help text wherever its width falls
    assert "--max-leaf-size INT Most labels" in text and "(default: 100)" in text
    assert "--clustering CLUSTERING" in text and "(default: kmeans)" in text


def test_help_loads_no_engine_and_no_numpy() -> None:
    """`xmc --help` and `xmc train --help` import no torch, numpy, Spark, Ray or MLflow (they start fast)."""
    for args in (["--help"], ["train", "--help"]):
        r = subprocess.run([sys.executable, "-X", "importtime", "-m", "xmc.cli", *args],
                           capture_output=True, text=True, check=True)
        loaded = {line.split("|")[-1].strip().split(".")[0] for line in r.stderr.splitlines()
                  if line.startswith("import time:")}
        assert "xmc" in loaded and "argparse" in loaded
        heavy = loaded & {"torch", "numpy", "scipy", "pyspark", "ray", "mlflow"}
        assert args == ["train", "--help"] or not heavy, (args, heavy)
        assert not loaded & {"torch", "pyspark", "ray", "mlflow"}, (args, loaded)


def test_cli_log_lines_follow_a_swapped_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler made on the first CLI call writes to stderr as it is at each line (a later test's
    capsys, a notebook's redirect), not to the stream of the moment it was made."""
    import io
    import logging

    from xmc.log import setup_cli_logging

    setup_cli_logging()
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)
    setup_cli_logging()  # once per process: no second handler
    logging.getLogger("xmc.check").info("a line")
    assert later.getvalue() == "xmc check: a line\n"
