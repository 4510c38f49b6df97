"""``emofeat stack``: meta-learners over stores."""

from __future__ import annotations

from pathlib import Path

import click

from emofeat.cli.common import (
    LazyChoice,
    LazyHelpOption,
    allow_incomplete_option,
    config_option,
    configured,
    friendly,
    need,
)


def _meta_learners():
    from emofeat.stack.meta import META_LEARNERS

    return META_LEARNERS


@click.command()
@click.option(
    "--store",
    "stores",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A feature store; repeat for each base model.",
)
@click.option(
    "--meta",
    cls=LazyHelpOption,
    type=LazyChoice(lambda: [*_meta_learners(), "auto"]),
    help_text=lambda: (
        "; ".join(f"{m.name}: {m.summary}" for m in _meta_learners().values())
        + "; auto: the one of softvote, caruana, logreg, lgbm with the best nested-CV accuracy "
        "over the train folds (the report lists every candidate)."
    ),
)
@click.option(
    "--weights", help="softvote weights in store order, e.g. 0.25,0.25,1/6,1/6,1/6 (the reference)."
)
@click.option(
    "--features", default="proba", show_default=True, type=click.Choice(["proba", "logits"])
)
@click.option(
    "--passthrough",
    help="Append this embedding (PCA-reduced, fitted on train rows) to logreg/lgbm features.",
)
@click.option(
    "--mixer-embedding",
    default="last",
    show_default=True,
    help="Embedding the pooled-mixer fuses.",
)
@click.option(
    "--allow-in-sample",
    is_flag=True,
    help="Stack stores without out-of-fold train predictions (the report says so).",
)
@allow_incomplete_option
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="e.g. runs/stack-lgbm (default with --config STACK/config.yaml: STACK)",
)
@config_option
@friendly
def stack(**params):
    """Fit a meta-learner over stores (leak-free), report CV and test figures."""
    from emofeat.stack.ensemble import stack as fit_and_report
    from emofeat.stack.report import render_table, table_rows

    p = configured(params, out_beside="config.yaml")
    need(p, "stores", "meta", "out")
    out = p["out"]
    result = fit_and_report(
        p["stores"],
        p["meta"],
        out,
        weights=p["weights"],
        features=p["features"],
        passthrough=p["passthrough"],
        mixer_embedding=p["mixer_embedding"],
        allow_in_sample=p["allow_in_sample"],
        allow_incomplete=p["allow_incomplete"],
        seed=p["seed"],
    )
    if result.metrics.get("in_sample_warning"):
        click.secho(result.metrics["in_sample_warning"], fg="yellow")
    if "ensemble" in result.metrics.get("test", {}):
        click.echo(render_table(table_rows(result.metrics)))
    click.echo(f"report: {out / 'report.md'}")
