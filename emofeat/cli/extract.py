"""``emofeat extract``: feature stores."""

from __future__ import annotations

from pathlib import Path

import click

from emofeat.cli.common import (
    config_option,
    configured,
    device_option,
    friendly,
    manifest_option,
    model_path_option,
    need,
)
from emofeat.device import PRECISION_NAMES


@click.command()
@click.option("--model", help="Frozen encoder: kobert, wav2vec2, a hub id or a folder.")
@model_path_option
@click.option(
    "--run",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A fine-tuned run (out-of-fold logits).",
)
@manifest_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Store to write, e.g. store/kobert.h5 (its options are recorded in store/kobert.yaml).",
)
@click.option(
    "--layers",
    default="last",
    show_default=True,
    help="last, all, or hidden-state indices like 0,6,12.",
)
@click.option(
    "--pooling", default="mean", show_default=True, type=click.Choice(["mean", "mean+std"])
)
@click.option(
    "--batch-seconds",
    type=float,
    default=None,
    help="Speech: padded audio seconds per batch (default 64 on GPU, 12 on CPU).",
)
@click.option(
    "--batch-size", type=int, default=32, show_default=True, help="Text: utterances per batch."
)
@click.option(
    "--dtype",
    default="float32",
    show_default=True,
    type=click.Choice(["float16", "float32"]),
    help="Embedding storage type.",
)
@device_option
@click.option("--precision", default="fp32", show_default=True, type=click.Choice(PRECISION_NAMES))
@click.option(
    "--max-seconds",
    type=float,
    default=20.0,
    show_default=True,
    help="Speech: window length for long clips (0: whole clips, no windows).",
)
@click.option(
    "--max-len",
    type=int,
    help="Text: token limit (default: the run's; for a frozen model its own limit).",
)
@click.option(
    "--flush-rows",
    type=int,
    help="Rows per write window (default 2048, 256 with --sequence): batched by length inside "
    "it and written as one block; a kill loses at most the rows since the last write (one "
    "window, or 5 s of compute), recomputed on resume.",
)
@click.option(
    "--sequence",
    is_flag=True,
    help="Also store each row's last-layer token/frame states (float16), for MMM.",
)
@click.option(
    "--sequence-length",
    type=int,
    help="Positions a stored sequence keeps (default: text --max-len, speech 512 frames).",
)
@click.option(
    "--reverse/--no-reverse", default=None, help="Speech: time-reverse (default: the run's)."
)
@click.option(
    "--skip-bad", is_flag=True, help="Record unreadable rows as skipped instead of stopping."
)
@click.option(
    "--workers",
    type=int,
    help="Input worker processes that read and encode the next batches while one computes "
    "(default: none on CPU, where the model's threads use every core; up to 8 on CUDA).",
)
@click.option(
    "--text-filter",
    type=click.Choice(["none", "hangul"]),
    help="Text: hangul keeps Hangul and spaces only (MMM's cleaning).",
)
@click.option(
    "--sequence-padding",
    type=click.Choice(["valid", "max_length"]),
    help="Text with --sequence: store the valid tokens (default) or all --max-len positions, "
    "the pad token's states included (MMM's text store).",
)
@click.option(
    "--test-rows",
    type=click.Choice(["mean", "refit"]),
    help="With --run: test rows from the mean of the fold models (default) or from the run's "
    "model refit on all train rows (finetune --refit). Stack reports name which.",
)
@click.option("--overwrite", is_flag=True, help="Replace a store made for other rows or options.")
@config_option
@friendly
def extract(**params):
    """Pooled embeddings (and out-of-fold logits with --run) into an HDF5 store; resumable."""
    from emofeat.extract.run import ExtractConfig
    from emofeat.extract.run import extract as do_extract

    p = configured(params)
    need(p, "manifest", "out")
    # An option not given (None) takes ExtractConfig's default.
    options = {
        k: v for k, v in p.items() if k not in ("manifest", "out", "config_file") and v is not None
    }
    for key in ("model_path", "run"):
        if options.get(key):
            options[key] = str(options[key])
    from emofeat import distributed

    out = p["out"]
    do_extract(p["manifest"], out, ExtractConfig(**options))
    if distributed.is_main():  # under torchrun, once
        click.echo(f"store written to {out}")
