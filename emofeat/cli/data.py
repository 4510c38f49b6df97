"""``emofeat data``: synthetic corpora, manifests, statistics."""

from __future__ import annotations

from pathlib import Path

import click

from emofeat.cli.common import (
    config_option,
    declared_options,
    fields,
    friendly,
    need,
    print_config_option,
    resolve_declared,
    show_config,
)
from emofeat.corpus.config import PrepareConfig, SynthConfig
from emofeat.options import given_options

# Inputs a manifest's sidecar records beside the options (re-run with --config its sidecar).
INPUTS = ("kemdy19", "kemdy20", "aihub", "csv", "emobox", "out")


@click.group()
def data() -> None:
    """Corpora and manifests."""


@data.command("synth")
@click.option(
    "--out", required=True, type=click.Path(path_type=Path), help="Folder to write the corpus into."
)
@declared_options(SynthConfig)
@friendly
def data_synth(out, **params):
    """Write a synthetic KEMDy20 + AI Hub corpus in the real on-disk formats (and, with --csv,
    a generic CSV corpus of its own classes)."""
    from emofeat.testing.synth import synthesize

    report = synthesize(out, **given_options(SynthConfig, params))
    for corpus, counts in report.items():
        click.echo(f"{corpus}: " + fields(counts))
    click.echo(f"corpus written to {out}")


@data.command("prepare")
@click.option(
    "--kemdy19",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="KEMDy19 folder (annotation/, wav/).",
)
@click.option(
    "--kemdy20",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="KEMDy20_v1_1 folder.",
)
@click.option(
    "--aihub", type=click.Path(exists=True, file_okay=False, path_type=Path), help="AI Hub folder."
)
@click.option(
    "--csv",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Generic corpus CSV (id, audio_path, text[, label, session, speaker, split]).",
)
@click.option(
    "--emobox",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="EmoBox's data folder (with --corpus NAME: its folds become the manifest's).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Manifest CSV to write.",
)
@declared_options(PrepareConfig)
@config_option
@print_config_option
@friendly
def data_prepare(kemdy19, kemdy20, aihub, csv, emobox, out, config_file, print_config, **params):
    """Read corpora into a manifest with a split recipe."""
    from emofeat.corpus.prepare import prepare

    cfg, inputs = resolve_declared(PrepareConfig, params, config_file, inputs=INPUTS)
    if print_config:
        return show_config(cfg)
    kemdy20, aihub = kemdy20 or inputs.get("kemdy20"), aihub or inputs.get("aihub")
    csv, out = csv or inputs.get("csv"), out or inputs.get("out")
    emobox, kemdy19 = emobox or inputs.get("emobox"), kemdy19 or inputs.get("kemdy19")
    need({"out": out}, "out")
    manifest, report = prepare(
        out, kemdy19=kemdy19, kemdy20=kemdy20, aihub=aihub, csv=csv, emobox=emobox, **cfg.to_dict()
    )
    for corpus, r in report.items():
        skipped = r.pop("skipped_missing", [])
        click.echo(
            f"{corpus}: "
            + fields(r)
            + (f", skipped (missing files): {len(skipped)}" if skipped else "")
        )
    f = manifest.frame
    click.echo(
        f"wrote {out}: {len(f)} utterances, {int((f.split == 'train').sum())} train, {int((f.split == 'test').sum())} test, {manifest.num_folds} folds"
    )
    click.echo(f"classes: {', '.join(manifest.label_names) or 'none (unlabelled recordings)'}")


@data.command("export")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option(
    "--emobox",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="A folder that plays EmoBox's data folder: the corpus is written to EMOBOX/NAME.",
)
@click.option("--name", help="The corpus name in EmoBox (default: the manifest's corpus).")
@friendly
def data_export(manifest, emobox, name):
    """Write a manifest in EmoBox's metadata format (its folds, label map), so that EmoBox's
    own code runs on the corpus."""
    from emofeat.corpus.emobox import export_emobox
    from emofeat.corpus.manifest import read_manifest

    click.echo(f"wrote {export_emobox(read_manifest(manifest), emobox, name)}")


@data.command("stats")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option(
    "--plot",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write class_counts.csv and the class-distribution and valence/arousal figures here.",
)
@click.option("--log", "log_scale", is_flag=True, help="Log-scale count axes.")
@friendly
def data_stats(manifest, plot, log_scale):
    """Class counts per corpus, split and fold."""
    from emofeat.corpus.manifest import read_manifest
    from emofeat.corpus.stats import audio_hours, class_counts, plot_stats

    m = read_manifest(manifest)
    click.echo(class_counts(m).to_string())
    hours = audio_hours(m)
    if hours is not None:
        click.echo(hours.to_string())
    if plot:
        for path in plot_stats(m, plot, log_scale):
            click.echo(f"wrote {path}")
