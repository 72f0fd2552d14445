"""bench/select_defaults.py: its table and its refusals (the fits themselves are the bench's)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import select_defaults as sd  # noqa: E402


def test_table_gives_each_set_and_the_mean_change_from_default() -> None:
    row = {"P@1": 60.0, "P@5": 30.0, "fit_s": 1.0}
    results = {"default": {"a": row, "b": {**row, "P@1": 40.0}},
               "x": {"a": {**row, "P@1": 61.0}, "b": {**row, "P@1": 40.5}}}
    lines = sd.table(results, ["a", "b"]).splitlines()
    assert lines[2] == "| default | 60.00 / 30.00 (1.0) | 40.00 / 30.00 (1.0) | 50.00 | +0.00 |"
    assert lines[3].endswith("| 50.75 | +0.75 |")


def test_paired_changes_name_the_sets_lost_beyond_noise() -> None:
    """Set a loses 0.3 on every split (steady: beyond noise); b loses 0.3 on average but swings by
    +-1 (within noise); c gains."""
    def row(p1: list[float]) -> dict[str, object]:
        return {"P@1": sum(p1) / len(p1), "P@5": 20.0, "fit_s": 1.0, "split_P@1": p1, "split_P@5": [20.0] * 3}

    results = {"default": {"a": row([60, 61, 62]), "b": row([40, 41, 42]), "c": row([50, 50, 50])},
               "x": {"a": row([59.7, 60.7, 61.7]), "b": row([41.1, 39.0, 42.0]), "c": row([51, 51, 51])}}
    d, se = sd.paired(results["x"]["b"], results["default"]["b"], "P@1")
    assert d == pytest.approx(-0.3) and se == pytest.approx(0.9074, abs=1e-4)
    line = sd.changes_table(results, ["a", "b", "c"]).splitlines()[2]
    assert line.startswith("| x | -0.30 +- 0.00 / +0.00 | -0.30 +- 0.91 / +0.00 | +1.00 +- 0.00 / +0.00 |")
    assert line.endswith("| +0.13 | a |")


def test_unknown_set_variant_or_field_is_refused_before_any_fit(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        sd.main(["--sets", "nope", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        sd.main(["--variants", "nope", "--out", str(tmp_path)])
    with pytest.raises(Exception, match="no_such_field"):
        sd.main(["--sets", "bibtex", "--variants", "--params", '{"no_such_field": 1}',
                 "--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())


def test_validation_rows_lose_the_features_no_fitting_row_has() -> None:
    """As a test row loses words outside the training vocabulary: feature 2 occurs in no fitting row."""
    import numpy as np
    import scipy.sparse as sp

    Xt = sp.csr_matrix(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    Xv = sp.csr_matrix(np.array([[0.6, 0.0, 0.8], [0.0, 0.0, 1.0]]))
    _, _, kept, _ = sd.unseen_dropped(Xt, None, Xv, None)
    assert kept.toarray().tolist() == [[0.6, 0.0, 0.0], [0.0, 0.0, 0.0]] and kept.nnz == 1
    assert Xv.nnz == 3  # the caller's matrix is left as it was
