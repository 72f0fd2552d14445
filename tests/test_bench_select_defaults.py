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


def test_unknown_set_variant_or_field_is_refused_before_any_fit(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        sd.main(["--sets", "nope", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        sd.main(["--variants", "nope", "--out", str(tmp_path)])
    with pytest.raises(Exception, match="no_such_field"):
        sd.main(["--sets", "bibtex", "--variants", "--params", '{"no_such_field": 1}',
                 "--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())
