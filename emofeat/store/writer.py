"""Writing a store: :class:`StoreWriter` (rows written, flushed, then marked done; SWMR; an
advisory lock marking a live writer), :func:`create_store` (pre-allocated datasets, built under a
temporary name) and :func:`open_writer` (create, or resume a store of the same layout).
h5py + numpy only."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from emofeat import __version__, locks
from emofeat.atomic import atomic_path
from emofeat.errors import StoreError, StoreMismatchError
from emofeat.store.recover import clear_status_flags, extend_to_stored_eof, status_flags
from emofeat.store.layout import (
    _STR,
    DEFAULT_CHUNK_ROWS,
    REASON_BYTES,
    SCHEMA_VERSION,
    StoreLayout,
    _attr,
    _open_h5,
    check_plain,
)


class StoreWriter:
    """Writes rows of a pre-allocated store; use :func:`create_store` or :func:`open_writer`.

    ``write(rows, logits=..., embeddings={name: array})`` writes rows by index and marks them
    done; ``skip(rows, reason)`` records rows that could not be computed; ``finalize()`` sets
    ``complete`` when every row is done or skipped. Use it as a context manager.

    Durability: the datasets stay open for the writer's life, so their chunk caches are flushed
    by the file's flush, where a write error (a full disk) is raised instead of being printed
    and lost when a throw-away dataset object is closed. A row is marked done only after the
    flush of its data succeeded; any write, flush or close error is a :class:`StoreError` naming
    the store and the OS error, after which the writer refuses further writes and ``complete``
    is never set. The rows marked done before it are intact, and a re-run resumes the rest.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock_fd: int | None = None
        _recover_if_crashed(self.path)
        with _open_h5(self.path) as f:
            check_plain(f, self.path)
        self._f = h5py.File(self.path, "r+", libver="latest")
        self._fd = self._f.id.get_vfd_handle()  # see _writes_to_devnull
        self._f.swmr_mode = True
        # Our own advisory lock marks a live writer (HDF5 drops its lock in SWMR mode).
        self._lock_fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.close()
            raise StoreError(f"{self.path}: another process is writing this store") from None
        self.n = self._f["ids"].shape[0]
        self.done = self._f["done"][:]
        self.skipped = self._f["skipped"][:]
        self._datasets: dict[str, h5py.Dataset] = {}
        self._failed: str | None = None  # the first write error; the writer then refuses

    def _dataset(self, key: str) -> h5py.Dataset:
        """A dataset kept open for the writer's life (see the class docstring)."""
        if key not in self._datasets:
            self._datasets[key] = self._f[key]
        return self._datasets[key]

    @contextlib.contextmanager
    def _io(self, what: str):
        """Turn an I/O error into one StoreError naming the store; the writer is broken after it."""
        if self._failed:
            raise StoreError(f"{self.path}: not writing after an earlier failure ({self._failed})")
        try:
            yield
        except (OSError, RuntimeError) as err:
            detail = " ".join(str(err).split())  # HDF5's messages span lines
            self._failed = f"{what}: {detail}"
            self._detach()
            raise StoreError(
                f"{self.path}: {what} failed ({detail}); the rows marked done before are intact. "
                "Free space or fix the cause, then re-run the same command: it resumes."
            ) from err

    @property
    def failed(self) -> bool:
        """Whether a write, flush or close failed (the writer then refuses to write)."""
        return self._failed is not None

    # -- rows
    @property
    def pending(self) -> np.ndarray:
        """Indices of rows neither done nor skipped."""
        return np.flatnonzero(~self.done & ~self.skipped)

    def write(
        self,
        rows: Sequence[int] | np.ndarray,
        *,
        logits: np.ndarray | None = None,
        embeddings: Mapping[str, np.ndarray] | None = None,
        sequences: Mapping[str, Sequence[np.ndarray]] | None = None,
        dimensions: np.ndarray | None = None,
    ) -> None:
        """Write the values of ``rows``, flush, then mark the rows done.

        A row is marked done only after its data was flushed, so a kill leaves done rows that hold
        exactly what was written.

        Args:
            rows: Row indices, in any order, each at most once.
            logits: (n, C) logits of the rows.
            embeddings: Per embedding name, the (n, D) values of the rows.
            sequences: Per sequence name, one (T_row, H) array per row, cut to the dataset's length or
                zero-padded, with the valid length recorded.
            dimensions: (n, D) dimensional predictions of the rows (valence, arousal).

        Raises:
            ValueError: a row index is given twice.
            StoreError: a value is not finite, a dataset is not in the store, or a write fails (the
                writer then refuses further writes and never marks the store complete).
        """
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return
        order = np.argsort(rows)
        srt = rows[order]
        if np.any(np.diff(srt) == 0):
            raise ValueError("duplicate row indices in one write")
        if logits is not None and "logits" not in self._f:
            raise StoreError(f"{self.path}: this store has no /logits dataset")
        if dimensions is not None and "dimensions" not in self._f:
            raise StoreError(f"{self.path}: this store has no /dimensions dataset")
        for name in embeddings or {}:
            if f"embeddings/{name}" not in self._f:
                raise StoreError(
                    f"{self.path}: no embedding {name!r}; known: {self.embedding_names}"
                )
        for name in sequences or {}:
            if f"sequences/{name}" not in self._f:
                raise StoreError(f"{self.path}: no sequence dataset {name!r}")
        # Values are checked as they will be stored, after the cast to the dataset's dtype: a
        # finite float32 state above 65,504 is inf in a float16 store.
        given = {"logits": logits} if logits is not None else {}
        if dimensions is not None:
            given["dimensions"] = dimensions
        given.update({f"embeddings/{k}": v for k, v in (embeddings or {}).items()})
        stored = {}
        for path, values in given.items():
            values = np.asarray(values)
            stored[path] = values.astype(self._dataset(path).dtype, copy=False)[order]
            self._check_finite(path, values, stored[path], srt)
        blocks = {}
        for name, values in (sequences or {}).items():
            ds = self._dataset(f"sequences/{name}")
            block = np.zeros((len(rows), *ds.shape[1:]), ds.dtype)
            valid = np.zeros(len(rows), np.int32)
            for j, v in enumerate(values):
                v = np.asarray(v)[: ds.shape[1]]
                block[j, : len(v)] = v
                self._check_finite(f"sequences/{name}", v, block[j], srt)
                valid[j] = len(v)
            blocks[name] = (block[order], valid[order])
        with self._io("writing rows"):
            for path, values in stored.items():
                _write_rows(self._dataset(path), srt, values)
            for name, (block, valid) in blocks.items():
                self._dataset(f"sequences/{name}")[srt] = block  # one chunk per row: one read
                self._dataset(f"sequences/{name}_length")[srt] = valid
            self._f.flush()  # data reaches the file before the rows are marked done
            self._dataset("done")[srt] = True
            self._f.flush()
        self.done[srt] = True

    def _check_finite(self, path: str, given: np.ndarray, stored: np.ndarray, rows: np.ndarray):
        """Refuse values that are not finite as stored; say so when the cast made them so."""
        # isfinite on the values' own dtype: no float64 copy of a batch (sequences: ~1 MB/row)
        if np.isfinite(stored).all():
            return
        where = f"{self.path}: /{path}, rows {rows[:5].tolist()}{'...' if len(rows) > 5 else ''}"
        if np.isfinite(given).all():
            largest = float(np.max(np.abs(given)))
            raise StoreError(
                f"{where}: values up to {largest:.4g} exceed {stored.dtype}'s range "
                f"({float(np.finfo(stored.dtype).max):,.0f}); store them as float32 "
                "(extract --dtype float32)"
            )
        raise StoreError(
            f"{where}: refusing to write non-finite values; a done row must hold finite values"
        )

    def skip(self, rows: Iterable[int], reason: str) -> None:
        """Record rows that could not be computed.

        Args:
            rows: Row indices.
            reason: Why, in words (stored in ``/skip_reason``).
        """
        rows = np.sort(np.asarray(list(rows), dtype=np.int64))
        if len(rows) == 0:
            return
        encoded = reason.encode("utf-8")[:REASON_BYTES]
        with self._io("recording skipped rows"):
            reasons = np.array([encoded] * len(rows), dtype=f"S{REASON_BYTES}")
            self._dataset("skip_reason")[rows] = reasons
            self._dataset("skipped")[rows] = True
            self._f.flush()
        self.skipped[rows] = True

    @property
    def embedding_names(self) -> list[str]:
        return sorted(self._f["embeddings"].keys()) if "embeddings" in self._f else []

    def inherited_fds(self) -> list[int]:
        """Descriptors a forked child process must close: its copy of the lock that marks this
        writer live would otherwise outlive a killed writer (see :func:`writer_alive`)."""
        return [self._lock_fd] if self._lock_fd is not None else []

    # -- lifecycle
    def close(self) -> None:
        """Close the file (flushing what is buffered) and release the lock. A close error is a
        StoreError, unless an earlier failure is already being reported."""
        self._datasets = {}
        try:
            if getattr(self, "_f", None) is not None and self._f.id.valid:
                if self._failed:
                    with contextlib.suppress(OSError, RuntimeError):
                        self._f.close()
                else:
                    with self._io("closing the store"):
                        self._f.close()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _detach(self) -> None:
        """After a failed write: HDF5 retries the failed flush whenever a dataset or the file is
        closed, and at exit, where it crashed the process. From now on its writes go to
        /dev/null instead, so the file on disk stays as it was when the failure happened, as
        after a kill, and the next writer resumes it (:func:`_recover_if_crashed`)."""
        _writes_to_devnull(self._fd)
        # The superblock on disk is final now; pad the file to the length it records (a sparse
        # extension needs no free blocks). Under a file-size limit this fails, and the next
        # writer does it.
        with contextlib.suppress(OSError, ValueError):
            extend_to_stored_eof(self.path)

    def finalize(self, **attrs: Any) -> bool:
        """Close the writing session and set ``complete`` when every row is done or skipped.

        Args:
            **attrs: Further root attributes to set (e.g. ``timings``).

        Returns:
            Whether the store is complete.

        Raises:
            StoreError: an earlier write failed (such a store is never marked complete).
        """
        self.close()
        if self._failed:
            raise StoreError(f"{self.path}: not finalised after a failure ({self._failed})")
        complete = bool(np.all(self.done | self.skipped))
        with self._io("finalising the store"), h5py.File(self.path, "r+", libver="latest") as f:
            for key, value in attrs.items():
                f.attrs[key] = _attr(value)
            f.attrs["complete"] = complete
        return complete

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _writes_to_devnull(fd: int) -> None:
    """Point an open HDF5 file's descriptor (taken when it was opened: asking HDF5 for it after a
    failure can crash) at /dev/null: after a failed write HDF5 retries the flush on every close
    and at exit (where it crashed the process); those retries then succeed without touching the
    file on disk."""
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)


