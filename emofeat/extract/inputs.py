"""Extraction inputs: which rows are computed together, and batches that arrive ready to compute.

The order (:func:`plan_batches`): pending rows are taken in windows of consecutive store rows,
and inside a window sorted by length into batches (speech: by padded duration, so padding stays
under ~10 %). A window's results are written as one contiguous block of the store instead of
one scattered write per row (see :func:`emofeat.store.StoreWriter.write`), and a kill loses at
most one window.

The inputs (:func:`batch_loader`, :func:`to_device`): a ``torch.utils.data.DataLoader`` whose
worker processes read, resample and normalise audio (or tokenise text) into padded tensors,
which arrive in the main process in pinned memory on CUDA and are copied to the device on a side
stream, so the copy of one batch overlaps the compute of the one before. The main process only
launches forward passes and writes results.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from emofeat.errors import EmofeatError

if TYPE_CHECKING:
    from emofeat.corpus.manifest import Manifest
    from emofeat.encoders.base import Encoder


@dataclass
class Planned:
    """One batch of the plan: the fold models that compute it, its rows, and whether it ends a
    window (its results and the window's are then written)."""

    models: list[int]
    rows: np.ndarray
    ends_window: bool = False
    # One row too long for a batch is computed in parts: (first piece, stop) of its pieces,
    # and whether this is its last part (the row is then finished and written).
    part: tuple[int, int] | None = None
    last_part: bool = True


def plan_batches(
    encoder: Encoder,
    groups: list[tuple[list[int], np.ndarray, np.ndarray]],
    *,
    window: int,
    batch_size: int,
    batch_seconds: float,
) -> list[Planned]:
    """Batches for ``groups`` of (fold models, rows, row lengths), window by window.

    A window holds ``window`` consecutive pending rows (in store order) of every group; inside
    it each group's rows are batched by the encoder (similar lengths together), and a row too
    long for one batch becomes consecutive batches of parts of its pieces
    (:meth:`~emofeat.encoders.base.Encoder.row_parts`): memory follows ``batch_seconds``, not the
    length of the longest clip."""
    everything = np.sort(np.concatenate([rows for _, rows, _ in groups])) if groups else []
    plan: list[Planned] = []
    for start in range(0, len(everything), max(1, window)):
        inside = everything[start : start + window]
        lo, hi = inside[0], inside[-1]
        for models, rows, lengths in groups:
            keep = (rows >= lo) & (rows <= hi)
            if keep.any():
                batches = encoder.batches(
                    rows[keep], lengths[keep], batch_size=batch_size, batch_seconds=batch_seconds
                )
                length_of = dict(zip(rows[keep].tolist(), lengths[keep].tolist()))
                for b in batches:
                    parts = None
                    if len(b) == 1:
                        parts = encoder.row_parts(length_of[int(b[0])], batch_seconds=batch_seconds)
                    if not parts:
                        plan.append(Planned(models, b))
                        continue
                    plan += [
                        Planned(models, b, part=p, last_part=j == len(parts) - 1)
                        for j, p in enumerate(parts)
                    ]
        plan[-1].ends_window = True
    return plan


@dataclass
class Batch:
    """A batch ready to compute: its rows, which row each piece belongs to, the encoded inputs,
    the rows that could not be read (with the reason), audio seconds, and the seconds its worker
    spent reading and encoding it."""

    models: list[int]
    rows: np.ndarray
    owner: np.ndarray
    inputs: dict[str, torch.Tensor]
    failed: list[tuple[int, EmofeatError]] = field(default_factory=list)
    units: float = 0.0
    input_seconds: float = 0.0
    ends_window: bool = False
    over_limit: int = 0  # rows whose input exceeded the encoder's limit
    part: tuple[int, int] | None = None  # see Planned
    last_part: bool = True

    @property
    def finished(self) -> int:
        """Rows this batch finishes (a part other than a row's last finishes none)."""
        return len(self.rows) if self.last_part else 0

    def pin_memory(self) -> Batch:
        """Called by the DataLoader's pinning thread (CUDA): page-locked inputs copy to the
        device without blocking the host."""
        self.inputs = {k: v.pin_memory() for k, v in self.inputs.items()}
        return self


class BatchSource(Dataset):
    """The planned batches of a manifest; item ``i`` reads and encodes batch ``i``. A row that
    cannot be read is returned with its error (the main process decides: raise it or skip)."""

    def __init__(self, manifest: Manifest, encoder: Encoder, plan: list[Planned], *, min_len: int):
        self.manifest, self.encoder, self.plan, self.min_len = manifest, encoder, plan, min_len

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> Batch:
        start = time.perf_counter()
        planned = self.plan[i]
        rows, pieces, counts, failed, units, per_row = [], [], [], [], 0.0, []
        for r in planned.rows:
            try:
                got = self.encoder.load_pieces(self.manifest, int(r), self.min_len, planned.part)
            except EmofeatError as err:
                failed.append((int(r), err))
                continue
            rows.append(int(r))
            pieces += got
            counts.append(len(got))
            units += self.encoder.piece_units(got)
            per_row.append(got)
        inputs = self.encoder.encode(pieces) if pieces else {}
        if planned.part is not None:  # a row in parts exceeds the limit: counted once
            over = int(planned.last_part and bool(pieces))
        else:
            over = self.encoder.count_over_limit(per_row, inputs) if pieces else 0
        return Batch(
            planned.models,
            np.asarray(rows, dtype=np.int64),
            np.repeat(np.arange(len(rows)), counts),
            inputs,
            failed,
            units,
            time.perf_counter() - start,
            planned.ends_window,
            over,
            planned.part,
            planned.last_part,
        )


def _as_is(batch: Batch) -> Batch:
    return batch


def _close_in_worker(fds: tuple[int, ...], worker_id: int) -> None:
    """A forked worker's copies of the parent's descriptors that must not outlive the parent
    (the store writer's lock: a worker still alive after a kill would look like a live writer)."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def default_workers(device: str) -> int:
    """Input workers when not given. On a CPU none: the model's threads use every core, and a
    worker beside them slowed the forward passes more than it saved (deep wav2vec2, 1,500 clips,
    2 cores: forward 24.4 -> 27.2 s, the loop 28.8 -> 30.8 s; ``benchmarks/extract_bench.py
    --size deep --clips 1500 --fp32-only --workers 1``). On a GPU host up to 8 (the host's cores
    are free while the device computes)."""
    if not device.startswith("cuda"):
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def batch_loader(
    source: BatchSource, *, workers: int, device: str, close_fds: Iterable[int] = ()
) -> DataLoader:
    """A DataLoader over ``source`` (batches in plan order) with ``workers`` processes (0: read
    in the main process), pinning memory for CUDA."""
    fork = workers > 0 and "fork" in multiprocessing.get_all_start_methods()
    return DataLoader(
        source,
        batch_size=None,  # items are whole batches
        shuffle=False,
        num_workers=workers,
        collate_fn=_as_is,
        pin_memory=device.startswith("cuda"),
        # Forked workers start at once (no re-import of torch) and share the manifest;
        # they never touch the open store, and close their copy of its lock.
        multiprocessing_context="fork" if fork else None,
        worker_init_fn=partial(_close_in_worker, tuple(close_fds)) if fork else None,
        prefetch_factor=2 if workers > 0 else None,
    )


def stop_workers(batches: Iterator[Batch]) -> None:
    """Stop the worker processes of an unfinished DataLoader iteration now. torch has no public
    call for it: its iterator does this in ``__del__``, which runs whenever garbage collection
    gets to it (later, when a traceback or a reference cycle holds it)."""
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def to_device(batches: Iterable[Batch], device: str) -> Iterator[Batch]:
    """``batches`` with their inputs on ``device``. On CUDA each copy is issued on a side stream
    as the batch is taken, i.e. while the device still computes the previous batch, and the
    compute stream waits for it; elsewhere the inputs stay where they are (the CPU computes)."""
    if not device.startswith("cuda"):
        yield from batches
        return
    copy_stream = torch.cuda.Stream(device=device)
    for batch in batches:
        with torch.cuda.stream(copy_stream):
            batch.inputs = {k: v.to(device, non_blocking=True) for k, v in batch.inputs.items()}
        compute = torch.cuda.current_stream(device)
        compute.wait_stream(copy_stream)
        for v in batch.inputs.values():
            v.record_stream(compute)  # the allocator must not reuse them before compute is done
        yield batch
