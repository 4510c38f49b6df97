"""Devices and numeric precision: which device ``auto`` means, whether a precision is usable
there, autocast, and peak memory. Training, extraction and fusion all ask this module."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from emofeat.errors import EmofeatError

log = logging.getLogger(__name__)
# torch is imported by the functions that use it, so the command line starts without it.
PRECISION_NAMES = ("fp32", "bf16", "fp16")  # fp32: no autocast
DEVICES = ("auto", "cpu", "cuda")


def pick_device(device: str) -> str:
    """``auto`` → the ``EMOFEAT_DEVICE`` environment variable when set, else ``cuda`` when
    available, else ``cpu``."""
    import torch

    if device == "auto":
        device = os.environ.get("EMOFEAT_DEVICE", "") or (
            "cuda" if torch.cuda.is_available() else "cpu"
        )
    if device == "cuda" and not torch.cuda.is_available():
        raise EmofeatError("--device cuda asked for, but no CUDA device is available")
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX). Elsewhere torch emulates it:
    measured on an AVX2-only AMD EPYC here, a bf16 matmul was ~140x slower than fp32."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability().upper()
    if "BF16" in capability or "AMX" in capability:
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def check_precision(precision: str, device: str) -> Any:
    """The autocast dtype of ``--precision`` on ``device``; an error where it cannot run, a
    warning where it runs emulated."""
    import torch

    if precision not in PRECISION_NAMES:
        raise EmofeatError(f"--precision must be one of {list(PRECISION_NAMES)}, got {precision!r}")
    if device == "cpu" and precision == "fp16":
        raise EmofeatError(
            "--precision fp16 needs a GPU; on CPU use bf16 (fast on CPUs with AVX512-BF16/AMX) or fp32"
        )
    if device == "cpu" and precision == "bf16" and not cpu_has_native_bf16():
        log.warning(
            "--precision bf16 on a CPU without native bf16 (AVX512-BF16/AMX): torch emulates it, "
            "which was ~100x slower than fp32 on such a CPU; use fp32 here"
        )
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def peak_memory(device: str) -> str:
    """Peak device memory (CUDA) or peak resident memory of the process (CPU), as words."""
    if device.startswith("cuda"):
        import torch

        return f"peak device memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
    import resource

    return (
        f"peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
    )
