"""``emofeat demo`` and ``emofeat recipe``: whole protocols."""

from __future__ import annotations

from pathlib import Path

import click

from emofeat.cli.common import (
    config_option,
    configured,
    device_option,
    friendly,
    need,
)
from emofeat.device import PRECISION_NAMES
from emofeat.recipes.pipeline import PROTOCOLS


@click.command()
@click.option(
    "--out", default="demo-out", show_default=True, type=click.Path(file_okay=False, path_type=Path)
)
@click.option("--seed", default=0, show_default=True)
@click.option("--folds", default=3, show_default=True)
@friendly
def demo(out, seed, folds):
    """The whole pipeline on a synthetic corpus with tiny models (minutes on 2 CPU cores)."""
    from emofeat.recipes.demo import demo as run_demo

    run_demo(out, seed=seed, folds=folds)


@click.group()
def recipe() -> None:
    """Documented end-to-end protocols on real data."""


@recipe.command("emo-ensemble")
@click.option("--kemdy20", type=click.Path(path_type=Path), help="KEMDy20_v1_1 folder.")
@click.option("--aihub", type=click.Path(path_type=Path), help="AI Hub folder (5차년도_2차).")
@click.option(
    "--kobert",
    default="kobert",
    show_default=True,
    help="KoBERT id or local copy of monologg/kobert.",
)
@click.option(
    "--wav2vec2",
    default="wav2vec2",
    show_default=True,
    help="wav2vec2 id or local copy of kresnik/wav2vec2-large-xlsr-korean.",
)
@click.option(
    "--kcelectra",
    default="kcelectra",
    show_default=True,
    help="MMM's text encoder: id or local copy of beomi/KcELECTRA-base.",
)
@click.option("--folds", default=5, show_default=True)
@device_option
@click.option(
    "--precision",
    default="fp16",
    show_default=True,
    type=click.Choice(PRECISION_NAMES),
    help="Extraction precision (GPU).",
)
@click.option(
    "--out",
    default="emo-ensemble",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check the inputs and print the steps; needs no GPU and no models.",
)
@click.option(
    "--protocol",
    default="crossfit",
    show_default=True,
    type=click.Choice(list(PROTOCOLS)),
    help="crossfit: K fold models per configuration, out-of-fold stores, every meta-learner. "
    "reference: as the reference ran (one model per configuration on all train rows, the "
    "fixed-weight soft vote).",
)
@config_option
@friendly
def recipe_emo_ensemble(**params):
    """The reference's models on KEMDy20 + AI Hub with the real encoders, and their ensembles."""
    from emofeat.recipes.emo_ensemble import emo_ensemble

    p = configured(params, ignore=("dry_run",), out_beside="recipe.yaml")
    need(p, "kemdy20")
    emo_ensemble(
        p["kemdy20"],
        aihub=p["aihub"],
        kobert=p["kobert"],
        wav2vec2=p["wav2vec2"],
        out=p["out"],
        folds=p["folds"],
        device=p["device"],
        precision=p["precision"],
        dry_run=p["dry_run"],
        protocol=p["protocol"],
        kcelectra=p["kcelectra"],
    )
