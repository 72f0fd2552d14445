"""PRIME on Ray Train: data-parallel training (DDP over gloo on CPU, NCCL on GPU), a checkpoint per epoch.

Each of ``dense_workers`` Ray Train workers runs ``xmc.core.dense.train.train_prime`` as one rank:
same seeded permutation, its own share of every global batch encoded, the embeddings all-gathered
so every rank computes one process's loss, gradients averaged by DDP (one process's step, split),
label centroids summed over the ranks. After each epoch rank 0 reports the epoch's record (loss and
held-out P@1, computed where the weights are) with a checkpoint: the network's arrays (``.npz``,
never pickle) and the history so far. A fit whose ``--checkpoint-dir`` holds such a checkpoint
resumes after its last epoch. Every rank stops alike after ``dense_patience`` epochs without a
better smoothed held-out score; the driver gets the best epoch's network (``best.npz``) and replays
the records to the fit's observer (MLflow), one step per epoch. A worker that dies (a crashed
process, a lost node) makes Ray Train restart the group from the last reported epoch, up to
``max_failures`` times: the ranks resume from that checkpoint as a resumed fit does.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from xmc.core.dense.train import DenseData
from xmc.params import XMCParams


def _worker_loop(config: dict[str, Any]) -> None:
    """One rank's training (runs inside a Ray Train worker)."""
    import ray
    import ray.train
    import ray.train.torch
    import torch

    from xmc.core.dense.fit import TrainingProgress, save_checkpoint
    from xmc.core.dense.train import train_prime

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    params = XMCParams.from_dict(config["params"])
    torch.set_num_threads(max(1, int(config["threads"])))
    # the object store's arrays are read-only; scipy's sparse ops write in place: own copies
    data: DenseData = copy.deepcopy(ray.get(config["data"]))
    held_out = copy.deepcopy(ray.get(config["held_out"]))
    device = config["device"]
    # every rank holds the same weights (DDP) and scores the same held-out rows: same stop decision
    restored = ray.train.get_checkpoint()  # this run's last report, after a worker failed
    if restored is not None:
        with restored.as_directory() as folder:
            run = TrainingProgress(data, held_out, params, device, Path(folder))
    else:  # the checkpoint folder of an earlier run, with --resume (None: from scratch)
        start = config["resume_from"]
        run = TrainingProgress(data, held_out, params, device, Path(start) if start else None)

    def on_epoch(epoch: int, loss: float, net: Any, training: Any) -> bool:
        record, _ = run.record(epoch, loss, net)
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:  # each reported checkpoint is whole: the last epoch and the best one
                save_checkpoint(Path(tmp), net, epoch + 1, run.history, run.best.state, training())
            ray.train.report({**record, "epochs_done": epoch + 1},
                             checkpoint=ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None)
        return run.best.stop()

    train_prime(data, params.dense, device=device, seed=params.tree.seed, rank=rank, world=world,
                net=run.net, start_epoch=run.start, on_epoch=on_epoch,
                wrap=lambda m: ray.train.torch.prepare_model(m), progress=False, state=run.state)


def train_prime_ray(
    data: DenseData, held_out: Any, params: XMCParams, *, device: str, checkpoint_dir: Path | None,
    resume: bool, observer: Any = None, max_failures: int = 0,
) -> tuple[Any, list[dict[str, Any]]]:
    """(trained net, epoch records) from ``dense_workers`` Ray Train workers on the connected Ray."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    workers = params.dense.dense_workers
    cpus = max(1, int(ray.available_resources().get("CPU", workers)) // workers)
    start_from = None
    if resume and checkpoint_dir is not None and (checkpoint_dir / "epoch.npz").exists():
        # the ranks read it (Ray Train 2.60 has no resume_from_checkpoint): on a cluster it must be
        # storage every node sees, as work_dir is
        start_from = str(checkpoint_dir)
        done = json.loads((checkpoint_dir / "history.json").read_text())["epochs_done"]
        if done >= params.dense.dense_epochs:  # nothing left to train: no worker group
            net, history = finished_net(checkpoint_dir, data, params, device, None)
            return net, notify(observer, history)
    storage = Path(tempfile.mkdtemp(prefix="xmc-ray-train-"))
    try:
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={"params": params.to_dict(), "data": ray.put(data),
                               "held_out": ray.put(held_out), "device": device, "threads": cpus,
                               "resume_from": start_from},
            torch_config=TorchConfig(backend="nccl" if device == "cuda" else "gloo"),
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=device == "cuda",
                                         resources_per_worker={"CPU": cpus}),
            run_config=RunConfig(name="xmc-prime", storage_path=str(storage),
                                 checkpoint_config=CheckpointConfig(num_to_keep=1),
                                 failure_config=FailureConfig(max_failures=max_failures)),
        )
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError("Ray Train finished without a checkpoint of the dense network")
        with result.checkpoint.as_directory() as folder:
            net, history = finished_net(Path(folder), data, params, device, checkpoint_dir)
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    return net, notify(observer, history)


def finished_net(folder: Path, data: DenseData, params: XMCParams, device: str, copy_to: Path | None
                 ) -> tuple[Any, list[dict[str, Any]]]:
    """(the best epoch's network, as the in-process fit keeps, and the epoch records) of a finished
    run's checkpoint ``folder``; its files copied to ``copy_to`` (the user's checkpoint folder)."""
    from xmc.core.dense.fit import BestEpoch, load_checkpoint

    net, _, history = load_checkpoint(folder, data.X.shape[1], data.Y.shape[1], params, device)
    best = BestEpoch(0, True)
    best.restore(history, folder, device)
    if copy_to is not None:
        copy_to.mkdir(parents=True, exist_ok=True)
        for name in ("best.npz", "history.json", "training.npz", "epoch.npz"):
            if (folder / name).exists():
                shutil.copy(folder / name, copy_to / name)
    best.load_into(net)
    return net, history


def notify(observer: Any, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tell the observer (MLflow) of every epoch record once the run is over; the records."""
    if observer is not None and hasattr(observer, "dense_epoch"):
        for record in history:
            observer.dense_epoch(record)
    return history
