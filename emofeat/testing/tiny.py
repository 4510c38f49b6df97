"""Tiny, randomly initialised models in exactly the on-disk format of the hub ones.

No machine of this project can download from a model hub, so tests and the demo build these and
load them through the same code as ``monologg/kobert`` and ``kresnik/wav2vec2-large-xlsr-korean``:

* KoBERT: ``config.json`` (BertModel), ``model.safetensors``, ``tokenizer_78b3253a26.model`` (a
  SentencePiece model trained on the manifest's texts) and ``vocab.txt`` (special tokens, then the
  pieces), as in monologg/kobert.
* wav2vec2: ``config.json`` (Wav2Vec2ForCTC, like kresnik's), ``model.safetensors``,
  ``preprocessor_config.json``; a layer-norm conv feature encoder ("stable layer norm", as in the
  XLS-R models) with the real model's kernels and strides (total stride 320 samples).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

KOBERT_SPECIALS = ["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_kobert(
    out: str | Path,
    texts: list[str],
    *,
    vocab_size: int = 400,
    hidden: int = 64,
    layers: int = 2,
    seed: int = 0,
) -> Path:
    """Write a tiny KoBERT folder with a SentencePiece tokenizer trained on ``texts``."""
    import sentencepiece as spm
    from transformers import BertConfig, BertModel

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(t for t in texts if t.strip()), encoding="utf-8")
        spm.SentencePieceTrainer.train(
            input=str(corpus),
            model_prefix=str(Path(tmp) / "sp"),
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            character_coverage=1.0,
            model_type="unigram",
            bos_id=-1,
            eos_id=-1,
            minloglevel=2,
        )
        shutil.copy(Path(tmp) / "sp.model", out / "tokenizer_78b3253a26.model")
        sp = spm.SentencePieceProcessor(model_file=str(Path(tmp) / "sp.model"))
    pieces = [
        sp.id_to_piece(i)
        for i in range(sp.get_piece_size())
        if not (sp.is_control(i) or sp.is_unknown(i))
    ]
    vocab = KOBERT_SPECIALS + pieces
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    import torch

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=hidden * 2,
        max_position_embeddings=128,
        pad_token_id=1,
        architectures=["BertModel"],
    )
    BertModel(config).save_pretrained(out)
    return out


def build_tiny_wav2vec2(
    out: str | Path, *, hidden: int = 64, layers: int = 2, conv_dim: int = 32, seed: int = 0
) -> Path:
    """Write a tiny wav2vec2 folder (CTC checkpoint layout, like kresnik's) with its feature extractor."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.manual_seed(seed)
    config = Wav2Vec2Config(
        vocab_size=32,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=hidden * 2,
        conv_dim=(conv_dim,) * 7,
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_bias=True,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        mask_time_prob=0.0,  # SpecAugment would mask most of a 1-2 s clip of a tiny model
        layerdrop=0.0,
        architectures=["Wav2Vec2ForCTC"],
    )
    Wav2Vec2ForCTC(config).save_pretrained(out)
    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    ).save_pretrained(out)
    return out


