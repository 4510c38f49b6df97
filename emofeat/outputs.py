"""Output safety: the one policy for every file and folder emofeat writes.

* An output is never an input of the same command (``store export S -o S``, ``predict -o`` onto
  a store it reads or onto the stack's ``model.joblib``, ``data prepare --out`` onto its
  ``--csv``, ...): refused before anything is read.
* An existing output is replaced only when emofeat made it, as that kind of output, and it says
  so itself — a marker emofeat writes (the ``output`` key of its YAML records, a store's root
  attributes, an export's own field), never a file name or an extension. A record or sidecar
  (``store/x.yaml``, ``manifest.yaml``) never lands on a file emofeat did not write for that
  output.
* Writing stays atomic (:mod:`emofeat.atomic`): a temporary name, then a rename.

Commands ask :func:`check_output` before they read their inputs; the kinds of output and how
each is recognised are in :data:`KINDS`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from emofeat.errors import EmofeatError

# The key of a YAML record that names the output it describes (written by provenance()).
MARK = "output"
# Kinds of YAML record and what a record written before the marker existed holds instead.
RECORD_KINDS = {
    "run": "family",  # runs/NAME/config.yaml (fine-tuning and fusion runs)
    "stack": "meta",  # runs/stack-NAME/config.yaml
    "store-record": "pooling",  # store/NAME.yaml beside store/NAME.h5
    "manifest-sidecar": "split",  # corpus/manifest.yaml beside corpus/manifest.csv
    "recipe": "protocol",  # OUT/recipe.yaml
}
# The header predictions.csv starts with (CSV has nowhere else to hold a marker).
PREDICTIONS_HEADER = "id,split,label,predicted,provenance"
EXPORT_MARK = "emofeat_export"  # a field of every npz / a key of every parquet emofeat exports


def _read_yaml(path: Path) -> dict[str, Any] | None:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def is_record(path: Path, kind: str) -> bool:
    """Whether ``path`` is a YAML record emofeat wrote as ``kind``."""
    data = _read_yaml(path)
    if data is None or "emofeat_version" not in data or not isinstance(data.get("config"), dict):
        return False
    if MARK in data:
        return data[MARK] == kind
    return RECORD_KINDS[kind] in data["config"]  # written before the marker existed


def is_store(path: Path) -> bool:
    """Whether ``path`` is a feature store emofeat wrote (its root attributes say so)."""
    import h5py

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


def is_manifest(path: Path) -> bool:
    """A manifest CSV emofeat wrote: its sidecar is a manifest record."""
    from emofeat.corpus.manifest import sidecar_path

    return is_record(sidecar_path(path), "manifest-sidecar")


def is_predictions(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.readline().startswith(PREDICTIONS_HEADER)
    except (OSError, UnicodeDecodeError):
        return False


def is_export(path: Path) -> bool:
    """An npz or parquet file emofeat exported (it holds the export mark)."""
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return EXPORT_MARK.encode() in (pq.read_schema(path).metadata or {})
        import numpy as np

        with np.load(path, allow_pickle=False) as data:
            return EXPORT_MARK in data.files
    except Exception:  # anything unreadable is not ours
        return False


def is_run(path: Path) -> bool:
    return is_record(path / "config.yaml", "run")


def is_stack(path: Path) -> bool:
    return is_record(path / "config.yaml", "stack")


# Kind of output → how emofeat recognises one it made. Records are files ("store-record":
# store/x.yaml); "run" and "stack" are folders, recognised by their config.yaml record.
KINDS = {
    **{kind: (lambda p, kind=kind: is_record(p, kind)) for kind in RECORD_KINDS},
    "store": is_store,
    "manifest": is_manifest,
    "predictions": is_predictions,
    "export": is_export,
    "run": is_run,
    "stack": is_stack,
}


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(
    path: str | os.PathLike,
    *,
    kind: str,
    inputs: Iterable[str | os.PathLike | None] = (),
    what: str = "--out",
) -> None:
    """Refuse to write output ``path`` (of ``kind``) when it is one of ``inputs`` (or inside
    one of the input folders), or when it exists and is not a ``kind`` that emofeat made.
    Whether an emofeat output may be replaced (``--overwrite``, or a re-run that resumes) is
    the command's own rule; this is the part every command shares."""
    path = Path(path)
    for given in inputs:
        if given is None:
            continue
        source = Path(given)
        inside = source.is_dir() and path.resolve().is_relative_to(source.resolve())
        if _same(path, source) or path.resolve() == source.resolve() or inside:
            raise EmofeatError(
                f"{what} {path} is an input of this command ({source}); "
                "write the output somewhere else"
            )
    if not (path.exists() or path.is_symlink()):
        return
    if path.is_symlink():
        raise EmofeatError(f"{what} {path} is a symbolic link; refusing to replace it")
    if not KINDS[kind](path):
        raise EmofeatError(
            f"{what} {path} exists and is not a {kind.replace('-', ' ')} emofeat made; refusing "
            "to replace it. Choose another path."
        )
