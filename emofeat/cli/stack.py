"""``emofeat stack``: meta-learners over stores."""

from __future__ import annotations

from pathlib import Path

import click

from emofeat.cli.common import (
    config_option,
    declared_options,
    friendly,
    print_config_option,
    resolve_declared,
    show_config,
    stores_and_out,
)
from emofeat.stack.config import INPUTS, StackConfig


def _meta_help() -> str:
    from emofeat.stack.meta import META_LEARNERS

    return "\n".join(f"{m.name}: {m.summary}" for m in META_LEARNERS.values())


@click.command()
@click.option(
    "--store",
    "stores",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A feature store; repeat for each base model.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="e.g. runs/stack-lgbm (default with --config STACK/config.yaml: STACK)",
)
@declared_options(StackConfig)
@config_option
@print_config_option
@click.option("--list-meta", is_flag=True, help="Describe each meta-learner in a line, and exit.")
@friendly
def stack(stores, out, config_file, print_config, list_meta, **params):
    """Fit a meta-learner over stores (leak-free), report CV and test figures."""
    if list_meta:
        return click.echo(_meta_help())
    cfg, inputs = resolve_declared(StackConfig, params, config_file, inputs=INPUTS)
    if print_config:
        return show_config(cfg)
    stores, out = stores_and_out(stores, out, inputs, config_file)
    from emofeat.stack.ensemble import stack as fit_and_report
    from emofeat.stack.report import render_table, table_rows

    options = cfg.to_dict()
    result = fit_and_report(stores, options.pop("meta"), out, **options)
    if result.metrics.get("in_sample_warning"):
        click.secho(result.metrics["in_sample_warning"], fg="yellow")
    if "ensemble" in result.metrics.get("test", {}):
        click.echo(render_table(table_rows(result.metrics)))
    click.echo(f"report: {out / 'report.md'}")
