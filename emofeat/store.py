"""The HDF5 feature store: writer, reader and schema validation (h5py + numpy only).

One file per (model, run); rows are utterances keyed by ``/ids``. Layout (schema version 1),
documented for people without emofeat in ``docs/store.md``:

``/ids`` (N,) UTF-8 str, unique · ``/labels`` (N,) int16, -1 unknown · ``/split`` (N,) UTF-8
``train``/``test`` · ``/fold`` (N,) int16, -1 for test rows · ``/logits`` (N, C) float32
(optional: frozen-encoder stores have none) · ``/embeddings/<name>`` (N, D) float16/float32 ·
``/done`` (N,) bool · ``/skipped`` (N,) bool and ``/skip_reason`` (N,) UTF-8 bytes (rows that
could not be computed) · root attributes ``schema_version``, ``label_names``, ``complete`` and
provenance (``emofeat_version``, ``model_id``, ``config`` as YAML, ...).

Writing is crash-safe: every dataset is created before any row is written, the writer then runs
in HDF5 SWMR mode (metadata is written in an order that keeps the file consistent at every
moment), and each batch writes its data, flushes, and only then marks its rows done. A killed
writer therefore leaves a file whose done rows hold exactly what was written; reopening it for
writing clears the stale open-for-write flags (see :mod:`emofeat.h5recover`). Readers may open a
store while a writer appends to it (SWMR read).

``import emofeat.store`` imports neither torch nor transformers (nor pandas).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from emofeat import __version__
from emofeat.errors import StoreError
from emofeat.h5recover import clear_status_flags, status_flags

SCHEMA_VERSION = 1
REQUIRED = ("ids", "labels", "split", "fold", "done")
SPLITS = ("train", "test")
_STR = h5py.string_dtype("utf-8")
REASON_BYTES = 200
DEFAULT_CHUNK_ROWS = 32  # measured: 16-64 row chunks give the fastest random row reads


# ------------------------------------------------------------------------------------------ open
def _open_h5(path: Path, mode: str = "r") -> h5py.File:
    """Open an HDF5 file, turning h5py's errors into a StoreError that names the file."""
    if not path.exists():
        raise StoreError(f"{path}: no such store")
    try:
        return h5py.File(path, mode)
    except OSError as err:
        msg = str(err)
        if mode == "r" and ("already open for write" in msg or "unable to lock file" in msg):
            # A writer is appending (or was killed): read through SWMR, which needs no lock.
            try:
                return h5py.File(path, "r", libver="latest", swmr=True, locking=False)
            except OSError as err2:
                msg = str(err2)
        raise StoreError(
            f"{path}: not a readable HDF5 store ({msg}); is the file truncated or not a store?"
        ) from None


def check_plain(f: h5py.File, path: Path) -> None:
    """Refuse what a feature store never contains and a crafted file could use to read or write
    outside itself: external links, soft links, external storage, virtual datasets."""
    problems: list[str] = []

    def visit(name: str, link: Any) -> None:
        if isinstance(link, h5py.SoftLink):
            # Only the aliases emofeat writes: /embeddings/last -> /embeddings/layer_NN.
            target = f.get(link.path)
            inside = name.startswith("embeddings/") and link.path.startswith("/embeddings/")
            if not (inside and isinstance(target, h5py.Dataset)):
                problems.append(f"/{name} is a SoftLink to {link.path}")
            return
        if isinstance(link, h5py.ExternalLink):
            problems.append(f"/{name} is a {type(link).__name__}")
            return
        obj = f.get(name)
        if isinstance(obj, h5py.Dataset):
            if obj.external:
                problems.append(f"/{name} uses external storage")
            if obj.is_virtual:
                problems.append(f"/{name} is a virtual dataset")

    f.visititems_links(visit)
    if problems:
        raise StoreError(
            f"{path}: not a plain feature store ({'; '.join(problems[:3])}); emofeat reads and "
            "writes only datasets stored in the file itself"
        )


def printable(text: Any) -> str:
    """Text safe for a terminal: control characters (ANSI escapes, ...) shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _attr(value: Any) -> Any:
    """Coerce a provenance value into something HDF5 can store as an attribute."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return np.array(value, dtype=_STR)
        return np.asarray(value)
    if isinstance(value, dict):
        import yaml

        return yaml.safe_dump(value, sort_keys=False, allow_unicode=True)
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.dtype.kind in "OS":
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---------------------------------------------------------------------------------------- layout
def embedding_datasets(f: h5py.File) -> tuple[dict[str, h5py.Dataset], dict[str, str]]:
    """The embedding datasets of a store, and its aliases (soft links: name -> dataset name)."""
    group = f.get("embeddings")
    datasets, aliases = {}, {}
    for name in group.keys() if group is not None else []:
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.SoftLink):
            aliases[name] = link.path.rsplit("/", 1)[-1]
        else:
            datasets[name] = group[name]
    return datasets, aliases


