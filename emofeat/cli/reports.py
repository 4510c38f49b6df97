"""``emofeat compare`` and ``emofeat probe``: tables and layer-wise probes."""

from __future__ import annotations

from pathlib import Path

import click

from emofeat.analysis.config import CrossCorpusConfig, ProbeConfig
from emofeat.cli.common import declared_options, friendly
from emofeat.options import given_options


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write compare.md and compare.csv here.",
)
@click.option(
    "--paired",
    is_flag=True,
    help="Also compare every two stacks or stores on their common test rows: differences with "
    "paired bootstrap intervals and McNemar's exact test (ones of different rows are refused).",
)
@click.option(
    "--repeated",
    is_flag=True,
    help="PATHS are repetitions of one protocol (recipe --seeds N: OUT/runs, "
    "OUT/repeats/1/runs, ...): each system as mean ± std over them, and every ensemble against "
    "each base model and each other ensemble, paired by repetition (t-test, Wilcoxon).",
)
@friendly
def compare(paths, out, paired, repeated):
    """One table across stack and run folders and stores (a run's, a head's); mean ± std over
    seeds of the same configuration."""
    from emofeat.analysis.compare import compare as compare_folders

    table = compare_folders(paths, out, paired=paired, repeated=repeated)
    click.echo(table.attrs["markdown"], nl=False)


@click.command()
@click.option(
    "--store",
    "store_paths",
    required=True,
    multiple=True,
    type=click.Path(path_type=Path),
    help="A store extracted with --layers all; repeat to compare models on the same rows.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@declared_options(ProbeConfig)
@friendly
def probe(store_paths, out, **params):
    """Layer-wise probes: CV score of a head on each stored layer of each store (probe.csv,
    probe.md: layer x model, probe.png)."""
    from emofeat.analysis.probe import best_layer, layer_table, probe_layers

    table = probe_layers(list(store_paths), out, **given_options(ProbeConfig, params))
    click.echo(layer_table(table), nl=False)
    from emofeat.analysis.probe import probe_metrics

    for metric in probe_metrics(table):
        for model in dict.fromkeys(table["model"]):
            best = best_layer(table, metric, model=model)
            click.echo(f"{model}: best layer by CV {metric}: {best}")
    click.echo(f"wrote {out / 'probe.csv'}, {out / 'probe.md'}, {out / 'probe.png'}")


@click.command()
@click.option(
    "--store",
    "store_path",
    required=True,
    type=click.Path(path_type=Path),
    help="A frozen encoder's store of the manifest's rows (emofeat extract --model NAME).",
)
@click.option(
    "--manifest",
    required=True,
    type=click.Path(path_type=Path),
    help="The manifest the store was extracted from (its corpus column tells the corpora apart).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@declared_options(CrossCorpusConfig)
@friendly
def crosscorpus(store_path, manifest, out, **params):
    """Train on each corpus, test on each other: the cross-corpus matrix (UAR, macro F1; CCC
    where both carry valence and arousal), within-corpus CV on the diagonal (crosscorpus.csv,
    crosscorpus.md, crosscorpus.png)."""
    from emofeat.analysis.crosscorpus import cross_corpus

    cross_corpus(store_path, manifest, out, **given_options(CrossCorpusConfig, params))
    click.echo((out / "crosscorpus.md").read_text(encoding="utf-8"), nl=False)
    click.echo(
        f"wrote {out / 'crosscorpus.csv'}, {out / 'crosscorpus.md'}, {out / 'crosscorpus.png'}"
    )
