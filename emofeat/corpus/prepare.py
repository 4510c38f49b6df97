"""``emofeat data prepare``: corpora on disk → one manifest with a split recipe applied."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from emofeat.corpus.aihub import read_aihub
from emofeat.corpus.config import PrepareConfig
from emofeat.corpus.generic import read_csv_corpus
from emofeat.corpus.kemdy20 import read_kemdy20
from emofeat.corpus.manifest import (
    Manifest,
    build_frame,
    read_manifest,
    relative_audio_paths,
    write_manifest,
)
from emofeat.corpus.splits import apply_split
from emofeat.errors import CorpusError
from emofeat.outputs import check_output

log = logging.getLogger(__name__)


def audio_durations(paths) -> list[float]:
    """Seconds of each audio file from its header (no decoding); NaN for rows without audio
    and for files whose header cannot be read (extraction and fine-tuning name those)."""
    from emofeat.audio import AudioError, duration

    out = []
    for p in paths:
        try:
            out.append(round(duration(p), 6) if p else float("nan"))
        except AudioError:
            out.append(float("nan"))
    return out


def prepare(
    out: str | Path,
    *,
    kemdy20: str | Path | None = None,
    aihub: str | Path | None = None,
    csv: str | Path | None = None,
    **options: Any,
) -> tuple[Manifest, dict]:
    """Read the given corpora, apply a split recipe and write the manifest atomically.

    Args:
        out: The manifest CSV to write (its sidecar records how it was made).
        kemdy20: A KEMDy20 v1_1 folder.
        aihub: An AI Hub (5차년도_2차) folder.
        csv: A generic corpus CSV.
        **options: The options of :class:`~emofeat.corpus.config.PrepareConfig`.

    Returns:
        The manifest and a report of what each reader did.

    Raises:
        OptionError: an option's value is refused (before anything is read).
        CorpusError: nothing to read, files missing (without ``skip_missing``), unknown labels,
            or a split that leaves no train rows.
    """
    cfg = PrepareConfig(**options)
    if not (kemdy20 or aihub or csv):
        raise CorpusError("nothing to read: give at least one of --kemdy20, --aihub, --csv")
    from emofeat.corpus.manifest import sidecar_path

    # Before anything is read: the manifest and its sidecar are never an input.
    check_output(out, kind="manifest", inputs=[kemdy20, aihub, csv])
    check_output(sidecar_path(out), kind="manifest-sidecar", inputs=[kemdy20, aihub, csv])
    frame, report = _read_corpora(cfg, kemdy20=kemdy20, aihub=aihub, csv=csv)
    frame = apply_split(frame, cfg.split, k=cfg.folds, seed=cfg.seed)
    frame["duration"] = audio_durations(frame["audio_path"])
    out = Path(out)
    frame = relative_audio_paths(frame, out.parent)
    config = {
        "kemdy20": str(kemdy20) if kemdy20 else None,
        "aihub": str(aihub) if aihub else None,
        "csv": str(csv) if csv else None,
        **cfg.to_dict(),
        "out": str(out),
    }
    write_manifest(frame, out, config=config, seed=cfg.seed)
    log.info("wrote %s (%d utterances)", out, len(frame))
    return read_manifest(out), report


def _read_corpora(
    cfg: PrepareConfig,
    *,
    kemdy20: str | Path | None,
    aihub: str | Path | None,
    csv: str | Path | None,
) -> tuple[pd.DataFrame, dict]:
    """The utterances of every given corpus in one frame, and each reader's report."""
    text, skip_missing = cfg.text, cfg.skip_missing
    frames, report = [], {}
    if kemdy20:
        frame, report["kemdy20"] = read_kemdy20(
            kemdy20, text_mode=text, multilabel=cfg.multilabel, skip_missing=skip_missing
        )
        frames.append(frame)
    if aihub:
        frame, report["aihub"] = read_aihub(aihub, text, skip_missing)
        frames.append(frame)
    if csv:
        frame, report["csv"] = read_csv_corpus(csv, text, skip_missing)
        frames.append(frame)
    frames = [f for f in frames if len(f)]
    if not frames:
        raise CorpusError("the corpora hold no utterances")
    return build_frame(pd.concat(frames, ignore_index=True).to_dict("records")), report