def sequence_shapes(f: h5py.File) -> dict[str, tuple[int, int]]:
    """name -> (T, H) of a store's sequence datasets."""
    group = f.get("sequences")
    if group is None:
        return {}
    return {
        k: (int(ds.shape[1]), int(ds.shape[2]))
        for k, ds in group.items()
        if not k.endswith("_length")
    }


def _strings(values: Iterable[Any]) -> np.ndarray:
    return np.array([str(v) for v in values], dtype=object)


@dataclass
class StoreLayout:
    """What a store holds, row for row: its rows (ids, labels, split, fold), label names, datasets
    and the options that decided its values (``config``). A resumed or merged store must match it
    exactly; stores stacked together must match it by id (:meth:`differences`)."""

    ids: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    fold: np.ndarray
    label_names: list[str]
    embeddings: dict[str, int] = field(default_factory=dict)
    logits: bool = True
    embedding_dtype: str = "float32"
    config: dict[str, Any] | None = None  # None: not compared
    # Per row: was any model that produced the row's values trained (or selected) on it?
    # None: the store does not say (unknown).
    in_sample: np.ndarray | None = None
    # Other names of embedding datasets (HDF5 soft links), e.g. {"last": "layer_24"}.
    aliases: dict[str, str] = field(default_factory=dict)
    # Per-row sequences (token or frame states): name -> (length T, width H).
    sequences: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.in_sample is not None:
            self.in_sample = np.asarray(self.in_sample, dtype=bool)
        self.ids = _strings(self.ids)
        self.labels = np.asarray(self.labels, dtype=np.int16)
        self.split = _strings(self.split)
        self.fold = np.asarray(self.fold, dtype=np.int16)
        self.label_names = [str(n) for n in self.label_names]
        self.embeddings = {str(k): int(v) for k, v in (self.embeddings or {}).items()}
        self.sequences = {str(k): (int(t), int(h)) for k, (t, h) in (self.sequences or {}).items()}

    @classmethod
    def from_file(cls, f: h5py.File) -> StoreLayout:
        datasets, aliases = embedding_datasets(f)
        dtypes = {str(ds.dtype) for ds in datasets.values()}
        config = _decode(f.attrs.get("config", ""))
        return cls(
            ids=_decode(f["ids"][:]),
            labels=f["labels"][:],
            split=_decode(f["split"][:]),
            fold=f["fold"][:],
            label_names=_decode(f.attrs["label_names"]),
            embeddings={k: ds.shape[1] for k, ds in datasets.items()},
            logits="logits" in f,
            embedding_dtype=dtypes.pop() if len(dtypes) == 1 else "float32",
            config=_parse_config(config),
            in_sample=f["in_sample"][:] if "in_sample" in f else None,
            aliases=aliases,
            sequences=sequence_shapes(f),
        )

    def differences(
        self,
        other: StoreLayout,
        by_id: bool = False,
        datasets: bool = True,
        here: str = "in the store",
        there: str = "asked for",
    ) -> list[str]:
        """What differs between two layouts, as messages (empty when they match).

        ``by_id``: rows are matched by id (stores stacked together may hold them in any order);
        otherwise row by row (resume, merge). ``datasets``: also compare the embeddings, logits
        and ``config``. ``here``/``there`` name the two sides in the messages.
        """
        if by_id:
            if set(self.ids) != set(other.ids):
                only_a = sorted(set(self.ids) - set(other.ids))[:5]
                only_b = sorted(set(other.ids) - set(self.ids))[:5]
                return [f"different ids: only {here}: {only_a}; only {there}: {only_b}"]
            index = {u: i for i, u in enumerate(other.ids)}
            pos = np.array([index[u] for u in self.ids], dtype=np.int64)
        else:
            if len(self.ids) != len(other.ids):
                return [f"{len(self.ids)} rows {here}, {len(other.ids)} {there}"]
            pos = np.arange(len(self.ids))
        problems = []
        names = ["ids", "labels", "split", "fold"]
        if datasets and self.in_sample is not None and other.in_sample is not None:
            names.append("in_sample")  # the evidence is the store's own: not compared when stacking
        for name in names:
            a, b = getattr(self, name), getattr(other, name)[pos]
            bad = np.flatnonzero(a != b)
            if len(bad):
                i = int(bad[0])
                where = f"id {self.ids[i]!r}" if by_id else f"row {i} (id {self.ids[i]!r})"
                problems.append(
                    f"{name} differ at {where}: {_decode(a[i])!r} {here}, {_decode(b[i])!r} {there}"
                    + (f" ({len(bad) - 1} more)" if len(bad) > 1 else "")
                )
        if self.label_names != other.label_names:
            problems.append(
                f"label_names differ: {self.label_names} {here}, {other.label_names} {there}"
            )
        if datasets:
            if self.logits != other.logits:
                problems.append(f"logits {'present' if self.logits else 'absent'} {here}")
            mine = {k: (d, self.embedding_dtype) for k, d in self.embeddings.items()}
            theirs = {k: (d, other.embedding_dtype) for k, d in other.embeddings.items()}
            if mine != theirs:
                problems.append(f"embeddings differ: {mine} {here}, {theirs} {there}")
            if self.sequences != other.sequences:
                problems.append(
                    f"sequences differ: {self.sequences} {here}, {other.sequences} {there}"
                )
            if self.aliases != other.aliases:
                problems.append(
                    f"embedding aliases differ: {self.aliases} {here}, {other.aliases} {there}"
                )
            if self.config is not None and other.config is not None and self.config != other.config:
                keys = sorted(
                    k
                    for k in set(self.config) | set(other.config)
                    if self.config.get(k) != other.config.get(k)
                )
                problems.append(
                    f"config differs ({', '.join(keys)}; see the store's `config` attribute)"
                )
        return problems


