"""The options of ``emofeat fuse``, declared once (:mod:`emofeat.options`): what the fusion run
does with its inputs (:class:`FuseConfig`), MMM's training (:class:`MMMConfig`, whose
defaults are the published values) and the layer-sum head's (:class:`LayerSumConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from emofeat.options import (
    OptionError,
    Options,
    allow_incomplete_option,
    device_option,
    option,
    seed_option,
)
from emofeat.tasks import dim_loss_option, dim_weight_option, task_option

LAYER_SUM_HEADS = ("linear", "mlp")
FUSIONS = ("mixer", "concat", "3way")
ACCUMULATIONS = ("published", "standard")


@dataclass(frozen=True)
class MMMConfig(Options):
    """MMM's training options; the published values are the defaults."""

    epochs: int = option(30, help="Training epochs (published: 30).", low=1, high=10_000)
    lr: float = option(
        5e-5, help="AdamW learning rate (published: 5e-5).", low=0, high=10, low_open=True
    )
    batch_size: int = option(64, help="Batch size (published: 64).", low=1, high=65_536)
    grad_accum: int = option(8, help="Gradient accumulation (published: 8).", low=1, high=65_536)
    fusion: str = option("mixer", help="MMM's fusion.", choices=FUSIONS)
    faithful_norm: bool = option(
        True,
        help="MMM's second LayerNorm on the token-mixing output, as the published code (on), or "
        "on the residual sum.",
    )
    shared_norm: bool = option(
        True, help="One LayerNorm at both places of MMM's block, as published (on), or two."
    )
    shuffle: bool = option(False, help="Shuffle MMM's training batches (published: not shuffled).")
    accumulation: str = option(
        "published",
        help="published: step after batch 0, then every --grad-accum-th, the rest of an epoch "
        "dropped; standard: every --grad-accum batches and the remainder.",
        choices=ACCUMULATIONS,
    )
    concat_text: str = option(
        "cls",
        help="--fusion concat and 3way: the text's [CLS] state (published) or its mean.",
        choices=("cls", "mean"),
    )
    class_weights: bool = option(False, help="Weight classes N/count.")
    task: str = task_option()
    dim_loss: str = dim_loss_option()
    dim_weight: float = dim_weight_option()
    seed: int = seed_option(1024, help="Seed (published: 1024).")
    device: str = device_option()

    def check(self) -> None:
        if self.class_weights and self.task != "categorical":
            raise OptionError(
                "--class-weights weights the cross-entropy of the classes; it is for --task "
                "categorical"
            )

    def architecture(self) -> dict:
        """The options that shape the network (saved with each fold model)."""
        return {
            "fusion": self.fusion,
            "faithful_norm": self.faithful_norm,
            "shared_norm": self.shared_norm,
            "concat_text": self.concat_text,
        }


@dataclass(frozen=True)
class LayerSumConfig(Options):
    """The layer-sum head's training options (``fuse --model layer-sum``)."""

    head: str = option(
        "linear",
        help="What reads the weighted sum of layers: one linear layer (SUPERB's) or an MLP "
        "(--hidden units, ReLU).",
        choices=LAYER_SUM_HEADS,
    )
    hidden: int = option(256, help="The MLP head's hidden units.", low=1, high=65_536)
    epochs: int = option(50, help="Training epochs.", low=1, high=10_000)
    lr: float = option(1e-3, help="AdamW learning rate.", low=0, high=10, low_open=True)
    weight_decay: float = option(1e-3, help="AdamW weight decay.", low=0, high=10)
    batch_size: int = option(64, help="Rows per batch.", low=1, high=1_000_000)
    task: str = task_option()
    dim_loss: str = dim_loss_option()
    dim_weight: float = dim_weight_option()
    seed: int = seed_option()
    device: str = device_option()


# Each fusion model's training options (``fuse --model NAME``).
MODEL_CONFIGS: dict[str, type] = {"mmm": MMMConfig, "layer-sum": LayerSumConfig}
FUSION_MODELS = tuple(MODEL_CONFIGS)


@dataclass(frozen=True)
class FuseConfig(Options):
    """What a fusion run fuses and how it is cross-fitted."""

    model: str = option(
        "mmm",
        help="The model trained over the stores: mmm (a text and an audio sequence store) or "
        "layer-sum (a softmax-weighted sum of each store's layers, --layers all, then a small "
        "head; several stores: one weighted sum each, side by side, one head).",
        choices=FUSION_MODELS,
    )
    folds: int | None = option(
        None,
        help="0: one model on all train rows (MMM's own protocol; its store joins tables, not "
        "stacks).",
        low=0,
        high=1000,
        default_text="one model per fold of the stores",
    )
    allow_in_sample: bool = option(
        False,
        help="Fuse stores whose train rows are in-sample or unknown (the fused store says so).",
        flag=True,
    )
    allow_incomplete: bool = allow_incomplete_option()


# Inputs a fusion run's record holds beside the options (re-run with --config RUN/config.yaml).
INPUTS = ("stores", "out")
