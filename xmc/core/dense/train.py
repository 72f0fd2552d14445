"""The PRIME training loop: one process, or one rank of Ray Train's data parallelism.

Each epoch: refresh the label centroids (every rank embeds its rows, the sums are all-reduced),
then walk the rows in batches. A batch's labels are the union of its documents' labels, so each
document's negatives are the other documents' labels (with ``cluster_batches``, documents whose
labels share a tree cluster: confusable negatives). The loss runs both ways (documents -> labels,
labels -> documents). Embedding rows get sparse gradients and sparse Adam on CPU: a dense Adam
step over a 56K x 512 table was 0.33 s of every step on debian-deps.

With ``world`` > 1 (torch.distributed initialised by Ray Train) the W ranks compute what one process
computes, split: every rank holds all rows and the same seeded permutation, draws the feature
dropout of the whole global batch (``dense_batch_size`` rows) from the same generator, and encodes
its own 1/W of those rows. The document embeddings are all-gathered, so every rank scores the whole
global batch against the whole batch's labels and computes the same loss (same positives sampled).
A rank's own embeddings carry W times their gradient (``gathered``), so after DDP averages the ranks'
gradients the step is one process's step. Sharing only the negatives (each rank's loss over its own
rows) left 2 workers 0.6 P@1 behind 1 on Bibtex; sharing nothing, 1.1.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from xmc.core.dense.loss import dynamic_margin_triplet
from xmc.core.dense.net import PrimeNet
from xmc.log import progress_bar
from xmc.params import DenseParams

EpochHook = Callable[[int, float, PrimeNet, Callable[[], dict[str, np.ndarray]]], bool]
"""Called after each epoch with (epoch, this rank's mean loss, net, the training state's arrays on
demand): metrics, checkpoints. Returns True to stop training there (early stopping; every rank
decides alike from the same held-out rows)."""


@dataclass
class DenseData:
    """Training rows (L2-normalised TF-IDF) and what the prototypes read besides them."""

    X: sp.csr_matrix
    Y: sp.csr_matrix
    text: sp.csr_matrix | None
    """Label names featurized like documents (n_labels x D), or None without a vocabulary."""
    label_cluster: np.ndarray | None = None
    """Tree cluster of each label (for ``cluster_batches``)."""


def tensors(M: sp.csr_matrix, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A CSR block as (indices, indptr, values) tensors on ``device``."""
    return (torch.from_numpy(M.indices.astype(np.int64)).to(device),
            torch.from_numpy(M.indptr.astype(np.int64)).to(device),
            torch.from_numpy(M.data.astype(np.float32)).to(device))


def embed(net: PrimeNet, X: sp.csr_matrix, device: str, chunk: int = 4096) -> torch.Tensor:
    """Unit embeddings of X's rows, in chunks, without gradients."""
    with torch.no_grad():
        parts = [net.encoder(*tensors(X[a:a + chunk], device)) for a in range(0, X.shape[0], chunk)]
    return torch.cat(parts) if parts else torch.zeros(0, net.encoder.embedding.embedding_dim, device=device)


def centroids(net: PrimeNet, data: DenseData, device: str, rank: int = 0, world: int = 1) -> torch.Tensor:
    """Unit mean embedding of each label's documents (rank r embeds rows r, r + world, ...; all-reduced)."""
    rows = np.arange(rank, data.X.shape[0], world)
    E = embed(net, data.X[rows], device).cpu().numpy()
    C = torch.from_numpy(np.asarray(data.Y[rows].T.tocsr().astype(np.float32) @ E)).to(device)
    if world > 1:
        torch.distributed.all_reduce(C)
    return F.normalize(C, dim=-1)


def dropped(X: sp.csr_matrix, share: float, rng: np.random.Generator) -> sp.csr_matrix:
    """X with a random ``share`` of its entries zeroed, rows re-normalised (feature dropout)."""
    if share <= 0:
        return X
    keep = rng.random(X.nnz) >= share
    out = sp.csr_matrix((X.data * keep, X.indices, X.indptr), shape=X.shape)
    norms = np.sqrt(np.asarray(out.multiply(out).sum(axis=1)).ravel())
    out.data = (out.data / np.repeat(np.maximum(norms, 1e-12), np.diff(out.indptr))).astype(np.float32)
    return out


