"""Any other corpus: a UTF-8 CSV listing ``id, audio_path, text`` and optionally ``label,
session, speaker, split``. Its labels are its classes (case and surrounding space ignored);
``--labels`` orders them and ``--label-map`` renames, merges or drops them. Audio paths are relative to the CSV's folder unless absolute.
Rows without a label get -1 downstream (new, unlabelled recordings). A corpus may have one
modality: an empty ``audio_path`` is a text-only row, an empty ``text`` an audio-only one (the
commands that need the missing modality say so); a row with neither is an error."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from emofeat.corpus import aihub, kemdy19, kemdy20
from emofeat.corpus import labels as label_set
from emofeat.corpus.missing import handle_missing
from emofeat.corpus.text import normalize
from emofeat.errors import CorpusError

REQUIRED = ("id", "audio_path", "text")
OPTIONAL = ("label", "session", "speaker", "split")


def corpus_name(path: Path) -> str:
    """The manifest's corpus name of a CSV's rows: the file's stem, except the names of the
    corpora that have readers of their own (their split rules key on the name), which a CSV
    named ``aihub.csv`` must not take: those get a ``-csv`` suffix."""
    stem = path.stem
    readers = (kemdy19.CORPUS, kemdy20.CORPUS, aihub.CORPUS)
    return f"{stem}-csv" if stem.lower() in readers else stem


def read_csv_corpus(
    path: str | Path, text_mode: str = "raw", skip_missing: bool = False
) -> tuple[pd.DataFrame, dict]:
    """Read a generic corpus CSV into manifest rows."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such CSV")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError:
        raise CorpusError(f"{path}: not UTF-8; save the CSV as UTF-8") from None
    absent = [c for c in REQUIRED if c not in frame.columns]
    if absent:
        raise CorpusError(f"{path}: missing column(s) {absent}; required: {', '.join(REQUIRED)}")
    rows, missing = [], []
    for i, rec in frame.iterrows():
        if not rec["audio_path"].strip() and not rec["text"].strip():
            raise CorpusError(f"{path} line {i + 2}: id {rec['id']!r} has neither audio nor text")
        audio = Path(rec["audio_path"]) if rec["audio_path"].strip() else None
        if audio is not None:
            audio = audio if audio.is_absolute() else path.parent / audio
            if not audio.is_file():
                missing.append((rec["id"], str(audio)))
                continue
        # A generic corpus's labels are its classes (data prepare decides the manifest's set).
        label = label_set.normalise(rec.get("label", ""))
        row = {
            "id": rec["id"],
            "corpus": corpus_name(path),
            "session": rec.get("session", ""),
            "speaker": rec.get("speaker", ""),
            "audio_path": str(audio) if audio is not None else "",  # "": a text-only row
            "text": normalize(rec["text"], text_mode),
            "label": label,
        }
        if "split" in frame.columns:
            row["split"] = rec["split"]
        rows.append(row)
    skipped = handle_missing(str(path), missing, skip_missing)
    return pd.DataFrame(rows), {"utterances": len(rows), "skipped_missing": skipped}
