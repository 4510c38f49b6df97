"""The options of the whole-protocol commands (``emofeat demo``, ``emofeat recipe``) and of
``emofeat infer``, declared once (:mod:`emofeat.options`)."""

from __future__ import annotations

from dataclasses import dataclass

from emofeat.device import PRECISION_NAMES
from emofeat.options import Options, device_option, option, seed_option

PROTOCOLS = ("crossfit", "reference")


def seeds_option() -> object:
    """How many times a whole protocol runs (declared once for the demo and the recipes)."""
    return option(
        1,
        help="Repetitions of the protocol: repetition r (OUT/repeats/r; the first is OUT itself) "
        "draws the folds with seed + r and trains every model with its seed + r; with 2 or "
        "more, OUT/repeats/compare.md gives every figure as mean ± std over them and the "
        "ensembles against the base models paired by repetition (t-test, Wilcoxon).",
        low=1,
        high=100,
    )


@dataclass(frozen=True)
class DemoConfig(Options):
    """The demo's synthetic corpus and cross-fitting."""

    seed: int = seed_option()
    folds: int = option(
        3,
        help="Cross-fitting folds (3 keeps the demo within 15 minutes on 2 CPU cores).",
        low=2,
        high=20,
    )
    sessions: int = option(
        10, help="Synthetic KEMDy20 sessions (2 speakers each).", low=2, high=1000
    )
    per_session: int = option(40, help="Synthetic utterances per session.", low=1, high=100_000)
    aihub: int = option(200, help="Synthetic AI Hub utterances (0: none).", low=0, high=1_000_000)
    seeds: int = seeds_option()


@dataclass(frozen=True)
class RecipeConfig(Options):
    """The reference's protocol on KEMDy20 + AI Hub with the real encoders."""

    kobert: str = option("kobert", help="KoBERT id or local copy of monologg/kobert.")
    wav2vec2: str = option(
        "wav2vec2", help="wav2vec2 id or local copy of kresnik/wav2vec2-large-xlsr-korean."
    )
    kcelectra: str = option(
        "kcelectra", help="MMM's text encoder: id or local copy of beomi/KcELECTRA-base."
    )
    folds: int = option(5, help="Cross-fitting folds of the train rows.", low=2, high=1000)
    device: str = device_option()
    precision: str = option("fp16", help="Extraction precision (GPU).", choices=PRECISION_NAMES)
    protocol: str = option(
        "crossfit",
        help="crossfit: K fold models per configuration, out-of-fold stores, every "
        "meta-learner. reference: as the reference ran (one model per configuration on all "
        "train rows, the fixed-weight soft vote).",
        choices=PROTOCOLS,
    )
    seeds: int = seeds_option()


@dataclass(frozen=True)
class FrozenConfig(Options):
    """The frozen-encoder protocol: all-layer stores, a layer-sum head on each, their stack
    (the heads' own options are :class:`~emofeat.fuse.config.LayerSumConfig`'s)."""

    pooling: str = option(
        "mean",
        help="How each layer is pooled over frames/tokens (mean+std doubles its width).",
        choices=("mean", "mean+std"),
    )
    device: str = device_option()
    precision: str = option(
        "fp32", help="Extraction precision (bf16/fp16 on a GPU).", choices=PRECISION_NAMES
    )


@dataclass(frozen=True)
class InferConfig(Options):
    """How new recordings are predicted with a trained stack."""

    device: str = device_option()
    skip_bad: bool = option(False, help="Leave out unreadable audio / empty text.", flag=True)