# A write whose rows fill at least 1/DENSE of their chunk-aligned span is done as one block.
DENSE = 8


def _write_rows(ds: h5py.Dataset, rows: np.ndarray, values: np.ndarray) -> None:
    """Write ``values`` into the sorted, distinct ``rows`` of a 2-D row-chunked dataset.

    h5py writes a list of rows as one hyperslab per row: 256 scattered rows of 25 datasets of
    width 1024 took 0.46 s here, one contiguous block of the same size 0.015 s. So rows that are
    dense enough in their span are written by reading the chunk-aligned block that covers them,
    patching it and writing it back (rows of the block not in this write keep their values);
    sparse rows keep the per-row path."""
    values = values.astype(ds.dtype, copy=False)
    chunk = ds.chunks[0] if ds.chunks else 1
    lo, hi = rows[0] // chunk * chunk, min(ds.shape[0], (rows[-1] // chunk + 1) * chunk)
    if len(rows) == hi - lo:
        ds[lo:hi] = values
    elif (hi - lo) <= DENSE * len(rows):
        block = ds[lo:hi]
        block[rows - lo] = values
        ds[lo:hi] = block
    else:
        ds[rows] = values


def _recover_if_crashed(path: Path) -> None:
    """Clear the flags a killed writer left, unless a live writer holds the lock; a file that a
    failed writer left shorter than its superblock says is padded back to that length."""
    try:
        flags = status_flags(path)
    except (ValueError, OSError):
        return  # not a v2/v3 superblock: h5py will report what is wrong
    if not flags:
        return
    if writer_alive(path):
        raise StoreError(f"{path}: another process is writing this store")
    extend_to_stored_eof(path)
    clear_status_flags(path)


