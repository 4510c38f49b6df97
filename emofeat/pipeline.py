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

from emofeat.errors import EmofeatError


@dataclass(frozen=True)
class BaseModel:
    """One of the reference's five models: its name, its encoder, its preset in each preset set
    (``ref``: the reference's hyperparameters; ``tiny``: the demo's from-scratch models) and the
    options that set it apart."""

    name: str
    modality: str  # which encoder it fine-tunes: ``--kobert`` (text) or ``--wav2vec2`` (speech)
    presets: dict[str, str]
    options: dict[str, Any]


# The reference's five models, in the order of its soft-vote weights (reference.md).
BASE_MODELS = (
    BaseModel("wav2vec2-fwd", "speech", {"ref": "wav2vec2-ref", "tiny": "wav2vec2-tiny"}, {}),
    BaseModel(
        "wav2vec2-rev",
        "speech",
        {"ref": "wav2vec2-ref-rev", "tiny": "wav2vec2-tiny"},
        {"reverse": True},
    ),
    BaseModel("kobert-p03", "text", {"ref": "kobert-ref", "tiny": "kobert-tiny"}, {"dropout": 0.3}),
    BaseModel("kobert-p05", "text", {"ref": "kobert-ref", "tiny": "kobert-tiny"}, {"dropout": 0.5}),
    BaseModel("kobert-p07", "text", {"ref": "kobert-ref", "tiny": "kobert-tiny"}, {"dropout": 0.7}),
)
# crossfit: emofeat's protocol (K fold models per configuration, out-of-fold stores, every
# meta-learner); reference: as the reference ran (one model per configuration on all train
# rows, the fixed-weight soft vote, which fits nothing on the train rows).
PROTOCOLS = ("crossfit", "reference")
REFERENCE_WEIGHTS = "0.25,0.25,1/6,1/6,1/6"  # the reference's soft-vote weights, in that order


@dataclass
class Step:
    """One pipeline step: a title, the equivalent command line, and the call that does it."""

    title: str
    command: str
    run: Callable[[], Any]


def _flags(options: dict[str, Any]) -> str:
    """Command-line flags of finetune options (``--reverse``, ``--dropout 0.3``)."""
    out = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else f"--no-{key.replace('_', '-')}")
        else:
            out.append(f"{flag} {value}")
    return (" " + " ".join(out)) if out else ""


def ensemble_plan(
    manifest: Path,
    out: Path,
    kobert: str,
    wav2vec2: str,
    preset_set: str = "ref",
    protocol: str = "crossfit",
    device: str = "auto",
    precision: str = "fp32",
) -> list[Step]:
    """Steps: fine-tune the five models, extract their stores, stack them."""
    from emofeat.extract import ExtractConfig, extract
    from emofeat.finetune import finetune, resolve_config
    from emofeat.stack.ensemble import stack
    from emofeat.stack.meta import META_LEARNERS

    if protocol not in PROTOCOLS:
        raise EmofeatError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    folds = 0 if protocol == "reference" else None
    metas = ["softvote"] if protocol == "reference" else list(META_LEARNERS)
    runs, stores = out / "runs", out / "stores"
    sources = {"speech": wav2vec2, "text": kobert}
    steps = []
    for base in BASE_MODELS:
        source, preset = sources[base.modality], base.presets[preset_set]
        cfg = resolve_config(preset, None, model=source, folds=folds, device=device, **base.options)
        fold_flag = f" --folds {folds}" if folds is not None else ""
        steps.append(
            Step(
                f"fine-tune {base.name}",
                f"emofeat finetune --model {source} --preset {preset}{_flags(base.options)}{fold_flag} --manifest {manifest} --out {runs / base.name}",
                lambda cfg=cfg, name=base.name: finetune(manifest, runs / name, cfg),
            )
        )
    for base in BASE_MODELS:
        cfg = ExtractConfig(
            run=str(runs / base.name), device=device, precision=precision, layers="last"
        )
        steps.append(
            Step(
                f"extract {base.name}",
                f"emofeat extract --run {runs / base.name} --manifest {manifest} --out {stores / base.name}.h5 --precision {precision}",
                lambda cfg=cfg, name=base.name: extract(manifest, stores / f"{name}.h5", cfg),
            )
        )
    paths = [stores / f"{b.name}.h5" for b in BASE_MODELS]
    store_flags = " ".join(f"--store {p}" for p in paths)
    for meta in metas:
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
    from emofeat.stack.meta import META_LEARNERS
    from emofeat.stack.report import render_table

    rows: list[tuple[str, dict]] = []
    for meta in META_LEARNERS:
        path = out / "runs" / f"stack-{meta}" / "metrics.json"
        if not path.is_file():
            continue
        m = json.loads(path.read_text())
        if not rows:
            rows += list(m["test"]["models"].items())
        label = "soft vote, reference weights" if meta == "softvote" else f"stacked: {meta}"
        rows.append((f"ensemble ({label})", m["test"]["ensemble"]))
    return render_table(rows), rows
