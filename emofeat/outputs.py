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

Commands ask :func:`check_output` before they read their inputs. The kinds of output are
registered by the modules that write them (:func:`register_kind`): stores by
:mod:`emofeat.store`, runs by :mod:`emofeat.runs`, manifests by :mod:`emofeat.corpus.manifest`,
stacks and predictions by :mod:`emofeat.stack.ensemble`, exports by :mod:`emofeat.store.tools`,
store records by :mod:`emofeat.extract.run`, recipe records by :mod:`emofeat.recipes.emo_ensemble`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from emofeat.errors import EmofeatError
from emofeat.records import FOLDER_RECORD

# The key of a YAML record that names the output it describes (written by provenance()).
MARK = "output"
# Kind of output → how emofeat recognises one it made. Each module that writes a kind registers
# it (:func:`register_kind`, :func:`register_record_kind`); this module knows none by name.
KINDS: dict[str, Callable[[Path], bool]] = {}
# Record kinds → the config key a record written before the marker existed holds instead.
_LEGACY_KEYS: dict[str, str] = {}
# Kinds whose output is a folder holding only its own files (runs, stacks).
FOLDER_KINDS: set[str] = set()


def register_kind(kind: str, recognise: Callable[[Path], bool]) -> None:
    """Declare an output ``kind`` and how an existing path is recognised as one emofeat made:
    by a marker emofeat writes into it, never by its name or extension."""
    KINDS[kind] = recognise


def register_csv_kind(kind: str, header: str) -> None:
    """Declare a CSV output ``kind`` that emofeat recognises by the header it writes (a CSV has
    nowhere else to hold a marker): its first line starts with ``header``."""

    def recognise(path: Path) -> bool:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.readline().startswith(header)
        except (OSError, UnicodeDecodeError):
            return False

    register_kind(kind, recognise)


def register_record_kind(kind: str, *, legacy_key: str, folder: bool = False) -> None:
    """Declare a YAML record kind (``provenance(output=kind)`` writes its marker). ``legacy_key``:
    the config key that marks a record written before the marker existed; ``folder``: the
    output is a folder holding the record as ``config.yaml`` (runs, stacks)."""
    _LEGACY_KEYS[kind] = legacy_key
    if folder:
        FOLDER_KINDS.add(kind)
        register_kind(kind, lambda p: is_record(Path(p) / FOLDER_RECORD, kind))
    else:
        register_kind(kind, lambda p: is_record(Path(p), kind))


def read_yaml(path: Path) -> dict[str, Any] | None:
    """The mapping a YAML file holds, or None when it is unreadable or not a mapping."""
    import yaml

    from emofeat.records import load_yaml

    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def is_record(path: Path, kind: str) -> bool:
    """Whether ``path`` is a YAML record emofeat wrote as ``kind`` (a registered record kind)."""
    data = read_yaml(Path(path))
    if data is None or "emofeat_version" not in data or not isinstance(data.get("config"), dict):
        return False
    if MARK in data:
        return data[MARK] == kind
    legacy = _LEGACY_KEYS.get(kind)
    return legacy is not None and legacy in data["config"]  # written before the marker existed


def is_output(path: str | os.PathLike, kind: str) -> bool:
    """Whether ``path`` is an output of ``kind`` that emofeat made.

    Raises:
        KeyError: no module registered ``kind`` (a programming error, not a user's).
    """
    if kind not in KINDS:
        raise KeyError(f"output kind {kind!r} is not registered; known: {sorted(KINDS)}")
    return KINDS[kind](Path(path))


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
    one of the input folders), inside a folder output of another command (a run or a stack
    folder holds only its own files), or when it exists and is not a ``kind`` that emofeat
    made.
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
    for parent in path.resolve().parents:
        for folder_kind in sorted(FOLDER_KINDS):
            if is_output(parent, folder_kind):
                raise EmofeatError(
                    f"{what} {path} is inside {parent}, a {folder_kind} folder emofeat made, "
                    "which holds only its own files; write the output somewhere else"
                )
    if not (path.exists() or path.is_symlink()):
        return
    if path.is_symlink():
        raise EmofeatError(f"{what} {path} is a symbolic link; refusing to replace it")
    if not is_output(path, kind):
        raise EmofeatError(
            f"{what} {path} exists and is not a {kind.replace('-', ' ')} emofeat made; refusing "
            "to replace it. Choose another path."
        )
