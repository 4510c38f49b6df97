"""Transcript decoding and normalisation.

Text modes: ``raw`` feeds the transcript as written (the reference did this, markers such as
``c/``, ``n/``, ``l/``, ``b/``, ``o/`` included); ``clean`` keeps only Hangul (U+3131-U+D7A3),
``! ? . ,`` and spaces, then collapses whitespace (another published KEMDy20 pipeline).
"""

from __future__ import annotations

import re
from pathlib import Path

from emofeat.errors import CorpusError

TEXT_MODES = ("raw", "clean")
_NOT_KEPT = re.compile(r"[^\u3131-\uD7A3!?.,\s]")
_SPACES = re.compile(r"\s+")


def decode_transcript(data: bytes, path: Path | str = "<bytes>") -> str:
    """Decode transcript bytes written in cp949 (KEMDy20's encoding) or UTF-8.

    Bytes that are valid UTF-8 are taken as UTF-8, all others as cp949. Trying cp949 first
    would be wrong for UTF-8 files: cp949 accepts many UTF-8 byte pairs and yields mojibake
    without an error, while cp949-encoded Hangul is essentially never valid UTF-8.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp949")
    except UnicodeDecodeError as err:
        raise CorpusError(
            f"{path}: transcript is neither cp949 nor UTF-8 ({err.reason} at byte {err.start}); "
            "re-save it in cp949 or UTF-8"
        ) from None


def read_transcript(path: Path) -> str:
    """Read a one-line transcript file (cp949 or UTF-8), surrounding whitespace stripped."""
    return decode_transcript(Path(path).read_bytes(), path).strip()


def normalize(text: str, mode: str) -> str:
    """Apply a text mode (``raw`` or ``clean``) to a transcript."""
    if mode == "raw":
        return text.strip()
    if mode == "clean":
        return _SPACES.sub(" ", _NOT_KEPT.sub(" ", text)).strip()
    raise ValueError(f"unknown text mode {mode!r}; expected one of {TEXT_MODES}")
