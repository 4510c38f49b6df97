"""``emofeat extract``: feature stores."""

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
    resolve_declared,
    show_config,
)
from emofeat.extract.config import INPUTS, ExtractConfig


@click.command()
@manifest_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Store to write, e.g. store/kobert.h5 (its options are recorded in store/kobert.yaml).",
)
@declared_options(ExtractConfig)
@config_option
@print_config_option
@friendly
def extract(manifest, out, config_file, print_config, **params):
    """Pooled embeddings (and out-of-fold logits with --run) into an HDF5 store; resumable."""
    cfg, inputs = resolve_declared(ExtractConfig, params, config_file, inputs=INPUTS)
    if print_config:
        return show_config(cfg)
    manifest, out = manifest or inputs.get("manifest"), out or inputs.get("out")
    need({"manifest": manifest, "out": out}, "manifest", "out")
    from emofeat import distributed
    from emofeat.extract.run import extract as do_extract

    do_extract(manifest, Path(out), cfg)
    if distributed.is_main():  # under torchrun, once
        click.echo(f"store complete: {out}")
