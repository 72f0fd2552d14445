"""Train and predict one system on one prepared dataset, in a process of its own.

    python bench/peers/runner.py --system NAME --data DIR --work DIR [--params JSON] [--threads N]

Runs under the product's interpreter for ``xmc-*`` systems and under the peers' virtual
environment (bench/peers/requirements.txt) for the others, so each process imports only one
system and its peak RSS is that system's alone. DIR holds ``X.trn.npz``, ``Y.trn.npz`` and
``X.tst.npz`` (scipy CSR, rows already L2-normalised: every system sees the same features).
Writes ``WORK/pred.npz`` (``indices``/``scores``, n_test x k, -1 = no label) and
``WORK/result.json`` (fit_s, predict_s, peak_rss_mib, model_bytes, the params used). Evaluation
is not done here: the harness scores every system's predictions with the same code
(``xmc.core.metrics``). Only numpy and scipy are imported at top level, so this file runs in either env.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import scipy.sparse as sp

TOPK = 5
WARMUP_ROWS = 1000
"""Rows of the untimed warm-up fit every engine does first, in the same process."""
Fitted = tuple[Callable[[sp.csr_matrix], tuple[np.ndarray, np.ndarray]], Path]
"""A fitted system: predict(X) -> (indices, scores) of the top k, and the folder its model is saved in."""
STAGES: dict[str, float] = {}
"""Seconds of a fit's stages where the engine tells them apart, written to result.json beside the
whole fit time. ``round``: the reassignment rounds, ``rounds`` of them (ours: R, the paper's: 1),
each ending with every layer trained on the new clusters (ours skips the rankers of all but the
last). ``base``: what came before them, which differs by engine (ours
builds the tree and trains the matcher only, its rankers waiting for the round; the paper's fits a
whole XR-Linear model), so it is not compared."""
ROUND_STAGES = ("gains", "assign", "matcher", "rankers", "validate")
"""Our round record's timed stages (``xmc.core.disentangle``; ``validate`` is 0 without a held-out share)."""
PAPER_SOURCE = "XMC_PAPER_ROUND_SRC"
"""Environment variable naming the folder ``examples/overlap-xmc`` of a checkout of amzn/pecos:
the paper's own implementation of the round (Liu et al., NeurIPS 2021), which no package ships."""
PAPER_COPIES = 2
"""lambda of the paper's run_base.sh (``--n_copies 2``), as our default."""


def topk_from_csr(P: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top k of a sparse score matrix as dense (n x k) arrays, padded with -1 / -inf."""
    P = sp.csr_matrix(P)
    idx = np.full((P.shape[0], k), -1, dtype=np.int64)
    val = np.full((P.shape[0], k), -np.inf, dtype=np.float32)
    for i in range(P.shape[0]):
        lo, hi = P.indptr[i], P.indptr[i + 1]
        order = np.argsort(-P.data[lo:hi], kind="stable")[:k]
        idx[i, : len(order)] = P.indices[lo:hi][order]
        val[i, : len(order)] = P.data[lo:hi][order]
    return idx, val


def from_pairs(rows: list[list[tuple[int, float]]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(label, score) lists per row -> dense (n x k) arrays."""
    idx = np.full((len(rows), k), -1, dtype=np.int64)
    val = np.full((len(rows), k), -np.inf, dtype=np.float32)
    for i, pairs in enumerate(rows):
        for r, (label, score) in enumerate(pairs[:k]):
            idx[i, r], val[i, r] = label, score
    return idx, val


def fit_xmc(X: sp.csr_matrix, Y: sp.csr_matrix, p: dict[str, Any], work: Path, threads: int) -> Fitted:
    from xmc import LocalExecutor, XMCParams
    from xmc.core.fit import fit
    from xmc.core.solver import resolve_device, use_dual_cd

    params = XMCParams().replace(**p)
    # torch only where the fit runs it (PRIME, Newton-CG, a GPU), as the product loads it: importing
    # it for every run had put ~300 MiB of torch into our peak RSS on sets where it never ran
    if params.dense.dense != "none" or not use_dual_cd(params.solver, resolve_device(params.solver.device)):
        import torch

        torch.set_num_threads(threads)
    model = fit(X, Y, params)
    model.save(work / "model")
    records = model.info.get("rounds", [])
    if params.tree.n_trees == 1 and len(records) > 1:  # an ensemble's info holds one tree's rounds
        STAGES["base"] = sum(records[0]["seconds"].get(k, 0.0) for k in ("tree", "train"))
        STAGES["round"] = sum(r["seconds"].get(k, 0.0) for r in records[1:] for k in ROUND_STAGES)
        STAGES["rounds"] = len(records) - 1
    # on the peers' threads, as they predict
    executor = LocalExecutor(show_progress=False, threads=threads)
    return (lambda Xt: topk_from_csr(model.predict(Xt, topk=TOPK, executor=executor), TOPK)), work / "model"


def train_pecos(X: sp.csr_matrix, Y: sp.csr_matrix, p: dict[str, Any], threads: int) -> Any:
    """XR-Linear at PECOS's defaults: PIFA label embeddings, hierarchical k-means, its solver."""
    from pecos.xmc import Indexer, LabelEmbeddingFactory
    from pecos.xmc.xlinear.model import XLinearModel

    feat = LabelEmbeddingFactory.create(Y, X, method="pifa")
    chain = Indexer.gen(feat, indexer_type="hierarchicalkmeans", threads=threads,
                        max_leaf_size=int(p.get("max_leaf_size", 100)), nr_splits=int(p.get("nr_splits", 16)),
                        seed=int(p.get("seed", 0)))
    return XLinearModel.train(X, Y, C=chain, threads=threads)


def fit_pecos(X: sp.csr_matrix, Y: sp.csr_matrix, p: dict[str, Any], work: Path, threads: int) -> Fitted:
    beam = int(p.get("beam_size", 10))
    model = train_pecos(X, Y, p, threads)
    model.save(str(work / "model"))

    def predict(Xt: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        return topk_from_csr(model.predict(Xt, beam_size=beam, only_topk=TOPK, threads=threads), TOPK)

    return predict, work / "model"


class ListRowsLil(sp.lil_matrix):
    """A LIL matrix that takes plain lists for its ``rows`` and ``data``, as scipy 1.4 did (the
    paper's code assigns lists; today's scipy wants object arrays of lists)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("rows", "data") and not isinstance(value, np.ndarray):
            rows = np.empty(len(value), dtype=object)
            rows[:] = [list(v) for v in value]
            value = rows
        super().__setattr__(name, value)


def scipy_for_paper() -> ModuleType:
    """scipy.sparse as the paper's code expects it (its README pins scipy 1.4.1, which has no build for
    this Python): ``lil_matrix`` is ``ListRowsLil``, the rest is today's scipy. Only that assignment
    is adapted; every computation is theirs."""
    shim = ModuleType("scipy_sparse_for_paper")
    shim.__dict__.update(sp.__dict__)
    setattr(shim, "lil_matrix", ListRowsLil)  # noqa: B010 (a module attribute mypy cannot see)
    return shim


def copies_to_labels(copy_of: np.ndarray, n_labels: int) -> sp.csr_matrix:
    """(copy columns x labels) 0/1 matrix: column c of a score matrix belongs to label copy_of[c]."""
    ones = np.ones(len(copy_of), dtype=np.float32)
    return sp.csr_matrix((ones, (np.arange(len(copy_of)), copy_of)), shape=(len(copy_of), n_labels))


def mean_over_reached_copies(P: sp.csr_matrix, to_label: sp.csr_matrix) -> sp.csr_matrix:
    """A label's score: the mean of its copies' scores over the copies the row reached (the paper's
    error_analyze.py, ``merge_by="mean"``; a copy the beam never reached does not count)."""
    P = sp.csr_matrix(P)
    summed, reached = P @ to_label, P.sign() @ to_label
    return sp.csr_matrix(summed.multiply(reached.power(-1.0)))


def fit_paper_round(X: sp.csr_matrix, Y: sp.csr_matrix, p: dict[str, Any], work: Path,
                    threads: int) -> Fitted:
    """The paper's round on PECOS, as its authors ship it (examples/overlap-xmc/run_base.sh).

    XR-Linear (``fit_pecos``'s tree at run_base.sh's ``--nr-splits 32``, the system's params), then
    their ``get_topk_clusters`` (the training rows' beam matching, counts Y^T M, up to
    ``PAPER_COPIES`` clusters per label, a copy being a new label column), XR-Linear trained again
    on that chain, and at prediction the copies' scores merged by ``mean_over_reached_copies``.
    Their code is imported from ``$XMC_PAPER_ROUND_SRC``, not copied into this repository.
    """
    import importlib
    import sys
    from types import SimpleNamespace

    from pecos.utils.cluster_util import ClusterChain
    from pecos.xmc.xlinear.model import XLinearModel

    source = os.environ.get(PAPER_SOURCE)
    if not source or not (Path(source) / "reorganize_clusters.py").is_file():
        raise SystemExit(f"{PAPER_SOURCE} must name amzn/pecos's examples/overlap-xmc folder "
                         f"(holding reorganize_clusters.py); got {source!r}")
    if source not in sys.path:
        sys.path.insert(0, source)
    paper = importlib.import_module("reorganize_clusters")
    setattr(paper, "args", SimpleNamespace(n_copies=PAPER_COPIES))  # noqa: B010 (their script's global)
    setattr(paper, "smat", scipy_for_paper())  # noqa: B010
    beam = int(p.get("beam_size", 10))
    t0 = time.perf_counter()
    base = train_pecos(X, Y, p, threads)
    t1 = time.perf_counter()
    if len(base.model.model_chain) < 2:  # their matching reads the layers above the leaves
        raise SystemExit(f"the paper's round needs a tree of two layers or more; {Y.shape[1]} labels fit "
                         "in one PECOS leaf, so there are no clusters to reassign")
    C, Y_copies, mapper, _ = paper.get_topk_clusters(base, X, sp.csr_matrix(Y), beam)
    chain = ClusterChain([m.pC.buf for m in base.model.model_chain[:-1]] + [C])
    model = XLinearModel.train(X, Y_copies, C=chain, threads=threads)
    STAGES["base"], STAGES["round"], STAGES["rounds"] = t1 - t0, time.perf_counter() - t1, 1
    model.save(str(work / "model"))
    copy_of = np.arange(Y_copies.shape[1])  # columns past Y's are copies: mapper names their label
    for column, label in mapper.items():
        copy_of[column] = label
    to_label = copies_to_labels(copy_of, Y.shape[1])

    def predict(Xt: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        P = model.predict(Xt, beam_size=beam, only_topk=160, post_processor="l3-hinge", threads=threads)
        return topk_from_csr(mean_over_reached_copies(P, to_label), TOPK)

    return predict, work / "model"


def write_xc(path: Path, X: sp.csr_matrix, Y: sp.csr_matrix) -> None:
    """The Extreme Classification Repository text format omikuji reads (header N D L).

    omikuji's reader splits each line on single spaces and wants every feature strictly
    increasing, so: a row with no features is written as its labels alone (``"3,7 "`` with a
    trailing space is an empty feature token, "Failed to load data"), duplicate entries are
    summed and indices sorted. Values are written with 9 significant digits, which round-trips
    float32, so omikuji trains on the same numbers as the other systems.
    """
    X = sp.csr_matrix(X, copy=True)
    Y = sp.csr_matrix(Y, copy=True)
    X.sum_duplicates()  # also sorts the indices
    Y.sum_duplicates()
    with open(path, "w") as f:
        f.write(f"{X.shape[0]} {X.shape[1]} {Y.shape[1]}\n")
        for i in range(X.shape[0]):
            labels = ",".join(map(str, Y.indices[Y.indptr[i] : Y.indptr[i + 1]].tolist()))
            lo, hi = X.indptr[i], X.indptr[i + 1]
            feats = " ".join(f"{j}:{v:.9g}" for j, v in zip(X.indices[lo:hi].tolist(), X.data[lo:hi].tolist(),
                                                             strict=True))
            f.write(f"{labels} {feats}\n" if feats else f"{labels}\n")


def fit_omikuji(X: sp.csr_matrix, Y: sp.csr_matrix, p: dict[str, Any], work: Path, threads: int) -> Fitted:
    import omikuji

    hp = omikuji.Model.default_hyper_param()
    for name, value in p.items():
        if name != "beam_size":
            setattr(hp, name, value)
    model = omikuji.Model.train_on_data(str(work / "train.txt"), hp, n_threads=threads)
    model.save(str(work / "model"))
    model.init_prediction_thread_pool(threads)
    beam = int(p.get("beam_size", 10))

    def predict(Xt: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        Xt = sp.csr_matrix(Xt, copy=True)
        Xt.sum_duplicates()  # one (feature, value) pair per feature, as in training
        rows = []
        for i in range(Xt.shape[0]):
            lo, hi = Xt.indptr[i], Xt.indptr[i + 1]
            pairs = list(zip(Xt.indices[lo:hi].tolist(), Xt.data[lo:hi].tolist(), strict=True))
            rows.append(model.predict(pairs, beam_size=beam, top_k=TOPK))
        return from_pairs(rows, TOPK)

    return predict, work / "model"


def fit_napkinxc(X: sp.csr_matrix, Y: sp.csr_matrix, p: dict[str, Any], work: Path, threads: int) -> Fitted:
    from napkinxc.models import PLT

    model = PLT(str(work / "model"), threads=threads, **p)
    model.fit(X, Y)

    def predict(Xt: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        return from_pairs(model.predict_proba(Xt, top_k=TOPK), TOPK)

    return predict, work / "model"


FIT: dict[str, Callable[[sp.csr_matrix, sp.csr_matrix, dict[str, Any], Path, int], Fitted]] = {
    "xmc": fit_xmc, "pecos": fit_pecos, "omikuji": fit_omikuji, "napkinxc": fit_napkinxc,
    "paper-round": fit_paper_round,
}
"""Engines by name; a system in the harness is an engine plus params."""


def peak_rss_mib() -> float:
    """This process's high-water RSS (VmHWM). Not ru_maxrss: Linux carries that over from the
    parent across fork + exec, so every child would report at least the harness's own size."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", required=True, choices=sorted(FIT))
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--params", default="{}", help="engine params as a JSON object")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    params = json.loads(args.params)
    args.work.mkdir(parents=True, exist_ok=True)
    X = sp.load_npz(args.data / "X.trn.npz").tocsr().astype(np.float32)
    Y = sp.load_npz(args.data / "Y.trn.npz").tocsr().astype(np.float32)
    Xt = sp.load_npz(args.data / "X.tst.npz").tocsr().astype(np.float32)
    warm = args.work / "warmup"  # first-call costs (thread pools, lazy kernels) are not fit time
    warm.mkdir()
    n_warm = min(X.shape[0], WARMUP_ROWS)
    if args.engine == "omikuji":  # its Python API trains from a file only; writing it is not fit time
        write_xc(warm / "train.txt", X[:n_warm], Y[:n_warm])
        write_xc(args.work / "train.txt", X, Y)
    FIT[args.engine](X[:n_warm], Y[:n_warm], params, warm, args.threads)[0](Xt[:10])
    STAGES.clear()
    t0 = time.perf_counter()
    predict, model_path = FIT[args.engine](X, Y, params, args.work, args.threads)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    idx, scores = predict(Xt)
    predict_s = time.perf_counter() - t0
    np.savez(args.work / "pred.npz", indices=idx, scores=scores)
    result = {"engine": args.engine, "params": params, "threads": args.threads, "fit_s": fit_s,
              "predict_s": predict_s, "n_test": int(Xt.shape[0]),
              "peak_rss_mib": peak_rss_mib(),
              "model_bytes": folder_bytes(model_path), "stages": STAGES}
    (args.work / "result.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