def batch_order(data: DenseData, params: DenseParams, rng: np.random.Generator) -> np.ndarray:
    """Row order of an epoch: shuffled, or grouped by the tree cluster of a sampled positive."""
    n = data.X.shape[0]
    if not params.cluster_batches or data.label_cluster is None:
        return rng.permutation(n)
    Y = data.Y
    counts = np.diff(Y.indptr)
    pick = Y.indptr[:-1] + (rng.random(n) * np.maximum(counts, 1)).astype(np.int64)
    key = np.where(counts > 0, data.label_cluster[Y.indices[np.minimum(pick, max(Y.nnz - 1, 0))]], -1)
    order = np.lexsort((rng.random(n), key))
    chunks = np.array_split(order, max(1, math.ceil(n / params.dense_batch_size)))
    return np.concatenate([chunks[i] for i in rng.permutation(len(chunks))])


def optimizers(net: PrimeNet, params: DenseParams, total_steps: int, sparse: bool) -> list[Any]:
    """Adam for dense weights, sparse Adam for embedding rows (CPU), both on a one-cycle schedule."""
    tables = [net.encoder.embedding, net.prototypes.free, net.prototypes.bias]
    rows = {id(t.weight) for t in tables if t is not None} if sparse else set()
    groups = [[p for p in net.parameters() if id(p) not in rows],
              [p for p in net.parameters() if id(p) in rows]]
    opts: list[torch.optim.Optimizer] = [torch.optim.Adam(groups[0], lr=params.dense_lr)]
    if groups[1]:
        opts.append(torch.optim.SparseAdam(groups[1], lr=params.dense_lr))
    scheds = [torch.optim.lr_scheduler.OneCycleLR(o, params.dense_lr, total_steps=total_steps + 1,
                                                  pct_start=0.1, cycle_momentum=False) for o in opts]
    return [opts, scheds]