@dataclass
class Provenance:
    """How a store was made (root attributes besides the layout). ``out_of_fold`` is None when
    unknown (a store written by other code)."""

    model_id: str = ""
    model_revision: str = ""
    checkpoint_sha256: str = ""
    family: str = ""
    modality: str = ""
    pooling: str = ""
    layers: list[str] = field(default_factory=list)
    sample_rate: int = 0
    max_len: float = 0
    text_mode: str = ""
    reverse: bool = False
    precision: str = ""
    split_scheme: str = ""
    run: str = ""
    out_of_fold: bool | None = None
    emofeat_version: str = ""

    def to_attrs(self) -> dict[str, Any]:
        """Root attributes to write (``out_of_fold`` only when known)."""
        attrs = {f.name: getattr(self, f.name) for f in fields(self)}
        attrs.pop("emofeat_version")  # written by the store itself
        if self.out_of_fold is None:
            attrs.pop("out_of_fold")
        return attrs

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Provenance:
        """From a store's root attributes; missing ones keep their defaults, others are ignored."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in attrs.items():
            if key not in known:
                continue
            value = _decode(value)
            if key == "out_of_fold":
                value = _flag(value)
            elif key == "layers":
                value = [value] if isinstance(value, str) else list(value)
            values[key] = value
        return cls(**values)


def _flag(value: Any) -> bool | None:
    """A boolean attribute as written by h5py (bool, numpy bool, 0/1); anything else: unknown."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    return None


def _parse_config(text: Any) -> dict[str, Any] | None:
    if isinstance(text, dict):
        return text
    if not isinstance(text, str) or not text:
        return None
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------------------------- writer
class StoreWriter:
    """Writes rows of a pre-allocated store; use :func:`create_store` or :func:`open_writer`.

    ``write(rows, logits=..., embeddings={name: array})`` writes rows by index and marks them
    done; ``skip(rows, reason)`` records rows that could not be computed; ``finalize()`` sets
    ``complete`` when every row is done or skipped. Use it as a context manager.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock_fd: int | None = None
        _recover_if_crashed(self.path)
        with _open_h5(self.path) as f:
            check_plain(f, self.path)
        self._f = h5py.File(self.path, "r+", libver="latest")
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

    # -- rows
    @property
    def pending(self) -> np.ndarray:
        """Indices of rows neither done nor skipped."""
        return np.flatnonzero(~self.done & ~self.skipped)

    def write(
        self,
        rows: Sequence[int] | np.ndarray,
        logits: np.ndarray | None = None,
        embeddings: Mapping[str, np.ndarray] | None = None,
        sequences: Mapping[str, Sequence[np.ndarray]] | None = None,
    ) -> None:
        """Write values of ``rows`` (indices), flush, then mark the rows done. ``sequences``:
        per name, one (T_row, H) array per row, cut to the dataset's length or zero-padded,
        with the valid length recorded."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return
        order = np.argsort(rows)
        srt = rows[order]
        if np.any(np.diff(srt) == 0):
            raise ValueError("duplicate row indices in one write")
        seq_values = [np.asarray(v) for vs in (sequences or {}).values() for v in vs]
        for values in [logits, *(embeddings or {}).values(), *seq_values]:
            # isfinite on the values' own dtype: no float64 copy of a batch (sequences: ~1 MB/row)
            if values is not None and not np.isfinite(np.asarray(values)).all():
                raise StoreError(
                    f"{self.path}: refusing to write non-finite values (rows {srt[:5].tolist()}...); "
                    "a done row must hold finite values"
                )
        if logits is not None:
            if "logits" not in self._f:
                raise StoreError(f"{self.path}: this store has no /logits dataset")
            _write_rows(self._f["logits"], srt, np.asarray(logits)[order])
        for name, values in (embeddings or {}).items():
            key = f"embeddings/{name}"
            if key not in self._f:
                raise StoreError(
                    f"{self.path}: no embedding {name!r}; known: {self.embedding_names}"
                )
            _write_rows(self._f[key], srt, np.asarray(values)[order])
        for name, values in (sequences or {}).items():
            key = f"sequences/{name}"
            if key not in self._f:
                raise StoreError(f"{self.path}: no sequence dataset {name!r}")
            ds, lengths = self._f[key], self._f[f"{key}_length"]
            block = np.zeros((len(rows), *ds.shape[1:]), ds.dtype)
            valid = np.zeros(len(rows), np.int32)
            for j, v in enumerate(values):
                v = np.asarray(v)[: ds.shape[1]]
                block[j, : len(v)] = v
                valid[j] = len(v)
            ds[srt] = block[order]  # one chunk per row: one row is one read
            lengths[srt] = valid[order]
        self._f.flush()  # data reaches the file before the rows are marked done
        self._f["done"][srt] = True
        self._f.flush()
        self.done[srt] = True

    def skip(self, rows: Iterable[int], reason: str) -> None:
        """Record rows that could not be computed, with the reason."""
        rows = np.sort(np.asarray(list(rows), dtype=np.int64))
        if len(rows) == 0:
            return
        encoded = reason.encode("utf-8")[:REASON_BYTES]
        self._f["skip_reason"][rows] = np.array([encoded] * len(rows), dtype=f"S{REASON_BYTES}")
        self._f["skipped"][rows] = True
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
        if getattr(self, "_f", None) is not None and self._f.id.valid:
            self._f.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def finalize(self, **attrs: Any) -> bool:
        """Close the SWMR session, set ``complete`` (all rows done or skipped) and extra attributes."""
        self.close()
        complete = bool(np.all(self.done | self.skipped))
        with h5py.File(self.path, "r+", libver="latest") as f:
            for key, value in attrs.items():
                f.attrs[key] = _attr(value)
            f.attrs["complete"] = complete
        return complete

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
    """Clear the flags a killed writer left, unless a live writer holds the lock."""
    try:
        flags = status_flags(path)
    except (ValueError, OSError):
        return  # not a v2/v3 superblock: h5py will report what is wrong
    if not flags:
        return
    if writer_alive(path):
        raise StoreError(f"{path}: another process is writing this store")
    clear_status_flags(path)


