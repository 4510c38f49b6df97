"""Where a model's files come from: a local folder, or the hub's snapshot (cached; the hub is
unreachable from this project's machines), and loading errors turned into messages that say how
to provide the model."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from emofeat.errors import ModelError


def model_type(folder: Path) -> str:
    """The ``model_type`` a model folder's ``config.json`` names."""
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise ModelError(f"{folder}: no config.json; expected a save_pretrained folder")
    try:
        return str(json.loads(cfg.read_text(encoding="utf-8")).get("model_type", ""))
    except (ValueError, UnicodeDecodeError, AttributeError) as err:
        raise ModelError(f"{cfg}: not a JSON object ({err})") from None


def local_source(source: str | os.PathLike) -> str:
    """A local folder for ``source``: itself if it is one, else the hub snapshot (downloaded when
    the hub is reachable, from the cache otherwise). Unavailable models raise a ModelError that
    says how to provide them."""
    if Path(source).is_dir():
        return str(source)
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(str(source))
    except Exception as err:  # offline, not cached, no such repo, no network: all say the same
        raise ModelError(offline_message(str(source)) + f" ({type(err).__name__})") from None


@contextlib.contextmanager
def loading(source: str | os.PathLike) -> Iterator[None]:
    """Turn transformers' loading errors into a ModelError naming the model: a missing model
    says how to provide it; a folder that asks to run its own code (``auto_map``) is refused,
    since emofeat never runs code from a model folder (``trust_remote_code=False``)."""
    try:
        yield
    except OSError:
        raise ModelError(offline_message(str(source))) from None
    except ValueError as err:
        if "trust_remote_code" in str(err):
            raise ModelError(
                f"{source}: the model folder asks to run its own code (auto_map); emofeat never "
                "runs code from a model folder. Use a folder with a standard architecture."
            ) from None
        raise ModelError(f"{source}: cannot load the model ({err})") from None


def offline_message(model_id: str) -> str:
    """How to provide a hub model locally, for machines without hub access."""
    return (
        f"model {model_id!r} is not available here (no hub access and not in the local cache). "
        f"On a machine with network: `huggingface-cli download {model_id} --local-dir DIR`, copy DIR "
        "here and pass --model-path DIR (or the folder itself as --model)."
    )