def train_prime(
    data: DenseData, params: DenseParams, *, device: str, seed: int, rank: int = 0, world: int = 1,
    net: PrimeNet | None = None, start_epoch: int = 0, on_epoch: EpochHook | None = None,
    wrap: Callable[[PrimeNet], torch.nn.Module] | None = None, progress: bool = False,
    state: dict[str, np.ndarray] | None = None,
) -> PrimeNet:
    """Train (or, from ``start_epoch`` with a restored ``net``, resume) and return the network.

    ``state`` (``training_state`` of the run that saved ``net``) restores the optimizers' moments and
    the sampling generator, so a resumed run takes the steps the uninterrupted one would have.

    ``data`` holds all rows; rank r encodes its share of each global batch. ``wrap`` turns
    the net into its DDP wrapper under Ray Train. Deterministic for a seed on one device.
    """
    torch.manual_seed(seed)
    sparse = device == "cpu"
    n, L = data.Y.shape
    net = net or PrimeNet(data.X.shape[1], L, params, sparse)
    net.to(device)
    model = wrap(net) if wrap is not None else net
    # the global batch stays dense_batch_size (each rank encodes its share of it): 1 and W workers
    # take the same optimizer steps on the same loss
    local = max(1, params.dense_batch_size // world)
    steps = max(1, n // (local * world))
    opts, scheds = optimizers(net, params, steps * params.dense_epochs, sparse)
    with warnings.catch_warnings():  # replaying steps the saved run took: no optimizer step is due
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        for s in scheds:  # a resumed run continues the schedule where the checkpoint left it
            for _ in range(start_epoch * steps):
                s.step()
    T = data.text if params.label_text else None
    # the same generator on every rank: every rank samples the positives one process samples
    gen = torch.Generator(device=device).manual_seed(seed)
    if state is not None:
        restore_training_state(opts, gen, state)
    share = (lambda E: gathered(E, rank, world)) if world > 1 else None
    for epoch in range(start_epoch, params.dense_epochs):
        rng = np.random.default_rng([seed, epoch])
        C = centroids(net, data, device, rank, world) if params.centroids else None
        order = batch_order(data, params, rng)[: steps * local * world]
        batches = order.reshape(steps, world * local)
        drop_rng = np.random.default_rng([seed, epoch, 0, 1])
        total = 0.0
        for b in _progress(batches, progress, epoch):
            Yb = data.Y[b]
            labels = np.unique(Yb.indices)
            if len(labels) == 0:
                labels = np.zeros(1, dtype=np.int64)
            targets = torch.from_numpy(Yb[:, labels].toarray().astype(np.float32)).to(device)
            lab = torch.from_numpy(labels.astype(np.int64)).to(device)
            t = tensors(T[labels], device) if T is not None else None
            Xb = dropped(data.X[b], params.feature_dropout, drop_rng)[rank * local:(rank + 1) * local]
            S = model(tensors(Xb, device), lab, t, C[lab] if C is not None else None, share)
            loss = triplet(S, targets, params, gen)
            if params.dual_loss:
                loss = loss + triplet(S.T, targets.T, params, gen)
            for o in opts:
                o.zero_grad()
            loss.backward()
            for o in opts:
                o.step()
            for s in scheds:
                s.step()
            total += float(loss.detach())
        if on_epoch is not None and on_epoch(epoch, total / max(len(batches), 1), net,
                                             lambda: training_state(opts, gen)):
            break
    return net


def training_state(opts: list[torch.optim.Optimizer], gen: torch.Generator) -> dict[str, np.ndarray]:
    """What an exact resume needs besides the weights, as arrays: each optimizer's per-parameter
    moments and step (``opt<i>.<param>.<name>``; ``@py`` marks a Python number, such as SparseAdam's
    step, which must come back as one: a tensor step would put its bias correction in float32) and
    the generator that samples the positives (the batch order and feature dropout are seeded per
    epoch)."""
    out = {"generator": gen.get_state().cpu().numpy()}
    for i, o in enumerate(opts):
        for param, values in o.state_dict()["state"].items():
            for name, v in values.items():
                key = f"opt{i}.{param}.{name}" + ("" if isinstance(v, torch.Tensor) else "@py")
                out[key] = torch.as_tensor(v).detach().cpu().numpy()
    return out


def restore_training_state(opts: list[torch.optim.Optimizer], gen: torch.Generator,
                           state: dict[str, np.ndarray]) -> None:
    """``training_state``'s arrays back into freshly built optimizers and generator."""
    gen.set_state(torch.from_numpy(state["generator"].copy()))
    for i, o in enumerate(opts):
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        for key, v in state.items():
            if key.startswith(f"opt{i}."):
                _, param, name = key.split(".", 2)
                value: Any = np.array(v).item() if name.endswith("@py") else torch.from_numpy(np.array(v))
                per_param.setdefault(int(param), {})[name.removesuffix("@py")] = value
        saved = o.state_dict()
        saved["state"] = per_param
        o.load_state_dict(saved)


def gathered(E: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """The global batch's document embeddings (ranks' rows in rank order) from this rank's ``E``.

    The other ranks' rows arrive as values (the all-gather has no backward). Every rank computes the
    whole batch's loss L, but only rank r can carry it back into rank r's rows; DDP then averages the
    W ranks' gradients, so rank r's rows carry W dL/dE_r (``E + (W - 1)(E - E.detach())`` is E
    exactly, with W times its gradient) and the mean is one process's gradient. The prototypes' part
    is whole on every rank, and its mean is the same.
    """
    parts = [torch.empty_like(E) for _ in range(world)]
    torch.distributed.all_gather(parts, E.detach().contiguous())
    parts[rank] = E + (world - 1) * (E - E.detach())
    return torch.cat(parts)


def triplet(S: torch.Tensor, targets: torch.Tensor, params: DenseParams, gen: torch.Generator
            ) -> torch.Tensor:
    """The params' dynamic-margin triplet loss of the score block S."""
    return dynamic_margin_triplet(S, targets, n_negatives=params.n_negatives, margin_min=params.margin_min,
                                  margin_max=params.margin_max, tau=params.softmax_tau, generator=gen)


def _progress(batches: np.ndarray, show: bool, epoch: int) -> Any:
    """The epoch's batches, under a progress bar when one is wanted (xmc.log decides for terminals)."""
    if not show:
        yield from batches
        return
    with progress_bar(total=len(batches), desc=f"prime epoch {epoch + 1}", unit="batch") as bar:
        for b in batches:
            yield b
            bar.update(1)
