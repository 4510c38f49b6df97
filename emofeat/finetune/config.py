"""The options of ``emofeat finetune``, declared once (:mod:`emofeat.options`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emofeat.errors import EmofeatError
from emofeat.options import OptionError, Options, device_option, option, resolve, seed_option
from emofeat.recipes.presets import PRESETS
from emofeat.records import read_config, record_folder
from emofeat.tasks import (
    dim_loss_option,
    dim_weight_option,
    has_classes,
    has_dimensions,
    task_option,
)

# --metric-for-best chooses among these (mean_ccc: the mean CCC of valence and arousal).
FOLD_METRICS = ("accuracy", "macro_f1", "uar", "mean_ccc")
# transformers' SchedulerType values that need no extra arguments
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)

# Trainer's logging integrations emofeat's dependencies (or its tensorboard extra) provide.
REPORT_TO = ("none", "tensorboard")


BATCH_ORDERS = ("length", "random", "file")


@dataclass
class FinetuneConfig(Options):
    """Every option of a fine-tuning run; :func:`resolve_config` fills it from a preset, a config
    file and explicit values."""

    model: str = option("kobert", help="kobert, wav2vec2, a hub id or a local folder.")
    model_path: str | None = option(None, help="Local copy of the named hub model.")
    preset: str | None = option(
        None,
        help="Named option set (reference or fast); flags and --config override it.",
        choices=tuple(PRESETS),
    )
    folds: int | None = option(
        None,
        help="Cross-fitting folds (0: one model on all train rows).",
        low=0,
        high=1000,
        default_text="the manifest's",
    )
    epochs: float = option(
        3.0, help="Training epochs (fractions allowed).", low=0, high=10_000, low_open=True
    )
    batch_size: int = option(16, help="Rows per device batch.", low=1, high=65_536)
    grad_accum: int = option(1, help="Batches accumulated per optimizer step.", low=1, high=65_536)
    lr: float = option(5e-5, help="Peak learning rate (AdamW).", low=0, high=10, low_open=True)
    task: str = task_option()
    dim_loss: str = dim_loss_option()
    dim_weight: float = dim_weight_option()
    weight_decay: float = option(0.01, help="AdamW weight decay.", low=0, high=100)
    adam_epsilon: float = option(
        1e-8,
        help="AdamW's epsilon (Trainer's default; the published KoBERT notebook used 1e-6).",
        low=0,
        high=1,
        low_open=True,
    )
    scheduler: str = option("linear", help="Learning-rate schedule.", choices=SCHEDULERS)
    warmup_ratio: float = option(0.1, help="Fraction of steps warming up.", low=0, high=1)
    max_grad_norm: float = option(1.0, help="Gradient clipping norm.", low=0, low_open=True)
    dropout: float | None = option(
        None,
        help="Head dropout.",
        low=0,
        high=1,
        default_text="the checkpoint's own (speech: final_dropout)",
    )
    max_len: int = option(64, help="Text: token limit.", low=1, high=1_000_000)
    reverse: bool = option(
        False, help="Time-reverse the audio (the reference's second speech model)."
    )
    sample_rate: int = option(
        16000, help="Speech: audio resampled to this rate (Hz).", low=1, high=384_000
    )
    fp16: bool = option(False, help="fp16 mixed precision (CUDA only).")
    bf16: bool = option(False, help="bf16 mixed precision.")
    gradient_checkpointing: bool = option(False, help="Recompute activations to save memory.")
    attention: str | None = option(
        None,
        help="transformers' attn_implementation: sdpa (PyTorch's fused attention) or eager.",
        choices=("sdpa", "eager"),
        default_text="the library's for the model",
    )
    freeze_feature_encoder: bool = option(
        True, help="Speech: keep the convolutional feature encoder frozen."
    )
    select: str = option(
        "none",
        help="What chooses the kept weights: none (final weights; reference presets) or inner "
        "(best checkpoint and early stopping on a group-aware split of the fold model's own "
        "training rows). Never the held-out fold.",
        choices=("none", "inner"),
    )
    inner_fraction: float = option(
        0.1,
        help="With --select inner: the fraction of rows held out (at most half: the rest must "
        "train the model).",
        low=0,
        high=0.5,
        low_open=True,
    )
    early_stopping_patience: int = option(
        3,
        help="With --select inner: evaluations without gain before stopping (0: never).",
        low=0,
        high=10_000,
    )
    metric_for_best: str = option(
        "accuracy", help="With --select inner: the figure that chooses.", choices=FOLD_METRICS
    )
    report_to: str = option(
        "none",
        help="Trainer's report_to: where training logs go (tensorboard needs `pip install "
        "emofeat[tensorboard]`).",
        choices=REPORT_TO,
    )
    batch_order: str = option(
        "length",
        help="Training batches: length (rows of similar length together, the batches in random "
        "order), random (the reference's wav2vec2, Trainer's default) or file (the manifest's "
        "order, as the published KoBERT notebook).",
        choices=BATCH_ORDERS,
    )
    seed: int = seed_option()
    device: str = device_option()
    skip_bad: bool = option(
        False, help="Leave out unreadable audio / empty text (recorded in skipped.csv).", flag=True
    )
    max_steps: int = option(
        -1,
        help="Stop after this many optimizer steps (smoke tests).",
        low=1,
        high=100_000_000,
        special=(-1,),
    )
    refit: bool = option(
        False,
        help="Also train one model on all train rows (fold-all) beside the fold models, for "
        "`extract --test-rows refit` (test rows from one model, as scikit-learn's stacking).",
        flag=True,
    )
    train_fraction: float = option(
        1.0,
        help="With --folds 0: train on this random fraction of the train rows (the reference's "
        "reverse wav2vec2: 0.9).",
        low=0,
        high=1,
        low_open=True,
    )

    def check(self) -> None:
        by_ccc = self.metric_for_best == "mean_ccc"
        if self.select == "inner" and (
            (by_ccc and not has_dimensions(self.task))
            or (not by_ccc and not has_classes(self.task))
        ):
            raise OptionError(
                f"--metric-for-best {self.metric_for_best} with --task {self.task}: a model of "
                "valence and arousal chooses by mean_ccc, a model of the classes by accuracy, "
                "macro_f1 or uar"
            )
        if self.train_fraction < 1 and self.folds not in (0, None):
            raise OptionError(
                "--train-fraction below 1 trains one model on all train rows (--folds 0), as the "
                "reference did: fold models that each skip random rows would not be cross-fitted"
            )


# Inputs a run's config.yaml records beside the options (re-run with --config RUN/config.yaml).
INPUTS = ("manifest", "out")


def resolve_config(
    preset: str | None = None, config_file: str | os.PathLike | None = None, **overrides: Any
) -> FinetuneConfig:
    """Fine-tuning options from a preset, a config file and overrides, in that order.

    Args:
        preset: A preset name (``emofeat.recipes.presets.PRESETS``); None for none.
        config_file: A YAML mapping of options, or a run's own ``config.yaml``; a preset it names
            applies under it.
        **overrides: Options given explicitly; None means not given.

    Returns:
        The validated :class:`FinetuneConfig`.

    Raises:
        OptionError: a value is refused, an option or a preset is unknown.
    """
    return _resolve(preset, config_file, overrides)[0]


def resolve_command(
    *,
    config_file: str | os.PathLike | None,
    manifest: str | os.PathLike | None,
    out: str | os.PathLike | None,
    **overrides: Any,
) -> tuple[FinetuneConfig, str | Path | None, str | Path | None]:
    """What ``emofeat finetune`` runs: the resolved config (:func:`resolve_config`), and the
    manifest and run folder — from a run's own ``config.yaml`` when they are not given, so that
    ``--config runs/X/config.yaml`` re-runs (resumes) that run."""
    cfg, recorded, is_record = _resolve(overrides.pop("preset", None), config_file, overrides)
    manifest = manifest or recorded.get("manifest")
    if not out and is_record:
        out = record_folder(config_file)
    return cfg, manifest, out


def _resolve(preset, config_file, overrides) -> tuple[FinetuneConfig, dict, bool]:
    values, is_record = read_config(config_file) if config_file else ({}, False)
    name = preset or values.get("preset")
    if name is not None and name not in PRESETS:
        raise EmofeatError(f"--preset must be one of {', '.join(PRESETS)}, got {name!r}")
    given = {**overrides, "preset": name}
    cfg = resolve(
        FinetuneConfig,
        given=given,
        file_values=values,
        source=str(config_file or ""),
        preset=PRESETS[name] if name else None,
        record=is_record,
        inputs=INPUTS,
    )
    return cfg, values, is_record
