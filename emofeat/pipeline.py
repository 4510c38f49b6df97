"""The reference protocol as a plan of steps: five fine-tuned models → five stores → ensembles.

``emofeat demo`` runs it with tiny models on the synthetic corpus; ``emofeat recipe
emo-ensemble`` runs it with the real models on KEMDy20 + AI Hub (or prints it with ``--dry-run``).
Every step is resumable, so re-running a plan continues where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

# The reference's five models, in the order of its soft-vote weights.
MODELS = ("wav2vec2-fwd", "wav2vec2-rev", "kobert-p03", "kobert-p05", "kobert-p07")
REFERENCE_WEIGHTS = "0.25,0.25,1/6,1/6,1/6"
METAS = ("softvote", "caruana", "logreg", "lgbm", "mixer")


@dataclass
class Step:
    """One pipeline step: a title, the equivalent command line, and the call that does it."""

    title: str
    command: str
    run: Callable[[], Any]


def ensemble_plan(
    manifest: Path,
    out: Path,
    kobert: str,
    wav2vec2: str,
    kobert_preset: str,
    wav2vec2_preset: str,
    folds: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    extra: dict[str, Any] | None = None,
) -> list[Step]:
    """Steps: fine-tune the five models, extract their stores, stack with every meta-learner."""
    from emofeat.extract import ExtractConfig, extract
    from emofeat.finetune import finetune, resolve_config
    from emofeat.stack.run import stack

    extra = extra or {}
    runs, stores = out / "runs", out / "stores"
    steps = []
    for name in MODELS:
        speech = name.startswith("wav2vec2")
        source = wav2vec2 if speech else kobert
        preset = wav2vec2_preset if speech else kobert_preset
        opts: dict[str, Any] = {
            "model": source,
            "folds": folds,
            "device": device,
            **extra.get("speech" if speech else "text", {}),
        }
        flag = ""
        if speech:
            opts["reverse"] = name.endswith("rev")
            flag = " --reverse" if opts["reverse"] else ""
        else:
            opts["dropout"] = int(name[-2:]) / 10
            flag = f" --dropout {opts['dropout']}"
        cfg = resolve_config(preset, None, **opts)
        fold_flag = f" --folds {folds}" if folds is not None else ""
        steps.append(
            Step(
                f"fine-tune {name}",
                f"emofeat finetune --model {source} --preset {preset}{flag}{fold_flag} --manifest {manifest} --out {runs / name}",
                lambda cfg=cfg, name=name: finetune(manifest, runs / name, cfg),
            )
        )
    for name in MODELS:
        cfg = ExtractConfig(run=str(runs / name), device=device, precision=precision, layers="last")
        steps.append(
            Step(
                f"extract {name}",
                f"emofeat extract --run {runs / name} --manifest {manifest} --out {stores / name}.h5 --precision {precision}",
                lambda cfg=cfg, name=name: extract(manifest, stores / f"{name}.h5", cfg),
            )
        )
    paths = [stores / f"{n}.h5" for n in MODELS]
    store_flags = " ".join(f"--store {p}" for p in paths)
    for meta in METAS:
        weights = REFERENCE_WEIGHTS if meta == "softvote" else None
        wflag = f" --weights {weights}" if weights else ""
        steps.append(
            Step(
                f"stack {meta}",
                f"emofeat stack {store_flags} --meta {meta}{wflag} --out {runs / ('stack-' + meta)}",
                lambda meta=meta, weights=weights: stack(
                    paths, meta, runs / f"stack-{meta}", weights=weights
                ),
            )
        )
    return steps


def run_plan(steps: list[Step], dry_run: bool = False) -> None:
    """Run (or with ``dry_run`` print) the steps, with a header and timing per step."""
    for i, step in enumerate(steps, 1):
        click.secho(f"[{i}/{len(steps)}] {step.title}", bold=True)
        click.echo(f"    $ {step.command}")
        if dry_run:
            continue
        t = time.perf_counter()
        step.run()
        click.echo(f"    done in {time.perf_counter() - t:.1f} s")


def comparison(out: Path) -> tuple[str, list[tuple[str, dict]]]:
    """One table of every base model and every stacked ensemble (test set, reference layout)."""
    from emofeat.stack.run import render_table

    rows: list[tuple[str, dict]] = []
    for meta in METAS:
        path = out / "runs" / f"stack-{meta}" / "metrics.json"
        if not path.is_file():
            continue
        m = json.loads(path.read_text())
        if not rows:
            rows += list(m["test"]["models"].items())
        label = "soft vote, reference weights" if meta == "softvote" else f"stacked: {meta}"
        rows.append((f"ensemble ({label})", m["test"]["ensemble"]))
    return render_table(rows), rows
