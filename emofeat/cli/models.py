"""``emofeat models``: model helpers (tiny models in the hub formats)."""

from __future__ import annotations

from pathlib import Path

import click

from emofeat.cli.common import (
    friendly,
)
from emofeat.encoders.tiny import TINY_KINDS


@click.group()
def models() -> None:
    """Model helpers."""


@models.command("tiny")
@click.option("--kind", required=True, type=click.Choice(TINY_KINDS))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--manifest",
    type=click.Path(path_type=Path),
    help="Texts to train KoBERT's SentencePiece tokenizer on.",
)
@click.option("--hidden", default=64, show_default=True)
@click.option("--layers", default=2, show_default=True)
@click.option("--seed", default=0, show_default=True)
@friendly
def models_tiny(kind, out, manifest, hidden, layers, seed):
    """Build a tiny random model in the on-disk format of the hub model."""
    from emofeat.encoders.tiny import build_tiny

    build_tiny(kind, out, manifest=manifest, hidden=hidden, layers=layers, seed=seed)
    click.echo(f"wrote tiny {kind} to {out}")
