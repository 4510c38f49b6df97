"""``emofeat fuse``: fusion models (MMM) cross-fitted over stores."""

from __future__ import annotations

from pathlib import Path

import click

from emofeat.cli.common import (
    allow_incomplete_option,
    config_option,
    configured,
    device_option,
    friendly,
    need,
    print_folds,
)
from emofeat.fuse.run import FUSION_MODELS


@click.command()
@click.option(
    "--model", "model", default="mmm", show_default=True, type=click.Choice(FUSION_MODELS)
)
@click.option(
    "--store",
    "stores",
    multiple=True,
    type=click.Path(path_type=Path),
    help="MMM: a text sequence store, then an audio one (extract --sequence).",
)
@click.option("--epochs", type=int, help="Epochs (published: 30).")
@click.option("--lr", type=float, help="AdamW learning rate (published: 5e-5).")
@click.option("--batch-size", type=int, help="Batch size (published: 64).")
@click.option("--grad-accum", type=int, help="Gradient accumulation (published: 8).")
@click.option("--fusion", type=click.Choice(["mixer", "concat", "3way"]), help="MMM's fusion.")
@click.option(
    "--faithful-norm/--no-faithful-norm",
    default=None,
    help="MMM's second LayerNorm on the token-mixing output, as the published code (default), "
    "or on the residual sum.",
)
@click.option(
    "--shared-norm/--no-shared-norm",
    default=None,
    help="One LayerNorm at both places of MMM's block, as published (default), or two.",
)
@click.option(
    "--shuffle/--no-shuffle",
    default=None,
    help="Shuffle MMM's training batches (published: not shuffled).",
)
@click.option(
    "--accumulation",
    type=click.Choice(["published", "standard"]),
    help="published (default): step after batch 0, then every --grad-accum-th, the rest of an "
    "epoch dropped; standard: every --grad-accum batches and the remainder.",
)
@click.option(
    "--concat-text",
    type=click.Choice(["cls", "mean"]),
    help="--fusion concat: the text's [CLS] state (published, default) or its mean.",
)
@click.option("--class-weights", is_flag=True, default=None, help="Weight classes N/count.")
@click.option("--seed", type=int, help="Seed (published: 1024).")
@device_option
@click.option(
    "--allow-in-sample",
    is_flag=True,
    help="Fuse stores whose train rows are in-sample or unknown (the fused store says so).",
)
@allow_incomplete_option
@click.option(
    "--folds",
    type=int,
    help="0: one model on all train rows (MMM's own protocol; its store joins tables, not "
    "stacks); default: one model per fold of the stores.",
)
@click.option("--overwrite", is_flag=True, help="Replace a fusion run made with other options.")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Run folder, e.g. runs/mmm."
)
@config_option
@friendly
def fuse(**params):
    """Cross-fit a fusion model (MMM) over stores into a run and a store of its own (OUT/mmm.h5)."""
    from emofeat.fuse.mmm import MMMConfig
    from emofeat.fuse.run import RUN_DERIVED
    from emofeat.fuse.run import fuse as fuse_stores
    from emofeat.runs import fold_summary

    p = configured(params, ignore=RUN_DERIVED, out_beside="config.yaml")
    need(p, "stores", "out")
    keys = ("epochs", "lr", "batch_size", "grad_accum", "fusion", "faithful_norm", "shared_norm")
    keys += ("shuffle", "accumulation", "concat_text", "class_weights", "seed", "device")
    config = MMMConfig(**{k: p[k] for k in keys if p[k] is not None})
    results = fuse_stores(
        p["stores"],
        p["out"],
        model=p["model"],
        config=config,
        allow_in_sample=p["allow_in_sample"],
        allow_incomplete=p["allow_incomplete"],
        overwrite=p["overwrite"],
        folds=p["folds"],
    )
    print_folds(results, fold_summary(results))
    click.echo(f"run written to {p['out']}; its store: {p['out'] / (p['model'] + '.h5')}")
