"""Write files and folders under a temporary name and rename, so that nothing half-written is
left behind: the one owner of "write whole, then rename" (every artifact emofeat writes whole
goes through :func:`atomic_path` or :func:`atomic_folder`; a store is created so, then filled
in place by its writer, whose done flags make a half-filled store safe to resume).

The new content is flushed to disk (fsync) before the rename and the folder after it, so after a
power cut the path holds the old content or the new, whole: a rename alone can reach the disk
before the data it points to.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}-", suffix=suffix + ".tmp", dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp makes 0600 files; results are for colleagues too: honour the umask.
        os.chmod(tmp, 0o666 & ~umask())
        fsync_tree(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        _remove_stale(path, keep=tmp)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary folder beside ``path``; on success put it, whole and on disk, in
    the place of ``path`` (absent, or a folder emofeat made: see :func:`replace_folder`).

    On an exception the temporary folder is removed and ``path`` is untouched.
    """
    path = Path(path)
    tmp = temp_folder(path)
    try:
        yield tmp
        honour_umask(tmp)
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes 0700 folders
        fsync_tree(tmp)
        replace_folder(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def honour_umask(folder: Path) -> None:
    """Give the files and folders written into ``folder`` the modes the umask allows: some
    writers (safetensors' ``save_file``) create their files 0600 whatever the umask."""
    mask = umask()
    for sub in folder.rglob("*"):
        if sub.is_symlink():
            continue
        os.chmod(sub, (0o777 if sub.is_dir() else 0o666) & ~mask)


def fsync_tree(path: Path) -> None:
    """Flush a file, or every file of a folder and the folders themselves, to disk."""
    if path.is_dir():
        for sub in sorted(path.rglob("*")):
            if sub.is_file() and not sub.is_symlink():
                _fsync_file(sub)
        for folder in [path, *(d for d in path.rglob("*") if d.is_dir())]:
            _fsync_dir(folder)
    elif path.exists():
        _fsync_file(path)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename stands
    finally:
        os.close(fd)


def umask() -> int:
    """The process's umask (reading it means setting it: set back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_stale(path: Path, keep: Path) -> None:
    """Temporary files or folders of ``path`` left by a killed writer: their names carry the
    writer's pid, and a live writer's are spared."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        pid = stale.name[len(path.name) + 2 :].split("-", 1)[0]
        if stale != keep and pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_folder(path: Path) -> Path:
    """A new temporary folder beside ``path`` (named for the stale-file cleanup)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(
        tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    )


def foreign_entries(folder: Path, patterns: Iterable[str]) -> list[str]:
    """Names in ``folder`` that match none of ``patterns`` (things emofeat did not write)."""
    import fnmatch

    patterns = list(patterns)
    return sorted(
        p.name for p in folder.iterdir() if not any(fnmatch.fnmatch(p.name, q) for q in patterns)
    )


def replace_folder(new: Path, out: Path) -> None:
    """Put a fully written folder ``new`` in the place of ``out`` (absent, or one emofeat made):
    the old one is moved aside first, so ``out`` is either the old or the new folder, whole."""
    old = out.with_name(f".{out.name}.{os.getpid()}-old.tmp")
    if out.exists():
        os.replace(out, old)
    os.replace(new, out)
    _fsync_dir(out.parent)
    shutil.rmtree(old, ignore_errors=True)
    _remove_stale(out, keep=out)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
