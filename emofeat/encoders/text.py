"""Text encoders: KoBERT (SentencePiece tokenizer via kobert-transformers) and BERT-like models.

The classifier is ``AutoModelForSequenceClassification``; for BERT (KoBERT) that is exactly the
reference head: pooler output → Dropout(p) → Linear(hidden, C), and it reloads with plain
transformers.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emofeat.encoders.base import (
    Encoder,
    register_family,
    training_targets,
)
from emofeat.encoders.source import check_weights, loading, local_source

KOBERT_SPM = "tokenizer_78b3253a26.model"


def __getattr__(name: str) -> Any:
    # ``from emofeat.encoders.text import KoBertTokenizerFixed`` keeps working, while importing
    # this module (every extraction resolves the families) does not import kobert-transformers,
    # whose package imports transformers' BERT models (1.3 s here).
    if name == "KoBertTokenizerFixed":
        from emofeat.encoders.kobert_tokenizer import KoBertTokenizerFixed

        return KoBertTokenizerFixed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_tokenizer(source: str | os.PathLike):
    """The tokenizer of a text model folder or hub id (KoBERT's SentencePiece tokenizer when the
    folder holds its model file; never through AutoTokenizer, which cannot build it)."""
    src = local_source(source)
    with loading(src):
        if (Path(src) / KOBERT_SPM).is_file():
            from emofeat.encoders.kobert_tokenizer import KoBertTokenizerFixed

            # KoBERT's folders name BertTokenizer as their class; emofeat loads its fixed
            # SentencePiece subclass on purpose, so transformers' "not the same type" warning,
            # printed at every load, says nothing to the user.
            with _without_tokenizer_class_warning():
                return KoBertTokenizerFixed.from_pretrained(src)
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(src, trust_remote_code=False)


@contextlib.contextmanager
def _without_tokenizer_class_warning() -> Iterator[None]:
    import logging

    class Quiet(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "tokenizer class you load from this checkpoint" not in record.getMessage()

    logger, quiet = logging.getLogger("transformers.tokenization_utils_base"), Quiet()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def load_text_classifier(
    source: str | os.PathLike,
    label_names: Sequence[str] | None = None,
    dropout: float | None = None,
    *,
    attention: str | None = None,
):
    """A sequence classifier: from a fine-tuned folder, or a new head on a pretrained encoder."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {}
    if label_names is not None:
        kwargs.update(
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={n: i for i, n in enumerate(label_names)},
        )
    if dropout is not None:
        kwargs["classifier_dropout"] = dropout
    source = local_source(source)
    with loading(source):
        config = AutoConfig.from_pretrained(source, trust_remote_code=False, **kwargs)
        model, info = AutoModelForSequenceClassification.from_pretrained(
            source,
            config=config,
            trust_remote_code=False,
            output_loading_info=True,
            **({"attn_implementation": attention} if attention else {}),
        )
    # A new head (label names given) on a pretrained encoder is meant to be new; a fine-tuned
    # fold folder must hold every tensor of its config and nothing else.
    fold = label_names is None
    check_weights(source, info, exact=fold, new=() if fold else CLASSIFIER_HEADS)
    return model


# The heads transformers' sequence classifiers put on an encoder (BERT, RoBERTa, ELECTRA,
# DeBERTa, DistilBERT, ALBERT): new when a classifier is built on a pretrained encoder.
CLASSIFIER_HEADS = ("classifier.", "pre_classifier.", "pooler.dense", "score.")

# MMM's published cleaning keeps Hangul, spaces and ! ? . , (its regex's character class).
_NOT_HANGUL = re.compile(r"[^ㄱ-ㅎㅏ-ㅣ가-힣!?., ]")


def text_filter(text: str, how: str) -> str:
    """``text`` as a model sees it: unchanged, or (``hangul``, MMM's cleaning) Hangul, spaces
    and ``! ? . ,`` only, runs of spaces collapsed."""
    if how == "hangul":
        return " ".join(_NOT_HANGUL.sub("", str(text)).split())
    return text


class TextCollator:
    """Tokenise a batch of texts: ``[CLS] tokens [SEP]``, truncated to ``max_len``.

    Batches are padded to their longest item rather than always to ``max_len`` (the reference
    padded to 64): the attention mask makes the result identical, and short batches run faster.
    """

    def __init__(self, tokenizer, max_len: int, *, pad_to_max: bool = False):
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.pad_to_max = pad_to_max  # MMM's text store: every row padded to max_len

    def encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return dict(
            self.tokenizer(
                texts,
                truncation=True,
                max_length=self.max_len,
                padding="max_length" if self.pad_to_max else True,
                return_tensors="pt",
                # KoBERT's reference inputs carry them; RoBERTa and DistilBERT take none.
                return_token_type_ids="token_type_ids" in self.tokenizer.model_input_names,
            )
        )

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.encode([it["input"] for it in items])
        if "labels" in items[0]:
            batch["labels"] = training_targets([it["labels"] for it in items])
        return batch


