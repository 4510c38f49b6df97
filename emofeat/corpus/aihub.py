"""AI Hub "emotion classification conversation speech" reader (release 5차년도_2차).

``annotation/5차년도_2차.csv`` (cp949; columns used: ``wav_id``, ``상황`` the emotion in English
words, ``발화문`` the transcript) and ``wav/<wav_id>.wav``. The release carries no speaker id.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from emofeat.corpus import labels as label_set
from emofeat.corpus.missing import handle_missing
from emofeat.corpus.text import decode_transcript, normalize
from emofeat.errors import CorpusError

RELEASE = "5차년도_2차"
CORPUS = "aihub"  # the manifest's corpus name of this reader's rows (split rules key on it)
LABELS = label_set.KEMDY  # the classes this corpus declares (its 상황 words map into them)
REQUIRED = ("wav_id", "상황", "발화문")


def annotation_file(root: Path) -> Path:
    """The annotation CSV of an AI Hub folder."""
    root = Path(root)
    path = root / "annotation" / f"{RELEASE}.csv"
    if not path.is_file():
        found = (
            sorted(p.name for p in (root / "annotation").glob("*.csv"))
            if (root / "annotation").is_dir()
            else []
        )
        raise CorpusError(
            f"{root}: no annotation/{RELEASE}.csv" + (f" (found {found})" if found else "")
        )
    return path


def read_aihub(
    root: str | Path, text_mode: str = "raw", skip_missing: bool = False
) -> tuple[pd.DataFrame, dict]:
    """Read an AI Hub folder into manifest rows (CSV order kept; no split yet)."""
    root = Path(root)
    path = annotation_file(root)
    text = decode_transcript(path.read_bytes(), path)
    frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    absent = [c for c in REQUIRED if c not in frame.columns]
    if absent:
        raise CorpusError(f"{path}: missing column(s) {absent}; found {list(frame.columns)[:12]}")
    dup = frame["wav_id"][frame["wav_id"].duplicated(keep=False)]
    if len(dup):
        rows = [int(i) + 2 for i in dup.index[:10]]
        raise CorpusError(
            f"{path}: duplicate wav_id(s) {sorted(set(dup))[:5]} at CSV line(s) {rows}"
        )
    unknown = frame.loc[~frame["상황"].str.strip().str.lower().isin(label_set.AIHUB_MAP), "상황"]
    if len(unknown):
        lines = [int(i) + 2 for i in unknown.index[:10]]
        raise CorpusError(
            f"{path}: unknown emotion value(s) {sorted(set(unknown))[:5]} at CSV line(s) {lines}; "
            f"known: {', '.join(label_set.AIHUB_MAP)}"
        )
    rows, missing = [], []
    for rec in frame.itertuples(index=False):
        wav_id = str(rec.wav_id).strip()
        wav = root / "wav" / f"{wav_id}.wav"
        if not wav.is_file():
            missing.append((wav_id, str(wav)))
            continue
        rows.append(
            {
                "id": wav_id,
                "corpus": CORPUS,
                "session": "",
                "speaker": "",
                "audio_path": str(wav),
                "text": normalize(str(rec.발화문), text_mode),
                "label": label_set.aihub_label(rec.상황),
            }
        )
    skipped = handle_missing(f"AI Hub at {root}", missing, skip_missing)
    return pd.DataFrame(rows), {"utterances": len(rows), "skipped_missing": skipped}
