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

    from xmc.core.dense.fit import (
        BestEpoch,
        epoch_record,
        load_checkpoint,
        load_training_state,
        save_checkpoint,
    )
    from xmc.core.dense.train import train_prime

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    params = XMCParams.from_dict(config["params"])
    torch.set_num_threads(max(1, int(config["threads"])))
    # the object store's arrays are read-only; scipy's sparse ops write in place: own copies
    data: DenseData = copy.deepcopy(ray.get(config["data"]))
    held_out = copy.deepcopy(ray.get(config["held_out"]))
    device = config["device"]
    net, start, state = None, 0, None
    history: list[dict[str, float]] = []
    # every rank holds the same weights (DDP) and scores the same held-out rows: same stop decision
    best = BestEpoch(params.dense.dense_patience, held_out.X.shape[0] > 0)
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            net, start, history = load_checkpoint(Path(folder), data.X.shape[1], data.Y.shape[1], params,
                                                  device)
            best.restore(history, Path(folder), device)
            state = load_training_state(Path(folder))

    def on_epoch(epoch: int, loss: float, net: Any, training: Any) -> bool:
        record = epoch_record(net, data, held_out, params, device, epoch, loss)
        history.append(record)
        best.update(record, net)
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:  # each reported checkpoint is whole: the last epoch and the best one
                save_checkpoint(Path(tmp), net, epoch + 1, history, best.state, training())
            ray.train.report({**record, "epochs_done": epoch + 1},
                             checkpoint=ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None)
        return best.stop()

    train_prime(data, params.dense, device=device, seed=params.tree.seed, rank=rank, world=world, net=net,
                start_epoch=start, on_epoch=on_epoch, wrap=lambda m: ray.train.torch.prepare_model(m),
                progress=False, state=state)


def train_prime_ray(
    data: DenseData, held_out: Any, params: XMCParams, *, device: str, checkpoint_dir: Path | None,
    resume: bool, observer: Any = None, max_failures: int = 0,
) -> tuple[Any, list[dict[str, Any]]]:
    """(trained net, epoch records) from ``dense_workers`` Ray Train workers on the connected Ray."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from xmc.core.dense.fit import BestEpoch, load_checkpoint

    workers = params.dense.dense_workers
    cpus = max(1, int(ray.available_resources().get("CPU", workers)) // workers)
    start_from = None
    if resume and checkpoint_dir is not None and (checkpoint_dir / "epoch.npz").exists():
        start_from = ray.train.Checkpoint.from_directory(str(checkpoint_dir))
    storage = Path(tempfile.mkdtemp(prefix="xmc-ray-train-"))
    try:
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={"params": params.to_dict(), "data": ray.put(data),
                               "held_out": ray.put(held_out), "device": device, "threads": cpus},
            torch_config=TorchConfig(backend="nccl" if device == "cuda" else "gloo"),
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=device == "cuda",
                                         resources_per_worker={"CPU": cpus}),
            run_config=RunConfig(name="xmc-prime", storage_path=str(storage),
                                 checkpoint_config=CheckpointConfig(num_to_keep=1),
                                 failure_config=FailureConfig(max_failures=max_failures)),
            resume_from_checkpoint=start_from,
        )
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError("Ray Train finished without a checkpoint of the dense network")
        with result.checkpoint.as_directory() as folder:
            net, _, history = load_checkpoint(Path(folder), data.X.shape[1], data.Y.shape[1], params, device)
            best = BestEpoch(0, True)
            best.restore(history, Path(folder), device)
            if checkpoint_dir is not None:
                checkpoint_dir.mkdir(parents=True, exist_ok=True)
                for name in ("best.npz", "history.json", "training.npz", "epoch.npz"):
                    if (Path(folder) / name).exists():
                        shutil.copy(Path(folder) / name, checkpoint_dir / name)
        best.load_into(net)  # the best epoch's network, as the in-process fit keeps
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    if observer is not None and hasattr(observer, "dense_epoch"):
        for record in history:
            observer.dense_epoch(record)
    return net, history
