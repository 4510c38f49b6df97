"""``emofeat store``: inspect, validate, merge, export and plot stores."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from emofeat.cli.common import (
    friendly,
)


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
@click.option(
    "--format", "fmt", default="npz", show_default=True, type=click.Choice(["npz", "parquet"])
)
@click.option("--embedding", help="Only this embedding (default: every one).")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@friendly
def store_export(path, fmt, embedding, out):
    """Export a store's done rows to npz or Parquet (array columns; needs pyarrow)."""
    from emofeat.store import export_store

    export_store(path, out, fmt=fmt, embedding=embedding)
    click.echo(f"wrote {out}")


@store.command("plot")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--embedding", default="last", show_default=True, help="Embedding dataset name.")
@click.option("--method", default="pca", show_default=True, type=click.Choice(["pca", "tsne"]))
@click.option(
    "--max-points",
    default=5000,
    show_default=True,
    help="Draw a seeded random subset of the done rows above this many.",
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Figure file: .png, .pdf or .svg.",
)
@friendly
def store_plot(path, embedding, method, max_points, seed, out):
    """2-D map of an embedding, coloured by class, marked by split."""
    from emofeat.analysis.plots import plot_embedding

    plot_embedding(path, embedding, out, method=method, max_points=max_points, seed=seed)
    click.echo(f"wrote {out}")
