"""Label sets: the classes of a corpus are data, declared by its reader or found in its rows.

* The KEMDy corpora and AI Hub declare the seven KEMDy20 classes (:data:`LABEL_NAMES`), indexed in
  alphabetical order. ``disqust`` is KEMDy20's own spelling in its consensus column; it stays
  canonical so that stores and reports line up with published results, and ``disgust`` is
  accepted on input.
* A generic CSV's labels are its classes (case and surrounding space ignored).
* A label map (``--label-map FILE``, YAML or JSON, as EmoBox's ``label_map.json``) renames,
  merges or drops raw labels: ``happiness: happy``, ``excited: happy``, ``other: null``.
* A manifest holds one :class:`LabelSet`: given in order with ``--labels a,b,c``, else the sorted
  union of what its readers declared and what its rows hold, after the map. Its sidecar records
  the set and how each corpus's labels mapped into it; stores record their label names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from emofeat.errors import LabelError

LABEL_NAMES: tuple[str, ...] = ("angry", "disqust", "fear", "happy", "neutral", "sad", "surprise")
NUM_CLASSES = len(LABEL_NAMES)
UNKNOWN = -1

ALIASES: dict[str, str] = {"disgust": "disqust"}

# AI Hub "감정 분류를 위한 대화 음성 데이터셋" writes the emotion (상황) as English words.
AIHUB_MAP: dict[str, str] = {
    "happiness": "happy",
    "neutral": "neutral",
    "sadness": "sad",
    "angry": "angry",
    "surprise": "surprise",
    "disgust": "disqust",
    "fear": "fear",
}


# ``--multilabel duplicate`` writes one row per label of a multi-label segment, ``SEG#label``.
COPY_SEPARATOR = "#"


def copy_id(segment: str, name: str) -> str:
    """The id of the copy of multi-label ``segment`` that carries label ``name``."""
    return f"{segment}{COPY_SEPARATOR}{name}"


def segment_of(uid: str) -> str:
    """The segment a row id stands for: ``SEG#happy`` (a copy, :func:`copy_id`) → ``SEG``; any
    other id is its own segment. What a model learned from is a segment's audio and text, so
    evidence matches rows by segment (a model trained on one copy has heard every copy)."""
    head, sep, tail = str(uid).rpartition(COPY_SEPARATOR)
    return head if sep and tail in LABEL_NAMES else str(uid)


def normalise(name: object) -> str:
    """A raw label as emofeat compares labels: surrounding space stripped, lower case."""
    return str(name).strip().lower()


@dataclass(frozen=True)
class LabelSet:
    """The classes of a manifest, a run or a store, in label-index order."""

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        names = tuple(normalise(n) for n in self.names)
        if not names:
            raise LabelError("a label set needs at least one class")
        if any(not n for n in names):
            raise LabelError(f"a class name cannot be empty: {list(self.names)}")
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise LabelError(f"class names must be unique; given twice: {twice}")
        object.__setattr__(self, "names", names)

    def __len__(self) -> int:
        return len(self.names)

    def __str__(self) -> str:
        return ", ".join(self.names)

    def canonical(self, name: object) -> str:
        """The class name of a label (case and surrounding space ignored; KEMDy20's ``disgust``
        alias where the set holds ``disqust``).

        Raises:
            LabelError: the label is not one of the set's classes (the message lists them).
        """
        key = normalise(name)
        if key not in self.names and ALIASES.get(key) in self.names:
            key = ALIASES[key]
        if key not in self.names:
            raise LabelError(f"unknown emotion label {name!r}; this label set's classes: {self}")
        return key

    def index(self, name: object) -> int:
        """Class index of a label."""
        return self.names.index(self.canonical(name))

    def indices(self, names: Iterable[object]) -> list[int]:
        """Class indices of labels; empty or missing labels give ``UNKNOWN`` (-1)."""
        return [
            UNKNOWN
            if name is None or isinstance(name, float) or not str(name).strip()
            else self.index(name)
            for name in names
        ]


KEMDY = LabelSet(LABEL_NAMES)


def label_map_from(data: object, source: str) -> dict[str, str | None]:
    """A label map from parsed YAML/JSON: raw label → class name, or None to drop the label.

    Raises:
        LabelError: not a mapping of labels to names or null (the message names ``source``).
    """
    if not isinstance(data, Mapping) or not data:
        raise LabelError(
            f"{source}: a label map is a mapping of raw labels to class names or null, "
            "e.g. `happiness: happy` and `other: null`"
        )
    out: dict[str, str | None] = {}
    for raw, target in data.items():
        if target is not None and not isinstance(target, str | int):
            raise LabelError(
                f"{source}: label {raw!r} maps to {target!r}; give a class name or null"
            )
        key = normalise(raw)
        mapped = normalise(target) if target is not None else None
        if key in out and out[key] != mapped:
            raise LabelError(f"{source}: label {raw!r} is mapped twice, differently")
        out[key] = mapped or None
    return out


def read_label_map(path: str | Path) -> dict[str, str | None]:
    """Read a label map file (YAML, or JSON such as EmoBox's ``label_map.json``).

    Args:
        path: The file.

    Returns:
        Raw label (normalised) → class name, or None for labels to drop.

    Raises:
        LabelError: no such file, not YAML/JSON, or not a mapping of labels.
    """
    import yaml

    from emofeat.records import load_yaml

    path = Path(path)
    if not path.is_file():
        raise LabelError(f"--label-map {path}: no such file")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise LabelError(
            f"{path}: not a YAML or JSON file ({' '.join(str(err).split())})"
        ) from None
    return label_map_from(data, str(path))


def decide_label_set(
    present: Iterable[str],
    *,
    declared: Iterable[str] = (),
    order: Iterable[str] | None = None,
) -> LabelSet | None:
    """The one label set of a manifest.

    Args:
        present: The (mapped) labels its rows hold; empty labels are ignored.
        declared: Classes its readers declare (after the label map), present or not.
        order: ``--labels``: the classes in index order; must hold every present label.

    Returns:
        ``order`` if given, else the sorted union of ``declared`` and ``present``; None when
        both are empty (a prediction-only manifest of unlabelled recordings).

    Raises:
        LabelError: labels are present that ``order`` lacks (the message names them).
    """
    present = {normalise(p) for p in present if p and str(p).strip()}
    if order is not None:
        chosen = LabelSet(tuple(order))
        missing = sorted(present - set(chosen.names))
        if missing:
            raise LabelError(
                f"--labels {','.join(chosen.names)} lacks the label(s) {missing} that rows hold; "
                "add them, or map them with --label-map (null drops a label)"
            )
        return chosen
    names = sorted(present | {normalise(d) for d in declared})
    return LabelSet(tuple(names)) if names else None


def found_label_set(labels: Iterable[object]) -> LabelSet | None:
    """The label set of a manifest that does not record one (written by hand, or before label
    sets were recorded): the seven KEMDy classes when every label is one of them, else the
    sorted labels its rows hold; None when no row has a label."""
    present = {normalise(x) for x in labels if x is not None and str(x).strip()}
    present = {ALIASES.get(x, x) if ALIASES.get(x) in LABEL_NAMES else x for x in present}
    if present and present <= set(LABEL_NAMES):
        return KEMDY
    return LabelSet(tuple(sorted(present))) if present else None


def aihub_label(value: str) -> str:
    """Canonical class name of an AI Hub ``상황`` value."""
    key = str(value).strip().lower()
    if key not in AIHUB_MAP:
        raise LabelError(
            f"unknown AI Hub emotion {value!r}; expected one of {', '.join(AIHUB_MAP)}"
        )
    return AIHUB_MAP[key]
