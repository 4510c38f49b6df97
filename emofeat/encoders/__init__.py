"""Model families behind one interface (:class:`emofeat.encoders.base.Encoder`), and the names
users type.

Short names (:data:`MODELS`: ``kobert`` → ``monologg/kobert``, ``wav2vec2`` →
``kresnik/wav2vec2-large-xlsr-korean``, ``whisper`` → ``openai/whisper-small``, ...) name a family
and a hub id; any other local folder (or hub id, where the hub is reachable) works when its
``config.json`` names a ``model_type`` that a registered family handles — text: bert, roberta,
electra, deberta; speech: wav2vec2, hubert, wavlm, data2vec-audio, whisper (``emofeat models
list``).
Adding a family is one :func:`~emofeat.encoders.base.register_family` class; adding a short name
is one line of :data:`MODELS`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from emofeat.encoders.source import local_source, model_type
from emofeat.errors import ModelError

# Short names → (family, hub id). The hub cannot be reached from this project's machines: pass a
# local copy with --model-path.
MODELS: dict[str, tuple[str, str]] = {
    "kobert": ("bert", "monologg/kobert"),
    "kcelectra": ("electra", "beomi/KcELECTRA-base"),  # MMM's text encoder (ElectraModel)
    "klue-roberta": ("roberta", "klue/roberta-base"),
    "xlm-r": ("roberta", "FacebookAI/xlm-roberta-base"),
    "mdeberta": ("deberta", "microsoft/mdeberta-v3-base"),
    "wav2vec2": ("wav2vec2", "kresnik/wav2vec2-large-xlsr-korean"),
    "xls-r": ("wav2vec2", "facebook/wav2vec2-xls-r-300m"),
    "wav2vec2-base": ("wav2vec2", "facebook/wav2vec2-base"),
    "hubert": ("hubert", "facebook/hubert-base-ls960"),
    "wavlm": ("wavlm", "microsoft/wavlm-base-plus"),
    "data2vec-audio": ("data2vec-audio", "facebook/data2vec-audio-base"),
    "whisper": ("whisper", "openai/whisper-small"),
}


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from: the name the user gave, its encoder family, and the hub id or
    folder to load."""

    name: str
    family: str
    source: str

    @property
    def encoder_class(self):
        """The registered :class:`~emofeat.encoders.base.Encoder` subclass of this family."""
        return families()[self.family]

    @property
    def modality(self) -> str:
        return self.encoder_class.modality


def families() -> dict:
    """The registry of encoder families (importing the modules registers them)."""
    from emofeat.encoders import speech, text  # noqa: F401  (registration side effect)
    from emofeat.encoders.base import FAMILIES

    return FAMILIES


def family_table() -> list[dict[str, str]]:
    """One row per registered family: its name, modality, the ``model_type`` values it loads,
    the short names that resolve to it (with their hub ids), what a local folder must hold and
    how its inputs are fed (``emofeat models list``)."""
    rows = []
    for name, cls in families().items():
        names = [f"{short} ({hub})" for short, (fam, hub) in MODELS.items() if fam == name]
        rows.append(
            {
                "family": name,
                "modality": cls.modality,
                "model_types": ", ".join(cls.model_types),
                "short_names": ", ".join(names) or "-",
                "needs": cls.needs,
                "inputs": " ".join((cls.__doc__ or "").split("\n\n")[0].split()),
            }
        )
    return rows


def family_of(model_type: str, source: str) -> str:
    """The family that handles a Hugging Face ``model_type``."""
    for name, cls in families().items():
        if model_type in cls.model_types:
            return name
    known = "; ".join(f"{n}: {' '.join(c.model_types)}" for n, c in families().items())
    raise ModelError(
        f"{source}: model type {model_type!r} is not handled by any encoder family; supported "
        f"model types by family: {known} (see `emofeat models list`)"
    )


def resolve(model: str, model_path: str | os.PathLike | None = None) -> ModelSpec:
    """Resolve a model name, hub id or folder into the family and source to load.

    Args:
        model: A short name (``kobert``, ``wav2vec2``, ...; :data:`MODELS`), a hub id, or a local
            folder in the Hugging Face format.
        model_path: A local copy of the named model (the hub cannot be reached offline); its
            ``config.json`` must be of the short name's family.

    Returns:
        A :class:`ModelSpec`: the name given, the encoder family and the hub id or folder to load.

    Raises:
        ModelError: ``model_path`` is not a folder or holds another family's model, or the folder's
            ``model_type`` is handled by no family (the message lists the supported types).
    """
    if model in MODELS:
        family, hub_id = MODELS[model]
        if not model_path:
            return ModelSpec(model, family, hub_id)
        if not Path(model_path).is_dir():
            raise ModelError(f"--model-path {model_path}: no such folder")
        found = family_of(model_type(Path(model_path)), str(model_path))
        if found != family:
            raise ModelError(
                f"--model {model} is a {family} model, but --model-path {model_path} holds a "
                f"{found} model; pass the right folder, or --model {model_path} alone to use it"
            )
        return ModelSpec(model, family, str(model_path))
    source = str(model_path or model)
    folder = Path(local_source(source))
    return ModelSpec(model, family_of(model_type(folder), source), source)
