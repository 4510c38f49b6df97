"""The manifest: one row per utterance, the single source of truth for ids, labels and splits.

Columns: ``id, corpus, session, speaker, audio_path, text, label, valence, arousal, split, fold``
(and ``duration``: seconds of audio from each file's header, written by ``data prepare``;
optional, a manifest without it works)
and, with the ``soft`` multi-label policy, ``soft_<class>`` vote fractions. ``label`` holds the
canonical class name (empty when unknown); ``split`` is ``train`` or ``test``; ``fold`` is
0..K-1 for train rows and -1 for test rows. ``audio_path`` is relative to the manifest's folder
where possible, so a corpus can move with its manifest.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from emofeat.atomic import atomic_path, write_text
from emofeat.corpus.labels import UNKNOWN, LabelSet, found_label_set
from emofeat.errors import LabelError, ManifestError
from emofeat.outputs import check_output, is_record, register_kind, register_record_kind
from emofeat.records import dump_yaml, provenance

log = logging.getLogger(__name__)

COLUMNS = (
    "id",
    "corpus",
    "session",
    "speaker",
    "audio_path",
    "text",
    "label",
    "valence",
    "arousal",
    "split",
    "fold",
)
SPLITS = ("train", "test")
# The dimensional targets, on the corpora's 1-5 scale (the mean of the raters' integer votes).
DIMENSIONS = ("valence", "arousal")
SOFT_PREFIX = "soft_"
_STRING_COLUMNS = ("id", "corpus", "session", "speaker", "audio_path", "text", "label", "split")


@dataclass
class Manifest:
    """A validated manifest: ``frame`` (one row per utterance) and ``root`` (the CSV's folder)."""

    frame: pd.DataFrame
    root: Path
    path: Path | None = None
    # The options the manifest was prepared with: its ``.yaml`` sidecar, read once ({} if absent).
    prepared_config: dict = field(default_factory=dict)
    # Its classes: as its sidecar records them, else found in its rows (None: no labels at all).
    label_set: LabelSet | None = None

    def __post_init__(self) -> None:
        if self.label_set is None:
            self.label_set = found_label_set(self.frame["label"])

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def label_names(self) -> list[str]:
        """The manifest's classes in label-index order ([] for unlabelled recordings)."""
        return list(self.label_set.names) if self.label_set is not None else []

    @property
    def ids(self) -> np.ndarray:
        """Utterance ids, in row order."""
        return self.frame["id"].to_numpy(dtype=object)

    @property
    def label_indices(self) -> np.ndarray:
        """Class index per row in :attr:`label_names`, -1 where the label is unknown."""
        if self.label_set is None:
            return np.full(len(self.frame), UNKNOWN, dtype=np.int16)
        return np.asarray(self.label_set.indices(self.frame["label"]), dtype=np.int16)

    @property
    def dimensions(self) -> np.ndarray:
        """(N, 2) valence and arousal per row (:data:`DIMENSIONS`), NaN where a row has none."""
        return self.frame[list(DIMENSIONS)].to_numpy(dtype=np.float64)

    @property
    def split(self) -> np.ndarray:
        """``train`` or ``test`` per row."""
        return self.frame["split"].to_numpy(dtype=object)

    @property
    def fold(self) -> np.ndarray:
        """Cross-fitting fold per row (-1 for test rows)."""
        return self.frame["fold"].to_numpy(dtype=np.int16)

    @property
    def num_folds(self) -> int:
        """The number of cross-fitting folds of the train rows (0 when none)."""
        folds = self.frame.loc[self.frame["split"] == "train", "fold"]
        return int(folds.max()) + 1 if len(folds) else 0

    @functools.cached_property
    def durations(self) -> np.ndarray | None:
        """Seconds of audio per row as ``data prepare`` read them from the headers (NaN where
        unknown), or None for a manifest prepared without them. Parsed once: row checks ask
        for it per row (parsing the column each time made checking N rows O(N^2))."""
        if "duration" not in self.frame.columns:
            return None
        return pd.to_numeric(self.frame["duration"], errors="coerce").to_numpy(dtype=np.float64)

    def audio_path(self, i: int) -> Path:
        """The absolute path of a row's audio file.

        Args:
            i: The row index.

        Returns:
            The path (audio paths are stored relative to the manifest's folder where possible).
        """
        p = Path(self.frame["audio_path"].iat[i])
        return p if p.is_absolute() else self.root / p

    @property
    def split_scheme(self) -> str:
        """The split recipe the manifest was prepared with ('' if unknown)."""
        return str(self.prepared_config.get("split", ""))

    def soft_labels(self) -> np.ndarray | None:
        """Per-class annotator vote fractions of a ``--multilabel soft`` manifest.

        Rows without votes (other corpora) get the one-hot of their label, unlabelled rows zeros: a
        target for soft-label training or calibration.

        Returns:
            (N, C) fractions, or None for a manifest prepared without them.
        """
        cols = [SOFT_PREFIX + n for n in self.label_names]
        if not cols or not all(c in self.frame.columns for c in cols):
            return None
        soft = (
            self.frame[cols]
            .apply(pd.to_numeric, errors="coerce")
            .to_numpy(dtype=np.float32, copy=True)
        )
        missing = ~np.isfinite(soft).all(axis=1)
        idx = self.label_indices.astype(int)
        one_hot = np.zeros_like(soft)
        known = idx >= 0
        one_hot[np.flatnonzero(known), idx[known]] = 1.0
        soft[missing] = one_hot[missing]
        return soft


def build_frame(rows: list[dict]) -> pd.DataFrame:
    """A manifest frame from row dicts, columns in the manifest's order (extra columns last)."""
    frame = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in frame.columns:
            frame[col] = -1 if col == "fold" else ("" if col in _STRING_COLUMNS else np.nan)
    extra = [c for c in frame.columns if c not in COLUMNS]
    return frame[list(COLUMNS) + extra]


def validate(
    frame: pd.DataFrame, source: str = "manifest", labels: LabelSet | None = None
) -> pd.DataFrame:
    """Check a manifest frame and return it normalised; raise ManifestError naming the problem.
    ``labels``: the manifest's classes (default: found in its rows); every label must be one."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(f"{source}: missing column(s) {', '.join(missing)}")
    if not len(frame):
        raise ManifestError(f"{source}: no rows (a header only); prepare it again")
    frame = frame.copy()
    for col in _STRING_COLUMNS:
        frame[col] = frame[col].fillna("").astype(str)
    frame["fold"] = pd.to_numeric(frame["fold"], errors="coerce")
    fractional = frame["fold"].notna() & (frame["fold"] != frame["fold"].round())
    if frame["fold"].isna().any() or fractional.any():
        bad = frame.loc[frame["fold"].isna() | fractional, "id"].head(5).tolist()
        raise ManifestError(f"{source}: non-integer fold for id(s) {bad}")
    frame["fold"] = frame["fold"].astype(int)
    for col in ("valence", "arousal"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")

    if (frame["id"] == "").any():
        raise ManifestError(f"{source}: {int((frame['id'] == '').sum())} row(s) have an empty id")
    dup = frame["id"][frame["id"].duplicated(keep=False)]
    if len(dup):
        raise ManifestError(
            f"{source}: duplicate id(s) {sorted(set(dup))[:5]} ({dup.nunique()} in all); ids must be unique"
        )
    labels = labels or found_label_set(frame["label"])
    try:
        frame["label"] = [labels.canonical(x) if x.strip() else "" for x in frame["label"]]
    except LabelError as err:
        raise ManifestError(f"{source}: {err}") from None
    bad_split = frame.loc[~frame["split"].isin(SPLITS), "split"].unique()
    if len(bad_split):
        raise ManifestError(f"{source}: split must be train or test, got {list(bad_split)[:5]}")
    train = frame["split"] == "train"
    if (frame.loc[~train, "fold"] != -1).any():
        bad = frame.loc[~train & (frame["fold"] != -1), "id"].head(5).tolist()
        raise ManifestError(f"{source}: test rows must have fold -1: {bad}")
    folds = frame.loc[train, "fold"]
    if (folds < 0).any() and (folds >= 0).any():
        raise ManifestError(f"{source}: some train rows have a fold and some do not (fold -1)")
    if (folds >= 0).all() and len(folds):
        present = sorted(folds.unique())
        if present != list(range(len(present))):
            raise ManifestError(f"{source}: train folds must be 0..K-1, got {present}")
    return frame


def write_manifest(
    frame: pd.DataFrame,
    path: str | os.PathLike,
    *,
    config: dict | None = None,
    seed: int | None = None,
    labels: LabelSet | None = None,
    label_maps: dict | None = None,
) -> Path:
    """Validate and write a manifest CSV atomically, with a ``.yaml`` provenance sidecar.

    The sidecar records the CSV's sha256 and is written first: a kill between the two leaves the
    old CSV beside a sidecar that does not describe it, which :func:`read_sidecar` detects. It
    also records the label set (``labels``, default: found in the rows) and how each corpus's
    raw labels mapped into it (``label_maps``)."""
    path = Path(path)
    labels = labels or found_label_set(frame["label"].fillna("").astype(str))
    frame = validate(frame, str(path), labels)
    check_output(path, kind="manifest")
    check_output(sidecar_path(path), kind="manifest-sidecar", what="the manifest's sidecar")
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, encoding="utf-8")
        record = provenance(config, seed, output="manifest-sidecar")
        record["csv_sha256"] = _sha256(tmp)
        record["label_names"] = list(labels.names) if labels is not None else []
        if label_maps:
            record["label_maps"] = label_maps
        write_text(sidecar_path(path), dump_yaml(record))
    return path


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read and validate a manifest CSV (and its sidecar, when present).

    Args:
        path: The manifest written by ``emofeat data prepare``.

    Returns:
        The validated :class:`Manifest`.

    Raises:
        ManifestError: no such file, not UTF-8, not a readable CSV, or rows that break the
            manifest's rules (duplicate ids, unknown labels or splits, folds out of range).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest; create one with `emofeat data prepare`")
    try:
        frame = pd.read_csv(path, dtype={c: str for c in _STRING_COLUMNS}, keep_default_na=False)
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8; manifests are UTF-8 CSV files") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ManifestError(f"{path}: not a readable CSV ({err})") from None
    record = read_sidecar_record(path)
    names = record.get("label_names")
    labels = None
    if isinstance(names, list) and names:
        try:
            labels = LabelSet(tuple(str(n) for n in names))
        except LabelError as err:
            raise ManifestError(f"{sidecar_path(path)}: label_names: {err}") from None
    config = record.get("config")
    return Manifest(
        validate(frame, str(path), labels),
        path.parent.resolve(),
        path.resolve(),
        config if isinstance(config, dict) else {},
        labels,
    )


def sidecar_path(path: str | os.PathLike) -> Path:
    """The provenance sidecar of a manifest CSV (``manifest.yaml`` beside ``manifest.csv``)."""
    return Path(path).with_suffix(".yaml")


def is_manifest(path: Path) -> bool:
    """A manifest CSV emofeat wrote: its sidecar is a manifest record."""
    return is_record(sidecar_path(path), "manifest-sidecar")


register_record_kind("manifest-sidecar", legacy_key="split")
register_kind("manifest", is_manifest)


def read_sidecar(path: str | os.PathLike) -> dict:
    """The ``config`` a manifest was prepared with, from its sidecar ({} if there is none)."""
    config = read_sidecar_record(path).get("config")
    return config if isinstance(config, dict) else {}


def read_sidecar_record(path: str | os.PathLike) -> dict:
    """A manifest's whole sidecar record ({} if there is none, or if it describes another CSV)."""
    import yaml

    from emofeat.records import load_yaml

    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        data = load_yaml(side.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ManifestError(f"{side}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict):
        return {}
    recorded = data.get("csv_sha256")
    if recorded and recorded != _sha256(path):
        # The CSV was edited, or a prepare was killed between writing the two files.
        log.warning("%s does not describe %s (the CSV changed since); ignoring it", side, path)
        return {}
    return data


def relative_audio_paths(frame: pd.DataFrame, root: Path) -> pd.DataFrame:
    """Rewrite absolute audio paths as paths relative to ``root`` where that is possible."""
    root = Path(root).resolve()

    def rel(p: str) -> str:
        try:
            return os.path.relpath(Path(p).resolve(), root)
        except ValueError:  # another drive on Windows
            return p

    frame = frame.copy()
    frame["audio_path"] = [rel(p) if p else p for p in frame["audio_path"]]
    return frame
