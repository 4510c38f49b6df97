"""EmoBox's metadata format: read its protocols into manifests, write manifests in it.

EmoBox (``emo-box/EmoBox``) describes each of its corpora as a folder ``data/NAME/`` holding

* ``label_map.json``: the corpus's raw emotion codes → class names (``{"c": "Angry", ...}``);
* ``fold_K/NAME_{train,test}_fold_K.jsonl`` (and an optional ``..._valid_fold_K.jsonl``), one
  JSON object per line: ``key, dataset, wav, type, sample_rate, num_frame, task, length, emo,
  channel``; ``wav`` is relative to the EmoBox checkout (``downloads/NAME/...``).

Reading: with several folds, each row's fold is the fold whose test file holds it (EmoBox's
folds are leave-sessions-out: every row is tested once), every row is a train row of emofeat's
fold plan and the fold's name is its group; with one fold (an official split), its test file
holds the test rows and emofeat assigns the cross-fitting folds of its train rows. Transcripts
are not part of EmoBox's metadata: the rows are audio-only. Writing: a manifest's train/test
split becomes fold 1 (or, for a manifest without test rows, its cross-fitting folds become
EmoBox's folds), with a label map of the manifest's classes.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emofeat.atomic import atomic_folder, write_text
from emofeat.corpus import aihub, kemdy19, kemdy20
from emofeat.corpus.labels import LabelSet, label_map_from, normalise
from emofeat.corpus.manifest import Manifest
from emofeat.corpus.missing import handle_missing
from emofeat.errors import CorpusError
from emofeat.outputs import check_output, register_record_kind
from emofeat.records import FOLDER_RECORD, dump_yaml, provenance

log = logging.getLogger(__name__)

LABEL_MAP = "label_map.json"
PARTS = ("train", "valid", "test")
FIELDS = ("key", "wav", "emo")  # what emofeat needs of each line

register_record_kind("emobox-export", legacy_key="emobox", folder=True)


def corpus_name(name: str) -> str:
    """The manifest's corpus name of an EmoBox corpus (its own name, unless a reader of
    emofeat's owns that name: its split rules key on it)."""
    readers = (kemdy19.CORPUS, kemdy20.CORPUS, aihub.CORPUS)
    return f"{name}-emobox" if name.lower() in readers else name


def fold_files(base: Path, name: str) -> dict[int, dict[str, Path]]:
    """``{K: {part: file}}`` of the ``fold_K`` folders of an EmoBox corpus folder."""
    folds: dict[int, dict[str, Path]] = {}
    for folder in sorted(base.glob("fold_*")):
        suffix = folder.name.removeprefix("fold_")
        if not folder.is_dir() or not suffix.isdigit():
            continue
        k = int(suffix)
        parts = {p: folder / f"{name}_{p}_fold_{k}.jsonl" for p in PARTS}
        folds[k] = {p: f for p, f in parts.items() if f.is_file()}
        for need in ("train", "test"):
            if need not in folds[k]:
                raise CorpusError(
                    f"{parts[need]}: missing; EmoBox folds have a train and a test file"
                )
    return folds


