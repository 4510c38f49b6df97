"""``emofeat fuse``: fusion models (MMM) cross-fitted over stores."""

from __future__ import annotations

from pathlib import Path

import click

from emofeat.cli.common import (
    config_option,
    declared_options,
    friendly,
    print_config_option,
    print_folds,
    resolve_declared,
    show_config,
    stores_and_out,
)
from emofeat.fuse.config import INPUTS, FuseConfig, MMMConfig
from emofeat.options import option_names


@click.command()
@click.option(
    "--store",
    "stores",
    multiple=True,
    type=click.Path(path_type=Path),
    help="MMM: a text sequence store, then an audio one (extract --sequence).",
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Run folder, e.g. runs/mmm."
)
@declared_options(FuseConfig)
@declared_options(MMMConfig)
@config_option
@click.option("--overwrite", is_flag=True, help="Replace a fusion run made with other options.")
@print_config_option
@friendly
def fuse(stores, out, config_file, overwrite, print_config, **params):
    """Cross-fit a fusion model (MMM) over stores into a run and a store of its own (OUT/mmm.h5)."""
    run_cfg, inputs = resolve_declared(
        FuseConfig, params, config_file, inputs=INPUTS + option_names(MMMConfig)
    )
    cfg, _ = resolve_declared(MMMConfig, params, config_file, inputs=option_names(FuseConfig))
    if print_config:
        show_config(run_cfg)
        return show_config(cfg)
    stores, out = stores_and_out(stores, out, inputs, config_file)
    from emofeat.fuse.run import fuse as fuse_stores
    from emofeat.runs import fold_summary

    results = fuse_stores(stores, out, config=cfg, overwrite=overwrite, **run_cfg.to_dict())
    print_folds(results, fold_summary(results))
    click.echo(f"run written to {out}; its store: {out / (run_cfg.model + '.h5')}")
