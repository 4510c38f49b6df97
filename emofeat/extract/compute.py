"""The batched compute loop of extraction: pending rows in, pooled values written to the store.

Input workers read and encode the next batches while the current one computes; a batch's results
are collected one batch later (on CUDA the host launches the next batch instead of waiting for
the device), and each window of rows is written as one block (:class:`emofeat.store.buffer.WriteBehind`).
On CUDA out-of-memory a batch is split in two and retried (a single row by its windows); a clip
computed in parts carries its pooling sums from part to part.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from emofeat.corpus.manifest import Manifest
from emofeat.device import check_precision, peak_memory
from emofeat.encoders.base import EncoderOutput, Partial, inference_context
from emofeat.errors import EmofeatError, printable
from emofeat.extract.config import ExtractConfig
from emofeat.extract.inputs import (
    Batch,
    BatchSource,
    batch_loader,
    default_workers,
    plan_batches,
    stop_workers,
    to_device,
)
from emofeat.extract.models import Models
from emofeat.store.buffer import WriteBehind
from emofeat.tasks import split_outputs

log = logging.getLogger(__name__)

# Pending work: (fold models, their rows, the rows' lengths), as :func:`plan_batches` takes it.
Work = list[tuple[list[int], np.ndarray, np.ndarray]]


def compute(
    m: Manifest,
    loaded: Models,
    writer,
    todo: Work,
    *,
    names: list[tuple[str, int]],
    cfg: ExtractConfig,
    device: str,
    min_len: int,
) -> dict[str, Any] | None:
    """Compute the pending rows ``todo`` into ``writer``.

    Args:
        m, loaded: the manifest the store's rows come from; the encoder and its fold models.
        writer: the open :class:`emofeat.store.StoreWriter`.
        todo: groups of fold models, their pending rows and the rows' lengths.
        names, cfg: the stored layers (name, hidden-state index); the options as applied.
        device, min_len: where the models are; the shortest input the encoder takes.

    Returns:
        Where the time went (recorded in the store), or None when nothing was pending.

    Raises:
        EmofeatError: a row that cannot be read or gives non-finite values, without ``skip_bad``.
    """
    if not todo:
        return None
    plan = plan_batches(
        loaded.encoder,
        todo,
        window=window_rows(cfg),
        batch_size=cfg.batch_size,
        batch_seconds=cfg.batch_seconds,
    )
    workers = default_workers(device) if cfg.workers is None else cfg.workers
    progress = _Progress(sum(len(p.rows) for p in plan), writer.path.name)
    loop = _Loop(m, loaded, WriteBehind(writer), progress, names=names, cfg=cfg, device=device)
    source = BatchSource(m, loaded.encoder, plan, min_len=min_len)
    inputs_iter = iter(
        batch_loader(source, workers=workers, device=device, close_fds=writer.inherited_fds())
    )
    start = time.perf_counter()
    try:
        with inference_context(device, loop.autocast):
            for batch in _timed(
                to_device(inputs_iter, device),
                clock=loop.clock,
                workers=workers,
                stage=loaded.encoder.input_stage,
            ):
                loop.step(batch)
            loop.collect()
    except BaseException:
        # Rows computed before the failure are kept, not recomputed (unless they are the failure).
        with contextlib.suppress(Exception):
            loop.collect()
        raise
    finally:
        stop_workers(inputs_iter)  # now, not when a traceback lets go of the loader
        loop.progress.bar.close()
        with loop.clock("write"):
            loop.behind.flush()
    return _report(loop, seconds=time.perf_counter() - start, workers=workers)


def _timed(batches: Iterator[Batch], *, clock: Timings, workers: int, stage: str):
    """The batches, with the time spent encoding them (``stage``: decode, tokenise) and waiting
    for them on ``clock``."""
    while True:
        start = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            return
        waited = time.perf_counter() - start
        clock.add(stage, batch.input_seconds)
        # Without workers the main process decodes: count that once, as decoding.
        clock.add("waiting for input", waited - (0 if workers else batch.input_seconds))
        yield batch


@dataclass
class _Loop:
    """The state of one compute loop: the batch in flight, the parts so far of a row computed
    in parts, and where the time goes."""

    m: Manifest
    loaded: Models
    behind: WriteBehind
    progress: _Progress
    names: list[tuple[str, int]]
    cfg: ExtractConfig
    device: str
    clock: Timings = field(default_factory=lambda: Timings())
    in_flight: list[tuple[list[HostCopy], Batch]] = field(default_factory=list)
    carry: list[Partial] | None = None  # the parts so far of a row computed in parts
    dropped: set[int] = field(default_factory=set)  # rows in parts that failed to read

    def __post_init__(self) -> None:
        self.encoder = self.loaded.encoder
        self.layers = [i for _, i in self.names]
        self.autocast = check_precision(self.cfg.precision, self.device)
        self.sequence_layer = (
            self.encoder.num_hidden_states(self.loaded.models[0]) - 1 if self.cfg.sequence else None
        )

    def step(self, batch: Batch) -> None:
        """Compute ``batch``, then write the previous one while the device works."""
        self._take_failures(batch)
        copies = self._compute(batch) if len(batch.rows) else []
        self.collect()
        self.in_flight.append((copies, batch))

    def collect(self) -> None:
        """Write the results of the batch in flight (waiting for their transfer)."""
        if not self.in_flight:
            return
        copies, batch = self.in_flight.pop()
        for copy in copies:
            with self.clock("device to host"):
                emb, logits, sequences = copy.wait()
            dims = None
            run = self.loaded.run
            if logits is not None and run is not None and run.task != "categorical":
                # The head's outputs: the classes' logits, then valence and arousal.
                logits, dims = split_outputs(logits, len(self.loaded.label_names), run.task)
            with self.clock("write"):
                _keep(
                    self.behind,
                    copy.rows,
                    emb,
                    logits,
                    sequences,
                    dims,
                    skip_bad=self.cfg.skip_bad,
                    ids=self.m.ids,
                )
        if batch.ends_window:
            with self.clock("write"):
                self.behind.flush()
        self.progress.update(batch.finished + len(batch.failed), batch.units)
        self.progress.over_limit += batch.over_limit

    def _take_failures(self, batch: Batch) -> None:
        """Rows that passed the checks but cannot be read: an error naming the row, or with
        ``skip_bad`` skipped (a row in parts drops its other parts with it)."""
        for r, err in batch.failed:
            if not self.cfg.skip_bad:
                raise type(err)(  # the same kind of error, naming the row
                    f"row {printable(self.m.ids[r])!r}: {err}; fix it, or pass --skip-bad "
                    "to record and skip such rows"
                ) from err
            self.behind.skip([r], str(err))
            if batch.part is not None:
                self.dropped.add(r)
                self.carry = None
        if batch.part is not None and len(batch.rows) and int(batch.rows[0]) in self.dropped:
            batch.rows = batch.rows[:0]

    def _compute(self, batch: Batch) -> list[HostCopy]:
        """The batch's pooled values on their way to the host (none yet for a part of a row
        that is not its last)."""
        done = _split_on_oom(partial(self._partials, batch), np.arange(len(batch.rows)), "rows")
        if batch.part is not None:  # a part of one long row: add it to the others
            got = done[0][1]
            self.carry = got if self.carry is None else [a + b for a, b in zip(self.carry, got)]
            done = [(done[0][0], self.carry)] if batch.last_part else []
            if batch.last_part:
                self.carry = None
        return [
            HostCopy(
                batch.rows[sub],
                self._finished(batch, parts),
                names=self.names,
                pooling=self.cfg.pooling,
            )
            for sub, parts in done
        ]

    def _partials(self, batch: Batch, sub: np.ndarray) -> list[Partial]:
        """One partial per fold model of the rows ``sub`` (positions in the batch). Out of
        device memory, a batch is split by rows, and a single row by its windows (pooling sums
        are exact over any split, so stored values do not depend on it)."""
        position = np.full(len(batch.rows), -1)
        position[sub] = np.arange(len(sub))

        def of_pieces(pieces: np.ndarray) -> list[Partial]:
            whole = len(pieces) == len(batch.owner)
            inputs = batch.inputs if whole else self.encoder.subset(batch.inputs, pieces)
            return [
                self.encoder.forward_part(
                    self.loaded.models[k],
                    inputs,
                    position[batch.owner[pieces]],
                    n_rows=len(sub),
                    layers=self.layers,
                    device=self.device,
                    autocast=self.autocast,
                    sequence_layer=self.sequence_layer,
                    sequence_cap=self.cfg.sequence_length,
                    clock=self.clock,
                )
                for k in batch.models
            ]

        pieces = np.flatnonzero(np.isin(batch.owner, sub))
        if len(sub) > 1:
            return of_pieces(pieces)
        done = _split_on_oom(of_pieces, pieces, "windows of one row")
        return [sum(parts[1:], parts[0]) for parts in zip(*(got for _, got in done))]

    def _finished(self, batch: Batch, parts: list[Partial]) -> EncoderOutput:
        """The rows' outputs: each fold model's pooled values, then their mean."""
        return EncoderOutput.mean(
            [
                self.encoder.finish(
                    self.loaded.models[k],
                    p,
                    layers=self.layers,
                    device=self.device,
                    autocast=self.autocast,
                )
                for k, p in zip(batch.models, parts)
            ]
        )


def _report(loop: _Loop, *, seconds: float, workers: int) -> dict[str, Any]:
    """One line on the console, and the same figures for the store's record."""
    progress, encoder, device = loop.progress, loop.encoder, loop.device
    rate = f"{progress.audio_s / seconds:.1f} audio-s/s, " if progress.audio_s else ""
    limited = (
        f"; {progress.over_limit} row(s) {encoder.limit_effect}" if progress.over_limit else ""
    )
    tqdm.write(
        f"[{loop.behind.path.name}] {progress.bar.n} rows in {seconds:.1f} s ({rate}"
        f"{progress.bar.n / seconds:.1f} utt/s){limited}; "
        f"{loop.clock.summary(workers, encoder.input_stage)}; {peak_memory(device)}"
    )
    return {
        "seconds": round(seconds, 3),
        "rows": int(progress.bar.n),
        "audio_seconds": round(progress.audio_s, 3),
        "stages": {k: round(v, 3) for k, v in loop.clock.seconds.items()},
        "workers": workers,
        "device": device,
        "peak_memory": peak_memory(device),
        # Rows of this session whose input exceeded the limit (truncated text, windowed audio).
        "over_limit": {"rows": int(progress.over_limit), "effect": encoder.limit_effect},
    }


