"""Speech encoders (wav2vec2, HuBERT, WavLM) with the reference classification head.

Head: masked mean over time of the last hidden state → Dropout → Linear(H, H) → tanh → Dropout →
Linear(H, C). The reference averaged padded frames too, so its predictions depended on what a clip
was batched with; here padding is excluded, so they do not.

On disk (``save_pretrained``): the encoder as a plain transformers folder (``config.json``,
``model.safetensors``; reload with ``AutoModel.from_pretrained``), the feature extractor
(``preprocessor_config.json``) and the head in ``head.safetensors`` + ``head.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from emofeat.encoders import local_source, offline_message
from emofeat.encoders.text import masked_mean
from emofeat.errors import ModelError

HEAD_WEIGHTS = "head.safetensors"
HEAD_CONFIG = "head.json"


class SpeechHead(nn.Module):
    """Dropout → dense → tanh → dropout → linear, on a pooled vector."""

    def __init__(self, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden, hidden)
        self.out_proj = nn.Linear(hidden, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        x = self.dropout(pooled)
        x = torch.tanh(self.dense(x))
        return self.out_proj(self.dropout(x))


class SpeechClassifier(nn.Module):
    """A wav2vec2-family encoder with the reference head; used by Trainer and by extraction."""

    main_input_name = "input_values"

    def __init__(
        self, encoder, num_labels: int, dropout: float = 0.1, label_names: list[str] | None = None
    ):
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config  # Trainer reads model.config
        self.head = SpeechHead(encoder.config.hidden_size, num_labels, dropout)
        self.head_config = {
            "num_labels": num_labels,
            "dropout": dropout,
            "label_names": list(label_names or []),
        }

    # -- Trainer hooks
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        self.encoder.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs=gradient_checkpointing_kwargs
        )

    def freeze_feature_encoder(self) -> None:
        """Freeze the CNN feature encoder (the reference fine-tunes the transformer only)."""
        self.encoder.freeze_feature_encoder()

    def frame_mask(
        self,
        attention_mask: torch.Tensor | None,
        hidden: torch.Tensor,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) mask of frames computed from real samples (not padding)."""
        b, t = hidden.shape[:2]
        if lengths is None:
            if attention_mask is None:
                return torch.ones(b, t, dtype=torch.bool, device=hidden.device)
            lengths = attention_mask.sum(-1)
        frames = self.encoder._get_feat_extract_output_lengths(lengths).to(hidden.device)
        return torch.arange(t, device=hidden.device)[None, :] < frames[:, None]

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        **_,
    ) -> SequenceClassifierOutput:
        """``attention_mask`` goes to the encoder; ``lengths`` (samples) only masks the pooling,
        for group-norm models that must not see a mask (wav2vec2-base)."""
        out = self.encoder(
            input_values, attention_mask=attention_mask, output_hidden_states=output_hidden_states
        )
        hidden = out.last_hidden_state
        mask = self.frame_mask(attention_mask, hidden, lengths)
        logits = self.head(masked_mean(hidden, mask))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=out.hidden_states if output_hidden_states else None,
        )

    # -- persistence
    def save_pretrained(self, directory: str | os.PathLike, **kwargs) -> None:
        directory = Path(directory)
        self.encoder.save_pretrained(directory, **kwargs)
        save_file(
            {k: v.contiguous() for k, v in self.head.state_dict().items()}, directory / HEAD_WEIGHTS
        )
        (directory / HEAD_CONFIG).write_text(json.dumps(self.head_config, indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> SpeechClassifier:
        """Reload a fine-tuned speech classifier folder."""
        directory = Path(directory)
        if not (directory / HEAD_CONFIG).is_file():
            raise ModelError(
                f"{directory}: no {HEAD_CONFIG}; not a fine-tuned emofeat speech model"
            )
        cfg = json.loads((directory / HEAD_CONFIG).read_text())
        model = cls(
            load_speech_encoder(directory), cfg["num_labels"], cfg["dropout"], cfg["label_names"]
        )
        model.head.load_state_dict(load_file(directory / HEAD_WEIGHTS))
        return model


def load_speech_encoder(source: str | os.PathLike):
    """The bare encoder (``AutoModel``) of a wav2vec2-family checkpoint (CTC heads are dropped)."""
    from transformers import AutoModel

    source = local_source(source)
    try:
        return AutoModel.from_pretrained(source)
    except OSError:
        raise ModelError(offline_message(str(source))) from None


def load_feature_extractor(source: str | os.PathLike):
    """The checkpoint's feature extractor (``preprocessor_config.json``)."""
    from transformers import AutoFeatureExtractor

    source = local_source(source)
    try:
        return AutoFeatureExtractor.from_pretrained(source)
    except OSError:
        raise ModelError(offline_message(str(source))) from None


def min_samples(encoder) -> int:
    """Fewest samples that give the encoder one output frame (its receptive field)."""
    n = 1
    while int(encoder._get_feat_extract_output_lengths(torch.tensor(n))) < 1:
        n += 1
    return n


class SpeechCollator:
    """Normalise and pad waveforms with the model's feature extractor."""

    def __init__(self, feature_extractor, sample_rate: int):
        self.fe = feature_extractor
        self.sample_rate = sample_rate
        # Group-norm wav2vec2 models (base) are trained without an attention mask.
        self.use_mask = bool(getattr(feature_extractor, "return_attention_mask", True))

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        waves = [it["audio"] for it in items]
        enc = self.fe(
            waves,
            sampling_rate=self.sample_rate,
            padding=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        batch = {
            "input_values": enc["input_values"],
            "lengths": torch.tensor([len(w) for w in waves]),
        }
        if self.use_mask:
            batch["attention_mask"] = enc["attention_mask"]
        if "labels" in items[0]:
            batch["labels"] = torch.tensor([it["labels"] for it in items], dtype=torch.long)
        return batch
