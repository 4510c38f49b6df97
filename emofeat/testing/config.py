"""The options of ``emofeat models tiny``, declared once (:mod:`emofeat.options`)."""

from __future__ import annotations

from dataclasses import dataclass

from emofeat.options import Options, option, seed_option

# The hub formats emofeat builds tiny models in (emofeat.testing.tiny).
SPEECH_KINDS = ("wav2vec2-base", "hubert", "wavlm", "data2vec-audio", "whisper")
TEXT_KINDS = ("roberta", "xlm-roberta", "deberta-v2")
TINY_KINDS = ("kobert", "kcelectra", "wav2vec2", *SPEECH_KINDS, *TEXT_KINDS)


@dataclass(frozen=True)
class TinyConfig(Options):
    """A tiny random model in the on-disk format of a hub model."""

    kind: str = option(help="Which hub model's format.", choices=TINY_KINDS)
    hidden: int = option(
        64,
        help="Hidden size (a multiple of 4: the tiny models have 4 attention heads and 4 "
        "positional-convolution groups).",
        low=4,
        high=4096,
        rule=lambda h: h % 4 == 0,
        rule_text="a multiple of 4",
    )
    layers: int = option(2, help="Transformer layers.", low=1, high=48)
    seed: int = seed_option()