@register_family
class TextEncoder(Encoder):
    """BERT-like encoders (KoBERT included): masked mean over tokens per layer, BERT's pooler
    output as the extra embedding ``pooler`` (models that have one), classifier logits. Other
    text families differ only in what their folders hold; ``AutoModel`` and ``AutoTokenizer``
    (KoBERT: its fixed SentencePiece tokenizer) load them."""

    family = "bert"
    modality = "text"
    input_stage = "tokenise"
    needs = (
        "config.json, model.safetensors, the tokenizer's files (KoBERT: "
        "tokenizer_78b3253a26.model + vocab.txt; others: what AutoTokenizer saves)"
    )
    model_types = ("bert", "distilbert", "albert")

    @classmethod
    def load_processor(cls, source: str):
        return load_tokenizer(source)

    def new_classifier(self, source, label_names, dropout, attention=None):
        return load_text_classifier(source, label_names, dropout, attention=attention)

    def load_classifier(self, folder):
        return load_text_classifier(folder).eval()

    def load_pretrained(self, source):
        from transformers import AutoModel

        src = local_source(source)
        with loading(src):
            model, info = AutoModel.from_pretrained(
                src, trust_remote_code=False, output_loading_info=True
            )
        if any(k.startswith("pooler.") for k in info.get("missing_keys", [])):
            # A checkpoint saved without its pooler (e.g. from a masked-LM model): no pooler
            # output is computed or stored, rather than one from random weights.
            model.pooler = None
        check_weights(src, info, exact=False, new=("pooler.",))
        return model.eval()

    def save(self, model, folder):
        # The folder alone says how long inputs may be (the run's max_len, e.g. 64).
        self.processor.model_max_length = self.options.max_len
        super().save(model, folder)

    limit_effect = "truncated to --max-len tokens"

    def count_over_limit(self, row_pieces, inputs):
        # Only rows the encoded batch filled up to max_len can have been truncated: those alone
        # are tokenised again, untruncated (not every row: this runs beside every batch).
        cap = self.options.max_len
        full = np.flatnonzero(inputs["attention_mask"].sum(1).numpy() >= cap)
        return sum(
            len(self.processor(row_pieces[i][0], add_special_tokens=True)["input_ids"]) > cap
            for i in full
        )

    @classmethod
    def position_limit(cls, source):
        from transformers import AutoConfig

        with loading(source):
            config = AutoConfig.from_pretrained(local_source(source), trust_remote_code=False)
        positions = int(getattr(config, "max_position_embeddings", 0) or 0)
        if config.model_type in ("roberta", "xlm-roberta", "camembert"):
            positions -= 2  # their positions start after the padding index
        return positions if positions > 0 else None

    @classmethod
    def own_limit(cls, processor, source):
        positions = cls.position_limit(source) or 0
        tokenizer = int(getattr(processor, "model_max_length", 0) or 0)
        limits = [n for n in (positions, tokenizer) if 0 < n <= 100_000]  # 1e30: "no limit"
        return min(limits) if limits else 512

    def extra_embeddings(self, model):
        pooler = getattr(self.bare(model), "pooler", None)
        return {"pooler": int(model.config.hidden_size)} if pooler is not None else {}

    # -- rows
    def check_row(self, manifest, row, min_length=1):
        text = text_filter(manifest.frame["text"].iat[row], self.options.text_filter)
        if str(text).strip():
            return float(len(text))
        if str(manifest.frame["audio_path"].iat[row]).strip():
            return "empty text (this row has audio only: use a speech model, or fill in its text)"
        return "empty text"

    def load_pieces(self, manifest, row, min_length=1, part=None):
        return [text_filter(manifest.frame["text"].iat[row], self.options.text_filter)]

    def batches(self, rows, lengths, *, batch_size, batch_seconds):
        order = np.argsort(lengths, kind="stable")
        rows = np.asarray(rows)[order]
        return [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]

    def collator(self):
        return TextCollator(
            self.processor,
            self.options.max_len,
            pad_to_max=self.options.sequence_padding == "max_length",
        )

    def sequence_positions(self, inputs, mask):
        if self.options.sequence_padding == "max_length":  # the pad token's states too
            return torch.ones_like(mask, dtype=torch.bool)
        return mask

    def input_lengths(self, inputs):
        return inputs["attention_mask"].sum(1)

    # -- forward
    def run(self, model, inputs):
        return model(**inputs, output_hidden_states=True)

    def valid_positions(self, model, inputs, hidden):
        return inputs["attention_mask"].bool()

    def pass_outputs(self, model, out):
        extra = {}
        pooler = getattr(self.bare(model), "pooler", None)
        if pooler is not None:  # BERT's pooler on the [CLS] state
            extra["pooler"] = pooler(out.hidden_states[-1]).float()
        return (out.logits.float() if hasattr(out, "logits") else None), extra


@register_family
class RobertaEncoder(TextEncoder):
    """RoBERTa, XLM-R, KLUE-RoBERTa, CamemBERT (byte-level BPE or SentencePiece tokenizers; no
    token type ids)."""

    family = "roberta"
    model_types = ("roberta", "xlm-roberta", "camembert")


@register_family
class ElectraEncoder(TextEncoder):
    """ELECTRA discriminators (KcELECTRA, MMM's text encoder); no pooler."""

    family = "electra"
    model_types = ("electra",)


@register_family
class DebertaEncoder(TextEncoder):
    """DeBERTa and DeBERTa-v2/v3 (mDeBERTa-v3 included); no pooler in the bare model."""

    family = "deberta"
    model_types = ("deberta", "deberta-v2")
