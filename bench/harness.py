"""What the peer benchmarks share: the systems, the peers' virtual environment, one guarded run.

bench/compare.py (the side-by-side table) and bench/scale.py (the scale curve) both train every
system in a process of its own (bench/peers/runner.py) on the same prepared files, watch its
memory and time, and score its top-5 with the product's metric code, so no system is measured
or scored differently from another. Peers run in bench/.peers-venv, made here from
bench/peers/requirements*.txt on first use, so the product's environment never sees numpy<2.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from xmc.core.metrics import evaluate
from xmc.core.sparse import csr, normalize_rows
from xmc.io.files import atomic_dir
from xmc.io.readers import read_npz, write_npz

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / "peers"
PEERS_VENV = ROOT / "bench" / ".peers-venv"
RUNNER = PEERS / "runner.py"
RESULTS = ROOT / "bench" / "results"
PAPER = "paper-round-pecos"
"""The opt-in system that runs the paper's own round on PECOS."""
PAPER_SOURCE = "XMC_PAPER_ROUND_SRC"
"""Environment variable naming amzn/pecos's examples/overlap-xmc folder for the opt-in
paper-round-pecos system (bench/peers/runner.py reads the same name in the peers' interpreter)."""
WORK = ROOT / "runs" / "bench"
THREADS = os.cpu_count() or 1
"""Every system gets every core of the machine (its own default on a dedicated box)."""


@dataclass(frozen=True)
class System:
    """An engine with fixed params: what a user of that tool would run."""

    name: str
    engine: str
    params: dict[str, Any]
    about: str
    seeded: str | None = "seed"
    """Name of the engine's seed param (None: the engine takes no seed)."""

    @property
    def ours(self) -> bool:
        return self.engine == "xmc"


SYSTEMS = {s.name: s for s in [
    System("xmc-disentangled", "xmc", {}, "ours: the product's defaults (lambda 2, R = 1 round)"),
    System("xmc-baseline", "xmc", {"rounds": 0}, "ours: single partition (R = 0)"),
    System("xmc-trees3", "xmc", {"n_trees": 3, "max_leaf_size": 100},
           "ours: an ensemble of 3 trees (--n-trees 3), the default tree otherwise"),
    System("pecos-xrlinear", "pecos", {}, "PECOS XR-Linear defaults (16-way k-means, leaf 100, beam 10)"),
    System("omikuji-parabel", "omikuji", {}, "omikuji defaults = Parabel (3 trees, 2-way, leaf 100)",
           seeded=None),
    System("omikuji-bonsai", "omikuji", {"cluster_k": 100, "cluster_balanced": False, "max_depth": 3},
           "omikuji Bonsai settings (3 trees, 100-way, depth 3)", seeded=None),
    System("napkinxc-plt", "napkinxc", {}, "napkinXC PLT defaults (2-way k-means, leaf 100)"),
]}
"""The table's rows, ours first. Small-leaf datasets pass their leaf size to ours (``Dataset.ours``)."""
OPT_IN = {s.name: s for s in [
    System("xmc-prime", "xmc", {"dense": "prime"},
           "ours + the PRIME dense part fused with the tree (--dense prime); opt-in: its fit takes minutes"),
    System(PAPER, "paper-round", {"nr_splits": 32},
           "the paper's own round on PECOS XR-Linear as its run_base.sh runs it (amzn/pecos "
           "examples/overlap-xmc: 32-way k-means, lambda 2, beam 10); opt-in: needs that folder in "
           f"${PAPER_SOURCE}"),
]}
"""Systems run only when named in ``--systems`` (not in the default table: too slow for every run)."""