def _lines(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(f"{path} line {n}: not JSON ({err.msg})") from None
            if not isinstance(rec, dict) or any(f not in rec for f in FIELDS):
                raise CorpusError(
                    f"{path} line {n}: an EmoBox line needs the fields {', '.join(FIELDS)}"
                )
            rows.append(rec)
    return rows


def read_emobox(
    root: str | os.PathLike, name: str, skip_missing: bool = False
) -> tuple[pd.DataFrame, dict, LabelSet]:
    """Read one EmoBox corpus into manifest rows with its own split and folds.

    Args:
        root: EmoBox's ``data`` folder (one folder per corpus).
        name: The corpus (``iemocap``, ``cafe``, ...: a folder of ``root``).
        skip_missing: Leave out rows whose audio is missing instead of refusing.

    Returns:
        The rows (``split`` and ``fold`` given), a report, and the classes its label map declares.

    Raises:
        CorpusError: no such corpus, no folds, malformed lines, a key in two folds' test files,
            rows no fold tests, an ``emo`` the label map lacks, missing audio (without
            ``skip_missing``).
    """
    root = Path(root)
    base = root / name
    if not base.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise CorpusError(
            f"{base}: no such EmoBox corpus; --emobox is EmoBox's data folder"
            + (f" (its corpora: {', '.join(found)})" if found else "")
        )
    if not (base / LABEL_MAP).is_file():
        raise CorpusError(f"{base / LABEL_MAP}: missing; every EmoBox corpus has its label map")
    try:
        raw_map = json.loads((base / LABEL_MAP).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorpusError(f"{base / LABEL_MAP}: not JSON ({err})") from None
    mapping = label_map_from(raw_map, str(base / LABEL_MAP))
    folds = fold_files(base, name)
    if not folds:
        raise CorpusError(f"{base}: no fold_K folders; not an EmoBox corpus folder")
    records: dict[str, dict[str, Any]] = {}
    tested: dict[str, int] = {}
    for k, parts in sorted(folds.items()):
        for part, path in parts.items():
            for rec in _lines(path):
                key = str(rec["key"])
                records.setdefault(key, rec)
                if part == "test":
                    if key in tested:
                        raise CorpusError(
                            f"{path}: key {key!r} is tested by fold {tested[key]} too; EmoBox "
                            "folds test each row once"
                        )
                    tested[key] = k
    several = len(folds) > 1
    untested = sorted(set(records) - set(tested))
    if several and untested:
        raise CorpusError(
            f"{base}: {len(untested)} row(s) that no fold tests (e.g. {untested[:3]}); with "
            "several folds every row must be in one fold's test file"
        )
    order = sorted(folds)
    rows, missing = [], []
    for key, rec in records.items():
        emo = normalise(rec["emo"])
        if emo not in mapping:
            raise CorpusError(
                f"{base}: key {key!r} has emo {rec['emo']!r}, which {LABEL_MAP} does not map"
            )
        audio = _audio(root, base, str(rec["wav"]))
        if audio is None:
            missing.append((key, str(rec["wav"])))
            continue
        fold = tested.get(key)
        row = {
            "id": key,
            "corpus": corpus_name(name),
            # The held-out fold is the group: a cross-fitted model never saw the fold it predicts.
            "session": f"fold_{fold}" if several else "",
            "speaker": "",
            "audio_path": str(audio),
            "text": "",
            "label": mapping[emo] or "",
        }
        if several:
            row.update(split="train", fold=order.index(fold))
        else:
            row.update(split="test" if fold is not None else "train", fold=np.nan)
        rows.append(row)
    skipped = handle_missing(f"EmoBox {name} at {base}", missing, skip_missing)
    declared = LabelSet(tuple(sorted({v for v in mapping.values() if v})))
    report = {
        "utterances": len(rows),
        "folds": len(folds),
        "skipped_missing": skipped,
    }
    return pd.DataFrame(rows), report, declared


def _audio(root: Path, base: Path, wav: str) -> Path | None:
    """A line's audio file: absolute as given, else relative to the EmoBox checkout (the
    parent of its data folder, where ``downloads/`` lives), to the data folder or to the
    corpus folder, the first that exists; None when none does."""
    path = Path(wav)
    if path.is_absolute():
        return path if path.is_file() else None
    for folder in (root.parent, root, base):
        if (folder / path).is_file():
            return folder / path
    return None


def export_emobox(m: Manifest, out: str | os.PathLike, name: str | None = None) -> Path:
    """Write a manifest as an EmoBox corpus folder ``out/NAME`` (EmoBox's own code runs on it).

    Args:
        m: The manifest.
        out: The folder that plays EmoBox's ``data`` folder.
        name: The corpus name (default: the manifest's corpus when it has one, else ``emofeat``).

    Returns:
        The corpus folder written (``out/NAME``).

    Raises:
        CorpusError: no labelled rows with audio, or a manifest with neither test rows nor folds.
        EmofeatError: the folder exists and is not an export emofeat made.
    """
    import soundfile as sf

    corpora = sorted(set(m.frame["corpus"]))
    name = name or (corpora[0] if len(corpora) == 1 else "emofeat")
    folder = Path(out) / name
    check_output(folder, kind="emobox-export", inputs=[m.path], what="--emobox")
    labels = m.label_indices
    usable = np.flatnonzero((labels >= 0) & (m.frame["audio_path"] != "").to_numpy())
    if not len(usable):
        raise CorpusError(f"{m.path}: no labelled row with audio; EmoBox has nothing to run")
    split, fold = m.split, m.fold
    if (split[usable] == "test").any():
        plan = {
            1: {"train": usable[split[usable] == "train"], "test": usable[split[usable] == "test"]}
        }
    elif m.num_folds >= 2:
        plan = {
            k + 1: {"train": usable[fold[usable] != k], "test": usable[fold[usable] == k]}
            for k in range(m.num_folds)
        }
    else:
        raise CorpusError(f"{m.path}: neither test rows nor folds; EmoBox needs one or the other")
    lines = {}
    for r in usable:
        path = m.audio_path(int(r))
        info = sf.info(str(path))
        lines[r] = json.dumps(
            {
                "key": str(m.ids[r]),
                "dataset": name,
                "wav": str(path.resolve()),
                "type": "raw",
                "sample_rate": int(info.samplerate),
                "num_frame": int(info.frames),
                "task": "category",
                "length": info.frames / info.samplerate,
                "emo": m.label_names[labels[r]],
                "channel": 1,
            },
            ensure_ascii=False,
        )
    with atomic_folder(folder) as tmp:
        write_text(tmp / LABEL_MAP, json.dumps({n: n for n in m.label_names}, indent=4))
        write_text(tmp / f"{name}.jsonl", "".join(lines[r] + "\n" for r in usable))
        for k, parts in plan.items():
            (tmp / f"fold_{k}").mkdir()
            for part, rows in parts.items():
                text = "".join(lines[r] + "\n" for r in rows)
                write_text(tmp / f"fold_{k}" / f"{name}_{part}_fold_{k}.jsonl", text)
        config = {"emobox": name, "manifest": str(m.path), "folds": len(plan)}
        write_text(tmp / FOLDER_RECORD, dump_yaml(provenance(config, output="emobox-export")))
    left = len(m) - len(usable)
    if left:
        log.warning("%d row(s) without a label or audio were left out of the export", left)
    return folder
