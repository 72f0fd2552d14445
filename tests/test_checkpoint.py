"""Round checkpoints: an interrupted run resumes from its last finished round without redoing it."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xmc import LocalExecutor, XMCModel, XMCParams
from xmc.core.fit import fit
from xmc.errors import BundleError
from xmc.research.synth import SynthSpec, generate

PARAMS = XMCParams().replace(max_leaf_size=16, rounds=2, validation_fraction=0.1)


class Interrupted(Exception):
    pass


class StopAtRound2(LocalExecutor):
    """A real local executor that dies (like a killed driver) when round 2 starts its gains."""

    gains_maps = 0

    def map(
        self, fn: Callable[[Any, Any], Any], shared: Any, units: Sequence[Any], *, desc: str = ""
    ) -> list[Any]:
        if desc == "gains":
            self.gains_maps += 1
            if self.gains_maps == 2:
                raise Interrupted(desc)
        return super().map(fn, shared, units, desc=desc)


@pytest.mark.parametrize("validation_fraction", [0.1, 0.0])
def test_resume_continues_after_the_last_finished_round(tmp_path: Path, validation_fraction: float) -> None:
    """With validation every round's model is complete; without it round 1's rankers are
    deferred (nothing reads them), so its bundle refuses to predict until the run finishes."""
    data = generate(SynthSpec(n_labels=160, n_features=3000, seed=3), 3000)
    X, Y = data.X, data.Y
    # features as given: with the default feature weights round 2 does not beat round 1 on these
    # held-out rows, so the run ends before the interruption (tests/test_sharded.py resumes with them)
    params = PARAMS.replace(validation_fraction=validation_fraction, feature_weight_exponent=0.0)
    full = fit(X, Y, params, executor=LocalExecutor(show_progress=False))
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Interrupted):
        fit(X, Y, params, executor=StopAtRound2(show_progress=False), checkpoint_dir=ckpt)
    saved = sorted(p.name for p in ckpt.iterdir())
    assert "state.json" in saved and "round_1" in saved
    left = json.loads((ckpt / "state.json").read_text())
    assert left["round"] == 1 and not left["finished"]
    round_1 = XMCModel.load(ckpt / "round_1")
    if validation_fraction:
        assert round_1.predict(X[:5], topk=3).nnz == 15
    else:
        assert round_1.weights[-1].nnz == 0
        with pytest.raises(BundleError, match="rankers are not trained yet"):
            round_1.predict(X[:5])
    resumed = fit(X, Y, params, executor=LocalExecutor(show_progress=False),
                           checkpoint_dir=ckpt, resume=True)
    records = resumed.info["rounds"]
    assert [r["round"] for r in records] == [r["round"] for r in full.info["rounds"]]
    # round 1 was not redone: its record, timings included, is the interrupted run's own
    assert records[1] == left["records"][1]
    assert records[1]["seconds"] != full.info["rounds"][1]["seconds"]  # timings differ run to run
    assert np.array_equal(resumed.tree.copy_label, full.tree.copy_label)
    for a, b in zip(resumed.weights, full.weights, strict=True):
        assert abs(a - b).max() == 0
    assert resumed.info["best_round"] == full.info["best_round"]
    with pytest.raises(BundleError, match="other params"):
        fit(X, Y, params.replace(max_copies=3), checkpoint_dir=ckpt, resume=True)
    with pytest.raises(BundleError, match="other training data"):
        fit(X[:-1], Y[:-1], params, checkpoint_dir=ckpt, resume=True)


def test_only_execution_params_may_differ_on_resume() -> None:
    """How the dense step is spread (dense_workers) may change between the run and its resume;
    anything that changes what is computed may not, dense params included."""
    from xmc.io.checkpoint import resumable_params

    base = XMCParams().replace(dense="prime")
    assert resumable_params(base.replace(dense_workers=4).to_dict()) == resumable_params(base.to_dict())
    for changed in (base.replace(dense_epochs=3), base.replace(max_copies=3), base.replace(dense="none")):
        assert resumable_params(changed.to_dict()) != resumable_params(base.to_dict())
