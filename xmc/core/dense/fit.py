"""Fit the dense part of a model beside its trees: train, fix the prior and the fusion on held-out rows.

Called by ``xmc.core.fit.fit`` once the trees are trained on the same rows. Per epoch the held-out
P@1/P@5 of the dense part (prior gamma fitted at that epoch) is recorded and, when an observer
listens (MLflow), logged with the loss; with a checkpoint folder each epoch's network is saved
(``dense/epoch.npz``, arrays only) and a resumed fit continues after the last saved epoch.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from xmc.core.dense.fusion import fit_fusion, fit_gamma
from xmc.core.dense.model import DenseModel, dense_model_of
from xmc.core.dense.train import DenseData, tensors, train_prime
from xmc.core.solver import resolve_device
from xmc.errors import ParamError
from xmc.params import XMCParams

logger = logging.getLogger(__name__)

CHECKPOINT = "dense"
"""Subfolder of a fit's checkpoint folder holding the dense network after its last finished epoch."""


def label_text_rows(names: Sequence[str] | None, vectorizer: Any) -> sp.csr_matrix | None:
    """Label names featurized like documents (``python3-numpy`` -> 'python3 numpy'), rows L2-normalised."""
    if names is None or vectorizer is None:
        return None
    words = [re.sub(r"[^0-9A-Za-z]+", " ", n) for n in names]
    T = sp.csr_matrix(vectorizer.transform(words), dtype=np.float32)
    norms = np.sqrt(np.asarray(T.multiply(T).sum(axis=1)).ravel())
    T.data /= np.repeat(np.maximum(norms, 1e-12), np.diff(T.indptr)).astype(np.float32)
    return T


def fit_dense(
    Xt: sp.csr_matrix, Yt: sp.csr_matrix, Xv: sp.csr_matrix, Yv: sp.csr_matrix, tree_model: Any,
    params: XMCParams, *, label_text: sp.csr_matrix | None = None, checkpoint_dir: str | Path | None = None,
    resume: bool = False, observer: Any = None, executor: Any = None,
) -> tuple[DenseModel, dict[str, Any]]:
    """Train PRIME on (Xt, Yt), then fit the prior and the fusion weight on (Xv, Yv) against the trees."""
    p = params.dense
    device = resolve_device(params.solver.device)
    cluster = None
    if p.cluster_batches:  # a label's leaf cluster in the first tree (its first copy's)
        cluster = np.zeros(Yt.shape[1], dtype=np.int64)
        cluster[tree_model.tree.copy_label[::-1]] = tree_model.tree.parents[-1][::-1]
    data = DenseData(Xt, Yt, label_text if p.label_text else None, cluster)
    counts = np.asarray(Yt.sum(axis=0)).ravel()
    k = max(params.predict.topk, 10)
    held_out = HeldOut(Xv, Yv, counts, k)
    folder = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    t0 = time.perf_counter()
    if p.dense_workers > 1:  # the executor's data-parallel trainer (Ray Train): an engine, not core's
        trainer = getattr(executor, "train_dense", None)
        if trainer is None:
            raise ParamError(f"dense_workers={p.dense_workers} trains on Ray Train: use --executor ray "
                             "(or dense_workers 1)")
        net, history = trainer(data, held_out, params, device=device, checkpoint_dir=folder, resume=resume,
                               observer=observer)
    else:
        run = TrainingProgress(data, held_out, params, device, folder if resume else None)
        best = run.best

        def on_epoch(epoch: int, loss: float, net: Any, training: Any) -> bool:
            record, improved = run.record(epoch, loss, net)
            if observer is not None and hasattr(observer, "dense_epoch"):
                observer.dense_epoch(record)
            if folder is not None:
                save_checkpoint(folder, net, epoch + 1, run.history, best.state if improved else None,
                                training())
            return best.stop()

        net = train_prime(data, p, device=device, seed=params.tree.seed, net=run.net, start_epoch=run.start,
                          on_epoch=on_epoch, progress=True, state=run.state)
        best.load_into(net)
        history = run.history
    model = snapshot(net, data, device)
    if p.sense_prototypes and len(tree_model.tree.copy_label) > Yt.shape[1]:
        from xmc.core.dense.senses import copy_prototypes, copy_rows

        Yc = copy_rows(Xt, Yt, tree_model.tree, tree_model.weights, params)
        owner = tree_model.tree.copy_label.astype(np.int64)
        text = tensors(data.text, device) if data.text is not None else None
        P = copy_prototypes(net, Xt, Yc, owner, text, device).cpu().numpy().astype(np.float32)
        model = DenseModel({**model.arrays, "prototypes": P, "copy_label": owner}, model.n_labels)
    gamma, _, _ = fit_gamma(Yv, raw_scores(model, Xv, device), counts, k)
    model = model.with_fusion(0.0, 1.0, gamma, counts)
    tree_pred = tree_model.predict(Xv, topk=k, components="tree")
    idx, vals = model.topk(Xv, k, device=device)
    fusion = fit_fusion(Yv, tree_pred, idx, vals, gamma, k, p.fusion_keeps)
    model = model.with_fusion(fusion.alpha, fusion.beta, gamma, counts, fusion.kept)
    info = {"alpha": fusion.alpha, "beta": fusion.beta, "gamma": gamma, "kept": fusion.kept,
            "held_out": fusion.record, "epochs": history,
            "best_epoch": best_epoch_of(history, held_out.X.shape[0] > 0),
            "seconds": time.perf_counter() - t0, "device": device, "workers": p.dense_workers}
    return model, info