def build_tiny_electra(
    out: str | Path, texts: list[str], *, hidden: int = 64, layers: int = 2, seed: int = 0
) -> Path:
    """Write a tiny ELECTRA discriminator folder in the on-disk format of beomi/KcELECTRA-base:
    ``config.json`` (ElectraModel), ``model.safetensors`` and a WordPiece ``vocab.txt`` with its
    BertTokenizer files (the vocabulary: the special tokens, then every character of ``texts``)."""
    from transformers import BertTokenizer, ElectraConfig, ElectraModel

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chars = sorted({c for t in texts for c in t if not c.isspace()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizer(
        str(out / "vocab.txt"), do_lower_case=False, model_max_length=128
    ).save_pretrained(out)
    import torch

    torch.manual_seed(seed)
    config = ElectraConfig(
        vocab_size=len(vocab),
        embedding_size=hidden,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=hidden * 2,
        max_position_embeddings=256,
        pad_token_id=0,
        architectures=["ElectraModel"],
    )
    ElectraModel(config).save_pretrained(out)
    return out


def _conv(conv_dim: int) -> dict:
    """The real models' CNN kernels and strides (total stride 320 samples), narrow."""
    return dict(
        conv_dim=(conv_dim,) * 7,
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    )


def _encoder(hidden: int, layers: int) -> dict:
    return dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=hidden * 2,
    )


def build_tiny_speech(
    kind: str, out: str | Path, *, hidden: int = 64, layers: int = 2, seed: int = 0
) -> Path:
    """A tiny speech model of ``kind`` in its hub checkpoint's on-disk format:

    * ``wav2vec2-base``: group-norm feature encoder, feature extractor without attention mask
      (facebook/wav2vec2-base);
    * ``hubert``: HuBERT base (group norm, no mask; facebook/hubert-base-ls960);
    * ``wavlm``: WavLM with a layer-norm feature encoder and a mask (microsoft/wavlm-large);
    * ``data2vec-audio``: data2vec-audio (layer norm, mask; facebook/data2vec-audio-base);
    * ``whisper``: an encoder-decoder ``WhisperForConditionalGeneration`` checkpoint with its
      80-bin log-mel ``WhisperFeatureExtractor`` (openai/whisper-*).
    """
    import torch
    import transformers as tf

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if kind == "whisper":
        config = tf.WhisperConfig(
            d_model=hidden,
            encoder_layers=layers,
            decoder_layers=1,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=hidden * 2,
            decoder_ffn_dim=hidden * 2,
            num_mel_bins=80,
            max_target_positions=64,
            architectures=["WhisperForConditionalGeneration"],
        )
        tf.WhisperForConditionalGeneration(config).save_pretrained(out)
        tf.WhisperFeatureExtractor(feature_size=80).save_pretrained(out)
        return out
    group_norm = kind in ("wav2vec2-base", "hubert")
    common = dict(
        **_encoder(hidden, layers),
        **_conv(16),
        num_conv_pos_embedding_groups=4,
        mask_time_prob=0.0,
        layerdrop=0.0,
    )
    if kind == "data2vec-audio":
        config = tf.Data2VecAudioConfig(**common, num_conv_pos_embeddings=2, conv_pos_kernel_size=5)
        model = tf.Data2VecAudioModel(config)
    else:
        norm = dict(
            feat_extract_norm="group" if group_norm else "layer",
            do_stable_layer_norm=not group_norm,
            conv_bias=not group_norm,
            num_conv_pos_embeddings=16,
        )
        cls = {
            "wav2vec2-base": (tf.Wav2Vec2Config, tf.Wav2Vec2Model),
            "hubert": (tf.HubertConfig, tf.HubertModel),
            "wavlm": (tf.WavLMConfig, tf.WavLMModel),
        }[kind]
        config, model = None, None
        config = cls[0](**common, **norm)
        model = cls[1](config)
    model.save_pretrained(out)
    tf.Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=not group_norm,
    ).save_pretrained(out)
    return out


def _sentencepiece(texts: list[str], folder: Path, vocab_size: int, **kw) -> Path:
    import sentencepiece as spm

    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(t for t in texts if t.strip()), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(folder / "sp"),
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=1.0,
        model_type="unigram",
        minloglevel=2,
        **kw,
    )
    return folder / "sp.model"


