"""The label set and the corpus-specific label maps. Nothing else in emofeat spells class names.

Classes are indexed in alphabetical order of their KEMDy20 names. ``disqust`` is KEMDy20's own
spelling in its consensus column; it stays canonical so that stores and reports line up with
published results, and ``disgust`` is accepted on input.
"""

from __future__ import annotations

from collections.abc import Iterable

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


def canonical(name: str) -> str:
    """Return the canonical class name of ``name`` (case and surrounding space ignored)."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in LABEL_NAMES:
        raise LabelError(
            f"unknown emotion label {name!r}; expected one of {', '.join(LABEL_NAMES)} "
            f"(or the alias{'es' if len(ALIASES) > 1 else ''} {', '.join(ALIASES)})"
        )
    return key


def index(name: str) -> int:
    """Class index of a label name (aliases accepted)."""
    return LABEL_NAMES.index(canonical(name))


def indices(names: Iterable[str | None]) -> list[int]:
    """Class indices of label names; empty or missing names give ``UNKNOWN`` (-1)."""
    out = []
    for name in names:
        if name is None or (isinstance(name, float)) or str(name).strip() == "":
            out.append(UNKNOWN)
        else:
            out.append(index(name))
    return out


def aihub_label(value: str) -> str:
    """Canonical class name of an AI Hub ``상황`` value."""
    key = str(value).strip().lower()
    if key not in AIHUB_MAP:
        raise LabelError(
            f"unknown AI Hub emotion {value!r}; expected one of {', '.join(AIHUB_MAP)}"
        )
    return AIHUB_MAP[key]
