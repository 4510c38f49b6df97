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


TINY_KINDS = ("kobert", "kcelectra", "wav2vec2")


def build_tiny(
    kind: str,
    out: str | Path,
    *,
    manifest: str | Path | None = None,
    hidden: int = 64,
    layers: int = 2,
    seed: int = 0,
) -> Path:
    """A tiny ``kind`` model in ``out`` (``emofeat models tiny``); text models need a manifest
    whose texts make their vocabulary."""
    from emofeat.errors import EmofeatError

    if kind not in TINY_KINDS:
        raise EmofeatError(f"--kind must be one of {', '.join(TINY_KINDS)}, got {kind!r}")
    if kind == "wav2vec2":
        return build_tiny_wav2vec2(out, hidden=hidden, layers=layers, seed=seed)
    if not manifest:
        raise EmofeatError(f"--kind {kind} needs --manifest (its texts make the vocabulary)")
    from emofeat.corpus.manifest import read_manifest

    build = build_tiny_kobert if kind == "kobert" else build_tiny_electra
    texts = list(read_manifest(manifest).frame["text"])
    return build(out, texts, hidden=hidden, layers=layers, seed=seed)
