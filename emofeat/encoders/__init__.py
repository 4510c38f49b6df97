"""Model families behind one small interface, and a name registry.

``kobert`` → ``monologg/kobert`` (text), ``wav2vec2`` → ``kresnik/wav2vec2-large-xlsr-korean``
(speech); any other Hugging Face id or local folder of a BERT-like text encoder or a
wav2vec2-family speech encoder (wav2vec2, HuBERT, WavLM) works too: its ``config.json`` says which.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from emofeat.errors import ModelError

REGISTRY = {
    "kobert": ("text", "monologg/kobert"),
    "wav2vec2": ("speech", "kresnik/wav2vec2-large-xlsr-korean"),
}
SPEECH_TYPES = (
    "wav2vec2",
    "wav2vec2-conformer",
    "hubert",
    "wavlm",
    "data2vec-audio",
    "unispeech",
    "unispeech-sat",
    "sew",
    "sew-d",
)
TEXT_TYPES = (
    "bert",
    "roberta",
    "electra",
    "xlm-roberta",
    "distilbert",
    "albert",
    "deberta",
    "deberta-v2",
    "camembert",
)


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from: its modality, the id or folder to load, and whether it is KoBERT."""

    name: str
    modality: str
    source: str
    kobert: bool

    @property
    def is_local(self) -> bool:
        return Path(self.source).is_dir()


def resolve(model: str, model_path: str | os.PathLike | None = None) -> ModelSpec:
    """Resolve a model name (``kobert``, ``wav2vec2``), hub id or folder into a ModelSpec.

    ``model_path`` is a local copy of the named model (the hub cannot be reached offline).
    """
    if model in REGISTRY:
        modality, hub_id = REGISTRY[model]
        source = str(model_path) if model_path else hub_id
        if model_path and not Path(model_path).is_dir():
            raise ModelError(f"--model-path {model_path}: no such folder")
        return ModelSpec(model, modality, source, model == "kobert")
    source = str(model_path or model)
    folder = Path(source)
    if folder.is_dir():
        cfg = folder / "config.json"
        if not cfg.is_file():
            raise ModelError(f"{folder}: no config.json; expected a save_pretrained folder")
        model_type = json.loads(cfg.read_text()).get("model_type", "")
        kobert = (folder / "tokenizer_78b3253a26.model").is_file()
    else:
        model_type = _hub_model_type(source)
        kobert = "kobert" in source.lower()
    if model_type in SPEECH_TYPES:
        return ModelSpec(model, "speech", source, False)
    if model_type in TEXT_TYPES:
        return ModelSpec(model, "text", source, kobert)
    raise ModelError(
        f"{source}: model type {model_type!r} is neither a BERT-like text encoder nor a wav2vec2-family speech encoder"
    )


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


def _hub_model_type(model_id: str) -> str:
    folder = Path(local_source(model_id))
    return json.loads((folder / "config.json").read_text()).get("model_type", "")


def offline_message(model_id: str) -> str:
    """How to provide a hub model locally, for machines without hub access."""
    return (
        f"model {model_id!r} is not available here (no hub access and not in the local cache). "
        f"On a machine with network: `huggingface-cli download {model_id} --local-dir DIR`, copy DIR "
        "here and pass --model-path DIR (or the folder itself as --model)."
    )
