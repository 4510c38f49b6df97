"""``emofeat fuse``: fusion models (MMM) cross-fitted over stores."""

from __future__ import annotations

from pathlib import Path

import click

from emofeat.cli.common import (
    alternative_options,
    config_option,
    declared_options,
    foreign_options,
    friendly,
    print_config_option,
    print_folds,
    resolve_declared,
    show_config,
    stores_and_out,
)
from emofeat.fuse.config import INPUTS, MODEL_CONFIGS, FuseConfig
from emofeat.options import option_names


@click.command()
@click.option(
    "--store",
    "stores",
    multiple=True,
    type=click.Path(path_type=Path),
    help="MMM: a text sequence store, then an audio one (extract --sequence); layer-sum: one "
    "or more stores of layers (extract --layers all).",
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Run folder, e.g. runs/mmm."
)
@declared_options(FuseConfig)
@alternative_options(MODEL_CONFIGS)
@config_option
@click.option("--overwrite", is_flag=True, help="Replace a fusion run made with other options.")
@print_config_option
@friendly
def fuse(stores, out, config_file, overwrite, print_config, **params):
    """Cross-fit a model over stores (MMM over two sequence stores; a layer-sum head over stores
    of layers) into a run and a store of its own (OUT/mmm.h5, OUT/layer-sum.h5)."""
    every = tuple(n for cls in MODEL_CONFIGS.values() for n in option_names(cls))
    run_cfg, inputs = resolve_declared(FuseConfig, params, config_file, inputs=INPUTS + every)
    chosen = MODEL_CONFIGS[run_cfg.model]
    foreign_options(chosen, MODEL_CONFIGS, params, f"--model {run_cfg.model}")
    others = tuple(n for n in every if n not in option_names(chosen))
    cfg, _ = resolve_declared(chosen, params, config_file, inputs=option_names(FuseConfig) + others)
    if print_config:
        show_config(run_cfg)
        return show_config(cfg)
    stores, out = stores_and_out(stores, out, inputs, config_file)
    from emofeat.fuse.run import fuse as fuse_stores
    from emofeat.runs import fold_summary

    results = fuse_stores(stores, out, config=cfg, overwrite=overwrite, **run_cfg.to_dict())
    print_folds(results, fold_summary(results))
    click.echo(f"run written to {out}; its store: {out / (run_cfg.model + '.h5')}")
