"""Text encoders: KoBERT (SentencePiece tokenizer via kobert-transformers) and BERT-like models.

The classifier is ``AutoModelForSequenceClassification``; for BERT (KoBERT) that is exactly the
reference head: pooler output → Dropout(p) → Linear(hidden, C), and it reloads with plain
transformers.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from kobert_transformers.tokenization_kobert import KoBertTokenizer

from emofeat.encoders import ModelSpec, local_source, offline_message
from emofeat.errors import ModelError


class KoBertTokenizerFixed(KoBertTokenizer):
    """kobert-transformers' tokenizer, fixed for transformers 4.x.

    ``save_vocabulary`` takes ``filename_prefix`` (``save_pretrained`` passes it), and encodings
    include ``token_type_ids`` (BERT expects them).
    """

    model_input_names = ["input_ids", "token_type_ids", "attention_mask"]

    def save_vocabulary(
        self, save_directory: str, filename_prefix: str | None = None
    ) -> tuple[str, str]:
        os.makedirs(save_directory, exist_ok=True)
        return super().save_vocabulary(save_directory)


def load_tokenizer(spec: ModelSpec, source: str | os.PathLike | None = None):
    """The tokenizer of a text model (KoBERT's SentencePiece tokenizer for KoBERT folders/ids)."""
    src = local_source(source or spec.source)
    try:
        if spec.kobert or (Path(src) / "tokenizer_78b3253a26.model").is_file():
            return KoBertTokenizerFixed.from_pretrained(src)
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(src)
    except OSError:
        raise ModelError(offline_message(src)) from None


def load_text_classifier(
    source: str | os.PathLike,
    num_labels: int | None = None,
    dropout: float | None = None,
    label_names=None,
):
    """A sequence classifier: from a fine-tuned folder, or a new head on a pretrained encoder."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    kwargs = {}
    if num_labels is not None:
        kwargs.update(
            num_labels=num_labels,
            id2label=dict(enumerate(label_names)),
            label2id={n: i for i, n in enumerate(label_names)},
        )
    if dropout is not None:
        kwargs["classifier_dropout"] = dropout
    source = local_source(source)
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
        return AutoModelForSequenceClassification.from_pretrained(source, config=config)
    except OSError:
        raise ModelError(offline_message(str(source))) from None


class TextCollator:
    """Tokenise a batch of texts: ``[CLS] tokens [SEP]``, truncated to ``max_len``.

    Batches are padded to their longest item rather than always to ``max_len`` (the reference
    padded to 64): the attention mask makes the result identical, and short batches run faster.
    """

    def __init__(self, tokenizer, max_len: int):
        self.tokenizer = tokenizer
        self.max_len = max_len

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            [it["text"] for it in items],
            truncation=True,
            max_length=self.max_len,
            padding=True,
            return_tensors="pt",
            return_token_type_ids=True,
        )
        batch = dict(enc)
        if "labels" in items[0]:
            batch["labels"] = torch.tensor([it["labels"] for it in items], dtype=torch.long)
        return batch


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over time of ``hidden`` (B, T, H) where ``mask`` (B, T) is true; padding excluded."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def text_lengths(tokenizer, texts: list[str], max_len: int) -> np.ndarray:
    """Token counts (special tokens included, truncated) of each text, for length grouping."""
    ids = tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]
    return np.array([len(x) for x in ids])
