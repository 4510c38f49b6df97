"""Processes started by ``torchrun``: which one this is, and waiting for the others.

One owner for the multi-process rules: under ``torchrun --nproc_per_node N`` every process runs
the same command; ``finetune`` trains each fold with Trainer's DDP (gradients averaged over the
processes, each reading its share of every batch) and extraction fills one shard per process.
Files that describe the whole job (a run's config, a fold's saved model, summaries, records) are
written by the main process alone, and the others wait for it at :func:`barrier`.
"""

from __future__ import annotations

import os

import numpy as np


def world_size() -> int:
    """Processes in the job (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", 1))


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return int(os.environ.get("RANK", 0))


def is_main() -> bool:
    """Whether this process writes what describes the whole job."""
    return rank() == 0


def process_device(device: str) -> str:
    """The device this process computes on: under ``torchrun``, ``cuda`` means the GPU of the
    process's local rank (``cuda:LOCAL_RANK``), so the processes of one machine do not all
    share the first GPU; any other device is returned as given.

    Args:
        device: A resolved device (``cpu``, ``cuda`` or ``cuda:N``).

    Returns:
        The device string to move models and batches to.
    """
    if device != "cuda" or world_size() == 1:
        return device
    import torch

    local = int(os.environ.get("LOCAL_RANK", rank()))
    chosen = f"cuda:{local % max(torch.cuda.device_count(), 1)}"
    torch.cuda.set_device(chosen)  # side streams and memory figures follow the current device
    return chosen


def init(device: str = "cpu") -> None:
    """Join the job's process group (gloo on a CPU, NCCL on CUDA) if there are several processes
    and it is not joined yet; Trainer and accelerate then use this group."""
    if world_size() == 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")


def barrier() -> None:
    """Wait until every process of the job gets here (nothing to wait for without torchrun)."""
    if world_size() == 1:
        return
    import torch.distributed as dist

    init()
    dist.barrier()


def share(work, *, processes: int | None = None, process: int | None = None) -> np.ndarray:
    """This process's rows of a job: a boolean mask of one contiguous range of rows, cut so
    that each of the ``processes`` (default: the job's) gets about an equal part of the total
    ``work`` (a row's cost, e.g. its audio seconds times the fold models that compute it).

    Contiguous, so each process's windows of consecutive rows stay whole in its shard; a row
    goes to the process whose part holds the middle of its work, so a part differs from 1/world
    of the total by at most the largest row's work. A cut by row count would leave a process
    idle while another computes the rows five fold models predict (the test rows), or the long
    clips. Without any work (all zero) rows are cut by count."""
    world = world_size() if processes is None else processes
    this = rank() if process is None else process
    w = np.nan_to_num(np.asarray(work, dtype=np.float64), nan=0.0).clip(min=0)
    n, total = len(w), float(w.sum())
    if total > 0:
        middle = np.cumsum(w) - w / 2
        owner = np.minimum((middle * world / total).astype(np.int64), world - 1)
    else:
        owner = np.arange(n) * world // max(n, 1)
    return owner == this