@dataclass(frozen=True)
class HeldOut:
    """The held-out rows an epoch is scored on, with the training label counts of the prior."""

    X: sp.csr_matrix
    Y: sp.csr_matrix
    counts: np.ndarray
    k: int


def epoch_record(net: Any, data: DenseData, held_out: HeldOut, params: XMCParams, device: str, epoch: int,
                 loss: float) -> dict[str, float]:
    """Loss and held-out dense P@1 and P@5 (prior fitted at this epoch) after ``epoch``; logged per epoch."""
    model = snapshot(net, data, device)
    gamma, p1, p5 = 0.0, 0.0, 0.0
    if held_out.X.shape[0]:
        gamma, p1, p5 = fit_gamma(held_out.Y, raw_scores(model, held_out.X, device), held_out.counts,
                                  held_out.k)
    logger.info("prime epoch %d/%d: loss %.4f, held-out P@1 %.2f, P@5 %.2f",
                epoch + 1, params.dense.dense_epochs, loss, p1, p5)
    return {"epoch": epoch + 1, "loss": loss, "val_P@1": p1, "val_P@5": p5, "gamma": gamma}


def snapshot(net: Any, data: DenseData, device: str) -> DenseModel:
    """The dense model of the network as it stands (centroids refreshed over the training rows)."""
    import torch

    from xmc.core.dense.train import centroids

    with torch.no_grad():
        if net.prototypes.params.centroids:
            C = centroids(net, data, device)
        else:
            C = torch.zeros(data.Y.shape[1], net.encoder.embedding.embedding_dim, device=device)
    text = tensors(data.text, device) if data.text is not None else None
    return dense_model_of(net, C, text)


def raw_scores(model: DenseModel, X: sp.csr_matrix, device: str) -> np.ndarray:
    """Dense (N x L) scores of X's rows against every label (held-out rows: small N); a label with
    several prototype rows scores their max."""
    S = model.embed(X, device) @ model.arrays["prototypes"].T
    if "copy_label" not in model.arrays:
        return S
    out = np.full((S.shape[0], model.n_labels), -np.inf, dtype=S.dtype)
    for j, label in enumerate(model.row_label):  # few copies per label: a column loop over rows
        np.maximum(out[:, label], S[:, j], out=out[:, label])
    return out


SMOOTHING = 3
"""Epochs averaged in the criterion the best epoch is chosen by: held-out (P@1 + P@5) / 2, mean of
the last 3 epochs. One epoch's held-out P@1 is noisy (Bibtex: 499 rows, one row is 0.2 points, and
it jumped 62.3 -> 64.3 -> 62.3 around epoch 7); that spike, chosen alone, cost 1.1 test P@1."""


def smoothed(history: list[dict[str, float]]) -> list[float]:
    """Per epoch, the mean held-out (P@1 + P@5) / 2 of it and the epochs before it (``SMOOTHING`` in all)."""
    scores = [(r["val_P@1"] + r.get("val_P@5", r["val_P@1"])) / 2 for r in history]
    return [float(np.mean(scores[max(0, i - SMOOTHING + 1): i + 1])) for i in range(len(scores))]


def best_epoch_of(history: list[dict[str, float]], scored: bool = True) -> int:
    """The (1-based) epoch of the best smoothed held-out score, the first of ties (without held-out
    rows: the last epoch, the one kept); 0 if no epoch."""
    if not history:
        return 0
    s = smoothed(history)
    return int(history[int(np.argmax(s)) if scored else -1]["epoch"])


