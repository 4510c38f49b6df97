"""Write files under a temporary name and rename, so that nothing half-written is left behind."""

from __future__ import annotations

import contextlib
import os
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
        os.replace(tmp, path)
        _remove_stale(path, keep=tmp)
    finally:
        if tmp.exists():
            tmp.unlink()


def umask() -> int:
    """The process's umask (reading it means setting it: set back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_stale(path: Path, keep: Path) -> None:
    """Temporary files or folders of ``path`` left by a killed writer: their names carry the
    writer's pid, and a live writer's are spared."""
    import shutil

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
    import shutil

    old = out.with_name(f".{out.name}.{os.getpid()}-old.tmp")
    if out.exists():
        os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)
    _remove_stale(out, keep=out)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
