"""``emofeat data``: synthetic corpora, manifests, statistics."""

from __future__ import annotations

from pathlib import Path

import click

from emofeat.cli.common import (
    LazyChoice,
    config_option,
    configured,
    fields,
    friendly,
    need,
)


@click.group()
def data() -> None:
    """Corpora and manifests."""


@data.command("synth")
@click.option(
    "--out", required=True, type=click.Path(path_type=Path), help="Folder to write the corpus into."
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--sessions", default=10, show_default=True, help="KEMDy20 sessions (2 speakers each)."
)
@click.option("--per-session", default=40, show_default=True, help="Utterances per session.")
@click.option("--aihub", default=200, show_default=True, help="AI Hub utterances (0: none).")
@click.option("--min-seconds", default=1.0, show_default=True)
@click.option("--max-seconds", default=2.0, show_default=True)
@friendly
def data_synth(out, seed, sessions, per_session, aihub, min_seconds, max_seconds):
    """Write a synthetic KEMDy20 + AI Hub corpus in the real on-disk formats."""
    from emofeat.testing.synth import synthesize

    report = synthesize(
        out,
        seed=seed,
        sessions=sessions,
        per_session=per_session,
        aihub=aihub,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
    )
    for corpus, counts in report.items():
        click.echo(f"{corpus}: " + fields(counts))
    click.echo(f"corpus written to {out}")


def _multilabel_policies():
    from emofeat.corpus.kemdy20 import MULTILABEL_POLICIES  # (imports pandas: only when used)

    return MULTILABEL_POLICIES


@data.command("prepare")
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
    "csv_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Generic corpus CSV (id, audio_path, text[, label, session, speaker, split]).",
)
@click.option(
    "--split",
    default="emo-ensemble",
    show_default=True,
    type=click.Choice(["emo-ensemble", "session-kfold", "mmm"]),
)
@click.option(
    "--folds", default=5, show_default=True, help="Cross-fitting folds of the train rows (0: none)."
)
@click.option("--text", default="raw", show_default=True, type=click.Choice(["raw", "clean"]))
@click.option(
    "--multilabel",
    default="drop",
    show_default=True,
    type=LazyChoice(_multilabel_policies),
    help="KEMDy20 rows with several consensus labels: drop (the reference), first, soft "
    "(vote fractions), duplicate (one row per label, as MMM).",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the fold assignment.")
@click.option("--skip-missing", is_flag=True, help="Leave out utterances whose wav/txt is missing.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Manifest CSV to write.",
)
@config_option
@friendly
def data_prepare(**params):
    """Read corpora into a manifest with a split recipe."""
    from emofeat.corpus.prepare import prepare

    p = configured(params, rename={"csv": "csv_path"})
    need(p, "out")
    out = p["out"]
    manifest, report = prepare(
        out,
        kemdy20=p["kemdy20"],
        aihub=p["aihub"],
        csv=p["csv_path"],
        split=p["split"],
        folds=p["folds"],
        text=p["text"],
        multilabel=p["multilabel"],
        seed=p["seed"],
        skip_missing=p["skip_missing"],
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
