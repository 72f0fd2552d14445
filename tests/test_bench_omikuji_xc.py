"""The XC text file bench/peers/runner.py writes for omikuji, on the edge cases real sets have.

Real text sets have documents with no feature left after the vocabulary cut (all their words
rarer than min_df): the runner used to write such a row as ``"3,7 "``, whose trailing space
omikuji reads as an empty feature token ("Failed to load data from train.txt"). Duplicate or
unsorted entries, rows with no label and tiny values are covered too.

The first test checks the file against omikuji's parsing rules and needs nothing else. The
others load it in omikuji itself and run the omikuji engine end to end; they need the peers'
environment (bench/.peers-venv, built by the first `python bench/compare.py`) and are
skipped when it is absent.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "bench" / "peers"))
import harness  # noqa: E402
import runner  # noqa: E402

PEER_PYTHON = ROOT / "bench" / ".peers-venv" / "bin" / "python"


def has_omikuji() -> bool:
    if not PEER_PYTHON.exists():
        return False
    return subprocess.run([str(PEER_PYTHON), "-c", "import omikuji"], capture_output=True).returncode == 0


needs_omikuji = pytest.mark.skipif(not has_omikuji(), reason="bench/.peers-venv with omikuji not built")


def edge_case_set(n: int = 60, d: int = 40, n_labels: int = 8) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """A small set with a zero-feature row, a row with neither features nor labels, a label-less
    row, duplicate and unsorted entries (a raw, non-canonical CSR) and a value below 1e-6."""
    rng = np.random.default_rng(0)
    rows: list[tuple[list[int], list[float]]] = []
    labels: list[list[int]] = []
    for i in range(n):
        label = i % n_labels
        cols = sorted({int(c) for c in rng.choice(d, 5, replace=False)} | {label, label + n_labels})
        rows.append((cols, rng.random(len(cols)).tolist()))
        labels.append([label])
    rows[0] = ([], [])  # no features (every word below min_df)
    rows[1], labels[1] = ([], []), []  # nothing at all
    labels[2] = []  # no labels
    rows[3] = ([7, 3, 7, 1], [0.5, 0.25, 0.5, 1e-9])  # unsorted, feature 7 twice, a tiny value
    indptr = np.cumsum([0] + [len(c) for c, _ in rows])
    X = sp.csr_matrix((np.concatenate([v for _, v in rows]).astype(np.float32),
                       np.concatenate([c for c, _ in rows]).astype(np.int32), indptr), shape=(n, d))
    yptr = np.cumsum([0] + [len(y) for y in labels])
    Y = sp.csr_matrix((np.ones(yptr[-1], np.float32), np.concatenate(labels).astype(np.int32), yptr),
                      shape=(n, n_labels))
    return X, Y


def parse_like_omikuji(path: Path) -> tuple[int, list[list[tuple[int, float]]]]:
    """omikuji 0.5's reader (src/data.rs): header of 3 tokens; each line split on single spaces,
    the first token is the comma list of labels, every other one ``int:f32`` with the features
    strictly increasing and below D."""
    lines = path.read_text().splitlines()
    n, d, _ = (int(t) for t in lines[0].split())
    out = []
    for line in lines[1:]:
        tokens = line.split(" ")
        [int(lab) for lab in tokens[0].split(",") if lab]
        feats = []
        for tok in tokens[1:]:
            j, v = tok.split(":")  # an empty token raises here, as it fails in omikuji
            feats.append((int(j), float(v)))
        js = sorted(j for j, _ in feats)
        assert all(b > a for a, b in zip(js, js[1:], strict=False)) and all(j < d for j in js), line
        out.append(feats)
    assert len(out) == n
    return n, out


def test_written_file_follows_omikuji_rules(tmp_path: Path) -> None:
    X, Y = edge_case_set()
    runner.write_xc(tmp_path / "train.txt", X, Y)
    _, rows = parse_like_omikuji(tmp_path / "train.txt")
    assert rows[0] == [] and rows[1] == []
    assert [j for j, _ in rows[3]] == [1, 3, 7]
    assert dict(rows[3])[7] == pytest.approx(1.0) and dict(rows[3])[1] == pytest.approx(1e-9)
    Xc = X.copy()
    Xc.sum_duplicates()
    got = np.array([v for r in rows for _, v in r], np.float32)
    assert np.array_equal(got, Xc.data)  # 9 significant digits: float32 round-trips exactly


@needs_omikuji
def test_omikuji_loads_and_trains_on_the_written_file(tmp_path: Path) -> None:
    X, Y = edge_case_set()
    runner.write_xc(tmp_path / "train.txt", X, Y)
    code = ("import sys, omikuji; hp = omikuji.Model.default_hyper_param(); "
            "m = omikuji.Model.train_on_data(sys.argv[1], hp, n_threads=1); "
            "print(m.n_features, len(m.predict([], top_k=3)), len(m.predict([(8, 1.0)], top_k=3)))")
    res = subprocess.run([str(PEER_PYTHON), "-c", code, str(tmp_path / "train.txt")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1].split()[0] == "40"  # omikuji logs to stdout too


@needs_omikuji
def test_omikuji_engine_runs_end_to_end_on_zero_feature_rows(tmp_path: Path) -> None:
    X, Y = edge_case_set()
    data = harness.prepare(tmp_path / "edge", X, Y, X[:20], Y[:20], {"source": "test"})
    out = harness.run(harness.SYSTEMS["omikuji-parabel"], data, tmp_path / "run")
    assert out.status == "ok", out.status
    assert out.metrics["P@1"] > 50.0
