"""The options of ``emofeat extract``, declared once (:mod:`emofeat.options`).

Options declared ``identity=True`` decide the values a store holds: they are recorded in the
store's ``config`` attribute, and a store made with other values is never resumed into.
"""

from __future__ import annotations

from dataclasses import dataclass

from emofeat.device import PRECISION_NAMES
from emofeat.options import (
    OptionError,
    Options,
    device_option,
    identity_keys,
    option,
    path_keys,
)

TEST_ROWS = ("mean", "refit")
TEXT_FILTERS = ("none", "hangul")
SEQUENCE_PADDINGS = ("valid", "max_length")


def _layer_list(text: str) -> bool:
    parts = [p.strip() for p in text.split(",")]
    return text == "all" or all(p == "last" or p.isdigit() for p in parts)


@dataclass
class ExtractConfig(Options):
    """Options of one extraction; every option but ``overwrite`` is recorded beside the store."""

    model: str | None = option(
        None,
        help="Frozen encoder: kobert, wav2vec2, a hub id or a folder; or openSMILE's "
        "features: opensmile:eGeMAPSv02, opensmile:ComParE_2016 (emofeat models list).",
        identity=True,
        path=True,
    )
    model_path: str | None = option(
        None, help="Local copy of the named hub model.", identity=True, path=True
    )
    run: str | None = option(
        None, help="A fine-tuned run folder (out-of-fold logits).", identity=True, path=True
    )
    layers: str = option(
        "last",
        help="last, all, or hidden-state indices like 0,6,12 (0: the input embeddings; last "
        "may be one of them).",
        rule=_layer_list,
        rule_text="last, all, or comma-separated hidden-state indices (or last)",
        identity=True,
    )
    pooling: str = option(
        "mean", help="Pooling over time/tokens.", choices=("mean", "mean+std"), identity=True
    )
    batch_seconds: float | None = option(
        None,
        help="Speech: padded audio seconds per batch.",
        low=0,
        high=86_400,
        low_open=True,
        default_text="64 on GPU, 12 on CPU",
    )
    batch_size: int = option(32, help="Text: utterances per batch.", low=1, high=65_536)
    dtype: str = option(
        "float32",
        help="Embedding storage type.",
        choices=("float16", "float32"),
        identity=True,
    )
    device: str = device_option()
    precision: str = option(
        "fp32",
        help="Autocast precision of the forward pass.",
        choices=PRECISION_NAMES,
        identity=True,
    )
    max_seconds: float = option(
        20.0,
        help="Speech: window length for long clips (0: whole clips, no windows).",
        low=0,
        high=86_400,
        identity=True,
    )
    max_len: int | None = option(
        None,
        help="Text: token limit.",
        low=1,
        high=1_000_000,
        default_text="the run's; for a frozen model its own limit",
        identity=True,
    )
    reverse: bool | None = option(
        None, help="Speech: time-reverse.", default_text="the run's", identity=True
    )
    skip_bad: bool = option(
        False, help="Record unreadable rows as skipped instead of stopping.", flag=True
    )
    overwrite: bool = option(
        False, help="Replace a store made for other rows or options.", flag=True
    )
    workers: int | None = option(
        None,
        help="Input worker processes that read and encode the next batches while one computes.",
        low=0,
        high=256,
        default_text="none on CPU, where the model's threads use every core; up to 8 on CUDA",
    )
    flush_rows: int | None = option(
        None,
        help="Rows per write window: batched by length inside it and written as one block; a "
        "kill loses at most the rows since the last write, recomputed on resume.",
        low=1,
        high=10_000_000,
        default_text="2048, 256 with --sequence",
    )
    sequence: bool = option(
        False,
        help="Also store each row's last-layer token/frame states (float16), for MMM.",
        flag=True,
        identity=True,
    )
    sequence_length: int | None = option(
        None,
        help="Positions a stored sequence keeps.",
        low=1,
        high=1_000_000,
        default_text="text --max-len, speech 512 frames",
        identity=True,
    )
    test_rows: str = option(
        "mean",
        help="With --run: test rows from the mean of the fold models or from the run's model "
        "refit on all train rows (finetune --refit). Stack reports name which.",
        choices=TEST_ROWS,
        identity=True,
    )
    text_filter: str = option(
        "none",
        help="Text: hangul keeps Hangul, spaces and ! ? . , only (MMM's cleaning).",
        choices=TEXT_FILTERS,
        identity=True,
    )
    sequence_padding: str = option(
        "valid",
        help="Text with --sequence: store the valid tokens or all --max-len positions, the pad "
        "token's states included (MMM's text store).",
        choices=SEQUENCE_PADDINGS,
        identity=True,
    )

    def check(self) -> None:
        if self.sequence_padding != "valid" and not self.sequence:
            raise OptionError(
                "--sequence-padding shapes stored sequences; it does nothing without --sequence"
            )
        if self.test_rows == "refit" and not self.run:
            raise OptionError("--test-rows refit needs --run (a run fine-tuned with --refit)")
        if self.run and (self.model or self.model_path):
            raise OptionError(
                "--run brings its own fold models; --model/--model-path would be ignored: give "
                "one of --run (fine-tuned, out-of-fold) or --model (frozen encoder)"
            )

    def path_options(self) -> tuple[str, ...]:
        """The options that name local paths here (``--model kobert``, a short name, names none):
        a store records them relative to itself."""
        from emofeat.encoders import MODELS

        return tuple(k for k in PATH_KEYS if not (k == "model" and self.model in MODELS))

    def record(self) -> dict:
        """The options recorded beside the store (every one but ``overwrite``)."""
        return {k: v for k, v in self.to_dict().items() if k != "overwrite"}


# The options that decide stored values.
VALUE_KEYS = identity_keys(ExtractConfig)
# What a store's identity is made of (the ``identity_keys`` attribute extraction writes), beside
# the weights' sha256: every value-deciding option except the paths the sha256 stands for (a
# moved run is the same model).
STORE_IDENTITY = tuple(k for k in VALUE_KEYS if k not in ("model", "model_path", "run"))
# Options that may name a local folder: a store records them relative to itself.
PATH_KEYS = path_keys(ExtractConfig)
# Inputs a store's record holds beside the options (re-run with --config STORE.yaml).
INPUTS = ("manifest", "out")
