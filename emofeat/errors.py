"""Errors a user can cause. Each message names the file or value and what to do."""

from typing import Any


def printable(text: Any) -> str:
    """Text safe for a terminal and a one-line message: control characters (ANSI escapes,
    newlines in an id, ...) shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class EmofeatError(Exception):
    """Base class of user-facing errors; the CLI prints the message without a traceback."""


class CorpusError(EmofeatError):
    """A corpus on disk is missing files, malformed, or holds values emofeat cannot map."""


class ManifestError(EmofeatError):
    """A manifest CSV is malformed or inconsistent."""


class LabelError(EmofeatError):
    """A label is outside the label set."""


class StoreError(EmofeatError):
    """A feature store is missing, malformed, or does not match what was asked of it."""


class StoreMismatchError(StoreError):
    """An existing store was made for other rows or options than the ones asked for;
    ``problems`` says what differs, one line each."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


class ModelError(EmofeatError):
    """A model cannot be found or loaded."""