def _split_on_oom(fn: Callable, items: np.ndarray, what: str) -> list[tuple[np.ndarray, Any]]:
    """``[(items, fn(items))]``; on CUDA out-of-memory ``items`` (rows of a batch, or the
    windows of one row) are split in halves and each is retried."""
    try:
        return [(items, fn(items))]
    except torch.cuda.OutOfMemoryError:
        if len(items) == 1:
            raise
        torch.cuda.empty_cache()
        half = len(items) // 2
        log.warning(
            "CUDA out of memory on %d %s; retrying as %d + %d",
            len(items),
            what,
            half,
            len(items) - half,
        )
        return _split_on_oom(fn, items[:half], what) + _split_on_oom(fn, items[half:], what)


def window_rows(cfg: ExtractConfig) -> int:
    """Rows per write window (``--flush-rows``; default 2048, 256 with sequences, whose rows
    take ~1 MB each). Larger windows give fuller same-length batches and larger writes."""
    if cfg.flush_rows is not None:
        return cfg.flush_rows
    return 256 if cfg.sequence else 2048


class Timings:
    """Seconds spent per stage of extraction. Decoding runs in the input workers, beside the
    rest; on CUDA "forward" and "pool" count the host's time to launch them (the device runs
    behind), and waiting for the device shows in "device to host"."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def summary(self, workers: int, input_stage: str) -> str:
        """One line; ``input_stage`` (decode, tokenise) is said to run where the workers are."""
        where = f"in {workers} worker process(es)" if workers else "in the main process"
        return "time: " + ", ".join(
            f"{stage} {sec:.1f} s" + (f" ({where})" if stage == input_stage else "")
            for stage, sec in self.seconds.items()
        )


class HostCopy:
    """The encoder outputs of some rows on their way to host memory: every pooled layer, the extras and
    the logits in one transfer (the sequences in a second), started without waiting for the
    device (CUDA) and collected by :meth:`wait`."""

    def __init__(self, rows: np.ndarray, feats: EncoderOutput, *, names, pooling: str):
        self.rows = rows
        parts = {}
        for name, i in names:
            mean, std = feats.pooled[i]
            parts[name] = torch.cat([mean, std], dim=1) if pooling == "mean+std" else mean
        parts.update(feats.extra)
        if feats.logits is not None:
            parts["/logits"] = feats.logits
        self.names, self.widths = list(parts), [v.shape[1] for v in parts.values()]
        tensors = [torch.cat([v.float() for v in parts.values()], dim=1)]
        self.lengths = None
        if feats.sequences is not None:
            self.lengths = [len(x) for x in feats.sequences]
            tensors.append(torch.cat(feats.sequences))
        self.event = None
        if tensors[0].is_cuda:
            pinned = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
            for host, t in zip(pinned, tensors):
                host.copy_(t, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
            tensors = pinned
        self.tensors = tensors

    def wait(self) -> tuple[dict[str, np.ndarray], np.ndarray | None, list[np.ndarray] | None]:
        """(embeddings by name, logits, per-row sequences) as host arrays."""
        if self.event is not None:
            self.event.synchronize()
        # Pinned buffers go back to torch's cache at once; the store buffer keeps plain copies.
        host = [t.numpy().copy() if self.event is not None else t.numpy() for t in self.tensors]
        bounds = np.cumsum([0, *self.widths])
        values = {k: host[0][:, a:b] for k, a, b in zip(self.names, bounds[:-1], bounds[1:])}
        logits = values.pop("/logits", None)
        sequences = None
        if self.lengths is not None:
            sequences = np.split(host[1], np.cumsum(self.lengths)[:-1])
        return values, logits, sequences


def _keep(writer, rows, emb, logits, sequences, dims=None, *, skip_bad: bool, ids) -> None:
    """Buffer computed rows; rows whose values are not finite are never marked done: an error
    naming them, or with ``skip_bad`` skipped with that reason."""
    finite = np.ones(len(rows), bool)
    for values in [*emb.values(), *(v for v in (logits, dims) if v is not None)]:
        finite &= np.isfinite(values).all(axis=1)
    if sequences is not None:
        finite &= np.array([np.isfinite(x).all() for x in sequences])
    if not finite.all():
        bad = np.asarray(rows)[~finite]
        if not skip_bad:
            raise EmofeatError(
                f"non-finite embeddings or logits for {len(bad)} row(s), e.g. id {ids[bad[0]]!r}; "
                "check those inputs, or pass --skip-bad to record and skip them"
            )
        writer.skip(bad, "non-finite embeddings or logits")
    keep = np.flatnonzero(finite)
    writer.add(
        np.asarray(rows)[keep],
        logits=logits[keep] if logits is not None else None,
        embeddings={k: v[keep] for k, v in emb.items()},
        sequences={"last": [sequences[j] for j in keep]} if sequences is not None else None,
        dimensions=dims[keep] if dims is not None else None,
    )


class _Progress:
    """A tqdm bar in utterances with an audio-seconds-per-second rate."""

    def __init__(self, total: int, name: str):
        self.bar = tqdm(total=total, unit="utt", desc=f"extract {name}", dynamic_ncols=True)
        self.audio_s, self.t0 = 0.0, time.perf_counter()
        self.over_limit = 0

    def update(self, n: int, audio_s: float = 0.0) -> None:
        self.bar.update(n)
        if audio_s:
            self.audio_s += audio_s
            self.bar.set_postfix(
                audio_s_per_s=f"{self.audio_s / (time.perf_counter() - self.t0):.1f}"
            )
