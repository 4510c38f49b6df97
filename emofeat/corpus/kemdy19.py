"""KEMDy19 reader (ETRI's acted corpus: 20 sessions, two voice actors each).

Layout: ``annotation/SessionNN_F_res.csv`` and ``SessionNN_M_res.csv`` (two header rows; 43
columns read by position: 0 number, 1-2 wav start/end, 3-8 ECG/EDA/TEMP start/end, 9 Segment ID,
10-12 consensus emotion/valence/arousal, then one emotion/valence/arousal triple per rater) and
``wav/SessionNN/SessNN_<dialog>/<SegmentID>.wav`` with the UTF-8 transcript ``.txt`` beside it.

The F and M files of a session list the same segments in the same order: the F file holds the
female actor's annotation of every segment, the M file the male actor's. A segment spoken by F
(``..._F001``) has its **speaker** annotation in the F file and its **listener** annotation in the
M file (``role``). Empty bio-signal cells drop no row. Where the two files disagree on a row's
Segment ID (a known erratum: Session03's F file repeats ``impro02_M001`` where the M file says
``impro02_F001``), the ID that has a wav file and is not another row's is taken, and the fix is
reported. Speakers are (session, F|M); sessions group the folds.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pandas as pd

from emofeat.corpus import labels as label_set
from emofeat.corpus.config import MULTILABEL_POLICIES
from emofeat.corpus.kemdy20 import (
    _split_labels,
    consensus_label,
    consensus_report,
    consensus_rows,
    segment_record,
)
from emofeat.corpus.missing import handle_missing
from emofeat.corpus.text import decode_transcript, normalize, read_transcript
from emofeat.errors import CorpusError

log = logging.getLogger(__name__)

CORPUS = "kemdy19"  # the manifest's corpus name of this reader's rows (split rules key on it)
LABELS = label_set.KEMDY  # the classes this corpus declares (`disgust` joins `disqust`)
ROLES = ("speaker", "listener")
FIRST_RATER = 13  # the first rater's emotion column
_FILE = re.compile(r"^Session(\d+)_([FM])_res\.csv$", re.IGNORECASE)
_SEGMENT = re.compile(r"^Sess(\d+)_((?:script|impro)\d+)_([FM])(\d+)$")


def session_files(root: Path) -> dict[int, dict[str, Path]]:
    """``{session: {"F": file, "M": file}}`` of a KEMDy19 folder's annotation files."""
    ann = Path(root) / "annotation"
    if not ann.is_dir():
        raise CorpusError(
            f"{root}: no annotation/ folder; expected the KEMDy19 layout "
            "(annotation/SessionNN_F_res.csv and _M_res.csv, wav/SessionNN/SessNN_<dialog>/)"
        )
    sessions: dict[int, dict[str, Path]] = {}
    for p in ann.iterdir():
        m = _FILE.match(p.name)
        if m:
            sessions.setdefault(int(m.group(1)), {})[m.group(2).upper()] = p
    if not sessions:
        raise CorpusError(f"{ann}: no SessionNN_F_res.csv / SessionNN_M_res.csv files")
    for s, files in sessions.items():
        if set(files) != {"F", "M"}:
            lacks = "M" if "F" in files else "F"
            raise CorpusError(
                f"{ann}: Session{s:02d} has no {lacks} file (Session{s:02d}_{lacks}_res.csv); "
                "the speaker and listener annotations come from both"
            )
    return dict(sorted(sessions.items()))


def _read(path: Path) -> pd.DataFrame:
    text = decode_transcript(path.read_bytes(), path)
    try:
        frame = pd.read_csv(
            io.StringIO(text), header=None, skiprows=2, dtype=str, keep_default_na=False
        )
    except pd.errors.ParserError as err:
        raise CorpusError(f"{path}: not a readable annotation CSV ({err})") from None
    if frame.shape[1] < FIRST_RATER:
        raise CorpusError(
            f"{path}: {frame.shape[1]} columns; a KEMDy19 annotation file has at least "
            f"{FIRST_RATER} (number, wav and bio-signal start/end, Segment ID, emotion, "
            "valence, arousal)"
        )
    return frame


def _wav(root: Path, seg: str) -> Path:
    m = _SEGMENT.match(seg)
    if not m:
        raise CorpusError(
            f"malformed Segment ID {seg!r}; expected SessNN_(scriptNN|improNN)_(F|M)NNN"
        )
    return (
        root
        / "wav"
        / f"Session{int(m.group(1)):02d}"
        / f"Sess{m.group(1)}_{m.group(2)}"
        / f"{seg}.wav"
    )


