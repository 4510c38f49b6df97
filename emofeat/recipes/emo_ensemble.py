"""``emofeat recipe emo-ensemble``: the reference protocol on real KEMDy20 + AI Hub data.

The reference split (emo-ensemble) with K group-aware folds, the five reference models with the
reference hyperparameters (``kobert-ref`` at dropout 0.3/0.5/0.7, ``wav2vec2-ref`` forward and
reverse), extraction, the soft vote with the reference weights and emofeat's stacked ensembles.
Meant for a GPU machine; ``--dry-run`` checks the inputs and prints the steps without one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from emofeat.corpus.aihub import read_aihub
from emofeat.corpus.kemdy20 import annotation_files, read_kemdy20
from emofeat.outputs import register_record_kind
from emofeat.recipes.pipeline import (
    MMMPlan,
    Step,
    ensemble_plan,
    prepare_step,
    repeated_plan,
    run_plan,
)

register_record_kind("recipe", legacy_key="protocol")  # OUT/recipe.yaml


def check_inputs(kemdy20: Path, aihub: Path | None) -> dict:
    """Read the corpora as ``prepare`` would (every file checked), and report counts."""
    files = annotation_files(kemdy20)
    frame, rep = read_kemdy20(kemdy20)
    counts = {
        "kemdy20_sessions": len(files),
        "kemdy20_utterances": len(frame),
        "kemdy20_multilabel_dropped": rep["multilabel_dropped"],
    }
    if len(files) != 40:
        click.secho(
            f"    note: {len(files)} session files; the published KEMDy20 v1_1 has 40", fg="yellow"
        )
    if aihub:
        frame, _ = read_aihub(aihub)
        counts["aihub_utterances"] = len(frame)
    return counts


def emo_ensemble(
    kemdy20: Path,
    *,
    aihub: Path | None,
    out: Path,
    dry_run: bool = False,
    **options: Any,
) -> None:
    """Run (or with ``dry_run`` check and print) the reference protocol into ``out``.

    Args:
        kemdy20: the KEMDy20_v1_1 folder.
        aihub: the AI Hub folder, or None.
        out: the recipe's folder (its ``recipe.yaml`` re-runs it).
        dry_run: check the inputs and print the steps only.
        options: the options of :class:`~emofeat.recipes.config.RecipeConfig`.

    Raises:
        OptionError: an option's value is refused.
    """
    from emofeat.recipes.config import RecipeConfig

    cfg = RecipeConfig(**options)
    kobert, wav2vec2, kcelectra = cfg.kobert, cfg.wav2vec2, cfg.kcelectra
    folds, device, precision, protocol = cfg.folds, cfg.device, cfg.precision, cfg.protocol

    out = Path(out)
    click.secho("[inputs]", bold=True)
    counts = check_inputs(Path(kemdy20), Path(aihub) if aihub else None)
    click.echo("    " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    manifest = out / "manifest.csv"

    def manifest_options(seed: int) -> dict[str, Any]:  # (repetition r draws its folds with r)
        return {
            "kemdy20": kemdy20,
            "aihub": aihub,
            "split": "emo-ensemble",
            "folds": folds,
            "text": "raw",
            "multilabel": "drop",
            **({"seed": seed} if seed else {}),
        }

    prep = prepare_step(
        "prepare the manifest (emo-ensemble split)", {**manifest_options(0), "out": manifest}
    )
    figures = {"manifest": manifest, "plot": out / "figures"}

    def class_figures(o=figures):
        from emofeat.corpus.manifest import read_manifest
        from emofeat.corpus.stats import plot_stats

        return plot_stats(read_manifest(o["manifest"]), o["plot"])

    steps = [
        prep,
        Step(
            "Figs. 1-2: class distributions (KEMDy20; all corpora)",
            "data stats",
            figures,
            class_figures,
            positional=("manifest",),
        ),
    ]
    shared = dict(
        kobert=kobert,
        wav2vec2=wav2vec2,
        preset_set="ref",
        protocol=protocol,
        mmm=MMMPlan(kcelectra, wav2vec2),  # published lengths and training
        device=device,
        precision=precision,
    )
    steps += repeated_plan(
        out,
        cfg.seeds,
        manifest,
        prepare_options=manifest_options,
        plan=lambda manifest, root, r: ensemble_plan(manifest, root, repetition=r, **shared),
    )
    if not dry_run:  # the options, beside the outputs: `--config OUT/recipe.yaml` re-runs them
        from emofeat.atomic import write_text
        from emofeat.records import dump_yaml, provenance

        record = dict(
            kemdy20=str(kemdy20), aihub=str(aihub) if aihub else None, out=str(out), **cfg.to_dict()
        )
        write_text(out / "recipe.yaml", dump_yaml(provenance(record, output="recipe")))
    run_plan(steps, dry_run=dry_run)
    if dry_run:
        click.echo(f"dry run: inputs look fine; {len(steps)} steps would run into {out}")
