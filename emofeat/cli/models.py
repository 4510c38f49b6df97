"""``emofeat models``: model helpers (tiny models in the hub formats)."""

from __future__ import annotations

from pathlib import Path

import click

from emofeat.cli.common import declared_options, friendly, resolve_declared
from emofeat.testing.config import TinyConfig


@click.group()
def models() -> None:
    """Model helpers."""


@models.command("list")
@friendly
def models_list():
    """The encoder families: model types each loads, short names, what a folder needs."""
    from emofeat.extract.opensmile import model_table

    for row in model_table():
        click.echo(f"{row['family']} ({row['modality']})")
        click.echo(f"  model types: {row['model_types']}")
        click.echo(f"  short names: {row['short_names']}")
        click.echo(f"  a local folder holds: {row['needs']}")
        click.echo(f"  {row['inputs']}")
    click.echo(
        "Pass a short name with --model-path DIR (a local copy; the hub is not reached offline), "
        "or any folder of these model types as --model DIR."
    )


@models.command("tiny")
@declared_options(TinyConfig)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--manifest",
    type=click.Path(path_type=Path),
    help="Texts to train KoBERT's SentencePiece tokenizer on.",
)
@friendly
def models_tiny(out, manifest, **params):
    """Build a tiny random model in the on-disk format of the hub model."""
    from emofeat.testing.tiny import build_tiny

    cfg, _ = resolve_declared(TinyConfig, params, None)
    options = cfg.to_dict()
    build_tiny(options.pop("kind"), out, manifest=manifest, **options)
    click.echo(f"wrote tiny {cfg.kind} to {out}")
