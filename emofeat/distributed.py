"""Processes started by ``torchrun``: which one this is, and waiting for the others.

One owner for the multi-process rules: under ``torchrun --nproc_per_node N`` every process runs
the same command; ``finetune`` trains each fold with Trainer's DDP (gradients averaged over the
processes, each reading its share of every batch) and extraction fills one shard per process.
Files that describe the whole job (a run's config, a fold's saved model, summaries, records) are
written by the main process alone, and the others wait for it at :func:`barrier`.
"""

from __future__ import annotations

import os


def world_size() -> int:
    """Processes in the job (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", 1))


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return int(os.environ.get("RANK", 0))


def is_main() -> bool:
    """Whether this process writes what describes the whole job."""
    return rank() == 0


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
