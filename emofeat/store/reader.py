"""Reading a store: :class:`Store` (validated on opening, readable while a writer appends) and
fast row reads. h5py + numpy only (pandas and torch only for the exports that ask for them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from emofeat.errors import StoreError

LAYER = re.compile(r"^layer_(\d+)$")  # a hidden state's dataset, as extraction names it
from emofeat.outputs import register_kind
from emofeat.store.layout import (
    REQUIRED,
    SCHEMA_VERSION,
    Provenance,
    StoreLayout,
    _decode,
    _open_h5,
    _parse_config,
    check_plain,
    check_rows,
    embedding_datasets,
    sequence_shapes,
)

if TYPE_CHECKING:  # for annotations only: reading a store needs neither
    import pandas as pd
    from torch.utils.data import TensorDataset


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
        version = int(f.attrs.get("schema_version", SCHEMA_VERSION))
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema_version {version} is newer than this emofeat ({SCHEMA_VERSION}); upgrade emofeat"
            )
        self._check_declared_sizes()
        self.ids = np.array(_decode(f["ids"][:]), dtype=object)
        n = len(self.ids)
        self.label_names: list[str] = _decode(f.attrs["label_names"])
        c = len(self.label_names)
        labels, fold = f["labels"][:], f["fold"][:]
        self.split = np.array(_decode(f["split"][:]), dtype=object)
        self.done = f["done"][:].astype(bool)
        self.skipped = f["skipped"][:].astype(bool) if "skipped" in f else np.zeros(n, bool)
        # Out-of-fold evidence per row; None when the store does not record it (unknown).
        self.in_sample = f["in_sample"][:].astype(bool) if "in_sample" in f else None
        per_row = {"done": self.done, "skipped": self.skipped}
        if self.in_sample is not None:
            per_row["in_sample"] = self.in_sample
        check_rows(
            self.path,
            ids=self.ids,
            labels=labels,
            split=self.split,
            fold=fold,
            label_names=self.label_names,
            per_row=per_row,
        )
        self.labels, self.fold = labels.astype(np.int16), fold.astype(np.int16)
        self._check_values(n, c)
        if bool(f.attrs.get("complete", False)) and not (self.done | self.skipped).all():
            left = int((~(self.done | self.skipped)).sum())
            raise StoreError(
                f"{self.path}: marked complete, but {left} of {n} rows are neither done nor "
                "skipped; not a store emofeat wrote whole (re-extract it)"
            )
        self.attrs: dict[str, Any] = {k: _decode(v) for k, v in f.attrs.items()}
        self._lengths: dict[str, np.ndarray] = {}  # sequence lengths, read on first use

    def _check_values(self, n: int, c: int) -> None:
        """Every value dataset has the dtype and shape of the layout (docs/store.md), and every
        sequence its valid lengths within its positions, before any command uses them."""
        f = self._f

        def check(name: str, ds: h5py.Dataset, ndim: int, expected: str) -> None:
            if ds.dtype.kind != "f" or ds.ndim != ndim or ds.shape[0] != n or 0 in ds.shape[1:]:
                raise StoreError(
                    f"{self.path}: /{name} is {ds.dtype} of shape {ds.shape}, expected "
                    f"floats of shape {expected} with no empty axis"
                )

        if "logits" in f:
            check("logits", f["logits"], 2, f"({n}, {c})")
            if f["logits"].shape[1] != c:
                raise StoreError(
                    f"{self.path}: /logits has shape {f['logits'].shape}, expected ({n}, {c})"
                )
        d = len(_decode(f.attrs.get("dimension_names", [])))
        for name in ("dimensions", "dimension_targets"):
            if name in f:
                check(name, f[name], 2, f"({n}, {d})")
                if f[name].shape[1] != d:
                    raise StoreError(
                        f"{self.path}: /{name} has shape {f[name].shape}, expected ({n}, {d}) "
                        "for its dimension_names attribute"
                    )
        for name, ds in self._embedding_group().items():
            check(f"embeddings/{name}", ds, 2, f"({n}, D)")
        group = f.get("sequences")
        for name in [k for k in group if not k.endswith("_length")] if group is not None else []:
            ds = group[name]
            check(f"sequences/{name}", ds, 3, f"({n}, T, H)")
            lengths = group.get(f"{name}_length")
            if lengths is None or lengths.shape != (n,) or lengths.dtype.kind not in "iu":
                raise StoreError(
                    f"{self.path}: /sequences/{name} needs /sequences/{name}_length, integers of "
                    f"shape ({n},)"
                )
            got = lengths[:]
            bad = (got < 0) | (got > ds.shape[1]) | (self.done & (got == 0))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise StoreError(
                    f"{self.path}: /sequences/{name}_length of row {i} is {int(got[i])}, outside "
                    f"1..{ds.shape[1]} for a done row (0..{ds.shape[1]} for others)"
                )

    def _check_declared_sizes(self) -> None:
        """Refuse row counts a crafted file declares but cannot hold, before anything is read
        (an 8 TiB /ids in a small file would otherwise be allocated first)."""
        f = self._f
        if f["ids"].ndim != 1:
            raise StoreError(f"{self.path}: /ids has shape {f['ids'].shape}, expected (N,)")
        n = f["ids"].shape[0]
        budget = 64 * max(self.path.stat().st_size, 1 << 20)  # generous for compression
        for name in ("ids", "labels", "split", "fold", "done"):
            ds = f[name]
            if ds.shape != (n,):
                raise StoreError(
                    f"{self.path}: /{name} has shape {ds.shape}, expected ({n},) like /ids"
                )
            if n * ds.dtype.itemsize > budget:
                raise StoreError(
                    f"{self.path}: /{name} declares {n} rows, more than the file can hold; "
                    "not a store emofeat can read"
                )

    def _embedding_group(self) -> Mapping[str, h5py.Dataset]:
        return self._f.get("embeddings", {})

    # -- metadata
    def __len__(self) -> int:
        return len(self.ids)

    @property
    def name(self) -> str:
        """The store's name: its file name without the suffix."""
        return self.path.stem

    @property
    def complete(self) -> bool:
        """Whether every row is done or skipped (the ``complete`` attribute)."""
        return bool(self.attrs.get("complete", False))

    @property
    def has_logits(self) -> bool:
        """Whether the store holds ``/logits`` (frozen-encoder stores do not)."""
        return "logits" in self._f

    @property
    def has_dimensions(self) -> bool:
        """Whether the store holds dimensional predictions (``/dimensions``: a run fine-tuned
        with a dimensional task)."""
        return "dimensions" in self._f

    @property
    def has_dimension_targets(self) -> bool:
        """Whether the store holds the rows' true valence and arousal (``/dimension_targets``)."""
        return "dimension_targets" in self._f

    @property
    def dimension_names(self) -> list[str]:
        """The names of the dimensions (``valence``, ``arousal``); [] when the store has none."""
        return [str(n) for n in self.attrs.get("dimension_names", [])]

    @property
    def embedding_names(self) -> list[str]:
        """The names of the stored embeddings (``last``, ``layer_07``, ``pooler``, ...), sorted."""
        return sorted(self._embedding_group().keys())

    @property
    def layers(self) -> list[tuple[int, str]]:
        """The stored hidden states (``extract --layers``): (hidden-state index, dataset name)
        of each ``layer_NN`` embedding, by index (0: the input embeddings / CNN features)."""
        datasets, _ = embedding_datasets(self._f)  # (not the aliases: "last" names one of them)
        found = (LAYER.match(n) for n in datasets)
        return sorted((int(hit.group(1)), hit.group(0)) for hit in found if hit)

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
            ids=self.ids,
            labels=self.labels,
            split=self.split,
            fold=self.fold,
            label_names=self.label_names,
            embeddings={k: ds.shape[1] for k, ds in datasets.items()},
            logits=self.has_logits,
            embedding_dtype=dtypes.pop() if len(dtypes) == 1 else "float32",
            config=_parse_config(self.attrs.get("config", "")),
            in_sample=self.in_sample,
            aliases=aliases,
            sequences=sequence_shapes(self._f),
            targets=self.dimension_targets() if self.has_dimension_targets else None,
            dimensions=self.has_dimensions,
            dimension_names=self.dimension_names,
        )

    @property
    def identity(self) -> str:
        """Which model made the values, and how, for matching a fitted stack to stores: the
        producing weights (sha256) and every value-deciding option the store lists in its
        ``identity_keys`` attribute (layers, pooling, dtype, precision, token limit, window
        length, reverse, text filter, ...); for stores that do not list them, the
        :attr:`legacy_identity`."""
        keys = self.attrs.get("identity_keys")
        prov = self.provenance
        if not prov.checkpoint_sha256 or keys is None:
            return self.legacy_identity
        config = self.config
        options = "|".join(f"{k}={json.dumps(config.get(k), sort_keys=True)}" for k in sorted(keys))
        return f"sha256:{prov.checkpoint_sha256}|{options}"

    @property
    def legacy_identity(self) -> str:
        """The identity stacks fitted before stores listed their ``identity_keys`` recorded:
        the weights' sha256, reverse, layers, pooling and a refit model's test rows, else the
        file name (stores that record no weights)."""
        prov = self.provenance
        if prov.checkpoint_sha256:
            layers = ",".join(prov.layers)
            test = self.config.get("test_rows", "mean")
            return (
                f"sha256:{prov.checkpoint_sha256}|reverse={prov.reverse}|layers={layers}"
                f"|pooling={prov.pooling}" + (f"|test_rows={test}" if test != "mean" else "")
            )
        return f"name:{self.name}"

    @property
    def run_path(self) -> Path | None:
        """The run folder the store's models came from, resolved from the store's own folder
        (stores record it relative to themselves; older ones relative to where extraction ran);
        None for a store of a frozen encoder."""
        from emofeat.records import resolve_path

        run = self.provenance.run
        return resolve_path(run, self.path.parent) if run else None

    @property
    def test_predictions(self) -> str:
        """What predicted the test rows, in words: as extraction recorded it, else (fused or
        older stores) the mean of the fold models for out-of-fold stores, one model otherwise."""
        from emofeat.store.layout import describe_test_predictions

        said = self.config.get("test_predictions")
        if said:
            return str(said)
        if not self.provenance.out_of_fold:
            return describe_test_predictions(1)
        return describe_test_predictions(None)

    @property
    def sequence_names(self) -> list[str]:
        """The names of the stored sequences (``last`` with ``extract --sequence``), sorted."""
        return sorted(sequence_shapes(self._f))

    def sequences(self, name: str, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One stored sequence of every row, or of the given rows.

        Args:
            name: The sequence's name (see :attr:`sequence_names`).
            rows: Row indices, in any order; None for every row.

        Returns:
            ``(states, lengths)``: the states, (n, T, H) float16 zero-padded beyond each row's valid
            length, and the valid lengths, (n,).

        Raises:
            StoreError: the store has no sequence ``name``.
        """
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
        # One row is one unfiltered chunk (as emofeat writes them): read it directly (h5py's
        # fancy indexing over a 3-D dataset built a hyperslab union and read 64 rows at
        # 0.05 GB/s here). Other layouts (filters, other chunks) are read row by row.
        direct = unfiltered(ds) and ds.chunks == (1, *ds.shape[1:])
        for j, r in enumerate(rows):
            if not direct:
                out[j] = ds[int(r)]
                continue
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
        """Why each skipped row was skipped.

        Returns:
            ``{id: reason}`` for every skipped row (empty when none was skipped).
        """
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
        """The logits of every row, or of the given rows.

        Args:
            rows: Row indices, in any order; None for every row.

        Returns:
            (n, C) float32 logits; rows not done hold NaN.

        Raises:
            StoreError: the store has no logits (a frozen-encoder store).
        """
        if not self.has_logits:
            raise StoreError(f"{self.path}: this store has no logits (a frozen-encoder store?)")
        return self._read(self._f["logits"], rows)

    def dimensions(self, rows: np.ndarray | None = None) -> np.ndarray:
        """The dimensional predictions of every row, or of the given rows.

        Args:
            rows: Row indices, in any order; None for every row.

        Returns:
            (n, D) float32 on the rating scale (:attr:`dimension_names`); rows not done hold NaN.

        Raises:
            StoreError: the store has no dimensional predictions.
        """
        if not self.has_dimensions:
            raise StoreError(
                f"{self.path}: this store has no dimensional predictions (/dimensions); extract "
                "a run fine-tuned with --task dimensional or both"
            )
        return self._read(self._f["dimensions"], rows)

    def dimension_targets(self, rows: np.ndarray | None = None) -> np.ndarray:
        """The true valence and arousal of every row, or of the given rows (NaN: none).

        Args:
            rows: Row indices, in any order; None for every row.

        Returns:
            (n, D) float32 (:attr:`dimension_names`).

        Raises:
            StoreError: the store holds no dimensional targets (its manifest had none).
        """
        if not self.has_dimension_targets:
            raise StoreError(f"{self.path}: this store holds no valence or arousal targets")
        return self._read(self._f["dimension_targets"], rows)

    def embeddings(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """One pooled embedding of every row, or of the given rows.

        Args:
            name: The embedding (``last``, ``layer_07``, ``pooler``; see :attr:`embedding_names`).
            rows: Row indices, in any order; None for every row.

        Returns:
            (n, D) array in the stored dtype (float16 or float32).

        Raises:
            StoreError: the store has no embedding ``name``.
        """
        group = self._embedding_group()
        if name not in group:
            raise StoreError(
                f"{self.path}: no embedding {name!r}; available: {self.embedding_names}"
            )
        return self._read(group[name], rows)

    def select(
        self, split: str | None = None, fold: int | None = None, done: bool = True
    ) -> np.ndarray:
        """Row indices by split and fold.

        Args:
            split: ``train`` or ``test``; None for both.
            fold: A cross-fitting fold (test rows have -1); None for all.
            done: Keep only rows whose values are written.

        Returns:
            The matching row indices, ascending.
        """
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
        """Features and labels of rows as arrays.

        Args:
            embedding: The embedding to return; None for the logits.
            rows: Row indices (e.g. from :meth:`select`); None for every row.
            return_ids: Also return the utterance ids.

        Returns:
            ``(X, y)``, or ``(X, y, ids)`` with ``return_ids``.
        """
        x = self.logits(rows) if embedding is None else self.embeddings(embedding, rows)
        idx = slice(None) if rows is None else np.asarray(rows)
        return (x, self.labels[idx], self.ids[idx]) if return_ids else (x, self.labels[idx])

    def to_pandas(self, embedding: str | None = None, array_columns: bool = False) -> pd.DataFrame:
        """The store as a DataFrame indexed by utterance id.

        Columns: ``label``, ``label_name``, ``split``, ``fold``, ``done``, the logits (one column per
        class, ``logit_<class>``), the true ``valence``/``arousal`` and their predictions
        (``predicted_valence``, ...) where the store holds them, and, when asked, an embedding
        (one column per dimension,
        ``<embedding>_<j>``). With ``array_columns``, the logits and the embedding are one column each
        holding every row's vector, which stays small for 2,048-wide embeddings.

        Args:
            embedding: The embedding to add; None for none.
            array_columns: One column per array instead of one per dimension.

        Returns:
            A ``pandas.DataFrame`` with one row per utterance.
        """
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
        if self.has_dimension_targets:  # the true valence and arousal (NaN: none)
            for j, name in enumerate(self.dimension_names):
                frame[name] = self.dimension_targets()[:, j]
        if self.has_dimensions:
            for j, name in enumerate(self.dimension_names):
                frame[f"predicted_{name}"] = self.dimensions()[:, j]
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

    def torch_dataset(self, embedding: str, split: str | None = None) -> TensorDataset:
        """A torch dataset of one embedding over the done rows (imports torch).

        Args:
            embedding: The embedding to serve.
            split: ``train`` or ``test``; None for both.

        Returns:
            A ``torch.utils.data.TensorDataset`` of (float32 embedding, int64 label) pairs.
        """
        import torch

        rows = self.select(split=split)
        x = torch.from_numpy(self.embeddings(embedding, rows).astype(np.float32))
        y = torch.from_numpy(self.labels[rows].astype(np.int64))
        return torch.utils.data.TensorDataset(x, y)

    def close(self) -> None:
        """Close the file (a context manager closes it on exit)."""
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
        and unfiltered(ds)
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


def unfiltered(ds: h5py.Dataset) -> bool:
    """Whether a dataset's chunks are stored as they are in memory (no compression, shuffle,
    scale-offset, checksum or any other HDF5 filter), so a raw chunk read is its values."""
    return ds.id.get_create_plist().get_nfilters() == 0


def open_store(path: str | os.PathLike) -> Store:
    """Open a store for reading and validate it.

    Readers may open a store while a writer appends to it (HDF5 SWMR).

    Args:
        path: The store's HDF5 file.

    Returns:
        The open :class:`Store`; use it as a context manager to close it.

    Raises:
        StoreError: the file is not a store of this layout, or is crafted to reach outside itself
            (external links, external storage, virtual datasets).
    """
    return Store(path)


def is_store(path: Path) -> bool:
    """Whether ``path`` is a feature store emofeat wrote (its root attributes say so)."""
    for swmr in (False, True):  # SWMR: a store a killed writer left open-for-write
        try:
            with h5py.File(path, "r", libver="latest", swmr=swmr, locking=False) as f:
                return "ids" in f and all(
                    k in f.attrs for k in ("label_names", "schema_version", "emofeat_version")
                )
        except OSError:
            continue
    # A store a failed writer left short of its recorded length: HDF5 opens it only after the
    # next writer pads it (which then checks the whole layout); its superblock says it was
    # being written.
    from emofeat.store.recover import status_flags

    try:
        return bool(status_flags(path))
    except (OSError, ValueError):
        return False


register_kind("store", is_store)
