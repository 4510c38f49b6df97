"""KEMDy20 (v1_1) reader.

Layout: ``annotation/SessNN_eval.csv`` (two header rows, columns by position: 0 number, 1-2 wav
start/end, 3 Segment ID, 4-6 consensus emotion/valence/arousal, then one emotion/valence/arousal
triple per annotator) and ``wav/SessionNN/<SegmentID>.wav`` with the transcript
``<SegmentID>.txt`` (cp949) beside it.

Multi-label consensus (``neutral;happy``) policies: ``drop`` (the reference), ``first``, or
``soft`` (per-class fractions of the annotators' votes in ``soft_<class>`` columns; ``label`` is
the class with most votes, ties broken by the consensus order).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from emofeat.corpus import labels as label_set
from emofeat.corpus.config import MULTILABEL_POLICIES
from emofeat.corpus.manifest import SOFT_PREFIX
from emofeat.corpus.missing import handle_missing
from emofeat.corpus.text import decode_transcript, normalize, read_transcript
from emofeat.errors import CorpusError, LabelError

# drop: the reference; first: the first consensus label; soft: annotator vote fractions;
# duplicate: one row per consensus label (ids SEG#label), each with its own label (MMM's data
# code also duplicates, but gives every copy the last label).
CORPUS = "kemdy20"  # the manifest's corpus name of this reader's rows (split rules key on it)
LABELS = label_set.KEMDY  # the classes this corpus declares
_EVAL_FILE = re.compile(r"^Sess(\d+)_eval\.csv$", re.IGNORECASE)
_SEGMENT = re.compile(r"^Sess(\d+)(_script\d+_(User\d+[MF])_\d+)$")


def annotation_files(root: Path) -> list[Path]:
    """The session annotation files of a KEMDy20 folder, sorted by session number."""
    ann = Path(root) / "annotation"
    if not ann.is_dir():
        raise CorpusError(
            f"{root}: no annotation/ folder; expected the KEMDy20 v1_1 layout "
            "(annotation/SessNN_eval.csv, wav/SessionNN/)"
        )
    files = [p for p in ann.iterdir() if _EVAL_FILE.match(p.name)]
    if not files:
        raise CorpusError(f"{ann}: no SessNN_eval.csv files")
    return sorted(files, key=lambda p: int(_EVAL_FILE.match(p.name).group(1)))


def _read_eval_csv(path: Path) -> pd.DataFrame:
    data = path.read_bytes()
    text = decode_transcript(data, path)
    try:
        frame = pd.read_csv(
            io.StringIO(text), header=None, skiprows=2, dtype=str, keep_default_na=False
        )
    except pd.errors.ParserError as err:
        raise CorpusError(f"{path}: not a readable annotation CSV ({err})") from None
    if frame.shape[1] < 7:
        raise CorpusError(
            f"{path}: {frame.shape[1]} columns; a KEMDy20 annotation file has at least 7 "
            "(number, wav start, wav end, Segment ID, emotion, valence, arousal)"
        )
    return frame


def fix_segment_id(segment_id: str, session: int) -> str:
    """Force a Segment ID's ``SessNN`` prefix to the session of the file it is listed in."""
    m = _SEGMENT.match(segment_id.strip())
    if not m:
        raise CorpusError(
            f"malformed Segment ID {segment_id!r}; expected SessNN_scriptSS_UserUUU(M|F)_III"
        )
    return f"Sess{session:02d}{m.group(2)}"


def speaker_of(segment_id: str) -> str:
    """Speaker (``UserUUU{M|F}``) of a Segment ID."""
    m = _SEGMENT.match(segment_id)
    if not m:
        raise CorpusError(f"malformed Segment ID {segment_id!r}")
    return m.group(3)


def _split_labels(value: str, where: str) -> list[str]:
    try:
        return [label_set.KEMDY.canonical(v) for v in value.split(";") if v.strip()]
    except LabelError as err:
        raise CorpusError(f"{where}: {err}") from None


def _votes(row: pd.Series, where: str, first_rater: int = 7) -> np.ndarray:
    """Per-class vote fractions of the annotators (a multi-label vote is split evenly); their
    emotion columns start at ``first_rater``, one (emotion, valence, arousal) triple each."""
    votes = np.zeros(label_set.NUM_CLASSES)
    for col in range(first_rater, len(row), 3):
        value = str(row.iloc[col]).strip()
        if not value:
            continue
        names = _split_labels(value, where)
        for name in names:
            votes[label_set.LABEL_NAMES.index(name)] += 1.0 / len(names)
    total = votes.sum()
    return votes / total if total else votes