@dataclass(frozen=True)
class Outcome:
    """One system on one dataset with one seed: a status, and figures when it finished."""

    system: str
    dataset: str
    seed: int
    status: str
    """ok, timeout, out of memory, or error (with the last line of its log)."""
    fit_s: float | None = None
    predict_s: float | None = None
    peak_rss_mib: float | None = None
    model_bytes: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)
    """Seconds of the fit's stages where the engine tells them apart (base, round)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stamp() -> str:
    h = hashlib.sha256()
    for name in ("requirements.txt", "requirements-nodeps.txt"):
        h.update((PEERS / name).read_bytes())
    return h.hexdigest()


def peer_python() -> Path:
    """The peers' interpreter; builds bench/.peers-venv the first time (about a minute)."""
    python = PEERS_VENV / "bin" / "python"
    stamp = PEERS_VENV / ".installed"
    if python.exists() and stamp.exists() and stamp.read_text() == _stamp():
        return python
    print(f"creating the peers' environment in {PEERS_VENV} (libpecos, omikuji, napkinxc)", flush=True)
    shutil.rmtree(PEERS_VENV, ignore_errors=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(PEERS_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(PEERS / "requirements.txt")], check=True)
    subprocess.run([*pip, "--no-deps", "-r", str(PEERS / "requirements-nodeps.txt")], check=True)
    subprocess.run([str(python), "-c", "import pecos.xmc.xlinear, omikuji, napkinxc.models, numba"],
                   check=True)
    stamp.write_text(_stamp())
    return python


def prepare(folder: Path, X: sp.spmatrix, Y: sp.spmatrix, Xt: sp.spmatrix, Yt: sp.spmatrix,
            about: dict[str, Any]) -> Path:
    """Write one dataset as every system reads it: L2-normalised float32 rows, 0/1 labels."""
    with atomic_dir(folder) as tmp:
        for name, M in (("X.trn", normalize_rows(csr(X))), ("X.tst", normalize_rows(csr(Xt))),
                        ("Y.trn", csr(Y)), ("Y.tst", csr(Yt))):
            write_npz(tmp / f"{name}.npz", M)
        shapes = {"n_train": X.shape[0], "n_test": Xt.shape[0], "n_features": X.shape[1],
                  "n_labels": Y.shape[1]}
        (tmp / "about.json").write_text(json.dumps({**about, **shapes}, indent=2))
    return folder


def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run(system: System, data: Path, work: Path, *, seed: int = 0, extra: dict[str, Any] | None = None,
        timeout_s: float = 1800, memory_gib: float = 20.0) -> Outcome:
    """Train and predict in a child process; kill it past ``timeout_s`` or ``memory_gib`` RSS."""
    params = {**(extra or {}), **system.params}  # a system's own params win over the dataset's
    if system.seeded:
        params[system.seeded] = seed
    python = sys.executable if system.ours else str(peer_python())
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cmd = [python, str(RUNNER), "--engine", system.engine, "--data", str(data), "--work", str(work),
           "--params", json.dumps(params), "--threads", str(THREADS)]
    env = {**os.environ, "XMC_PROGRESS": "0"}
    with open(work / "log.txt", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        t0, status = time.monotonic(), "ok"
        while proc.poll() is None:
            if _rss_mib(proc.pid) > memory_gib * 1024:
                proc.kill()
                status = f"out of memory (> {memory_gib:g} GiB)"
            elif time.monotonic() - t0 > timeout_s:
                proc.kill()
                status = f"timeout (> {timeout_s:g} s)"
            time.sleep(0.2)
    base = Outcome(system.name, data.name, seed, status)
    if status != "ok":
        return base
    if proc.returncode != 0:
        lines = (work / "log.txt").read_text(errors="replace").strip().splitlines() or ["(no output)"]
        return Outcome(system.name, data.name, seed, f"error (exit {proc.returncode}): {lines[-1][:200]}")
    res = json.loads((work / "result.json").read_text())
    pred = np.load(work / "pred.npz")
    return Outcome(system.name, data.name, seed, "ok", res["fit_s"], res["predict_s"], res["peak_rss_mib"],
                   res["model_bytes"], score(data, pred["indices"]), res.get("stages", {}))


def score(data: Path, indices: np.ndarray) -> dict[str, float]:
    """P@1/3/5, nDCG@5 and PSP@5 (propensities from the training labels) of a top-k index array."""
    Y, Yt = read_npz(data / "Y.trn.npz", binary=True), read_npz(data / "Y.tst.npz", binary=True)
    n, k = indices.shape
    ok = indices >= 0
    rank_score = np.broadcast_to(np.arange(k, 0, -1, dtype=np.float32), (n, k))  # order is all that counts
    P = sp.csr_matrix((rank_score[ok], (np.nonzero(ok)[0], indices[ok])), shape=Yt.shape)
    m = evaluate(Yt, P, (1, 3, 5), label_counts=np.asarray(Y.sum(0)).ravel(), n_train=Y.shape[0])
    return {key: m[key] for key in ("P@1", "P@3", "P@5", "nDCG@5", "PSP@5")}