def _segment_ids(
    root: Path, session: int, f: pd.DataFrame, m: pd.DataFrame
) -> tuple[list[str], list[str]]:
    """The Segment ID of each row (the files agree; where they do not, the ID with a wav file
    that is no other row's), and the fixes made, in words."""
    ids_f = [str(v).strip() for v in f.iloc[:, 9]]
    ids_m = [str(v).strip() for v in m.iloc[:, 9]]
    if len(ids_f) != len(ids_m):
        raise CorpusError(
            f"Session{session:02d}: the F file has {len(ids_f)} rows, the M file {len(ids_m)}; "
            "they annotate the same segments row by row"
        )
    ids, fixes = [], []
    for i, (a, b) in enumerate(zip(ids_f, ids_m)):
        if a == b:
            ids.append(a)
            continue
        others = set(ids_f[:i] + ids_f[i + 1 :]) | set(ids_m[:i] + ids_m[i + 1 :])
        fits = [s for s in (a, b) if s not in others and _wav(root, s).is_file()]
        if len(fits) != 1:
            raise CorpusError(
                f"Session{session:02d} row {i + 3}: the F file says {a}, the M file {b}, and "
                "neither (or both) is a segment of its own with a wav file"
            )
        ids.append(fits[0])
        fixes.append(f"Session{session:02d} row {i + 3}: F file {a}, M file {b}; read as {fits[0]}")
    return ids, fixes


def read_kemdy19(
    root: str | Path,
    *,
    text_mode: str = "raw",
    multilabel: str = "drop",
    role: str = "speaker",
    skip_missing: bool = False,
) -> tuple[pd.DataFrame, dict]:
    """Read a KEMDy19 folder into manifest rows (no split yet).

    Args:
        root: The KEMDy19 folder (``annotation/``, ``wav/``).
        text_mode: ``raw`` or ``clean`` transcripts (KEMDy20's rules).
        multilabel: The policy for consensus sets of several labels (as for KEMDy20).
        role: Whose annotation a row takes: the ``speaker``'s (default) or the ``listener``'s.
        skip_missing: Leave out segments whose wav or txt is missing instead of refusing.

    Returns:
        The rows and a report (utterances, multi-label counts, Segment IDs fixed, each fix
        logged).

    Raises:
        CorpusError: no annotation files, a session without its F or M file, files of unequal
            length, an unresolvable Segment ID, an unknown emotion, missing files (without
            ``skip_missing``).
    """
    if multilabel not in MULTILABEL_POLICIES:
        raise ValueError(
            f"multilabel policy must be one of {MULTILABEL_POLICIES}, got {multilabel!r}"
        )
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    root = Path(root)
    rows, missing, fixes = [], [], []
    multi = dropped = duplicated = 0
    for session, files in session_files(root).items():
        tables = {g: _read(p) for g, p in files.items()}
        ids, fixed = _segment_ids(root, session, tables["F"], tables["M"])
        fixes += fixed
        for r, seg in enumerate(ids):
            actor = _SEGMENT.match(seg).group(3)
            annotator = actor if role == "speaker" else ("M" if actor == "F" else "F")
            row = tables[annotator].iloc[r]
            where = f"{files[annotator]} row {r + 3}"
            names = _split_labels(str(row.iloc[10]), where)
            if not names:
                raise CorpusError(f"{where}: empty consensus emotion for {seg}")
            multi += len(names) > 1
            decided = consensus_label(names, row, where, multilabel, FIRST_RATER)
            if decided is None:
                dropped += 1
                continue
            label, soft = decided
            wav = _wav(root, seg)
            txt = wav.with_suffix(".txt")
            if not wav.is_file() or not txt.is_file():
                missing.append((seg, str(wav if not wav.is_file() else txt)))
                continue
            text = normalize(read_transcript(txt), text_mode)
            speaker = f"Sess{session:02d}{actor}"
            rec = segment_record(seg, CORPUS, session, speaker, wav, text, label, row, 11)
            made = consensus_rows(rec, names, soft, multilabel)
            duplicated += len(made) - 1
            rows += made
    skipped = handle_missing(f"KEMDy19 at {root}", missing, skip_missing)
    report = consensus_report(rows, multi, dropped, duplicated, len(fixes), skipped)
    for fix in fixes:  # the errata, said once each
        log.info("KEMDy19 erratum: %s", fix)
    return pd.DataFrame(rows), report
