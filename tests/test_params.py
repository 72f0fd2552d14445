from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

import pytest

from xmc.cli.common import add_param_flags, params_from_args
from xmc.errors import ParamError
from xmc.params import GROUPS, TreeParams, XMCParams


def test_validation_names_field_value_and_fix() -> None:
    with pytest.raises(ParamError, match=r"branching_factor=12 is invalid: use a power of two"):
        TreeParams(branching_factor=12)
    with pytest.raises(ParamError, match="unknown parameter 'max_leaf'"):
        XMCParams().replace(max_leaf=3)
    with pytest.raises(ParamError, match="beam_size='10' has the wrong type"):
        XMCParams.from_dict({"beam_size": "10"})
    with pytest.raises(ParamError,
                       match=r"feature_weight_measure='idf' is invalid: use one of \('kl', 'entropy'\)"):
        XMCParams().replace(feature_weight_measure="idf")


def test_nested_and_flat_dicts_roundtrip(tmp_path: Path) -> None:
    p = XMCParams().replace(max_leaf_size=16, cost=2, beam_size=5)
    assert p.solver.cost == 2.0 and isinstance(p.solver.cost, float)
    assert XMCParams.from_dict(p.to_dict()) == p
    assert XMCParams.from_dict({"max_leaf_size": 16, "cost": 2.0, "beam_size": 5}) == p
    (tmp_path / "p.json").write_text(json.dumps(p.to_dict()))
    assert XMCParams.from_json(tmp_path / "p.json") == p


def test_cli_flags_come_from_the_dataclasses(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    add_param_flags(parser)
    # No flags: exactly the dataclass defaults (one source of defaults).
    assert params_from_args(parser.parse_args([])) == XMCParams()
    for cls in GROUPS.values():
        for f in fields(cls):
            assert "--" + f.name.replace("_", "-") in parser.format_help()
    (tmp_path / "c.json").write_text(json.dumps({"tree": {"max_leaf_size": 8}, "beam_size": 3}))
    args = parser.parse_args(["--config", str(tmp_path / "c.json"), "--beam-size", "7",
                              "--no-normalize-rows", "--feature-weight-measure", "entropy"])
    p = params_from_args(args)
    assert (p.tree.max_leaf_size, p.predict.beam_size, p.normalize_rows) == (8, 7, False)
    assert p.solver.feature_weight_measure == "entropy"
    with pytest.raises(SystemExit):  # argparse names the choices
        parser.parse_args(["--feature-weight-measure", "idf"])


def test_params_are_frozen() -> None:
    with pytest.raises(AttributeError):
        XMCParams().tree.seed = 3  # type: ignore[misc]
