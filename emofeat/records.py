"""What every artifact records about how it was made, and reading it back.

A record (a run's or stack's ``config.yaml``, a store's ``.yaml``, a manifest's sidecar) is
YAML: ``output`` (the kind, which :mod:`emofeat.outputs` recognises), the emofeat version and
environment, and ``config``: the resolved options with the inputs they ran on, so that
``--config RECORD`` re-runs the command unchanged. :func:`read_config` reads a record or a
hand-written mapping of options alike.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from emofeat import __version__
from emofeat.errors import EmofeatError

# The record of an artifact that is a folder (a run, a stack, a fusion run) is this file in it.
FOLDER_RECORD = "config.yaml"


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (``*name``): a few hundred bytes of nested
    aliases expand to gigabytes when the data is walked or printed, and no file emofeat reads
    needs them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not accepted; write the values out", mark
            )
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Any:
    """Parse YAML as emofeat reads every file it did not compute itself (config files, records,
    a store's ``config`` attribute): safe types only, and no aliases.

    Args:
        text: The YAML document.

    Returns:
        The parsed value (None for an empty document).

    Raises:
        yaml.YAMLError: the text is not YAML, or it uses an alias.
    """
    return yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader: safe types only


def record_folder(config_file: str | os.PathLike | None) -> Path | None:
    """The folder whose record ``config_file`` is (``--config runs/X/config.yaml`` → ``runs/X``,
    where the command re-runs), or None for any other file."""
    if config_file is None or Path(config_file).name != FOLDER_RECORD:
        return None
    return Path(config_file).parent


def relative_path(path: str | os.PathLike, base: str | os.PathLike) -> str:
    """``path`` as a record at ``base`` (a folder) writes it: relative to ``base``, so that the
    project can move with the record; absolute where no relative path exists (another drive).

    Args:
        path: The path to record.
        base: The folder of the file that records it.

    Returns:
        The recorded text.
    """
    try:
        return os.path.relpath(Path(path).resolve(), Path(base).resolve())
    except ValueError:
        return str(Path(path).resolve())


def resolve_path(recorded: str, base: str | os.PathLike) -> Path:
    """A path a record at ``base`` holds, resolved from the record (:func:`relative_path`);
    records written before paths were relative to them held paths relative to where the
    command ran, which are tried next.

    Args:
        recorded: The path as the record holds it.
        base: The folder of the file that records it.

    Returns:
        The path.
    """
    path = Path(recorded)
    if path.is_absolute():
        return path
    beside = Path(base) / path
    return beside if beside.exists() or not path.exists() else path


def recorded_stores(config: Mapping[str, Any], base: str | os.PathLike) -> list[Path]:
    """The input stores a record at ``base`` lists twice — ``stores`` as they were (absolute)
    and ``stores_relative`` (relative to ``base``): where they were, else where they are beside
    the record (the project folder moved). A record without the relative list gives the first.

    Args:
        config: The record's ``config``.
        base: The folder of the record.

    Returns:
        The store paths.
    """
    stores = list(config.get("stores") or [])
    relative = config.get("stores_relative") or []
    if len(relative) != len(stores):
        return [Path(s) for s in stores]
    return [
        Path(s) if Path(s).exists() else resolve_path(r, base) for s, r in zip(stores, relative)
    ]


def record_paths(
    values: Mapping[str, Any], keys: Iterable[str], base: str | os.PathLike
) -> dict[str, Any]:
    """``values`` as a record at ``base`` holds them: each of ``keys`` that names an existing
    local file or folder written relative to ``base`` (:func:`relative_path`); other values (a
    hub id, a short model name, None) as given.

    Args:
        values: Option values.
        keys: The options that may name a local path (declared ``path=True``).
        base: The folder of the file that records them.

    Returns:
        A copy of ``values``.
    """
    out = dict(values)
    for k in keys:
        v = out.get(k)
        if v and Path(str(v)).exists():
            out[k] = relative_path(v, base)
    return out


def resolve_paths(
    values: Mapping[str, Any], keys: Iterable[str], base: str | os.PathLike
) -> dict[str, Any]:
    """The inverse of :func:`record_paths`: each of ``keys`` that names a path existing relative
    to ``base`` resolved from there; other values as recorded (older records held paths
    relative to where the command ran, a hub id names no local path).

    Args:
        values: Option values as a record holds them.
        keys: The options that may name a local path.
        base: The folder of the file that records them.

    Returns:
        A copy of ``values``.
    """
    out = dict(values)
    for k in keys:
        v = out.get(k)
        if v and not Path(str(v)).is_absolute() and (Path(base) / str(v)).exists():
            out[k] = str(Path(base) / str(v))
    return out


def provenance(
    config: dict[str, Any] | None = None, seed: int | None = None, *, output: str | None = None
) -> dict[str, Any]:
    """A dict describing the artifact's origin, to be saved beside it: the options (``config``:
    what re-runs the command), the environment (versions, device, git commit) and, as ``output``,
    the kind of output it describes (the marker :mod:`emofeat.outputs` recognises)."""
    return {
        **({"output": output} if output else {}),
        "emofeat_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "seed": seed,
        "environment": environment(),
        "config": config or {},
    }


def read_config(path: str | os.PathLike) -> tuple[dict[str, Any], bool]:
    """The options a config file holds (``-`` in a name read as ``_``), and whether the file is an
    artifact's record (whose keys beyond a command's options are derived values, not typos).

    Raises:
        EmofeatError: the file is unreadable, not YAML, or not a mapping.
    """
    path = Path(path)
    try:
        data = load_yaml(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise EmofeatError(f"{path}: not valid YAML ({_one_line(err)})") from None
    except OSError as err:
        raise EmofeatError(f"{path}: cannot read the config ({err.strerror})") from None
    if not isinstance(data, dict):
        raise EmofeatError(f"{path}: expected a mapping of options")
    is_record = isinstance(data.get("config"), dict) and "emofeat_version" in data
    if is_record:
        data = data["config"]
    return {str(k).replace("-", "_"): v for k, v in data.items()}, is_record


def read_record(path: str | os.PathLike, *, what: str) -> dict[str, Any]:
    """An artifact's record as written by :func:`provenance` (``config``, ``seed``, ``output``,
    versions): the one reader of the records inside run and stack folders.

    Args:
        path: the record (``config.yaml`` of a run or stack folder).
        what: the command that writes such records, for the message (``emofeat stack``).

    Raises:
        EmofeatError: the file is missing, not YAML, or has no ``config`` mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise EmofeatError(f"{path.parent}: no {path.name}; not a folder written by `{what}`")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise EmofeatError(f"{path}: not valid YAML ({_one_line(err)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise EmofeatError(f"{path}: no `config` mapping; not written by `{what}`")
    return data


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def read_json(path: str | os.PathLike, kind: type) -> Any:
    """A JSON record of an artifact (a run's or stack's ``metrics.json``); a malformed one is a
    message naming the file, not a traceback.

    Raises:
        EmofeatError: the file is missing, not JSON, or not of ``kind``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EmofeatError(f"{path}: missing; re-run the command that writes it") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EmofeatError(
            f"{path}: not valid JSON ({err}); re-run the command that wrote it"
        ) from None
    if not isinstance(data, kind):
        raise EmofeatError(f"{path}: expected a JSON {kind.__name__}, got {type(data).__name__}")
    return data


def environment() -> dict[str, Any]:
    """Library versions, the compute device (when torch is already loaded: it is not imported
    for this) and the git commit of emofeat when it runs from a checkout."""
    from importlib import metadata

    env: dict[str, Any] = {}
    for package in ("torch", "transformers", "scikit-learn", "lightgbm", "h5py", "numpy"):
        try:
            env[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            env[package] = None
    torch = sys.modules.get("torch")
    if torch is not None:
        cuda = torch.cuda.is_available()
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version() if cuda else None
        env["device"] = torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu"
        env["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    env["git_commit"] = _git_commit()
    return env


def _git_commit() -> str | None:
    """HEAD of the checkout emofeat runs from (with ``+dirty`` for local changes), else None."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def dump_yaml(data: Any) -> str:
    """YAML text of plain data, keys in insertion order, Unicode kept readable."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def weights_digests(folders: list[str]) -> tuple[str, list[str]]:
    """sha256 over the weight files of local model folders: of all of them in order (a store's
    ``checkpoint_sha256``) and of each folder (one per fold model), in one pass over the bytes;
    '' for hub ids or folders without weight files."""
    # One folder: its digest is the whole one (the bytes are hashed once, not twice).
    whole = hashlib.sha256() if len(folders) > 1 else None
    per_folder, found_any = [], False
    for folder in folders:
        p = Path(folder)
        if not p.is_dir():
            return "", ["" for _ in folders]
        one, found = hashlib.sha256(), False
        for f in sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin")):
            found = found_any = True
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    if whole is not None:
                        whole.update(block)
                    one.update(block)
        per_folder.append(one.hexdigest() if found else "")
    if not found_any:
        return "", per_folder
    return (whole.hexdigest() if whole is not None else per_folder[0]), per_folder


def sha256_of_weights(folders: list[str]) -> str:
    """sha256 over the weight files of local model folders (in order); '' for hub ids."""
    return weights_digests(folders)[0]