def writer_alive(path: Path) -> bool:
    """Whether a live writer holds the store's advisory lock (see :class:`StoreWriter`)."""
    return locks.held(path)


def create_store(
    path: str | os.PathLike,
    layout: StoreLayout,
    *,
    attrs: Mapping[str, Any] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    compression: str | None = None,
) -> StoreWriter:
    """Create a store of ``layout`` with every dataset pre-allocated.

    The file is built under a temporary name and renamed into place, so a half-created store never
    exists.

    Args:
        path: The store's HDF5 file.
        layout: Rows, label names, datasets and the options that decide the values (written as the
            ``config`` attribute).
        attrs: Further root attributes, e.g. ``Provenance(...).to_attrs()``.
        chunk_rows: Rows per HDF5 chunk of the 2-D datasets.
        compression: An HDF5 compression filter (``gzip``, ``lzf``); None for none.

    Returns:
        A :class:`StoreWriter` on the new store.

    Raises:
        ValueError: ``attrs`` holds ``config`` (it belongs in the layout).
        StoreError: the layout does not fit its rows, or the file cannot be created.
    """
    return _create(Path(path), layout, attrs or {}, chunk_rows, compression)


def _create(
    path: Path,
    layout: StoreLayout,
    attrs: Mapping[str, Any],
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    compression: str | None = None,
) -> StoreWriter:
    n = len(layout.ids)
    if "config" in attrs:
        raise ValueError("a store's config belongs in its StoreLayout, not in attrs")
    if layout.embedding_dtype not in ("float16", "float32"):
        raise StoreError(
            f"embedding dtype must be float16 or float32, got {layout.embedding_dtype!r}"
        )
    c = len(layout.label_names)
    if layout.in_sample is not None and layout.in_sample.shape != (n,):
        raise StoreError(f"{path}: in_sample has shape {layout.in_sample.shape}, expected ({n},)")
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = max(1, min(chunk_rows, n))
    meta_chunk = max(1, min(4096, n))
    # The skeleton is built in memory and written to disk as one plain file write: HDF5 never
    # writes this file itself, so a full disk here is an ordinary OSError with nothing left
    # behind (HDF5 that fails mid-write retries on close and at exit, and crashed the process).
    f = h5py.File(f"{path}.image", "w", driver="core", backing_store=False, libver="latest")
    try:
        f.create_dataset("ids", data=layout.ids, dtype=_STR)
        f.create_dataset("labels", data=layout.labels)
        f.create_dataset("split", data=layout.split, dtype=_STR)
        f.create_dataset("fold", data=layout.fold)
        if layout.in_sample is not None:
            f.create_dataset("in_sample", data=layout.in_sample)
        for name in ("done", "skipped"):
            f.create_dataset(name, shape=(n,), dtype=bool, chunks=(meta_chunk,), fillvalue=False)
        f.create_dataset(
            "skip_reason", shape=(n,), dtype=f"S{REASON_BYTES}", chunks=(max(1, min(1024, n)),)
        )
        if layout.logits:
            f.create_dataset(
                "logits",
                shape=(n, c),
                dtype=np.float32,
                chunks=(rows, c),
                fillvalue=np.nan,
            )
        d = len(layout.dimension_names)
        if layout.targets is not None:
            f.create_dataset("dimension_targets", data=layout.targets, dtype=np.float32)
        if layout.dimensions:
            f.create_dataset(
                "dimensions", shape=(n, d), dtype=np.float32, chunks=(rows, d), fillvalue=np.nan
            )
        if d and (layout.targets is not None or layout.dimensions):
            f.attrs["dimension_names"] = np.array(layout.dimension_names, dtype=_STR)
        group = f.create_group("embeddings")
        for name, dim in layout.embeddings.items():
            group.create_dataset(
                name,
                shape=(n, dim),
                dtype=layout.embedding_dtype,
                chunks=(rows, dim),
                compression=compression,
                fillvalue=np.nan,
            )
        if layout.sequences:
            seq = f.create_group("sequences")
            for name, (length, width) in layout.sequences.items():
                # float16, one row per chunk: a training minibatch reads whole rows.
                seq.create_dataset(
                    name, shape=(n, length, width), dtype="float16", chunks=(1, length, width)
                )
                seq.create_dataset(f"{name}_length", shape=(n,), dtype=np.int32, fillvalue=0)
        for alias, target in layout.aliases.items():
            group[alias] = h5py.SoftLink(f"/embeddings/{target}")
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["emofeat_version"] = __version__
        f.attrs["label_names"] = np.array(layout.label_names, dtype=_STR)
        f.attrs["complete"] = False
        for key, value in attrs.items():
            f.attrs[key] = _attr(value)
        if layout.config is not None:
            f.attrs["config"] = _attr(layout.config)
        f.flush()
        image = f.id.get_file_image()
    finally:
        f.close()
    try:
        with atomic_path(path) as tmp:  # a store is created whole or not at all
            tmp.write_bytes(image)
    except OSError as err:
        raise StoreError(f"{path}: creating the store failed ({err.strerror or err})") from err
    return StoreWriter(path)


