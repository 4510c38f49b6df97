"""``emofeat predict`` and ``emofeat infer``: a fitted stack applied to stores or to new recordings."""

from __future__ import annotations

from pathlib import Path

import click

from emofeat.cli.common import declared_options, friendly
from emofeat.options import given_options
from emofeat.recipes.config import InferConfig
from emofeat.stack.config import PredictConfig

stack_option = click.option(
    "--stack",
    "stack_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A stack folder written by `emofeat stack` (its model.joblib is loaded: trusted only).",
)


@click.command()
@stack_option
@click.option("--store", "stores", multiple=True, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@declared_options(PredictConfig)
@friendly
def predict(stack_dir, stores, out, **params):
    """Predict with a fitted stack (loads its model.joblib: only use stacks you trust)."""
    from emofeat.stack.ensemble import predict as predict_stack

    predict_stack(stack_dir, stores, out, **given_options(PredictConfig, params))
    click.echo(f"wrote {out}")


@click.command()
@stack_option
@click.option(
    "--csv",
    "csv_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="id, audio_path, text[, label] (audio paths relative to the CSV).",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--run",
    "runs",
    multiple=True,
    help="STORE=DIR: the run folder of one of the stack's stores, if it moved.",
)
@click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the new stores go (default: OUT.stores/); re-running resumes.",
)
@declared_options(InferConfig)
@friendly
def infer(stack_dir, csv_path, out, runs, work, **params):
    """Predict new recordings with a trained stack: extract with every base run, then stack."""
    from emofeat.recipes.infer import infer as infer_rows

    overrides = {}
    for item in runs:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise click.BadParameter(f"{item!r}: expected STORE=DIR", param_hint="--run")
        overrides[name] = folder
    infer_rows(
        stack_dir, csv_path, out, runs=overrides, work=work, **given_options(InferConfig, params)
    )
    click.echo(f"wrote {out}")