def writer_alive(path: Path) -> bool:
    """Whether a live writer holds the store's advisory lock (see :class:`StoreWriter`)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing also releases a lock this probe took
    return False


def create_store(
    path: str | os.PathLike,
    ids: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    split: Sequence[str],
    fold: Sequence[int] | np.ndarray,
    label_names: Sequence[str],
    embeddings: Mapping[str, int] | None = None,
    logits: bool = True,
    embedding_dtype: str = "float32",
    attrs: Mapping[str, Any] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    compression: str | None = None,
    in_sample: Sequence[bool] | np.ndarray | None = None,
    aliases: Mapping[str, str] | None = None,
    sequences: Mapping[str, tuple[int, int]] | None = None,
) -> StoreWriter:
    """Create a store with every dataset pre-allocated and return a writer on it.

    ``embeddings`` maps dataset names to widths; ``attrs`` are root attributes (provenance,
    e.g. ``Provenance(...).to_attrs()``, and ``config``: the options that decided the values);
    ``in_sample`` is the per-row out-of-fold evidence (None: unknown, no dataset written);
    ``aliases`` maps other names to embedding datasets (``{"last": "layer_24"}``, soft links).
    The file is built under a temporary name and renamed into place, so a half-created store
    never exists.
    """
    layout = _layout(
        ids,
        labels,
        split,
        fold,
        label_names,
        embeddings,
        logits,
        embedding_dtype,
        attrs,
        in_sample,
        aliases,
        sequences,
    )
    return _create(Path(path), layout, attrs or {}, chunk_rows, compression)


def _layout(
    ids,
    labels,
    split,
    fold,
    label_names,
    embeddings,
    logits,
    embedding_dtype,
    attrs,
    in_sample,
    aliases=None,
    sequences=None,
):
    config = (attrs or {}).get("config")
    return StoreLayout(
        ids,
        labels,
        split,
        fold,
        label_names,
        dict(embeddings or {}),
        logits,
        embedding_dtype,
        dict(config) if isinstance(config, Mapping) else None,
        in_sample,
        dict(aliases or {}),
        dict(sequences or {}),
    )


def _create(
    path: Path,
    layout: StoreLayout,
    attrs: Mapping[str, Any],
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    compression: str | None = None,
) -> StoreWriter:
    n = len(layout.ids)
    if len(set(layout.ids)) != n:
        raise StoreError(f"{path}: ids are not unique")
    if layout.embedding_dtype not in ("float16", "float32"):
        raise StoreError(
            f"embedding dtype must be float16 or float32, got {layout.embedding_dtype!r}"
        )
    c = len(layout.label_names)
    if n and (layout.labels.min() < -1 or layout.labels.max() >= c):
        raise StoreError(f"{path}: labels outside -1..{c - 1}")
    bad = sorted(set(layout.split) - set(SPLITS))
    if bad:
        raise StoreError(f"{path}: split values must be train or test, got {bad[:5]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.creating")
    rows = max(1, min(chunk_rows, n))
    meta_chunk = max(1, min(4096, n))
    with h5py.File(tmp, "w", libver="latest") as f:
        f.create_dataset("ids", data=layout.ids, dtype=_STR)
        f.create_dataset("labels", data=layout.labels)
        f.create_dataset("split", data=layout.split, dtype=_STR)
        f.create_dataset("fold", data=layout.fold)
        if layout.in_sample is not None:
            if layout.in_sample.shape != (n,):
                raise StoreError(
                    f"{path}: in_sample has shape {layout.in_sample.shape}, expected ({n},)"
                )
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
            if target not in layout.embeddings or alias in layout.embeddings:
                raise StoreError(f"{path}: alias {alias!r} -> {target!r} names no other dataset")
            group[alias] = h5py.SoftLink(f"/embeddings/{target}")
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["emofeat_version"] = __version__
        f.attrs["label_names"] = np.array(layout.label_names, dtype=_STR)
        f.attrs["complete"] = False
        for key, value in attrs.items():
            f.attrs[key] = _attr(value)
    os.replace(tmp, path)
    return StoreWriter(path)


def open_writer(
    path: str | os.PathLike,
    ids: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    split: Sequence[str],
    fold: Sequence[int] | np.ndarray,
    label_names: Sequence[str],
    embeddings: Mapping[str, int] | None = None,
    logits: bool = True,
    embedding_dtype: str = "float32",
    attrs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    in_sample: Sequence[bool] | np.ndarray | None = None,
    aliases: Mapping[str, str] | None = None,
    sequences: Mapping[str, tuple[int, int]] | None = None,
    **kwargs: Any,
) -> StoreWriter:
    """Create a store, or resume an existing one made for the same rows and config.

    An existing store with other ids, labels, splits, label names, datasets or ``config`` is
    refused with a message saying what differs, unless ``overwrite``.
    """
    path = Path(path)
    layout = _layout(
        ids,
        labels,
        split,
        fold,
        label_names,
        embeddings,
        logits,
        embedding_dtype,
        attrs,
        in_sample,
        aliases,
        sequences,
    )
    if path.exists() and not overwrite:
        _recover_if_crashed(path)
        with _open_h5(path) as f:
            problems = StoreLayout.from_file(f).differences(layout)
        if problems:
            raise StoreError(
                f"{path} exists and was made for something else:\n  "
                + "\n  ".join(problems)
                + "\nPass --overwrite (overwrite=True) to replace it, or write to another path."
            )
        return StoreWriter(path)
    if path.exists():
        _check_replaceable(path)
        path.unlink()
    return _create(path, layout, attrs or {}, **kwargs)


def _check_replaceable(path: Path) -> None:
    """``--overwrite`` replaces only a feature store that no process is writing."""
    if not path.is_file():
        raise StoreError(f"{path} is not a file; refusing to replace it")
    try:
        with _open_h5(path) as f:
            ours = "ids" in f and "label_names" in f.attrs and "schema_version" in f.attrs
    except StoreError:
        ours = False
    if not ours:
        raise StoreError(
            f"{path} is not an emofeat feature store; refusing to overwrite it. Choose another --out."
        )
    if writer_alive(path):
        raise StoreError(f"{path}: another process is writing this store; not replacing it")


# ---------------------------------------------------------------------------------------- reader
class Store:
    """A feature store opened for reading; see :func:`open_store`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._f = _open_h5(self.path)
        try:
            self._load()
        except StoreError:
            self._f.close()
            raise
        except (KeyError, OSError, ValueError, TypeError) as err:
            self._f.close()
            raise StoreError(f"{self.path}: malformed store ({err})") from None

    def _load(self) -> None:
        f = self._f
        missing = [d for d in REQUIRED if d not in f]
        if "label_names" not in f.attrs:
            missing.append("attribute label_names")
        if missing:
            raise StoreError(f"{self.path}: not a feature store: missing {', '.join(missing)}")
        check_plain(f, self.path)
        if "complete" in f.attrs and not isinstance(f.attrs["complete"], (bool, np.bool_)):
            raise StoreError(
                f"{self.path}: attribute complete must be a boolean, got {f.attrs['complete']!r}"
            )
        if f["labels"].dtype.kind not in "iu":
            raise StoreError(
                f"{self.path}: /labels must hold integers (class indices, -1 unknown), "
                f"got {f['labels'].dtype}"
            )
        version = int(f.attrs.get("schema_version", SCHEMA_VERSION))
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema_version {version} is newer than this emofeat ({SCHEMA_VERSION}); upgrade emofeat"
            )
        self.ids = np.array(_decode(f["ids"][:]), dtype=object)
        n = len(self.ids)
        self.label_names: list[str] = _decode(f.attrs["label_names"])
        c = len(self.label_names)
        self.labels = f["labels"][:].astype(np.int16)
        self.split = np.array(_decode(f["split"][:]), dtype=object)
        self.fold = f["fold"][:].astype(np.int16)
        self.done = f["done"][:].astype(bool)
        self.skipped = f["skipped"][:].astype(bool) if "skipped" in f else np.zeros(n, bool)
        # Out-of-fold evidence per row; None when the store does not record it (unknown).
        self.in_sample = f["in_sample"][:].astype(bool) if "in_sample" in f else None
        for name, arr in (
            ("labels", self.labels),
            ("split", self.split),
            ("fold", self.fold),
            ("done", self.done),
            *([("in_sample", self.in_sample)] if self.in_sample is not None else []),
        ):
            if arr.shape != (n,):
                raise StoreError(
                    f"{self.path}: /{name} has shape {arr.shape}, expected ({n},) like /ids"
                )
        if len(set(self.ids)) != n:
            dup = [i for i in set(self.ids) if np.sum(self.ids == i) > 1][:5]
            raise StoreError(f"{self.path}: duplicate ids {dup}")
        if n and (self.labels.min() < -1 or self.labels.max() >= c):
            raise StoreError(
                f"{self.path}: labels outside -1..{c - 1} for label_names {self.label_names}"
            )
        bad = sorted(set(self.split) - set(SPLITS))
        if bad:
            raise StoreError(f"{self.path}: /split values must be train or test, got {bad[:5]}")
        if "logits" in f and f["logits"].shape != (n, c):
            raise StoreError(
                f"{self.path}: /logits has shape {f['logits'].shape}, expected ({n}, {c})"
            )
        for name, ds in self._embedding_group().items():
            if ds.ndim != 2 or ds.shape[0] != n:
                raise StoreError(
                    f"{self.path}: /embeddings/{name} has shape {ds.shape}, expected ({n}, D)"
                )
        self.attrs: dict[str, Any] = {k: _decode(v) for k, v in f.attrs.items()}
        self._lengths: dict[str, np.ndarray] = {}  # sequence lengths, read on first use

    def _embedding_group(self) -> Mapping[str, h5py.Dataset]:
        return self._f.get("embeddings", {})

    # -- metadata
    def __len__(self) -> int:
        return len(self.ids)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def complete(self) -> bool:
        return bool(self.attrs.get("complete", False))

    @property
    def has_logits(self) -> bool:
        return "logits" in self._f

    @property
    def embedding_names(self) -> list[str]:
        return sorted(self._embedding_group().keys())

    @property
    def provenance(self) -> Provenance:
        """How the store was made (typed root attributes)."""
        return Provenance.from_attrs(self.attrs)

    @property
    def config(self) -> dict[str, Any]:
        """The options that decided the stored values ({} when the store does not say)."""
        return _parse_config(self.attrs.get("config", "")) or {}

    @property
    def layout(self) -> StoreLayout:
        """Rows, label names, datasets and config, for comparisons with other stores."""
        datasets, aliases = embedding_datasets(self._f)
        dtypes = {str(ds.dtype) for ds in datasets.values()}
        return StoreLayout(
            self.ids,
            self.labels,
            self.split,
            self.fold,
            self.label_names,
            {k: ds.shape[1] for k, ds in datasets.items()},
            self.has_logits,
            dtypes.pop() if len(dtypes) == 1 else "float32",
            _parse_config(self.attrs.get("config", "")),
            self.in_sample,
            aliases,
            sequence_shapes(self._f),
        )

    @property
    def sequence_names(self) -> list[str]:
        return sorted(sequence_shapes(self._f))

    def sequences(self, name: str, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(states (n, T, H) float16 zero-padded, valid lengths (n,)) of sequence ``name``."""
        if name not in self.sequence_names:
            raise StoreError(
                f"{self.path}: no sequence {name!r}; available: {self.sequence_names} "
                "(extract with --sequence)"
            )
        ds, lengths = self._f[f"sequences/{name}"], self._f[f"sequences/{name}_length"]
        if rows is None:
            return ds[:], lengths[:]
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *ds.shape[1:]), ds.dtype)
        # One row is one uncompressed chunk: read it directly (h5py's fancy indexing over a
        # 3-D dataset built a hyperslab union and read 64 rows at 0.05 GB/s here).
        for j, r in enumerate(rows):
            try:
                _, raw = ds.id.read_direct_chunk((int(r), 0, 0))
                out[j] = np.frombuffer(raw, ds.dtype).reshape(ds.shape[1:])
            except (KeyError, OSError, ValueError, RuntimeError):
                out[j] = ds[int(r)]  # a chunk never written (the row is not done)
        if not self.complete:  # a writer may still be adding rows: read them fresh
            return out, lengths[:][rows]
        if name not in self._lengths:  # read once: MMM asks for one row at a time
            self._lengths[name] = lengths[:]
        return out, self._lengths[name][rows]

    def skip_reasons(self) -> dict[str, str]:
        """id → reason of every skipped row."""
        rows = np.flatnonzero(self.skipped)
        if not len(rows):
            return {}
        reasons = self._f["skip_reason"][rows]
        return {self.ids[i]: r.decode("utf-8", "replace") for i, r in zip(rows, reasons)}

    # -- data
    def _read(self, ds: h5py.Dataset, rows: np.ndarray | None) -> np.ndarray:
        if rows is None:
            return ds[:]
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return np.empty((0, *ds.shape[1:]), ds.dtype)
        if len(rows) > len(self) // 4:  # dense: one hyperslab read is fastest
            order = np.argsort(rows)
            out = np.empty((len(rows), *ds.shape[1:]), ds.dtype)
            out[order] = ds[rows[order]]
            return out
        return _read_rows(ds, rows)

    def logits(self, rows: np.ndarray | None = None) -> np.ndarray:
        """(N, C) float32 logits, or the given rows (any order)."""
        if not self.has_logits:
            raise StoreError(f"{self.path}: this store has no logits (a frozen-encoder store?)")
        return self._read(self._f["logits"], rows)

    def embeddings(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """(N, D) embedding ``name`` (e.g. ``last``, ``layer_07``), or the given rows."""
        group = self._embedding_group()
        if name not in group:
            raise StoreError(
                f"{self.path}: no embedding {name!r}; available: {self.embedding_names}"
            )
        return self._read(group[name], rows)

    def select(
        self, split: str | None = None, fold: int | None = None, done: bool = True
    ) -> np.ndarray:
        """Row indices with the given split and fold (only done rows unless ``done=False``)."""
        mask = np.ones(len(self), bool)
        if split is not None:
            mask &= self.split == split
        if fold is not None:
            mask &= self.fold == fold
        if done:
            mask &= self.done
        return np.flatnonzero(mask)

    def to_numpy(
        self,
        embedding: str | None = None,
        rows: np.ndarray | None = None,
        return_ids: bool = False,
    ) -> tuple[np.ndarray, ...]:
        """(X, y), or (X, y, ids) with ``return_ids``: an embedding (or the logits when
        ``embedding`` is None), the labels and the utterance ids of the rows."""
        x = self.logits(rows) if embedding is None else self.embeddings(embedding, rows)
        idx = slice(None) if rows is None else np.asarray(rows)
        return (x, self.labels[idx], self.ids[idx]) if return_ids else (x, self.labels[idx])

    def to_pandas(self, embedding: str | None = None, array_columns: bool = False):
        """A DataFrame indexed by id: label, split, fold, done, logits, and an embedding — one
        column per dimension, or with ``array_columns`` one column ``<embedding>`` holding each
        row's vector (and ``logits`` likewise), which stays small for 2,048-wide embeddings."""
        import pandas as pd

        frame = pd.DataFrame(
            {
                "label": self.labels,
                "label_name": [self.label_names[i] if i >= 0 else "" for i in self.labels],
                "split": self.split,
                "fold": self.fold,
                "done": self.done,
            },
            index=pd.Index(self.ids, name="id"),
        )
        if self.has_logits:
            lg = self.logits()
            if array_columns:
                frame["logits"] = list(lg)
            else:
                for j, name in enumerate(self.label_names):
                    frame[f"logit_{name}"] = lg[:, j]
        if embedding is not None and array_columns:
            frame[embedding] = list(self.embeddings(embedding))
        elif embedding is not None:
            emb = self.embeddings(embedding)
            frame = pd.concat(
                [
                    frame,
                    pd.DataFrame(
                        emb,
                        index=frame.index,
                        columns=[f"{embedding}_{j}" for j in range(emb.shape[1])],
                    ),
                ],
                axis=1,
            )
        return frame

    def torch_dataset(self, embedding: str, split: str | None = None):
        """A torch ``Dataset`` of (embedding float32 tensor, label) over done rows (imports torch)."""
        import torch

        rows = self.select(split=split)
        x = torch.from_numpy(self.embeddings(embedding, rows).astype(np.float32))
        y = torch.from_numpy(self.labels[rows].astype(np.int64))
        return torch.utils.data.TensorDataset(x, y)

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_rows(ds: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """Random rows, fast: h5py's fancy indexing builds a slow hyperslab union (~100 ms for
    1000 rows of 100k here). Uncompressed row-chunked datasets are read chunk by chunk
    (``read_direct_chunk``, ~45 ms); others row by row through the low-level API."""
    out = np.empty((len(rows), *ds.shape[1:]), ds.dtype)
    chunks = ds.chunks
    if (
        chunks
        and not ds.compression
        and ds.ndim == 2
        and chunks[1] == ds.shape[1]
        and ds.dtype.kind == "f"
    ):
        size = chunks[0]
        cid = rows // size
        try:
            for c in np.unique(cid):
                _, raw = ds.id.read_direct_chunk((int(c) * size, 0))
                block = np.frombuffer(raw, ds.dtype).reshape(-1, ds.shape[1])
                hit = cid == c
                out[hit] = block[rows[hit] - c * size]
            return out
        except (KeyError, OSError, ValueError, RuntimeError):
            pass  # a chunk never written (its rows are not done): use the general path
    fspace = ds.id.get_space()
    mspace = h5py.h5s.create_simple((1, *ds.shape[1:]))
    buf = np.empty((1, *ds.shape[1:]), ds.dtype)
    for j, r in enumerate(rows):
        fspace.select_hyperslab((int(r), *([0] * (ds.ndim - 1))), (1, *ds.shape[1:]))
        ds.id.read(mspace, fspace, buf)
        out[j] = buf[0]
    return out


def open_store(path: str | os.PathLike) -> Store:
    """Open and validate a store for reading (works while a writer appends to it)."""
    return Store(path)


def validate_store(path: str | os.PathLike) -> list[str]:
    """Problems of a store as messages; empty when it is valid and complete."""
    try:
        with open_store(path) as s:
            problems = []
            if not s.complete:
                problems.append(f"{path}: not complete ({int(s.done.sum())}/{len(s)} rows done)")
            if s.has_logits:
                lg = s.logits(s.select())
                if not np.isfinite(lg).all():
                    problems.append(f"{path}: non-finite logits in done rows")
            for name in s.embedding_names:
                if not np.isfinite(s.embeddings(name, s.select())).all():
                    problems.append(f"{path}: non-finite values in done rows of /embeddings/{name}")
            return problems
    except StoreError as err:
        return [str(err)]


# ------------------------------------------------------------------------------------- aligned
def align_stores(
    stores: Sequence[Store], allow_incomplete: bool = False
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
                f"{s.path} is not complete ({int(s.done.sum())}/{len(s)} rows done); finish its extraction, or pass --allow-incomplete"
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


def load_aligned(
    paths: Sequence[str | os.PathLike],
    embedding: str | None = None,
    split: str | None = None,
    allow_incomplete: bool = False,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Several stores aligned by utterance id: ``([X per store], y, ids)`` over the rows done in
    every store (in the first store's order; ``split`` keeps one split). ``X`` is the logits
    (``embedding`` None) or that embedding. Stores that disagree on ids, labels, splits, folds
    or label names are refused, naming what differs."""
    if not paths:
        raise StoreError("no stores given")
    stores = [open_store(p) for p in paths]
    try:
        first = stores[0]
        positions, usable = align_stores(stores, allow_incomplete)
        if split is not None:
            usable &= first.split == split
        keep = np.flatnonzero(usable)
        xs = [
            s.logits(pos[keep]) if embedding is None else s.embeddings(embedding, pos[keep])
            for s, pos in zip(stores, positions)
        ]
        return xs, first.labels[keep].astype(int), first.ids[keep]
    finally:
        for s in stores:
            s.close()


def export_store(
    path: str | os.PathLike, out: str | os.PathLike, fmt: str = "npz", embedding: str | None = None
) -> Path:
    """Write a store's done rows as ``npz`` (ids, labels, split, fold, logits, every embedding
    or ``embedding``) or ``parquet`` (one row per utterance, array columns; needs pyarrow)."""
    out = Path(out)
    from emofeat.atomic import atomic_path

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
            }
            if s.has_logits:
                arrays["logits"] = s.logits(rows)
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
            with atomic_path(out, suffix=".parquet") as tmp:
                frame.to_parquet(tmp)
        else:
            raise StoreError(f"export format must be npz or parquet, got {fmt!r}")
    return out


# ----------------------------------------------------------------------------------------- merge
def merge_stores(inputs: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Merge shards of one store (same rows, disjoint done rows) into ``out``."""
    if not inputs:
        raise StoreError("nothing to merge")
    out = Path(out)
    stores = [open_store(p) for p in inputs]
    try:
        first = stores[0]
        layout = first.layout
        owner = np.full(len(first), -1)
        for k, s in enumerate(stores):
            problems = layout.differences(s.layout, here=f"in {first.path}", there=f"in {s.path}")
            if problems:
                raise StoreError(f"cannot merge {s.path} with {first.path}: " + "; ".join(problems))
            both = np.flatnonzero((owner >= 0) & (s.done | s.skipped))
            if len(both):
                raise StoreError(
                    f"cannot merge: {s.path} and {stores[owner[both[0]]].path} both hold row {both[0]} (id {first.ids[both[0]]!r}) and {len(both) - 1} more"
                )
            owner[s.done | s.skipped] = k
        attrs = {
            k: v
            for k, v in first.attrs.items()
            if k not in ("complete", "schema_version", "label_names", "emofeat_version")
        }
        tmp = out.with_name(f".{out.name}.merging")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        writer = _create(tmp, layout, attrs)
        with writer:
            for s in stores:
                rows = s.select()
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
                    )
                for uid, reason in s.skip_reasons().items():
                    writer.skip(np.flatnonzero(first.ids == uid), reason)
        writer.finalize()
        os.replace(tmp, out)
        return out
    finally:
        for s in stores:
            s.close()


# --------------------------------------------------------------------------------------- inspect
def describe(path: str | os.PathLike) -> str:
    """A human-readable summary: rows, done, datasets, provenance, per-split/per-label counts."""
    with open_store(path) as s:
        lines = [
            f"store      {s.path}",
            f"rows       {len(s)}  done {int(s.done.sum())}  skipped {int(s.skipped.sum())}  complete {s.complete}",
        ]
        for name, ds in [("logits", s._f["logits"])] if s.has_logits else []:
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
