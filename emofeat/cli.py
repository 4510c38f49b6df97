"""The ``emofeat`` command line: thin commands that parse options and call library functions."""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

import click

from emofeat import __version__
from emofeat.errors import EmofeatError


def friendly(fn):
    """Print user errors (EmofeatError) as one clear message and exit 2, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EmofeatError as err:
            click.secho(f"error: {err}", fg="red", err=True)
            sys.exit(2)

    return wrapper


@click.group()
@click.version_option(__version__, prog_name="emofeat")
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
def main(verbose: bool) -> None:
    """Multimodal emotion recognition: fine-tune, extract feature stores, stack."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


# ---------------------------------------------------------------- data
@main.group()
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
    from emofeat.corpus.synth import synthesize

    report = synthesize(out, seed, sessions, per_session, aihub, min_seconds, max_seconds)
    for corpus, counts in report.items():
        click.echo(f"{corpus}: {counts}")
    click.echo(f"corpus written to {out}")


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
    type=click.Choice(["emo-ensemble", "session-kfold"]),
)
@click.option(
    "--folds", default=5, show_default=True, help="Cross-fitting folds of the train rows (0: none)."
)
@click.option("--text", default="raw", show_default=True, type=click.Choice(["raw", "clean"]))
@click.option(
    "--multilabel", default="drop", show_default=True, type=click.Choice(["drop", "first", "soft"])
)
@click.option("--seed", default=0, show_default=True, help="Seed of the fold assignment.")
@click.option("--skip-missing", is_flag=True, help="Leave out utterances whose wav/txt is missing.")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Manifest CSV to write.",
)
@friendly
def data_prepare(kemdy20, aihub, csv_path, split, folds, text, multilabel, seed, skip_missing, out):
    """Read corpora into a manifest with a split recipe."""
    from emofeat.corpus.prepare import prepare

    manifest, report = prepare(
        out, kemdy20, aihub, csv_path, split, folds, text, multilabel, seed, skip_missing
    )
    for corpus, r in report.items():
        skipped = r.pop("skipped_missing", [])
        click.echo(
            f"{corpus}: {r}" + (f", skipped (missing files): {len(skipped)}" if skipped else "")
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
    help="Write class-distribution and valence/arousal plots here.",
)
@friendly
def data_stats(manifest, plot):
    """Class counts per corpus, split and fold."""
    from emofeat.corpus.manifest import read_manifest
    from emofeat.corpus.stats import class_counts, plot_stats

    m = read_manifest(manifest)
    click.echo(class_counts(m).to_string())
    if plot:
        for path in plot_stats(m, plot):
            click.echo(f"wrote {path}")


# ---------------------------------------------------------------- store
@main.group()
def store() -> None:
    """Feature stores (HDF5)."""


@store.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@friendly
def store_inspect(path):
    """Rows, datasets, provenance and a per-split/per-label table."""
    from emofeat.store import describe

    click.echo(describe(path))


@store.command("validate")
@click.argument("path", type=click.Path(path_type=Path))
def store_validate(path):
    """Exit 0 when the store is valid and complete, 1 otherwise (problems are printed)."""
    from emofeat.store import validate_store

    problems = validate_store(path)
    for p in problems:
        click.echo(p, err=True)
    if problems:
        sys.exit(1)
    click.echo(f"{path}: valid")


@store.command("merge")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@friendly
def store_merge(inputs, out):
    """Merge shards with disjoint done rows into one store."""
    from emofeat.store import merge_stores

    merge_stores(inputs, out)
    click.echo(f"wrote {out}")


@store.command("plot")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--embedding", required=True, help="Embedding dataset name (e.g. last).")
@click.option("--method", default="pca", show_default=True, type=click.Choice(["pca", "tsne"]))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@friendly
def store_plot(path, embedding, method, out):
    """2-D map of an embedding, coloured by label and marked by split."""
    from emofeat.plots import plot_embedding

    plot_embedding(path, embedding, out, method)
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