def open_writer(
    path: str | os.PathLike,
    layout: StoreLayout,
    *,
    attrs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> StoreWriter:
    """Create a store of ``layout``, or resume an existing one made for the same layout.

    Args:
        path: The store's HDF5 file.
        layout: Rows, label names, datasets and the options that decide the values.
        attrs: Further root attributes (provenance).
        overwrite: Replace an existing store made for other rows or options.
        chunk_rows: Rows per HDF5 chunk of the 2-D datasets.

    Returns:
        A :class:`StoreWriter`; its :meth:`~StoreWriter.pending` rows are those left to compute.

    Raises:
        StoreError: an existing store has other ids, labels, splits, label names, datasets,
            evidence or ``config`` (without ``overwrite``; the message says what differs), or
            another process is writing it.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        check_resumable(path, layout)
        return StoreWriter(path)
    if path.exists():
        remove_store(path)
    return _create(path, layout, attrs or {}, chunk_rows)


def check_resumable(path: str | os.PathLike, layout: StoreLayout) -> None:
    """Refuse an existing store made for anything but ``layout`` (other ids, labels, splits,
    label names, datasets, evidence or ``config``), saying what differs; a killed writer's
    flags are cleared first."""
    from emofeat.store.reader import open_store

    path = Path(path)
    _recover_if_crashed(path)
    with open_store(path) as existing:
        problems = existing.layout.differences(layout)
    if problems:
        raise StoreMismatchError(
            f"{path} exists and was made for something else:\n  "
            + "\n  ".join(problems)
            + "\nPass --overwrite (overwrite=True) to replace it, or write to another path.",
            problems,
        )


def remove_store(path: str | os.PathLike) -> None:
    """Delete a feature store, as ``--overwrite`` may: only an emofeat store that no process is
    writing."""
    path = Path(path)
    _check_replaceable(path)
    path.unlink()


def _check_replaceable(path: Path) -> None:
    """``--overwrite`` replaces only a feature store that no process is writing."""
    from emofeat.store.reader import is_store  # the output policy's test of "a store we made"

    if not path.is_file():
        raise StoreError(f"{path} is not a file; refusing to replace it")
    if not is_store(path):
        raise StoreError(
            f"{path} is not an emofeat feature store; refusing to overwrite it. Choose another --out."
        )
    if writer_alive(path):
        raise StoreError(f"{path}: another process is writing this store; not replacing it")
