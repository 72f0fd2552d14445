"""The peer-benchmark harness (bench/harness.py, bench/peers/runner.py) with our engine.

The peers' own environment is not built here (a minute of installs); what is shared by every
system is: the prepared files, the guarded child process, and the scoring of its top-k.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from xmc import XMCParams
from xmc.core.metrics import evaluate
from xmc.io.readers import read_npz
from xmc.research.synth import SynthSpec, generate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import harness  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = SynthSpec(n_labels=60, n_features=800)
    tr, te = generate(spec, 1500), generate(spec, 300, "test")
    folder = tmp_path_factory.mktemp("bench") / "tiny"
    return harness.prepare(folder, tr.X, tr.Y, te.X, te.Y, {"source": "test"})


def test_prepare_normalises_rows_and_records_shapes(data: Path) -> None:
    X = read_npz(data / "X.trn.npz")
    norms = np.sqrt(np.asarray(X.multiply(X).sum(1)).ravel())
    assert np.allclose(norms[norms > 0], 1.0, atol=1e-5)
    about = json.loads((data / "about.json").read_text())
    assert (about["n_train"], about["n_test"], about["n_labels"]) == (1500, 300, 60)


def test_score_matches_the_product_metrics(data: Path) -> None:
    Yt = read_npz(data / "Y.tst.npz")
    rng = np.random.default_rng(0)
    idx = np.stack([rng.permutation(60)[:5] for _ in range(Yt.shape[0])])
    idx[:, 0] = Yt.indices[Yt.indptr[:-1]]  # every first guess right: P@1 = 100
    idx[0, 3:] = -1  # a row with only 3 predictions
    got = harness.score(data, idx)
    assert got["P@1"] == pytest.approx(100.0)
    import scipy.sparse as sp

    ok = idx >= 0
    P = sp.csr_matrix((np.broadcast_to(np.arange(5, 0, -1.0), idx.shape)[ok], (np.nonzero(ok)[0], idx[ok])),
                      shape=Yt.shape)
    want = evaluate(Yt, P, (1, 3, 5))
    for key in ("P@3", "P@5", "nDCG@5"):
        assert got[key] == pytest.approx(want[key])


def test_run_trains_and_scores_our_engine_in_a_child(data: Path, tmp_path: Path) -> None:
    out = harness.run(harness.SYSTEMS["xmc-baseline"], data, tmp_path / "run", extra={"max_leaf_size": 8})
    assert out.status == "ok", out.status
    assert out.metrics["P@1"] > 30  # 60 labels: chance is under 5
    assert out.fit_s and out.fit_s > 0 and out.model_bytes and out.model_bytes > 0
    assert out.peak_rss_mib and 50 < out.peak_rss_mib < 4096
    params = json.loads((tmp_path / "run" / "result.json").read_text())["params"]
    assert params == {"max_leaf_size": 8, "rounds": 0, "seed": 0}


def test_a_run_past_its_time_is_stopped_and_says_so(data: Path, tmp_path: Path) -> None:
    out = harness.run(harness.SYSTEMS["xmc-baseline"], data, tmp_path / "slow", timeout_s=0.5)
    assert out.status.startswith("timeout") and out.fit_s is None


def test_a_failing_run_reports_its_last_log_line(data: Path, tmp_path: Path) -> None:
    bad = harness.System("xmc-bad", "xmc", {"max_leaf_size": 0}, "invalid params")
    out = harness.run(bad, data, tmp_path / "bad")
    assert out.status.startswith("error (exit 1)") and "max_leaf_size" in out.status


def test_verdicts_name_the_best_peer_overall_and_at_the_same_leaf() -> None:
    import compare

    def row(p1: float) -> dict[str, object]:
        return {"status": "ok", "P@1": p1, "fit_s": 1.0}

    table = {"bibtex": {"xmc-disentangled": row(63.0), "omikuji-parabel": row(63.5),
                        "omikuji-parabel-leaf16": row(62.0), "pecos-xrlinear-leaf16": row(61.0),
                        "xmc-baseline": row(70.0)}}  # our other rows are never a peer
    lines = compare.verdicts(table)
    assert ("bibtex: xmc-disentangled P@1 63.00 vs best peer omikuji-parabel 63.50 (-0.50): "
            "DOES NOT LEAD") in lines
    assert ("bibtex: at the same leaf (16), xmc-disentangled P@1 63.00 vs best peer "
            "omikuji-parabel-leaf16 62.00 (+1.00): LEADS") in lines


def test_a_disentangled_run_reports_its_round_apart_from_its_base(data: Path, tmp_path: Path) -> None:
    out = harness.run(harness.SYSTEMS["xmc-disentangled"], data, tmp_path / "run", extra={"max_leaf_size": 8})
    assert out.status == "ok", out.status
    assert set(out.stages) == {"base", "round", "rounds"}
    assert out.stages["rounds"] == XMCParams().disentangle.rounds  # the system is the product's defaults
    assert out.stages["base"] > 0 and out.stages["round"] > 0
    assert out.fit_s is not None and out.stages["base"] + out.stages["round"] <= out.fit_s


def test_round_costs_hold_our_round_against_the_papers() -> None:
    import compare

    def row(fit_s: float, round_s: float, rounds: int = 1) -> dict[str, object]:
        return {"status": "ok", "fit_s": fit_s,
                "stages": {"base": fit_s - round_s, "round": round_s, "rounds": rounds}}

    table = {"a": {"xmc-disentangled": row(3.0, 1.0, 2), compare.PAPER: row(6.0, 4.0)},
             "b": {"xmc-disentangled": row(3.0, 2.0), compare.PAPER: row(2.5, 1.5)},
             "c": {"xmc-disentangled": row(3.0, 2.0)}}  # the paper's round did not run: no line
    assert compare.round_costs(table) == [
        "a: xmc-disentangled's 2 rounds 1.00 s vs the paper's one round on PECOS 4.00 s (0.25x, bar < 1: "
        "PASS); whole fit 3.00 s vs 6.00 s",
        "b: xmc-disentangled's 1 round 2.00 s vs the paper's one round on PECOS 1.50 s (1.33x, bar < 1: "
        "FAIL); whole fit 3.00 s vs 2.50 s",
    ]


def test_the_papers_round_is_refused_without_its_source() -> None:
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "XMC_PAPER_ROUND_SRC"}
    done = subprocess.run([sys.executable, str(harness.ROOT / "bench" / "compare.py"), "--sets", "bibtex",
                           "--systems", "paper-round-pecos"], env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert "XMC_PAPER_ROUND_SRC" in done.stderr and "amzn/pecos" in done.stderr


def _runner() -> ModuleType:
    sys.path.insert(0, str(harness.PEERS))
    import runner  # bench/peers/runner.py: numpy and scipy only at import

    return runner


def test_the_papers_copies_merge_by_their_mean_over_the_copies_a_row_reached() -> None:
    import scipy.sparse as sp

    runner = _runner()
    to_label = runner.copies_to_labels(np.array([0, 1, 2, 0]), 3)  # column 3: a copy of label 0
    P = sp.csr_matrix(np.array([[0.8, 0.5, 0.0, 0.4],    # both copies of label 0 reached
                                [0.0, 0.0, 0.2, 0.9]]))  # only the copy
    merged = runner.mean_over_reached_copies(P, to_label).toarray()
    np.testing.assert_allclose(merged, [[0.6, 0.5, 0.0], [0.9, 0.0, 0.2]], rtol=1e-6)


def test_the_papers_scipy_takes_lists_as_lil_rows() -> None:
    import scipy.sparse as sp

    shim = _runner().scipy_for_paper()
    assert shim.csr_matrix is sp.csr_matrix and shim.lil_matrix is not sp.lil_matrix
    lil = shim.lil_matrix((2, 3), dtype=np.float32)
    lil.rows, lil.data = [[0], [1, 2]], [[1.0], [2.0, 3.0]]  # as their construct_new_C_and_Y hands them
    np.testing.assert_array_equal(lil.tocsc().toarray(), [[1, 0, 0], [0, 2, 3]])
