"""``emofeat data prepare``: corpora on disk → one manifest with a split recipe applied."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from emofeat.corpus.aihub import CORPUS as AIHUB
from emofeat.corpus.aihub import LABELS as AIHUB_LABELS
from emofeat.corpus.aihub import read_aihub
from emofeat.corpus.config import PrepareConfig
from emofeat.corpus.emobox import corpus_name as emobox_name
from emofeat.corpus.emobox import read_emobox
from emofeat.corpus.generic import read_csv_corpus
from emofeat.corpus.kemdy19 import CORPUS as KEMDY19
from emofeat.corpus.kemdy19 import LABELS as KEMDY19_LABELS
from emofeat.corpus.kemdy19 import read_kemdy19
from emofeat.corpus.kemdy20 import CORPUS as KEMDY20
from emofeat.corpus.kemdy20 import LABELS as KEMDY20_LABELS
from emofeat.corpus.kemdy20 import read_kemdy20
from emofeat.corpus.labels import (
    ALIASES,
    LabelSet,
    decide_label_set,
    normalise,
    read_label_map,
)
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
    emobox: str | Path | None = None,
    kemdy19: str | Path | None = None,
    **options: Any,
) -> tuple[Manifest, dict]:
    """Read the given corpora, apply a split recipe and write the manifest atomically.

    Args:
        out: The manifest CSV to write (its sidecar records how it was made).
        kemdy20: A KEMDy20 v1_1 folder.
        kemdy19: A KEMDy19 folder.
        aihub: An AI Hub (5차년도_2차) folder.
        csv: A generic corpus CSV.
        emobox: EmoBox's data folder; ``corpus`` (an option) names the corpus in it.
        **options: The options of :class:`~emofeat.corpus.config.PrepareConfig`.

    Returns:
        The manifest and a report of what each reader did.

    Raises:
        OptionError: an option's value is refused (before anything is read).
        CorpusError: nothing to read, files missing (without ``skip_missing``), unknown labels,
            or a split that leaves no train rows.
    """
    cfg = PrepareConfig(**options)
    if not (kemdy19 or kemdy20 or aihub or csv or emobox):
        raise CorpusError(
            "nothing to read: give at least one of --kemdy19, --kemdy20, --aihub, --csv, --emobox"
        )
    if bool(emobox) != bool(cfg.corpus):
        raise CorpusError("--emobox DIR and --corpus NAME go together")
    from emofeat.corpus.manifest import sidecar_path

    # Before anything is read: the manifest and its sidecar are never an input.
    sources = [kemdy19, kemdy20, aihub, csv, emobox]
    check_output(out, kind="manifest", inputs=sources)
    check_output(sidecar_path(out), kind="manifest-sidecar", inputs=sources)
    frame, report, declared = _read_corpora(
        cfg, kemdy20=kemdy20, aihub=aihub, csv=csv, emobox=emobox, kemdy19=kemdy19
    )
    frame, labels, label_maps = label_rows(frame, declared, cfg, report)
    frame = apply_split(frame, cfg.split, k=cfg.folds, seed=cfg.seed)
    frame["duration"] = audio_durations(frame["audio_path"])
    out = Path(out)
    frame = relative_audio_paths(frame, out.parent)
    config = {
        "kemdy19": str(kemdy19) if kemdy19 else None,
        "kemdy20": str(kemdy20) if kemdy20 else None,
        "aihub": str(aihub) if aihub else None,
        "csv": str(csv) if csv else None,
        "emobox": str(emobox) if emobox else None,
        **cfg.to_dict(),
        "out": str(out),
    }
    write_manifest(frame, out, config=config, seed=cfg.seed, labels=labels, label_maps=label_maps)
    log.info("wrote %s (%d utterances)", out, len(frame))
    return read_manifest(out), report


def _read_corpora(
    cfg: PrepareConfig,
    *,
    kemdy20: str | Path | None,
    aihub: str | Path | None,
    csv: str | Path | None,
    emobox: str | Path | None = None,
    kemdy19: str | Path | None = None,
) -> tuple[pd.DataFrame, dict, dict[str, LabelSet]]:
    """The utterances of every given corpus in one frame, each reader's report, and the classes
    each corpus declares (by corpus name)."""
    text, skip_missing = cfg.text, cfg.skip_missing
    frames, report, declared = [], {}, {}
    if kemdy19:
        frame, report["kemdy19"] = read_kemdy19(
            kemdy19,
            text_mode=text,
            multilabel=cfg.multilabel,
            role=cfg.kemdy19_role,
            skip_missing=skip_missing,
        )
        frames.append(frame)
        declared[KEMDY19] = KEMDY19_LABELS
    if kemdy20:
        frame, report["kemdy20"] = read_kemdy20(
            kemdy20, text_mode=text, multilabel=cfg.multilabel, skip_missing=skip_missing
        )
        frames.append(frame)
        declared[KEMDY20] = KEMDY20_LABELS
    if aihub:
        frame, report["aihub"] = read_aihub(aihub, text, skip_missing)
        frames.append(frame)
        declared[AIHUB] = AIHUB_LABELS
    if csv:
        frame, report["csv"] = read_csv_corpus(csv, text, skip_missing)
        frames.append(frame)
    if emobox:
        name = cfg.corpus
        frame, report["emobox"], classes = read_emobox(emobox, name, skip_missing)
        frames.append(frame)
        declared[emobox_name(name)] = classes
    frames = [f for f in frames if len(f)]
    if not frames:
        raise CorpusError("the corpora hold no utterances")
    frame = build_frame(pd.concat(frames, ignore_index=True).to_dict("records"))
    return frame, report, declared


def label_rows(
    frame: pd.DataFrame, declared: dict[str, LabelSet], cfg: PrepareConfig, report: dict
) -> tuple[pd.DataFrame, LabelSet | None, dict]:
    """The manifest's one label set, and each row's label in it.

    Raw labels go through ``--label-map`` (a label mapped to null leaves its row unlabelled:
    kept for extraction, never trained on or scored); KEMDy20's ``disgust`` spelling joins
    ``disqust`` where a reader declares it; the set is ``--labels`` or the sorted union of the
    declared classes and the labels present.

    Args:
        frame: The rows of every corpus.
        declared: Corpus name → the classes its reader declares.
        cfg: The options (``labels``, ``label_map``).
        report: The readers' report; ``labels`` is added (rows unlabelled by the map).

    Returns:
        The frame (labels mapped; ``raw_label`` keeps the original where a map changed
        something), the label set (None when no row has a label), and per corpus how its raw
        labels mapped (``{corpus: {raw: class or None}}``).

    Raises:
        LabelError: the map file is unreadable, or ``--labels`` lacks a label that rows hold.
    """
    mapping = read_label_map(cfg.label_map) if cfg.label_map else {}
    targets = {n for ls in declared.values() for n in ls.names}
    raw = frame["label"].fillna("").astype(str).map(normalise)
    aliases = {a: t for a, t in ALIASES.items() if t in targets and a not in mapping}

    def mapped(label: str) -> str:
        if label in mapping:
            return mapping[label] or ""  # null: the row stays, unlabelled
        return aliases.get(label, label)

    new = raw.map(mapped)
    dropped = int(((raw != "") & (new == "")).sum())
    maps: dict[str, dict[str, str | None]] = {}
    for corpus, part in pd.DataFrame({"c": frame["corpus"], "r": raw, "n": new}).groupby("c"):
        pairs = sorted({(r, n) for r, n in zip(part["r"], part["n"]) if r})
        maps[str(corpus)] = {r: (n or None) for r, n in pairs}
    kept = [mapping.get(n, n) for ls in declared.values() for n in ls.names]
    labels = decide_label_set(new, declared=[n for n in kept if n], order=cfg.label_order())
    frame = frame.copy()
    if (new != raw).any():
        frame["raw_label"] = frame["label"]
    frame["label"] = new
    report["labels"] = {
        "classes": len(labels) if labels is not None else 0,
        "unlabelled_by_map": dropped,
    }
    changed = any(r != n for m in maps.values() for r, n in m.items())
    return frame, labels, maps if (mapping or changed) else {}
