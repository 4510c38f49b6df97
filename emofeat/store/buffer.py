"""The store's write buffer: computed rows collected in memory and written in few large writes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from emofeat.store.writer import StoreWriter


class WriteBehind:
    """Buffers computed rows and writes them in few large writes: the rows of a window (see
    :mod:`emofeat.extract.inputs`) are one contiguous block of the store. Rows are marked done only when
    flushed, so a kill loses at most the buffer (recomputed on resume), never correctness.
    Flushes when asked (end of a window), after ``seconds`` (slow models: a kill loses little
    compute), and at the end."""

    SECONDS = 5.0  # the longest a computed row waits in memory (a kill loses at most this)

    def __init__(self, writer: StoreWriter, seconds: float | None = None):
        self.writer = writer
        self.seconds = self.SECONDS if seconds is None else seconds
        self.parts: list[tuple[np.ndarray, Any, dict, dict | None, Any]] = []
        self.last = time.perf_counter()

    def add(
        self,
        rows: np.ndarray,
        *,
        logits: np.ndarray | None = None,
        embeddings: dict[str, np.ndarray] | None = None,
        sequences: dict[str, list[np.ndarray]] | None = None,
        dimensions: np.ndarray | None = None,
    ) -> None:
        """Buffer computed rows (as :meth:`StoreWriter.write` takes them); flushes once
        ``seconds`` have passed since the last write."""
        self.parts.append((np.asarray(rows), logits, embeddings or {}, sequences, dimensions))
        if time.perf_counter() - self.last >= self.seconds:
            self.flush()

    def skip(self, rows: np.ndarray | list[int], reason: str) -> None:
        """Record rows as skipped at once (a skip is small and must survive a kill)."""
        self.writer.skip(rows, reason)

    @property
    def path(self) -> Path:
        return self.writer.path

    def flush(self) -> None:
        """Write the buffer as one block (its rows are marked done once written)."""
        if self.writer.failed:  # the failure is being reported; these rows are recomputed
            self.parts = []
            return
        if self.parts:
            rows = np.concatenate([p[0] for p in self.parts])
            logits = (
                np.concatenate([p[1] for p in self.parts]) if self.parts[0][1] is not None else None
            )
            emb = {k: np.concatenate([p[2][k] for p in self.parts]) for k in self.parts[0][2]}
            seqs = None
            if self.parts[0][3] is not None:
                seqs = {k: [x for p in self.parts for x in p[3][k]] for k in self.parts[0][3]}
            dims = None
            if self.parts[0][4] is not None:
                dims = np.concatenate([p[4] for p in self.parts])
            self.writer.write(
                rows, logits=logits, embeddings=emb, sequences=seqs, dimensions=dims
            )
        self.parts, self.last = [], time.perf_counter()
