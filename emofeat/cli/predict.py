"""``emofeat predict`` and ``emofeat infer``: a fitted stack applied to stores or to new recordings."""

from __future__ import annotations

from pathlib import Path

import click

from emofeat.cli.common import (
    allow_incomplete_option,
    device_option,
    friendly,
)

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
@allow_incomplete_option
@friendly
def predict(stack_dir, stores, out, allow_incomplete):
    """Predict with a fitted stack (loads its model.joblib: only use stacks you trust)."""
    from emofeat.stack.ensemble import predict as predict_stack

    predict_stack(stack_dir, stores, out, allow_incomplete=allow_incomplete)
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
@device_option
@click.option("--skip-bad", is_flag=True, help="Leave out unreadable audio / empty text.")
@friendly
def infer(stack_dir, csv_path, out, runs, work, device, skip_bad):
    """Predict new recordings with a trained stack: extract with every base run, then stack."""
    from emofeat.recipes.infer import infer as infer_rows

    overrides = {}
    for item in runs:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise click.BadParameter(f"{item!r}: expected STORE=DIR", param_hint="--run")
        overrides[name] = folder
    infer_rows(
        stack_dir, csv_path, out, runs=overrides, work=work, device=device, skip_bad=skip_bad
    )
    click.echo(f"wrote {out}")