def consensus_label(
    names: list[str], row: pd.Series, where: str, multilabel: str, first_rater: int = 7
) -> tuple[str, np.ndarray | None] | None:
    """A KEMDy row's label under a multi-label policy (the consensus is a set of labels):
    ``(label, soft vote fractions or None)``, or None when the row is dropped (``drop``)."""
    if len(names) > 1 and multilabel == "drop":
        return None
    if multilabel != "soft":
        return names[0], None
    soft = _votes(row, where, first_rater)
    if soft.sum() == 0:  # no annotator columns: fall back on the consensus
        soft = np.zeros(label_set.NUM_CLASSES)
        for n in names:
            soft[label_set.LABEL_NAMES.index(n)] += 1 / len(names)
    # Majority of votes; ties go to the label listed first in the consensus.
    best = soft.max()
    tied = [n for n in label_set.LABEL_NAMES if soft[label_set.LABEL_NAMES.index(n)] == best]
    return next((n for n in names if n in tied), tied[0]), soft


def consensus_rows(
    rec: dict, names: list[str], soft: np.ndarray | None, multilabel: str
) -> list[dict]:
    """The manifest rows of one KEMDy segment: ``rec`` with its soft vote columns, or, with
    ``duplicate`` and several consensus labels, one copy per label (ids ``SEG#label``)."""
    if soft is not None:
        rec = {**rec, **{SOFT_PREFIX + n: float(v) for n, v in zip(label_set.LABEL_NAMES, soft)}}
    if multilabel == "duplicate" and len(names) > 1:
        # The copies share a session, so group-aware folds keep them together (a fold model
        # never sees the audio of a row it predicts).
        return [{**rec, "id": label_set.copy_id(rec["id"], n), "label": n} for n in names]
    return [rec]


def segment_record(
    seg: str,
    corpus: str,
    session: int,
    speaker: str,
    wav: Path,
    text: str,
    label: str,
    row: pd.Series,
    dims_at: int,
) -> dict:
    """The manifest row of one KEMDy segment (its valence and arousal in ``row`` at columns
    ``dims_at`` and ``dims_at + 1``)."""
    return {
        "id": seg,
        "corpus": corpus,
        "session": f"Sess{session:02d}",
        "speaker": speaker,
        "audio_path": str(wav),
        "text": text,
        "label": label,
        "valence": pd.to_numeric(row.iloc[dims_at], errors="coerce"),
        "arousal": pd.to_numeric(row.iloc[dims_at + 1], errors="coerce"),
    }


def consensus_report(
    rows: list, multi: int, dropped: int, duplicated: int, fixed: int, skipped: list
) -> dict:
    """What a KEMDy reader did, as ``data prepare`` prints it."""
    return {
        "utterances": len(rows),
        "multilabel_rows": multi,
        "multilabel_dropped": dropped,
        "multilabel_duplicated": duplicated,
        "segment_ids_fixed": fixed,
        "skipped_missing": skipped,
    }


def read_kemdy20(
    root: str | Path,
    *,
    text_mode: str = "raw",
    multilabel: str = "drop",
    skip_missing: bool = False,
) -> tuple[pd.DataFrame, dict]:
    """Read a KEMDy20 folder into manifest rows (no split yet).

    Returns the frame and a report dict (counts of multi-label rows, dropped and skipped ids).
    """
    if multilabel not in MULTILABEL_POLICIES:
        raise ValueError(
            f"multilabel policy must be one of {MULTILABEL_POLICIES}, got {multilabel!r}"
        )
    root = Path(root)
    rows, missing, multi, dropped, fixed, duplicated = [], [], 0, [], 0, 0
    for path in annotation_files(root):
        session = int(_EVAL_FILE.match(path.name).group(1))
        frame = _read_eval_csv(path)
        for r, row in frame.iterrows():
            where = f"{path} row {r + 3}"
            raw_id = str(row.iloc[3]).strip()
            if not raw_id:
                continue
            seg = fix_segment_id(raw_id, session)
            fixed += seg != raw_id
            names = _split_labels(str(row.iloc[4]), where)
            if not names:
                raise CorpusError(f"{where}: empty consensus emotion for {seg}")
            multi += len(names) > 1
            decided = consensus_label(names, row, where, multilabel)
            if decided is None:
                dropped.append(seg)
                continue
            label, soft = decided
            wav = root / "wav" / f"Session{session:02d}" / f"{seg}.wav"
            txt = wav.with_suffix(".txt")
            if not wav.is_file() or not txt.is_file():
                missing.append((seg, str(wav if not wav.is_file() else txt)))
                continue
            text = normalize(read_transcript(txt), text_mode)
            rec = segment_record(seg, CORPUS, session, speaker_of(seg), wav, text, label, row, 5)
            made = consensus_rows(rec, names, soft, multilabel)
            duplicated += len(made) - 1
            rows += made
    skipped = handle_missing(f"KEMDy20 at {root}", missing, skip_missing)
    report = consensus_report(rows, multi, len(dropped), duplicated, fixed, skipped)
    return pd.DataFrame(rows), report
