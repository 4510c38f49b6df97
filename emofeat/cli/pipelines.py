"""``emofeat demo`` and ``emofeat recipe``: whole protocols."""

from __future__ import annotations

from pathlib import Path

import click

from emofeat.cli.common import (
    config_option,
    declared_options,
    friendly,
    need,
    print_config_option,
    resolve_declared,
    show_config,
)
from emofeat.fuse.config import LayerSumConfig
from emofeat.options import given_options
from emofeat.recipes.config import DemoConfig, FrozenConfig, RecipeConfig


@click.command()
@click.option(
    "--out", default="demo-out", show_default=True, type=click.Path(file_okay=False, path_type=Path)
)
@declared_options(DemoConfig)
@friendly
def demo(out, **params):
    """The whole pipeline on a synthetic corpus with tiny models (minutes on 2 CPU cores)."""
    from emofeat.recipes.demo import demo as run_demo

    run_demo(out, **given_options(DemoConfig, params))


@click.group()
def recipe() -> None:
    """Documented end-to-end protocols on real data."""


@recipe.command("emo-ensemble")
@click.option("--kemdy20", type=click.Path(path_type=Path), help="KEMDy20_v1_1 folder.")
@click.option("--aihub", type=click.Path(path_type=Path), help="AI Hub folder (5차년도_2차).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="The recipe's folder [default: emo-ensemble; with --config OUT/recipe.yaml: OUT].",
)
@declared_options(RecipeConfig)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check the inputs and print the steps; needs no GPU and no models.",
)
@config_option
@print_config_option
@friendly
def recipe_emo_ensemble(kemdy20, aihub, out, dry_run, config_file, print_config, **params):
    """The reference's models on KEMDy20 + AI Hub with the real encoders, and their ensembles."""
    from emofeat.recipes.emo_ensemble import emo_ensemble

    cfg, inputs = resolve_declared(
        RecipeConfig, params, config_file, inputs=("kemdy20", "aihub", "out")
    )
    if print_config:
        return show_config(cfg)
    kemdy20, aihub = kemdy20 or inputs.get("kemdy20"), aihub or inputs.get("aihub")
    out = out or inputs.get("out")
    if not out and config_file and config_file.name == "recipe.yaml":
        out = config_file.parent
    need({"kemdy20": kemdy20}, "kemdy20")
    emo_ensemble(
        kemdy20, aihub=aihub, out=Path(out or "emo-ensemble"), dry_run=dry_run, **cfg.to_dict()
    )


@recipe.command("frozen")
@click.option("--manifest", required=True, type=click.Path(path_type=Path), help="The manifest.")
@click.option(
    "--model",
    "models",
    required=True,
    multiple=True,
    help="A frozen encoder (a local folder of any family, a short name) or opensmile:SET; "
    "repeat for each, NAME=MODEL to name it (default: the folder's name).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@declared_options(FrozenConfig)
@declared_options(LayerSumConfig, exclude=("device",))
@friendly
def recipe_frozen(manifest, models, out, **params):
    """Frozen encoders instead of fine-tuning: each model's all-layer store, a layer-sum head
    cross-fitted on each, and their stack, with one table of every head's CV and test figures
    and the ensembles' (OUT/report.md)."""
    from emofeat.recipes.frozen import frozen

    named = dict(model_name(m) for m in models)
    if len(named) != len(models):
        raise click.UsageError(f"two --model share a name: {list(models)}; name them NAME=MODEL")
    frozen(
        manifest,
        out,
        named,
        head=given_options(LayerSumConfig, params),
        **given_options(FrozenConfig, params),
    )


def model_name(model: str) -> tuple[str, str]:
    """``NAME=MODEL`` as (NAME, MODEL); a bare model is named by its folder or set's name."""
    if "=" in model:
        name, _, model = model.partition("=")
        return name, model
    name = model.split(":", 1)[1] if model.startswith("opensmile:") else Path(model).name
    return name, model
