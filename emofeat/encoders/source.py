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

# A fine-tuned speech fold's head definition (emofeat.encoders.speech writes it): its presence
# says a folder was fine-tuned, and it records the head and whether the audio was reversed.
HEAD_CONFIG = "head.json"


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
    except RuntimeError as err:  # torch's load_state_dict: tensors of the wrong shape
        raise ModelError(
            f"{source}: the weights do not fit config.json ({_first_line(err)}); use the folder's "
            "own model.safetensors"
        ) from None
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


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(lines[:3])[:400]


# Tensors a pretrained checkpoint may lack without changing what the encoder computes when it
# predicts: wav2vec2's mask embedding is used only when training with SpecAugment.
UNUSED_WHEN_PREDICTING = ("masked_spec_embed",)


def check_weights(
    source: str | os.PathLike,
    info: dict,
    *,
    exact: bool,
    new: tuple[str, ...] = (),
) -> None:
    """Refuse a model whose weights file does not match its config, instead of letting
    transformers initialise the missing tensors at random (its only sign is a log line).

    Args:
        source: The model folder, for the message.
        info: ``from_pretrained(..., output_loading_info=True)``'s loading info.
        exact: A folder emofeat saved (a fine-tuned fold): every tensor of the config must be
            in the file and nothing else. Otherwise (a pretrained checkpoint) tensors of other
            heads in the file are dropped as transformers does.
        new: Names (at the start, or after a module path) of the tensors that are meant to be
            new, such as a classifier head put on a pretrained encoder.

    Raises:
        ModelError: a tensor is missing (or, with ``exact``, unexpected, or of another shape).
    """
    missing = [
        k
        for k in info.get("missing_keys", [])
        if not any(k.startswith(p) or f".{p}" in k for p in new)
        and not k.endswith(UNUSED_WHEN_PREDICTING)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensor(s) the config needs are not in it ({missing[:3]})")
    unexpected = list(info.get("unexpected_keys", [])) if exact else []
    if unexpected:
        problems.append(
            f"{len(unexpected)} tensor(s) the config has no place for ({unexpected[:3]})"
        )
    mismatched = [k for k, *_ in info.get("mismatched_keys", [])]
    if mismatched:
        problems.append(f"{len(mismatched)} tensor(s) of another shape ({mismatched[:3]})")
    if problems:
        raise ModelError(
            f"{source}: the weights file does not match config.json: {'; '.join(problems)}. "
            "emofeat never initialises missing weights at random: use the folder's complete "
            "model.safetensors"
        )
