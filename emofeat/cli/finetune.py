"""``emofeat finetune``: cross-fitted fine-tuning."""

from __future__ import annotations

from pathlib import Path

import click

from emofeat.cli.common import (
    config_option,
    declared_options,
    friendly,
    manifest_option,
    need,
    print_config_option,
    print_folds,
    show_config,
)
from emofeat.finetune.config import FinetuneConfig
from emofeat.options import given_options


@click.command()
@manifest_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder, e.g. runs/kobert-p05 (default with --config RUN/config.yaml: RUN).",
)
@declared_options(FinetuneConfig)
@config_option
@click.option("--overwrite", is_flag=True, help="Replace a run folder made with other options.")
@click.option(
    "--fold",
    "only_folds",
    type=int,
    multiple=True,
    help="Train only this fold (repeatable): processes on different folds of one run may run "
    "at once, e.g. one per GPU or a SLURM array (--fold $SLURM_ARRAY_TASK_ID).",
)
@print_config_option
@friendly
def finetune(manifest, out, config_file, overwrite, only_folds, print_config, **params):
    """Fine-tune a classifier per fold (cross-fitting) with transformers.Trainer."""
    from emofeat.finetune.config import resolve_command
    from emofeat.finetune.run import finetune as finetune_run
    from emofeat.runs import fold_summary

    cfg, manifest, out = resolve_command(
        config_file=config_file,
        manifest=manifest,
        out=out,
        **given_options(FinetuneConfig, params),
    )
    if print_config:
        return show_config(cfg)
    need({"manifest": manifest, "out": out}, "manifest", "out")
    results = finetune_run(
        manifest, out, cfg, overwrite=overwrite, only_folds=list(only_folds) or None
    )
    from emofeat import distributed

    if distributed.is_main():  # under torchrun, once
        print_folds(results, fold_summary(results))
        click.echo(f"run written to {out}")
