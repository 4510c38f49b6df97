"""Tools over whole stores: validate, align several by id, export, merge shards, describe.
h5py + numpy only."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emofeat import __version__
from emofeat.atomic import atomic_path
from emofeat.errors import StoreError
from emofeat.outputs import check_output, register_kind
from emofeat.store.layout import SPLITS, printable
from emofeat.store.reader import Store, open_store
from emofeat.store.writer import _create


def validate_store(path: str | os.PathLike) -> list[str]:
    """Check a store against the layout.

    Args:
        path: The store's HDF5 file.

    Returns:
        One message per problem; empty when the store is valid and complete.
    """
    try:
        with open_store(path) as s:
            problems = []
            if not s.complete:
                problems.append(f"{path}: not complete ({int(s.done.sum())}/{len(s)} rows done)")
            if s.has_logits:
                lg = s.logits(s.select())
                if not np.isfinite(lg).all():
                    problems.append(f"{path}: non-finite logits in done rows")
            if s.has_dimensions and not np.isfinite(s.dimensions(s.select())).all():
                problems.append(f"{path}: non-finite dimensional predictions in done rows")
            for name in s.embedding_names:
                if not np.isfinite(s.embeddings(name, s.select())).all():
                    problems.append(f"{path}: non-finite values in done rows of /embeddings/{name}")
            done = s.select()
            for name in s.sequence_names:
                # A few hundred rows at a time: a sequence store can be larger than memory.
                for part in np.array_split(done, max(1, len(done) // 256)):
                    if len(part) and not np.isfinite(s.sequences(name, part)[0]).all():
                        problems.append(
                            f"{path}: non-finite values in done rows of /sequences/{name}"
                        )
                        break
            return problems
    except StoreError as err:
        return [str(err)]


# ------------------------------------------------------------------------------------- aligned
def align_stores(
    stores: Sequence[Store], allow_incomplete: bool = False, flag: str = "--allow-incomplete"
) -> tuple[list[np.ndarray], np.ndarray]:
    """For stores of the same utterances: each store's row of every id of the first store, and
    the mask of rows done in every store. Refuses incomplete stores (unless asked) and stores
    that disagree on ids, labels, splits, folds or label names, naming what differs."""
    first = stores[0]
    reference = first.layout
    usable = first.done.copy()
    positions = []
    for s in stores:
        if not s.complete and not allow_incomplete:
            raise StoreError(
                f"{s.path} is not complete ({int(s.done.sum())}/{len(s)} rows done); finish its extraction, or pass {flag}"
            )
        problems = reference.differences(
            s.layout, by_id=True, datasets=False, here=f"in {first.name}", there=f"in {s.name}"
        )
        if problems:
            raise StoreError(f"{s.path} and {first.path} disagree: " + "; ".join(problems))
        index = {u: i for i, u in enumerate(s.ids)}
        pos = np.array([index[u] for u in first.ids], dtype=np.int64)
        usable &= s.done[pos]
        positions.append(pos)
    return positions, usable


@dataclass
class Aligned:
    """Open stores aligned by id over the rows done in every one of them (``keep``: indices
    into the first store, in its order; ``rows[k]``: store k's row of each kept id)."""

    stores: list[Store]
    keep: np.ndarray
    rows: list[np.ndarray]
    positions: list[np.ndarray] = field(repr=False)  # store k's row of every id of the first

    @property
    def first(self) -> Store:
        return self.stores[0]

    @property
    def dropped(self) -> int:
        """Rows of the first store not done in every store."""
        return len(self.first) - len(self.keep)

    def close(self) -> None:
        for s in self.stores:
            s.close()

    def __enter__(self) -> Aligned:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def aligned(
    paths: Sequence[str | os.PathLike],
    *,
    allow_incomplete: bool = False,
    flag: str = "--allow-incomplete",
) -> Aligned:
    """Open stores and align them by id (see :func:`align_stores`); close the result (it is a
    context manager). Stacking, fusion and :func:`load_aligned` all read stores through it."""
    if not paths:
        raise StoreError("no stores given")
    stores = []
    try:
        for p in paths:
            stores.append(open_store(p))
        positions, usable = align_stores(stores, allow_incomplete, flag)
    except Exception:
        for s in stores:
            s.close()
        raise
    keep = np.flatnonzero(usable)
    return Aligned(stores, keep, [pos[keep] for pos in positions], positions)


def load_aligned(
    paths: Sequence[str | os.PathLike],
    *,
    embedding: str | None = None,
    split: str | None = None,
    allow_incomplete: bool = False,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Several stores aligned by utterance id, as arrays.

    Rows are those done in every store, in the first store's order. Stores that disagree on ids,
    labels, splits, folds or label names are refused, naming what differs.

    Args:
        paths: The stores, in the order their arrays are returned.
        embedding: The embedding to load; None for the logits.
        split: ``train`` or ``test`` to keep one split; None for both.
        allow_incomplete: Accept stores whose ``complete`` attribute is false.

    Returns:
        ``([X per store], y, ids)``.

    Raises:
        StoreError: a store is missing, incomplete (without ``allow_incomplete``), or disagrees
            with the others.
    """
    with aligned(paths, allow_incomplete=allow_incomplete) as a:
        keep = np.arange(len(a.keep))
        if split is not None:
            keep = keep[a.first.split[a.keep] == split]
        xs = [
            s.logits(rows[keep]) if embedding is None else s.embeddings(embedding, rows[keep])
            for s, rows in zip(a.stores, a.rows)
        ]
        chosen = a.keep[keep]
        return xs, a.first.labels[chosen].astype(int), a.first.ids[chosen]


EXPORT_MARK = "emofeat_export"  # a field of every npz / a key of every parquet emofeat exports


def is_export(path: Path) -> bool:
    """An npz or parquet file emofeat exported (it holds :data:`EXPORT_MARK`)."""
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return EXPORT_MARK.encode() in (pq.read_schema(path).metadata or {})
        with np.load(path, allow_pickle=False) as data:
            return EXPORT_MARK in data.files
    except Exception:  # anything unreadable is not ours
        return False


register_kind("export", is_export)


def export_store(
    path: str | os.PathLike,
    out: str | os.PathLike,
    **options: Any,
) -> Path:
    """Write a store's done rows to a file of another format.

    ``npz``: ids, labels, split, fold, logits and every embedding (or ``embedding``); ``parquet``:
    one row per utterance with array columns (needs pyarrow).

    Args:
        path: The store.
        out: The file to write.
        **options: The options of :class:`~emofeat.store.config.ExportConfig`.

    Returns:
        The path of the written file.

    Raises:
        OptionError: an option's value is refused.
        StoreError: the output is an input, or a file emofeat did not export.
    """
    out = Path(out)
    from emofeat.atomic import atomic_path
    from emofeat.store.config import ExportConfig

    cfg = ExportConfig(**options)
    fmt, embedding = cfg.format, cfg.embedding
    check_output(out, kind="export", inputs=[path], what="-o")
    with open_store(path) as s:
        rows = s.select()
        names = [embedding] if embedding else s.layout.embeddings
        if fmt == "npz":
            arrays = {
                "ids": s.ids[rows].astype(str),
                "labels": s.labels[rows],
                "split": s.split[rows].astype(str),
                "fold": s.fold[rows],
                "label_names": np.array(s.label_names),
                EXPORT_MARK: np.array(__version__),  # what emofeat.outputs recognises
            }
            if s.has_logits:
                arrays["logits"] = s.logits(rows)
            if s.has_dimensions:
                arrays["dimensions"] = s.dimensions(rows)
            if s.dimension_names:
                arrays["dimension_names"] = np.array(s.dimension_names)
                if s.has_dimension_targets:
                    arrays["dimension_targets"] = s.dimension_targets(rows)
            arrays.update({f"embeddings/{n}": s.embeddings(n, rows) for n in names})
            with atomic_path(out, suffix=".npz") as tmp, open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        elif fmt == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise StoreError(
                    "parquet export needs pyarrow: pip install 'emofeat[parquet]' (or pyarrow)"
                ) from None
            frame = s.to_pandas(array_columns=True).iloc[rows]
            for n in names:
                frame[n] = list(s.embeddings(n, rows))
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame)
            marked = {**(table.schema.metadata or {}), EXPORT_MARK.encode(): __version__.encode()}
            with atomic_path(out, suffix=".parquet") as tmp:
                pq.write_table(table.replace_schema_metadata(marked), tmp)
    return out


# ----------------------------------------------------------------------------------------- merge
def merge_stores(
    inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *, shared_rows: bool = False
) -> Path:
    """Merge shards of one store (same rows, disjoint done rows) into ``out``.

    Args:
        inputs: The shards.
        out: The merged store to write.
        shared_rows: Take a row held by several shards once, from the first that computed it (a
            skip only where none did), instead of refusing it. For the shards of one extraction
            job, whose shares of rows move when a resumed job has another number of processes.

    Returns:
        The path of the merged store.

    Raises:
        StoreError: nothing to merge, shards of different stores (rows, options, weights), or a
            row held by several shards (without ``shared_rows``).
    """

    if not inputs:
        raise StoreError("nothing to merge")
    out = Path(out)
    check_output(out, kind="store", inputs=inputs, what="-o")
    stores = [open_store(p) for p in inputs]
    try:
        first = stores[0]
        layout = first.layout
        owner = np.full(len(first), -1)
        for i, s in enumerate(stores):
            problems = layout.differences(s.layout, here=f"in {first.path}", there=f"in {s.path}")
            if problems:
                raise StoreError(f"cannot merge {s.path} with {first.path}: " + "; ".join(problems))
            both = np.flatnonzero((owner >= 0) & (s.done | s.skipped))
            if len(both) and not shared_rows:
                raise StoreError(
                    f"cannot merge: {s.path} and {stores[owner[both[0]]].path} both hold row {both[0]} (id {first.ids[both[0]]!r}) and {len(both) - 1} more"
                )
            owner[s.done & (owner < 0)] = i
        for i, s in enumerate(stores):  # skipped rows that no shard computed
            owner[s.skipped & (owner < 0)] = i
        attrs = {
            k: v
            for k, v in first.attrs.items()
            if k
            not in (
                "complete",
                "schema_version",
                "label_names",
                "emofeat_version",
                "config",
                "dimension_names",
            )
        }
        with atomic_path(out, suffix=".h5") as tmp:
            writer = _create(tmp, layout, attrs)
            with writer:
                for i, s in enumerate(stores):
                    rows = np.flatnonzero(s.done & (owner == i))
                    step = 64 if layout.sequences else 4096  # sequences: ~1 MB per row
                    for start in range(0, len(rows), step):
                        part = rows[start : start + step]
                        seqs = {}
                        for k in layout.sequences:
                            states, lengths = s.sequences(k, part)
                            seqs[k] = [x[:n] for x, n in zip(states, lengths)]
                        writer.write(
                            part,
                            logits=s.logits(part) if s.has_logits else None,
                            embeddings={k: s.embeddings(k, part) for k in layout.embeddings},
                            sequences=seqs,
                            dimensions=s.dimensions(part) if s.has_dimensions else None,
                        )
                    for uid, reason in s.skip_reasons().items():
                        skipped = np.flatnonzero((first.ids == uid) & (owner == i))
                        if len(skipped):
                            writer.skip(skipped, reason)
            writer.finalize()
        return out
    finally:
        for s in stores:
            s.close()


# --------------------------------------------------------------------------------------- inspect
def describe(path: str | os.PathLike) -> str:
    """A human-readable summary of a store (``emofeat store inspect``).

    Args:
        path: The store's HDF5 file.

    Returns:
        Rows, done rows, datasets, provenance and per-split and per-label counts, as text.
    """
    with open_store(path) as s:
        lines = [
            f"store      {s.path}",
            f"rows       {len(s)}  done {int(s.done.sum())}  skipped {int(s.skipped.sum())}  complete {s.complete}",
        ]
        for name in ("logits", "dimensions", "dimension_targets"):
            if name in s._f:
                ds = s._f[name]
                lines.append(f"/{name:<24} {ds.shape} {ds.dtype}")
        for name in s.embedding_names:
            ds = s._f["embeddings"][name]
            lines.append(f"/embeddings/{name:<13} {ds.shape} {ds.dtype}")
        lines.append("provenance")
        for key, value in s.attrs.items():
            if key == "config":
                continue
            lines.append(f"  {printable(key):<18} {printable(value)}")
        names = [*s.label_names, "unknown"]
        width = max(len(n) for n in names) + 1
        lines.append("rows per split and label (done/all)")
        lines.append("  " + "split".ljust(7) + "".join(n.rjust(width) for n in names))
        for split in SPLITS:
            cells = []
            for label in [*range(len(s.label_names)), -1]:
                mask = (s.split == split) & (s.labels == label)
                cells.append(f"{int((mask & s.done).sum())}/{int(mask.sum())}".rjust(width))
            lines.append("  " + split.ljust(7) + "".join(cells))
        reasons = s.skip_reasons()
        if reasons:
            lines.append(f"skipped rows ({len(reasons)}), first ones:")
            lines += [
                f"  {printable(uid)}: {printable(why)}" for uid, why in list(reasons.items())[:5]
            ]
        return "\n".join(lines)
