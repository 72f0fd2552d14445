"""Issue 21, by example: every bad input exits 2 naming the file/flag/field with no traceback and
no output; an unexpected error exits 1 with one line and a log file; a killed run's temp
siblings are cleaned by the next one; a target that is not ours is refused; a model manifest
vouches for every file it holds. (Property-based variants: tests/test_fuzz.py.)"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from tests.conftest import BIBTEX, REPO, topic_data
from xmc.cli import main
from xmc.errors import BundleError
from xmc.io.files import atomic_dir, atomic_file, clean_stale


def run_cli(argv: list[str], capsys: Any) -> tuple[int, str]:
    rc = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return rc, err


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A toy X/Y pair on disk and a model trained on it."""
    from xmc.core.fit import fit
    from xmc.params import XMCParams

    tmp = tmp_path_factory.mktemp("small")
    X, Y = topic_data(n=120, n_labels=12, d=40)
    sp.save_npz(tmp / "X.npz", X)
    sp.save_npz(tmp / "Y.npz", Y)
    fit(X, Y, XMCParams().replace(max_leaf_size=4, rounds=0)).save(tmp / "model")
    return {"dir": tmp, "X": tmp / "X.npz", "Y": tmp / "Y.npz", "model": tmp / "model"}


def _truncate(src: Path, dst: Path) -> Path:
    raw = src.read_bytes()
    dst.write_bytes(raw[: len(raw) // 2])
    return dst


# ---- bad inputs: exit 2, located, nothing written ----


def test_label_matrix_without_positives_is_refused(small: dict[str, Path], tmp_path: Path,
                                                    capsys: Any) -> None:
    sp.save_npz(tmp_path / "Y0.npz", sp.csr_matrix((120, 12), dtype=np.float32))
    for rounds in ("0", "1"):
        rc, err = run_cli(["train", "--x", str(small["X"]), "--y", str(tmp_path / "Y0.npz"),
                           "--model", str(tmp_path / "m"), "--rounds", rounds], capsys)
        assert rc == 2 and "Y0.npz" in err and "no positive label" in err
        assert not (tmp_path / "m").exists()


def test_truncated_and_foreign_npz(small: dict[str, Path], tmp_path: Path, capsys: Any) -> None:
    bad = _truncate(small["X"], tmp_path / "Xt.npz")
    rc, err = run_cli(["train", "--x", str(bad), "--y", str(small["Y"]), "--model", str(tmp_path / "m")],
                      capsys)
    assert rc == 2 and "Xt.npz" in err
    rc, err = run_cli(["predict", "--model", str(small["model"]), "--x", str(bad),
                       "--out", str(tmp_path / "p.npz")], capsys)
    assert rc == 2 and "Xt.npz" in err and not (tmp_path / "p.npz").exists()
    (tmp_path / "text.npz").write_text("hello\n")
    rc, err = run_cli(["predict", "--model", str(small["model"]), "--x", str(tmp_path / "text.npz"),
                       "--out", str(tmp_path / "p.npz")], capsys)
    assert rc == 2 and "not a zip archive" in err and "pickled" not in err


def test_predict_flags_are_checked(small: dict[str, Path], tmp_path: Path, capsys: Any) -> None:
    base = ["predict", "--model", str(small["model"]), "--x", str(small["X"])]
    for flags in (["--beam-size", "0"], ["--topk", "-3"], ["--topk", "0"], ["--batch-rows", "0"]):
        with pytest.raises(SystemExit) as e:
            main([*base, "--out", str(tmp_path / "p.npz"), *flags])
        err = capsys.readouterr().err
        assert e.value.code == 2 and flags[0] in err and ">= 1" in err
    rc, err = run_cli([*base, "--out", str(tmp_path / "p.csv")], capsys)
    assert rc == 2 and "p.csv" in err and not (tmp_path / "p.csv").exists()
    rc, err = run_cli([*base, "--out", str(small["X"])], capsys)  # the input itself
    assert rc == 2 and "--out" in err


def test_invalid_utf8_and_truncated_gzip_records(small: dict[str, Path], tmp_path: Path, capsys: Any) -> None:
    from xmc.errors import DataFormatError
    from xmc.io.readers import read_records

    good = b'{"id": "a", "text": "fine", "labels": ["x"]}\n'
    (tmp_path / "bad.jsonl").write_bytes(good + b'{"id": "b", "text": "caf\xe9", "labels": ["x"]}\n')
    with pytest.raises(DataFormatError, match=r"bad.jsonl:2: not valid UTF-8"):
        read_records(tmp_path / "bad.jsonl")
    gz = gzip.compress(good * 200)
    (tmp_path / "t.jsonl.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(DataFormatError, match=r"t.jsonl.gz:\d+: truncated or corrupt gzip"):
        read_records(tmp_path / "t.jsonl.gz")
    (tmp_path / "empty_labels.jsonl").write_bytes(b'{"id": "a", "text": "t", "labels": []}\n')
    with pytest.raises(DataFormatError, match=r"empty_labels.jsonl:1: \[labels\] labels is empty"):
        read_records(tmp_path / "empty_labels.jsonl")
    assert read_records(tmp_path / "empty_labels.jsonl", require_labels=False)[0].labels == ()
    # xmc predict --input on invalid UTF-8: exit 2 naming file and line (the model has no vectorizer,
    # but the input is read first)
    rc, err = run_cli(["predict", "--model", str(small["model"]), "--input", str(tmp_path / "bad.jsonl"),
                       "--out", str(tmp_path / "p.jsonl")], capsys)
    assert rc == 2 and "bad.jsonl:2" in err and not (tmp_path / "p.jsonl").exists()


def test_featurize_refuses_broken_gzip_before_spark(tmp_path: Path, capsys: Any) -> None:
    """Truncated .jsonl.gz and XC .gz: a message, no Java stack (checked before Spark starts)."""
    raw = (BIBTEX / "bibtex_train.txt.gz").read_bytes()
    (tmp_path / "xc.txt.gz").write_bytes(raw[: len(raw) // 2])
    gz = gzip.compress(b'{"id": "a", "text": "fine", "labels": ["x"]}\n' * 500)
    (tmp_path / "c.jsonl.gz").write_bytes(gz[: len(gz) // 2])
    for name in ("xc.txt.gz", "c.jsonl.gz"):
        rc, err = run_cli(["featurize", "--input", str(tmp_path / name), "--out", str(tmp_path / "b")],
                          capsys)
        assert rc == 2 and name in err and "gzip" in err and "at org." not in err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl.gz", "xc.txt.gz"]


# ---- internal errors: exit 1, one line, a log file ----


def test_unexpected_error_is_one_line_and_a_log(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                small: dict[str, Path], capsys: Any) -> None:
    import xmc.core.model

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("simulated bug\nsecond line")

    monkeypatch.setenv("XMC_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(xmc.core.model, "predict_ensemble", boom)
    rc, err = run_cli(["predict", "--model", str(small["model"]), "--x", str(small["X"]),
                       "--out", str(tmp_path / "p.npz")], capsys)
    lines = [line for line in err.splitlines() if line.startswith("xmc: ")]
    assert rc == 1 and len(lines) == 1 and "RuntimeError: simulated bug" in lines[0]
    log = Path(lines[0].split("full traceback in ")[1].rstrip(")"))
    assert log.parent == tmp_path / "logs" and "Traceback" in log.read_text()
    assert not (tmp_path / "p.npz").exists()


def test_an_unwritable_output_path_is_the_users_to_fix_exit_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                               small: dict[str, Path], capsys: Any) -> None:
    """--out under /sys (the kernel refuses a new folder there, even to root): exit 2, the path and
    what to do on one line, no crash log; a full disk (/dev/full, the kernel's ENOSPC) likewise."""
    from xmc.cli.common import run_main

    monkeypatch.setenv("XMC_LOG_DIR", str(tmp_path / "logs"))
    out = Path("/sys/xmc-test-out/p.npz")
    rc, err = run_cli(["predict", "--model", str(small["model"]), "--x", str(small["X"]), "--out", str(out)],
                      capsys)
    assert rc == 2 and "/sys/xmc-test-out" in err and "choose a path you can write" in err, err
    assert not out.parent.exists() and not (tmp_path / "logs").exists()

    def fill(_: Any) -> int:
        with open("/dev/full", "w") as f:
            f.write("x" * 65536)
            f.flush()
        return 0

    assert run_main(fill, argparse.Namespace()) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "free space" in err and not (tmp_path / "logs").exists()


# ---- crash consistency: temp siblings, foreign targets, nightly folders ----


def _killed_inside(kind: str, target: Path) -> None:
    """A real SIGKILL in the middle of a write (a child process enters the writer and kills itself)."""
    code = (f"import os, signal; from xmc.io.files import atomic_{kind}\n"
            f"with atomic_{kind}({str(target)!r}) as tmp:\n"
            f"    (tmp / 'part').write_text('x') if {kind == 'dir'} else tmp.write_text('x')\n"
            f"    os.kill(os.getpid(), signal.SIGKILL)\n")
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == -9


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_killed_write_leftovers_are_cleaned_by_the_next(tmp_path: Path, kind: str) -> None:
    target = tmp_path / ("out" if kind == "dir" else "out.npz")
    _killed_inside(kind, target)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "the kill left a temp sibling"
    with (atomic_dir if kind == "dir" else atomic_file)(target) as tmp:  # type: ignore[operator]
        (tmp / "part").write_text("y") if kind == "dir" else tmp.write_text("y")
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_live_writers_temps_are_kept_and_a_lost_old_is_restored(tmp_path: Path) -> None:
    live = tmp_path / f".m.{os.getppid()}-abcd1234.tmp"  # our parent is alive
    live.mkdir()
    (tmp_path / ".m.999999999-deadbeef.old").mkdir()  # killed between its two renames: m is missing
    clean_stale(tmp_path / "m")
    assert live.is_dir() and (tmp_path / "m").is_dir()


def test_foreign_targets_are_refused(small: dict[str, Path], tmp_path: Path, capsys: Any) -> None:
    mine = tmp_path / "notes.txt"
    mine.write_text("precious")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_text("precious")
    for target in (mine, folder):
        rc, err = run_cli(["train", "--x", str(small["X"]), "--y", str(small["Y"]), "--model", str(target),
                           "--max-leaf-size", "4", "--rounds", "0"], capsys)
        assert rc == 2 and str(target) in err and "refusing" in err
    assert mine.read_text() == "precious" and (folder / "a.jpg").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "photos"]
    rc, _ = run_cli(["train", "--x", str(small["X"]), "--y", str(small["Y"]), "--model", str(tmp_path / "m"),
                     "--max-leaf-size", "4", "--rounds", "0"], capsys)
    assert rc == 0
    rc, _ = run_cli(["train", "--x", str(small["X"]), "--y", str(small["Y"]), "--model", str(tmp_path / "m"),
                     "--max-leaf-size", "4", "--rounds", "0"], capsys)
    assert rc == 0  # our own model is replaced


def test_failed_nightly_leaves_no_work_folder(small: dict[str, Path], tmp_path: Path, capsys: Any) -> None:
    bad = _truncate(small["X"], tmp_path / "Xt.npz")
    config = {"x": str(bad), "y": str(small["Y"]), "eval_x": str(small["X"]), "eval_y": str(small["Y"]),
              "work_dir": str(tmp_path / "work"), "run_id": "n1",
              "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    (tmp_path / "nightly.json").write_text(json.dumps(config))
    rc, err = run_cli(["nightly", "--config", str(tmp_path / "nightly.json")], capsys)
    assert rc == 2 and "Xt.npz" in err
    assert not (tmp_path / "work" / "n1").exists()
    config["x"] = str(tmp_path / "missing.npz")
    (tmp_path / "nightly.json").write_text(json.dumps(config))
    rc, err = run_cli(["nightly", "--config", str(tmp_path / "nightly.json")], capsys)
    assert rc == 2 and "[x]" in err and "missing.npz" in err


# ---- the model manifest vouches for every file; weights are finite ----


def _rehash(folder: Path, name: str) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _edit_manifest(folder: Path, **changes: Any) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(changes)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_model_manifest_and_weights(small: dict[str, Path], tmp_path: Path, capsys: Any) -> None:
    from xmc.core.model import XMCModel

    def copy() -> Path:
        dst = tmp_path / f"m{len(list(tmp_path.iterdir()))}"
        shutil.copytree(small["model"], dst)
        return dst

    files = json.loads((small["model"] / "manifest.json").read_text())["files"]
    m = copy()
    _edit_manifest(m, files={})
    with pytest.raises(BundleError, match="lists no file"):
        XMCModel.load(m)
    m = copy()
    _edit_manifest(m, files={k: v for k, v in files.items() if k != "layer_1.npz"})
    with pytest.raises(BundleError, match="partial"):
        XMCModel.load(m)
    m = copy()
    (m / "extra.bin").write_bytes(b"planted")
    with pytest.raises(BundleError, match="extra.bin is not listed"):
        XMCModel.load(m)
    m = copy()
    _truncate(m / "layer_1.npz", m / "layer_1.npz")
    _rehash(m, "layer_1.npz")
    with pytest.raises(BundleError, match="layer_1.npz: unreadable"):
        XMCModel.load(m)
    m = copy()
    with np.load(m / "layer_1.npz") as z:
        arrays = dict(z)
    arrays["data"][0] = np.nan
    np.savez(m / "layer_1.npz", **arrays)
    _rehash(m, "layer_1.npz")
    with pytest.raises(BundleError, match="NaN"):
        XMCModel.load(m)
    m = copy()
    _edit_manifest(m, n_features=10**6)
    rc, err = run_cli(["predict", "--model", str(m), "--x", str(small["X"]),
                       "--out", str(tmp_path / "p.npz")], capsys)
    assert rc == 2 and "layer_0.npz: shape (" in err and "np.int64" not in err