class BestEpoch:
    """The network of the epoch with the best smoothed held-out score (``smoothed``), and when to stop:
    ``patience`` epochs without a better one. The dense part overfits short text: on pypi-tags
    held-out P@1 peaked at epoch 4 (47.0) and was 44.8 at epoch 20. Without held-out rows the last
    epoch is kept and training runs every epoch."""

    def __init__(self, patience: int, scored: bool) -> None:
        self.patience, self.scored = patience, scored
        self.best, self.epoch = -np.inf, -1
        self.history: list[dict[str, float]] = []
        self.state: dict[str, Any] | None = None

    def update(self, record: dict[str, float], net: Any) -> bool:
        """Record an epoch's held-out record; True when it is the best so far (its weights are copied)."""
        self.history.append(record)
        score = smoothed(self.history)[-1]
        if self.scored and score <= self.best:
            return False
        self.best, self.epoch = score, int(record["epoch"]) - 1
        self.state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        return True

    def stop(self) -> bool:
        """True once ``patience`` epochs have passed without a better smoothed score."""
        done = len(self.history) - 1
        return self.scored and self.patience > 0 and done - self.epoch >= self.patience

    def restore(self, history: list[dict[str, float]], folder: Path, device: str) -> None:
        """After a resume: the records so far and the best epoch's weights from ``best.npz``."""
        import torch

        self.history = list(history)
        if not history:
            return
        if not (folder / "best.npz").exists():  # nothing better kept: count patience from the last epoch
            self.epoch = len(history) - 1
            return
        s = smoothed(history)
        i = int(np.argmax(s)) if self.scored else len(s) - 1
        self.best, self.epoch = s[i], int(history[i]["epoch"]) - 1
        with np.load(folder / "best.npz", allow_pickle=False) as z:
            self.state = {k: torch.from_numpy(z[k]).to(device) for k in z.files}

    def load_into(self, net: Any) -> None:
        if self.state is not None:
            net.load_state_dict(self.state)


class TrainingProgress:
    """What a dense trainer keeps across epochs, in this process or on a Ray Train rank: the epoch
    records and the best epoch, and, when ``folder`` holds a checkpoint, the network, epochs done
    and optimizer state to resume from (``net`` None and ``start`` 0 otherwise)."""

    def __init__(self, data: DenseData, held_out: HeldOut, params: XMCParams, device: str,
                 folder: Path | None) -> None:
        self.data, self.held_out, self.params, self.device = data, held_out, params, device
        self.best = BestEpoch(params.dense.dense_patience, held_out.X.shape[0] > 0)
        self.net: Any = None
        self.start = 0
        self.state: dict[str, np.ndarray] | None = None
        if folder is not None and (folder / "epoch.npz").exists():
            self.net, self.start, history = load_checkpoint(folder, data.X.shape[1], data.Y.shape[1], params,
                                                            device)
            self.best.restore(history, folder, device)
            self.state = load_training_state(folder)

    @property
    def history(self) -> list[dict[str, float]]:
        """Every epoch's record so far, restored ones first (the best epoch's own list)."""
        return self.best.history

    def record(self, epoch: int, loss: float, net: Any) -> tuple[dict[str, float], bool]:
        """The epoch's record (``epoch_record``), kept; and whether it is the best so far."""
        record = epoch_record(net, self.data, self.held_out, self.params, self.device, epoch, loss)
        return record, self.best.update(record, net)


def save_checkpoint(folder: Path, net: Any, epochs_done: int, history: list[dict[str, float]],
                    best: dict[str, Any] | None = None,
                    training: dict[str, np.ndarray] | None = None) -> None:
    """The network's weights after ``epochs_done`` epochs, as arrays (never pickle), written atomically;
    ``best``: the weights of a new best epoch, saved as ``best.npz`` (kept until a better one);
    ``training``: the optimizers' and sampler's state (``train.training_state``), ``training.npz``."""
    folder.mkdir(parents=True, exist_ok=True)

    def write(name: str, state: dict[str, Any]) -> Path:  # tensors or arrays
        tmp = folder / f"{name}.tmp.npz"
        np.savez(tmp, **{k: v.detach().cpu().numpy() if hasattr(v, "detach") else v
                         for k, v in state.items()})
        return tmp

    if best is not None:
        write("best", best).replace(folder / "best.npz")
    if training is not None:
        write("training", training).replace(folder / "training.npz")
    tmp = write("epoch", net.state_dict())
    (folder / "history.json").write_text(json.dumps({"epochs_done": epochs_done, "history": history}))
    tmp.replace(folder / "epoch.npz")  # last: its presence says the epoch is complete


def load_training_state(folder: Path) -> dict[str, np.ndarray] | None:
    """The optimizers' and sampler's state saved beside ``epoch.npz`` (None in older checkpoints:
    the run then resumes with fresh optimizer moments)."""
    if not (folder / "training.npz").exists():
        return None
    with np.load(folder / "training.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load_checkpoint(folder: Path, n_features: int, n_labels: int, params: XMCParams, device: str
                    ) -> tuple[Any, int, list[dict[str, float]]]:
    """(net, epochs done, history) of a saved dense checkpoint."""
    import torch

    from xmc.core.dense.net import PrimeNet

    meta = json.loads((folder / "history.json").read_text())
    net = PrimeNet(n_features, n_labels, params.dense, device == "cpu")
    with np.load(folder / "epoch.npz", allow_pickle=False) as z:
        net.load_state_dict({k: torch.from_numpy(z[k]) for k in z.files})
    return net.to(device), int(meta["epochs_done"]), list(meta["history"])
