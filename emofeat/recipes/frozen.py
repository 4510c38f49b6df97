"""``emofeat recipe frozen``: the frozen-encoder counterpart of the reference recipe.

For each model — any encoder family's local folder or short name, or openSMILE's feature set —
its all-layer store (``extract --layers all``; openSMILE: its functionals), a layer-sum head
cross-fitted over the fold plan (``fuse --model layer-sum``: a learned softmax-weighted sum of
the layers and a linear head), then the heads stacked (equal-weight soft vote, logreg, lgbm).
No encoder is fine-tuned: minutes on a CPU where fine-tuning takes GPU hours. Every step
resumes. ``OUT/report.md`` holds one table: each head's figures cross-validated over the train
folds and on test, and each ensemble's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from emofeat.atomic import write_text
from emofeat.recipes.pipeline import frozen_comparison, frozen_plan, run_plan


def frozen(
    manifest: str | Path,
    out: str | Path,
    models: dict[str, str],
    *,
    head: dict[str, Any] | None = None,
    **options: Any,
) -> Path:
    """Run the frozen-encoder protocol into ``out``.

    Args:
        manifest: The manifest (cross-fitting folds of its train rows: ``--folds K``).
        out: The recipe's folder (``stores/``, ``runs/``, ``report.md``).
        models: Name → a local encoder folder, a short name, or ``opensmile:SET``.
        head: Options of :class:`~emofeat.fuse.config.LayerSumConfig` for every head.
        **options: The options of :class:`~emofeat.recipes.config.FrozenConfig`.

    Returns:
        The report's path.

    Raises:
        OptionError: an option's value is refused.
        EmofeatError: no model, or a step's own refusal (an unreadable row, a store made with
            other options).
    """
    from emofeat.errors import EmofeatError
    from emofeat.fuse.config import LayerSumConfig
    from emofeat.recipes.config import FrozenConfig

    cfg = FrozenConfig(**options)
    LayerSumConfig(**(head or {}))  # refused here, before anything runs
    if not models:
        raise EmofeatError("the frozen recipe needs one model or more (--model)")
    out = Path(out)
    started = time.perf_counter()
    steps = frozen_plan(
        Path(manifest),
        out,
        models,
        pooling=cfg.pooling,
        device=cfg.device,
        precision=cfg.precision,
        head=head,
    )
    run_plan(steps)
    table = frozen_comparison(out, list(models))
    minutes = (time.perf_counter() - started) / 60
    report = out / "report.md"
    write_text(
        report,
        "# Frozen encoders: layer-sum heads and their stacks\n\n"
        f"Manifest {manifest}; {minutes:.1f} min. CV: each head's held-out fold models (mean ± "
        "std over folds); ensembles: their nested CV. Test: the split's test rows.\n\n"
        f"{table}\n",
    )
    click.echo("\n" + table + "\n")
    click.echo(f"report: {report}")
    return report
