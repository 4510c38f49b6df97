"""The HDF5 feature store (h5py + numpy only): layout, writer, reader and tools.

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
writing clears the stale open-for-write flags (see :mod:`emofeat.store.recover`). Readers may open a
store while a writer appends to it (SWMR read).

The package: :mod:`~emofeat.store.layout` (what a store holds, one validation for creating and
loading), :mod:`~emofeat.store.writer`, :mod:`~emofeat.store.reader` and
:mod:`~emofeat.store.tools` (validate, align by id, export, merge, describe), and
:mod:`~emofeat.store.buffer` (the write buffer: rows written in few large blocks).
``import emofeat.store`` imports neither torch nor transformers (nor pandas).
"""

from emofeat.store.buffer import WriteBehind
from emofeat.store.layout import SPLITS, Provenance, StoreLayout, printable
from emofeat.store.reader import Store, open_store
from emofeat.store.tools import (
    Aligned,
    align_stores,
    aligned,
    describe,
    export_store,
    load_aligned,
    merge_stores,
    validate_store,
)
from emofeat.store.writer import (
    StoreWriter,
    check_resumable,
    create_store,
    open_writer,
    remove_store,
    writer_alive,
)

__all__ = [
    "SPLITS",
    "Aligned",
    "Provenance",
    "Store",
    "StoreLayout",
    "StoreWriter",
    "align_stores",
    "check_resumable",
    "aligned",
    "create_store",
    "describe",
    "export_store",
    "load_aligned",
    "merge_stores",
    "open_store",
    "open_writer",
    "remove_store",
    "printable",
    "WriteBehind",
    "validate_store",
    "writer_alive",
]
