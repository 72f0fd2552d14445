"""Round checkpoints: after every alternation round the driver saves where it stands, so an
interrupted training run continues (``--resume``) from the last finished round without redoing it.

    <folder>/state.json     last finished round, best round, round records, params, data fingerprint
    <folder>/round_<r>/     model bundle after round r (only the last and the best are kept)
    <folder>/tree_<t>/      an ensemble's tree t: a checkpoint folder of its own, as above
    <folder>/dense/         a hybrid's dense network after its last finished epoch (xmc.core.dense.fit)

A checkpoint is only resumed for the same params (but ``EXECUTION_ONLY``) and the same training
data (fingerprint of the feature and label matrices); anything else is an error, never a silent mix.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from xmc.errors import BundleError
from xmc.io.files import atomic_file, check_target
from xmc.params import XMCParams

if TYPE_CHECKING:
    from xmc.core.model import XMCModel


def fingerprint(*matrices: sp.csr_matrix) -> str:
    """sha256 over the shapes and CSR arrays of the matrices (order-sensitive, O(nnz))."""
    h = hashlib.sha256()
    for M in matrices:
        M = sp.csr_matrix(M)
        h.update(np.array(M.shape, np.int64).tobytes())
        for a in (M.indptr.astype(np.int64), M.indices.astype(np.int64), M.data.astype(np.float32)):
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


@dataclass
class RoundState:
    """Where the alternation stands after a finished round."""

    round: int
    current: XMCModel
    best: XMCModel
    best_round: int
    best_score: float
    records: list[dict[str, Any]]
    finished: bool = False


def _is_checkpoint(folder: Path) -> bool:
    """A folder holding only what checkpoints write (state.json, round_<r>/, tree_<t>/, dense/, refit/,
    temps)."""
    return all(p.name in ("state.json", "dense", "refit") or p.name.startswith((".", "round_", "tree_"))
               for p in folder.iterdir())


def check_checkpoint_folder(folder: str | Path) -> None:
    """Refuse, before any work, a file or a foreign non-empty folder as a checkpoint folder."""
    check_target(Path(folder), folder=True, owned=_is_checkpoint, what="a checkpoint folder")


EXECUTION_ONLY: dict[str, tuple[str, ...]] = {"dense": ("dense_workers",)}
"""Params a run may resume under other values of, as {section: names}: they say how the work is
spread, not what it computes. ``dense_workers`` ranks split one process's step (the same network to
float rounding), so a one-process fit stopped midway continues on Ray Train, or the other way."""


def resumable_params(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` (``XMCParams.to_dict()``) without ``EXECUTION_ONLY``: what a resume must match."""
    return {section: ({k: v for k, v in value.items() if k not in EXECUTION_ONLY.get(section, ())}
                      if isinstance(value, dict) else value)
            for section, value in params.items()}


class Checkpoint:
    def __init__(self, folder: str | Path, params: XMCParams, data_fingerprint: str) -> None:
        self.folder = Path(folder)
        self.params = params
        self.data_fingerprint = data_fingerprint
        check_checkpoint_folder(self.folder)

    def save(self, state: RoundState) -> None:
        """Bundles first, then the state file that points at them (atomic): a crash mid-save
        leaves the previous checkpoint valid."""
        self.folder.mkdir(parents=True, exist_ok=True)
        state.current.save(self.folder / f"round_{state.round}")
        best_dir = self.folder / f"round_{state.best_round}"
        if not (best_dir / "manifest.json").exists():  # an earlier best is already on disk
            state.best.save(best_dir)
        doc = {"round": state.round, "best_round": state.best_round, "best_score": state.best_score,
               "finished": state.finished, "records": state.records, "params": self.params.to_dict(),
               "data_fingerprint": self.data_fingerprint}
        with atomic_file(self.folder / "state.json") as tmp:
            tmp.write_text(json.dumps(doc, indent=2) + "\n")
        for old in self.folder.glob("round_*"):
            if old.name not in (f"round_{state.round}", f"round_{state.best_round}"):
                shutil.rmtree(old, ignore_errors=True)

    def load(self) -> RoundState | None:
        """The saved state, or None when the folder holds no checkpoint yet."""
        from xmc.core.model import XMCModel

        path = self.folder / "state.json"
        if not path.exists():
            return None
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise BundleError(f"{path}: corrupt checkpoint state (line {e.lineno}: {e.msg})") from None
        if not isinstance(doc.get("params"), dict) or (
                resumable_params(doc["params"]) != resumable_params(self.params.to_dict())):
            raise BundleError(f"{path}: the checkpoint was written with other params; resume with the "
                              "same params or use a fresh --checkpoint-dir")
        if doc.get("data_fingerprint") != self.data_fingerprint:
            raise BundleError(f"{path}: the checkpoint was written for other training data "
                              "(fingerprint differs); use a fresh --checkpoint-dir")
        current = XMCModel.load(self.folder / f"round_{doc['round']}")
        best = XMCModel.load(self.folder / f"round_{doc['best_round']}")
        return RoundState(int(doc["round"]), current, best, int(doc["best_round"]), float(doc["best_score"]),
                          list(doc["records"]), bool(doc["finished"]))
