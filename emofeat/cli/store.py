"""``emofeat store``: inspect, validate, merge, export and plot stores."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from emofeat.analysis.config import PlotConfig
from emofeat.cli.common import declared_options, friendly
from emofeat.options import given_options
from emofeat.store.config import ExportConfig


@click.group()
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


@store.command("export")
@click.argument("path", type=click.Path(path_type=Path))
@declared_options(ExportConfig)
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@friendly
def store_export(path, out, **params):
    """Export a store's done rows to npz or Parquet (array columns; needs pyarrow)."""
    from emofeat.store import export_store

    export_store(path, out, **given_options(ExportConfig, params))
    click.echo(f"wrote {out}")


@store.command("plot")
@click.argument("path", type=click.Path(path_type=Path))
@declared_options(PlotConfig)
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Figure file: .png, .pdf or .svg.",
)
@friendly
def store_plot(path, out, **params):
    """2-D map of an embedding, coloured by class, marked by split."""
    from emofeat.analysis.plots import plot_embedding

    plot_embedding(path, out, **given_options(PlotConfig, params))
    click.echo(f"wrote {out}")