def build_tiny_text(
    kind: str,
    out: str | Path,
    texts: list[str],
    *,
    hidden: int = 64,
    layers: int = 2,
    seed: int = 0,
) -> Path:
    """A tiny text model of ``kind`` in its hub checkpoint's on-disk format, its tokenizer
    trained on ``texts``:

    * ``roberta``: byte-level BPE (``vocab.json`` + ``merges.txt``; klue/roberta-base's kind);
    * ``xlm-roberta``: SentencePiece (``sentencepiece.bpe.model``; FacebookAI/xlm-roberta-base);
    * ``deberta-v2``: SentencePiece (``spm.model``; microsoft/mdeberta-v3-base).
    """
    import torch
    import transformers as tf

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [t for t in texts if t.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "roberta":
            from tokenizers import ByteLevelBPETokenizer

            bpe = ByteLevelBPETokenizer()
            specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
            bpe.train_from_iterator(lines, vocab_size=600, min_frequency=1, special_tokens=specials)
            bpe.save_model(tmp)
            tok = tf.RobertaTokenizerFast(
                vocab_file=f"{tmp}/vocab.json",
                merges_file=f"{tmp}/merges.txt",
                model_max_length=128,
            )
        elif kind == "xlm-roberta":
            model_file = _sentencepiece(
                lines, Path(tmp), 400, bos_id=0, pad_id=1, eos_id=2, unk_id=3
            )
            tok = tf.XLMRobertaTokenizer(vocab_file=str(model_file), model_max_length=128)
        elif kind == "deberta-v2":
            model_file = _sentencepiece(
                lines,
                Path(tmp),
                400,
                pad_id=0,
                unk_id=3,
                bos_id=1,
                eos_id=2,
                user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"],
            )
            tok = tf.DebertaV2Tokenizer(vocab_file=str(model_file), model_max_length=128)
        else:
            raise ValueError(kind)
        tok.save_pretrained(out)
    vocab = len(tok)
    torch.manual_seed(seed)
    if kind == "deberta-v2":
        config = tf.DebertaV2Config(
            vocab_size=vocab,
            **_encoder(hidden, layers),
            max_position_embeddings=128,
            relative_attention=True,
            position_buckets=32,
            pos_att_type=["p2c", "c2p"],
            pad_token_id=tok.pad_token_id,
        )
        tf.DebertaV2Model(config).save_pretrained(out)
        return out
    config_cls, model_cls = (
        (tf.RobertaConfig, tf.RobertaModel)
        if kind == "roberta"
        else (tf.XLMRobertaConfig, tf.XLMRobertaModel)
    )
    config = config_cls(
        vocab_size=vocab,
        **_encoder(hidden, layers),
        max_position_embeddings=130,  # 128 positions after the padding index
        type_vocab_size=1,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model_cls(config).save_pretrained(out)
    return out


def build_tiny(
    kind: str,
    out: str | Path,
    *,
    manifest: str | Path | None = None,
    **options: Any,
) -> Path:
    """Build a tiny random model in a hub model's on-disk format (``emofeat models tiny``).

    Args:
        kind: The hub model whose format is built (:data:`emofeat.testing.config.TINY_KINDS`).
        out: The model folder.
        manifest: Text models: the manifest whose texts make the vocabulary.
        **options: The other options of :class:`~emofeat.testing.config.TinyConfig`.

    Returns:
        The model folder.

    Raises:
        OptionError: an option's value is refused.
        EmofeatError: a text model without ``manifest``.
    """
    from emofeat.errors import EmofeatError
    from emofeat.testing.config import SPEECH_KINDS, TEXT_KINDS, TinyConfig

    cfg = TinyConfig(kind=kind, **options)
    hidden, layers, seed = cfg.hidden, cfg.layers, cfg.seed
    if kind == "wav2vec2":
        return build_tiny_wav2vec2(out, hidden=hidden, layers=layers, seed=seed)
    if kind in SPEECH_KINDS:
        return build_tiny_speech(kind, out, hidden=hidden, layers=layers, seed=seed)
    if not manifest:
        raise EmofeatError(f"--kind {kind} needs --manifest (its texts make the vocabulary)")
    from emofeat.corpus.manifest import read_manifest

    texts = list(read_manifest(manifest).frame["text"])
    if kind in TEXT_KINDS:
        return build_tiny_text(kind, out, texts, hidden=hidden, layers=layers, seed=seed)
    build = build_tiny_kobert if kind == "kobert" else build_tiny_electra
    return build(out, texts, hidden=hidden, layers=layers, seed=seed)
