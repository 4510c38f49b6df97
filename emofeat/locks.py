"""Writer locks: one process writes an output at a time, and a second is refused at once.

An advisory ``flock`` on a lock file, held for as long as the process writes (the kernel drops
it when the process ends, however it ends, so a killed writer never leaves a stale lock). An
exclusive holder writes its process id into the file, so that the refusal can name it. Run
folders use them (:class:`emofeat.runs.RunFolder`: a shared lock per process writing the run, an
exclusive one to replace it, an exclusive one per fold being trained); stores hold their own
(:class:`emofeat.store.writer.StoreWriter`).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from emofeat.errors import EmofeatError


class Lock:
    """A lock held by this process on ``path``; :meth:`release` (or the process's end) drops it."""

    def __init__(self, path: Path, fd: int):
        self.path, self._fd = path, fd

    def share(self) -> None:
        """Turn an exclusive lock into a shared one (others may then take it shared too)."""
        fcntl.flock(self._fd, fcntl.LOCK_SH)

    def release(self) -> None:
        """Drop the lock (closing the file drops it)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(path: str | os.PathLike, *, exclusive: bool, what: str) -> Lock:
    """Take the lock on ``path`` (created if absent) without waiting.

    Args:
        path: The lock file.
        exclusive: One holder (a writer that must be alone) instead of many (writers that may
            work side by side, such as fold jobs of one run).
        what: What the lock guards, for the message (``runs/x``, ``runs/x/fold-0``).

    Returns:
        The held :class:`Lock`.

    Raises:
        EmofeatError: another process holds it (in a way that excludes this one), named by its
            process id where it recorded one.
    """
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise EmofeatError(
            f"{what} is being written by another emofeat process{holder(path)}; wait for it "
            "to finish (or stop it), then run the command again"
        ) from None
    if exclusive:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
    return Lock(path, fd)


def held(path: str | os.PathLike) -> bool:
    """Whether some process holds a lock on ``path`` (a probe that takes and drops it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def holder(path: str | os.PathLike) -> str:
    """`` (process N)`` for the process id an exclusive holder recorded in ``path``, else ''."""
    try:
        pid = int(Path(path).read_text().strip() or 0)
    except (OSError, ValueError):
        return ""
    return f" (process {pid})" if pid > 0 else ""
