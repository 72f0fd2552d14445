"""bench/validate_peers.py: the paired lead and its refusals (the runs themselves are the bench's)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import validate_peers as vp  # noqa: E402


def test_lead_is_paired_per_split() -> None:
    """Our lead is select_defaults' paired change. The peer is 0.5 below us on every split though
    both swing by 4 points: a steady lead, se 0."""
    ours = {"split_P@1": [60.0, 64.0, 62.0]}
    peer = {"split_P@1": [59.5, 63.5, 61.5]}
    d, se = vp.paired(ours, peer, "P@1")
    assert d == pytest.approx(0.5) and se == pytest.approx(0.0, abs=1e-12)
    d, se = vp.paired(ours, {"split_P@1": [61.0, 63.0, 62.0]}, "P@1")
    assert d == pytest.approx(0.0, abs=1e-12) and se == pytest.approx(0.5774, abs=1e-4)


@pytest.mark.parametrize("args", [["--sets", "nope"], ["--systems", "nope"], ["--splits", "1"]])
def test_bad_arguments_are_refused_before_any_run(args: list[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        vp.main([*args, "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
