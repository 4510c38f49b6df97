"""``emofeat finetune``: cross-fitted fine-tuning."""

from __future__ import annotations

from pathlib import Path

import click

from emofeat.cli.common import (
    config_option,
    friendly,
    manifest_option,
    model_path_option,
    need,
    print_folds,
)
from emofeat.device import DEVICES
from emofeat.recipes.presets import PRESETS


@click.command()
@click.option("--model", help="kobert, wav2vec2, a hub id or a local folder.")
@model_path_option
@manifest_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder, e.g. runs/kobert-p05 (default with --config RUN/config.yaml: RUN).",
)
@click.option("--preset", type=click.Choice(list(PRESETS)))
@config_option
@click.option(
    "--folds",
    type=int,
    help="Cross-fitting folds (default: the manifest's; 0: one model on all train rows).",
)
@click.option("--dropout", type=float)
@click.option(
    "--reverse/--no-reverse",
    default=None,
    help="Time-reverse the audio (the reference's second speech model).",
)
@click.option("--epochs", type=float)
@click.option("--batch-size", type=int)
@click.option("--grad-accum", type=int)
@click.option("--lr", type=float)
@click.option("--max-len", type=int, help="Text: token limit.")
@click.option("--seed", type=int)
@click.option("--device", type=click.Choice(DEVICES))
@click.option(
    "--skip-bad",
    is_flag=True,
    default=None,
    help="Leave out unreadable audio / empty text (recorded in skipped.csv).",
)
@click.option(
    "--select",
    type=click.Choice(["none", "inner"]),
    help="What chooses the kept weights: none (final weights; reference presets) or inner "
    "(best checkpoint and early stopping on a group-aware split of the fold model's own "
    "training rows). Never the held-out fold.",
)
@click.option(
    "--group-by-length/--no-group-by-length",
    default=None,
    help="Batches of similar length (default) or in random order (the reference).",
)
@click.option(
    "--train-fraction",
    type=float,
    help="With --folds 0: train on this random fraction of the train rows (the reference's "
    "reverse wav2vec2: 0.9).",
)
@click.option(
    "--refit",
    is_flag=True,
    default=None,
    help="Also train one model on all train rows (fold-all) beside the fold models, for "
    "`extract --test-rows refit` (test rows from one model, as scikit-learn's stacking).",
)
@click.option("--overwrite", is_flag=True, help="Replace a run folder made with other options.")
@click.option(
    "--fold",
    "only_folds",
    type=int,
    multiple=True,
    help="Train only this fold (repeatable): processes on different folds of one run may run "
    "at once, e.g. one per GPU or a SLURM array (--fold $SLURM_ARRAY_TASK_ID).",
)
@click.option("--print-config", is_flag=True, help="Print the resolved options as YAML and exit.")
@friendly
def finetune(
    model,
    model_path,
    manifest,
    out,
    preset,
    config_file,
    overwrite,
    only_folds,
    print_config,
    **options,
):
    """Fine-tune a classifier per fold (cross-fitting) with transformers.Trainer."""
    from emofeat.finetune.run import finetune as finetune_run
    from emofeat.finetune.run import resolve_command
    from emofeat.runs import fold_summary

    cfg, manifest, out = resolve_command(
        preset=preset,
        config_file=config_file,
        manifest=manifest,
        out=out,
        model=model,
        model_path=str(model_path) if model_path else None,
        **options,
    )
    if print_config:
        import dataclasses

        from emofeat.records import dump_yaml

        click.echo(dump_yaml(dataclasses.asdict(cfg)), nl=False)
        return
    need({"manifest": manifest, "out": out}, "manifest", "out")
    results = finetune_run(
        manifest, out, cfg, overwrite=overwrite, only_folds=list(only_folds) or None
    )
    from emofeat import distributed

    if distributed.is_main():  # under torchrun, once
        print_folds(results, fold_summary(results))
        click.echo(f"run written to {out}")
