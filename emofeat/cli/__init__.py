"""The ``emofeat`` command line: thin commands that parse options and call library functions.

One module per area, mirroring the library: :mod:`~emofeat.cli.data`, :mod:`~emofeat.cli.models`,
:mod:`~emofeat.cli.finetune`, :mod:`~emofeat.cli.fuse`, :mod:`~emofeat.cli.extract`,
:mod:`~emofeat.cli.store`, :mod:`~emofeat.cli.stack`, :mod:`~emofeat.cli.predict` (predict,
infer), :mod:`~emofeat.cli.reports` (compare, probe, crosscorpus) and :mod:`~emofeat.cli.pipelines` (demo,
recipe); what they share is in :mod:`~emofeat.cli.common`.
"""

from __future__ import annotations

import logging

import click

from emofeat import __version__
from emofeat.cli import (
    data,
    extract,
    finetune,
    fuse,
    models,
    pipelines,
    predict,
    reports,
    stack,
    store,
)
from emofeat.cli.common import VerboseAnywhere


@click.group(cls=VerboseAnywhere)
@click.version_option(__version__, prog_name="emofeat")
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
def main(verbose: bool) -> None:
    """Multimodal emotion recognition: fine-tune, extract feature stores, stack."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


for command in (
    data.data,
    models.models,
    finetune.finetune,
    extract.extract,
    fuse.fuse,
    stack.stack,
    predict.predict,
    predict.infer,
    reports.compare,
    reports.probe,
    reports.crosscorpus,
    pipelines.demo,
    pipelines.recipe,
    store.store,
):
    main.add_command(command)

__all__ = ["main"]
