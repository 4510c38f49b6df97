"""The reference protocol as a plan of steps: five fine-tuned models → five stores → ensembles.

``emofeat demo`` runs it with tiny models on the synthetic corpus; ``emofeat recipe
emo-ensemble`` runs it with the real models on KEMDy20 + AI Hub (or prints it with ``--dry-run``).
Every step is resumable, so re-running a plan continues where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import click

from emofeat.errors import EmofeatError
from emofeat.recipes.config import PROTOCOLS


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
# How the reference ran each model, beyond its hyperparameters: its seed (42), the wav2vec2
# batches in random order (Trainer's sampler), the KoBERT batches in file order (its notebook's
# DataLoader did not shuffle), and the reverse wav2vec2 on a random 90 % of the train rows (it
# held out 10 % as a validation set that chose nothing).
# "*" applies to every model, a model's own entry on top of it.
REFERENCE_RUN: dict[str, dict[str, Any]] = {
    "*": {"seed": 42, "batch_order": "random"},
    "wav2vec2-rev": {"train_fraction": 0.9},
    **{f"kobert-p0{p}": {"batch_order": "file"} for p in (3, 5, 7)},
}
REFERENCE_WEIGHTS = "0.25,0.25,1/6,1/6,1/6"  # the reference's soft-vote weights, in that order


@dataclass(frozen=True)
class MMMPlan:
    """MMM's row: frozen text and audio encoders, the sequence lengths stored, and MMM's
    training options (``MMMConfig`` fields; the published values where not given)."""

    text_model: str
    audio_model: str
    text_len: int = 128
    audio_len: int = 512
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Step:
    """One pipeline step: a title, the command and its options, and the call that does it. The
    printed command line is rendered from the same options the call receives
    (:attr:`command`), so what a plan prints is what it runs."""

    title: str
    name: str  # the emofeat command, e.g. "finetune" or "store merge"
    options: dict[str, Any]
    run: Callable[[], Any]
    positional: tuple[str, ...] = ()  # options the command takes as arguments, in order

    @property
    def command(self) -> str:
        return command_line(self.name, self.options, self.positional)


def command_line(name: str, options: dict[str, Any], positional: Sequence[str] = ()) -> str:
    """``emofeat NAME [ARG ...] --flag value ...``: the ``positional`` options as arguments,
    then lists repeat their flag, True is a bare flag, False the ``--no-`` form, None is left
    out."""
    import shlex

    parts = ["emofeat", name]
    for key in positional:
        value = options[key]
        parts += [shlex.quote(str(v)) for v in (value if isinstance(value, list) else [value])]
    for key, value in options.items():
        if key in positional:
            continue
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{key.replace('_', '-')}")
        elif isinstance(value, (list, tuple)):
            for item in value:
                parts += [flag, shlex.quote(str(item))]
        else:
            parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)


def prepare_step(title: str, o: dict[str, Any]) -> Step:
    """The step that prepares a manifest: ``o`` holds its ``out`` and ``data prepare``'s
    options (preparing is deterministic: a re-run writes the same manifest)."""
    from emofeat.corpus.prepare import prepare

    def run(o=o):
        return prepare(o["out"], **{k: v for k, v in o.items() if k != "out"})

    return Step(title, "data prepare", o, run)


def finetune_step(title: str, o: dict[str, Any]) -> Step:
    """The step that fine-tunes one run: ``o`` holds its preset, manifest, out and options."""
    from emofeat.finetune.config import resolve_config
    from emofeat.finetune.run import finetune

    def train(o=o):
        options = {k: v for k, v in o.items() if k not in ("preset", "manifest", "out")}
        return finetune(o["manifest"], o["out"], resolve_config(o["preset"], None, **options))

    return Step(title, "finetune", o, train)


def extract_step(title: str, o: dict[str, Any]) -> Step:
    """The step that extracts one store: ``o`` holds its run (fine-tuned) or model (frozen),
    manifest, out and options."""
    from emofeat.extract.config import ExtractConfig
    from emofeat.extract.run import extract

    def extract_store(o=o):
        options = {k: v for k, v in o.items() if k not in ("manifest", "out")}
        paths = {k: str(options[k]) for k in ("run", "model") if options.get(k) is not None}
        return extract(o["manifest"], o["out"], ExtractConfig(**{**options, **paths}))

    return Step(title, "extract", o, extract_store)


def ensemble_plan(
    manifest: Path,
    out: Path,
    *,
    kobert: str,
    wav2vec2: str,
    preset_set: str = "ref",
    protocol: str = "crossfit",
    device: str = "auto",
    precision: str = "fp32",
    mmm: MMMPlan | None = None,
    repetition: int = 0,
) -> list[Step]:
    """Steps: fine-tune the five models, extract their stores, (with ``mmm``) MMM over two
    frozen sequence stores as a sixth base model, and the ensembles: the reference's soft vote
    over the five, every other meta-learner over all of them. Repetition r > 0 trains every
    model with its seed + r (:func:`repetition_seeds`)."""
    from emofeat.stack.ensemble import stack
    from emofeat.stack.meta import META_LEARNERS

    if protocol not in PROTOCOLS:
        raise EmofeatError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    folds = 0 if protocol == "reference" else None
    # The pooled-vector mixer fuses fine-tuned fold models' embedding spaces: unsound here.
    metas = (
        ["softvote"]
        if protocol == "reference"
        else [m for m in META_LEARNERS if m != "pooled-mixer"]
    )
    runs, stores = out / "runs", out / "stores"
    sources = {"speech": wav2vec2, "text": kobert}
    steps = []
    for base in BASE_MODELS:
        o = {
            "model": sources[base.modality],
            "preset": base.presets[preset_set],
            **base.options,
            **(
                {**REFERENCE_RUN["*"], **REFERENCE_RUN.get(base.name, {})}
                if protocol == "reference"
                else {}
            ),
            **repetition_seeds(repetition, 42 if protocol == "reference" else 0),
            "folds": folds,
            "device": device,
            "manifest": manifest,
            "out": runs / base.name,
        }
        steps.append(finetune_step(f"fine-tune {base.name}", o))
    for base in BASE_MODELS:
        o = {
            "run": runs / base.name,
            "manifest": manifest,
            "out": stores / f"{base.name}.h5",
            "layers": "last",
            "precision": precision,
            "device": device,
            # The reference fed whole clips (no windows).
            **({"max_seconds": 0} if protocol == "reference" and base.modality == "speech" else {}),
        }
        steps.append(extract_step(f"extract {base.name}", o))
    paths = [stores / f"{b.name}.h5" for b in BASE_MODELS]
    extra = []
    if mmm is not None:
        # Reference protocol: MMM as published, one model on all train rows, a row of the table
        # (its store is in-sample on train rows and joins no stack); crossfit: a base model.
        mmm = replace(mmm, options={**mmm.options, **repetition_seeds(repetition, 1024)})
        steps += _mmm_steps(
            manifest, runs, stores, mmm, device, precision, single=protocol == "reference"
        )
        extra = [runs / "mmm" / "mmm.h5"] if protocol == "crossfit" else []
    for meta in metas:
        o = {
            "store": paths if meta == "softvote" else paths + extra,
            "meta": meta,
            "weights": REFERENCE_WEIGHTS if meta == "softvote" else None,
            "out": runs / f"stack-{meta}",
        }

        def fit(o=o):
            return stack(o["store"], o["meta"], o["out"], weights=o["weights"])

        steps.append(Step(f"stack {meta}", "stack", o, fit))
    return steps


# Valence and arousal beside the classes: one text and one speech model of both tasks.
DIMENSIONAL_MODELS = (
    BaseModel("kobert-dims", "text", {"ref": "kobert-ref", "tiny": "kobert-tiny"}, {}),
    BaseModel("wav2vec2-dims", "speech", {"ref": "wav2vec2-ref", "tiny": "wav2vec2-tiny"}, {}),
)
DIMENSIONAL_METAS = ("mean", "ridge")


def dimensional_plan(
    manifest: Path,
    out: Path,
    *,
    kobert: str,
    wav2vec2: str,
    preset_set: str = "ref",
    device: str = "auto",
    precision: str = "fp32",
    repetition: int = 0,
) -> list[Step]:
    """Steps of the dimensional task: fine-tune a KoBERT and a wav2vec2 of both tasks
    (``--task both``: classes, valence and arousal from one head), extract their stores, and
    stack valence and arousal by ``mean`` (the stores' mean) and ``ridge`` over them and the
    class probabilities of the five categorical stores (categorical evidence for the
    dimensions)."""
    from emofeat.stack.ensemble import stack

    runs, stores = out / "runs", out / "stores"
    sources = {"speech": wav2vec2, "text": kobert}
    steps = []
    for base in DIMENSIONAL_MODELS:
        o = {
            "model": sources[base.modality],
            "preset": base.presets[preset_set],
            "task": "both",
            **repetition_seeds(repetition, 0),
            "device": device,
            "manifest": manifest,
            "out": runs / base.name,
        }
        steps.append(finetune_step(f"fine-tune {base.name} (classes, valence, arousal)", o))
        e = {
            "run": runs / base.name,
            "manifest": manifest,
            "out": stores / f"{base.name}.h5",
            "precision": precision,
            "device": device,
        }
        steps.append(extract_step(f"extract {base.name}", e))
    dims = [stores / f"{b.name}.h5" for b in DIMENSIONAL_MODELS]
    categorical = [stores / f"{b.name}.h5" for b in BASE_MODELS]
    for meta in DIMENSIONAL_METAS:
        o = {
            "store": dims if meta == "mean" else dims + categorical,
            "target": "dimensional",
            "dim_meta": meta,
            "out": runs / f"stack-dims-{meta}",
        }

        def fit(o=o):
            return stack(o["store"], None, o["out"], target="dimensional", dim_meta=o["dim_meta"])

        steps.append(Step(f"stack valence and arousal: {meta}", "stack", o, fit))
    return steps


FROZEN_METAS = ("softvote", "logreg", "lgbm")  # the heads' ensembles (equal-weight vote)


def frozen_plan(
    manifest: Path,
    out: Path,
    models: dict[str, str],
    *,
    pooling: str = "mean",
    device: str = "auto",
    precision: str = "fp32",
    head: dict[str, Any] | None = None,
) -> list[Step]:
    """Steps of the frozen-encoder protocol: per model (name → a local encoder folder, a short
    name, or ``opensmile:SET``) its all-layer store (``extract --layers all``; openSMILE: its
    functionals), a layer-sum head cross-fitted over it (``fuse --model layer-sum``, options
    ``head``), then the heads stacked by :data:`FROZEN_METAS`."""
    from emofeat.extract.opensmile import is_opensmile
    from emofeat.fuse.config import LayerSumConfig
    from emofeat.fuse.run import fuse
    from emofeat.stack.ensemble import stack

    runs, stores = out / "runs", out / "stores"
    steps = []
    for name, model in models.items():
        smile = is_opensmile(model)
        o = {
            "model": model,
            **({} if smile else {"layers": "all", "pooling": pooling, "precision": precision}),
            "device": device,
            "manifest": manifest,
            "out": stores / f"{name}.h5",
        }
        steps.append(
            extract_step(f"extract {name} ({'functionals' if smile else 'all layers'})", o)
        )
        f = {
            "model": "layer-sum",
            "store": [stores / f"{name}.h5"],
            **(head or {}),
            "device": device,
            "out": runs / name,
        }

        def train_head(f=f):
            options = {k: v for k, v in f.items() if k not in ("model", "store", "out")}
            return fuse(f["store"], f["out"], config=LayerSumConfig(**options), model="layer-sum")

        steps.append(Step(f"layer-sum head over {name}", "fuse", f, train_head))
    heads = [runs / name / "layer-sum.h5" for name in models]
    for meta in FROZEN_METAS:
        o = {"store": heads, "meta": meta, "out": runs / f"stack-{meta}"}

        def fit(o=o):
            return stack(o["store"], o["meta"], o["out"])

        steps.append(Step(f"stack the heads: {meta}", "stack", o, fit))
    return steps


def frozen_comparison(out: Path, names: Sequence[str]) -> str:
    """Every head's figures cross-validated over the train folds (its held-out fold models,
    mean ± std) and on test, and every stack's."""
    from emofeat.runs import RunFolder
    from emofeat.stack.folder import StackFolder
    from emofeat.stack.level1 import store_names

    folders = {meta: StackFolder(out / "runs" / f"stack-{meta}") for meta in FROZEN_METAS}
    stacks = {meta: f.metrics() for meta, f in folders.items() if f.exists()}
    tests = next(iter(stacks.values()))["test"]["models"] if stacks else {}
    lines = [
        "| model | CV accuracy | CV UAR | test accuracy | test macro F1 | test UAR |",
        "|---|---|---|---|---|---|",
    ]

    def cells(cv: dict, test: dict) -> str:
        parts = [
            f"{cv[m]['mean']:.4f} ± {cv[m]['std']:.4f}" if m in cv else ""
            for m in ("accuracy", "uar")
        ]
        parts += [f"{test[m]:.4f}" if m in test else "" for m in ("accuracy", "macro_f1", "uar")]
        return " | ".join(parts)

    heads = [out / "runs" / name / "layer-sum.h5" for name in names]
    for name, key in zip(names, store_names(heads)):  # (the stacks' names of the heads' stores)
        run = RunFolder(out / "runs" / name)
        summary = run.summary().get("summary", {}) if run.metrics_path.is_file() else {}
        lines.append(f"| layer-sum head: {name} | {cells(summary, tests.get(key, {}))} |")
    for meta, metrics in stacks.items():
        label = "equal-weight soft vote" if meta == "softvote" else f"stacked: {meta}"
        figures = cells(metrics.get("cv", {}), metrics["test"]["ensemble"])
        lines.append(f"| ensemble ({label}) | {figures} |")
    return "\n".join(lines)


def dimensional_comparison(out: Path) -> str:
    """The test table of valence and arousal (CCC with its 95 % bootstrap interval, mean CCC)."""
    from emofeat.stack.folder import StackFolder

    rows: list[tuple[str, dict]] = []
    for meta in DIMENSIONAL_METAS:
        folder = StackFolder(out / "runs" / f"stack-dims-{meta}")
        if not folder.exists():
            continue
        test = folder.metrics()["dimensional"]["test"]
        if not rows:
            rows += list(test["models"].items())
        rows.append((f"ensemble ({meta})", test["ensemble"]))
    lines = [
        "| method | valence CCC | arousal CCC | mean CCC |",
        "|---|---|---|---|",
    ]
    for label, m in rows:
        cells = []
        for name in ("valence", "arousal"):
            ci = m[name].get("ccc_ci95")
            cells.append(f"{m[name]['ccc']:.4f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {m['mean']['ccc']:.4f} |")
    return "\n".join(lines)


def _mmm_steps(
    manifest, runs, stores, mmm: MMMPlan, device, precision, *, single: bool = False
) -> list[Step]:
    """Two frozen sequence stores, then MMM cross-fitted over them (``single``: one model on
    all train rows) into runs/mmm/mmm.h5."""
    from emofeat.extract.config import ExtractConfig
    from emofeat.extract.run import extract
    from emofeat.fuse.config import MMMConfig
    from emofeat.fuse.run import fuse

    steps = []
    seq = {"text": (mmm.text_model, mmm.text_len), "audio": (mmm.audio_model, mmm.audio_len)}
    for kind, (model, length) in seq.items():
        o = {
            "model": model,
            "sequence": True,
            # Text keeps its token limit; speech the frames of its sequence.
            "max_len" if kind == "text" else "sequence_length": length,
            # MMM's text as published: Hangul only, padded to the limit with the pad token.
            **(
                {"text_filter": "hangul", "sequence_padding": "max_length"}
                if kind == "text"
                else {}
            ),
            "layers": "last",
            "precision": precision,
            "device": device,
            "manifest": manifest,
            "out": stores / f"{kind}-seq.h5",
        }

        def extract_sequences(o=o):
            keys = ("model", "sequence", "max_len", "sequence_length", "layers", "precision")
            keys += ("text_filter", "sequence_padding")
            cfg = ExtractConfig(**{k: o[k] for k in (*keys, "device") if k in o})
            return extract(o["manifest"], o["out"], cfg)

        steps.append(
            Step(f"extract {kind} sequences (frozen {model})", "extract", o, extract_sequences)
        )
    o = {
        "model": "mmm",
        "store": [stores / "text-seq.h5", stores / "audio-seq.h5"],
        **mmm.options,
        "device": device,
        **({"folds": 0} if single else {}),
        "out": runs / "mmm",
    }

    def fuse_mmm(o=o):
        options = {k: v for k, v in o.items() if k not in ("model", "store", "out", "folds")}
        return fuse(
            o["store"],
            o["out"],
            config=MMMConfig(**options),
            model=o["model"],
            folds=o.get("folds"),
        )

    title = "MMM (one model on all train rows, as published)" if single else "MMM (cross-fitted)"
    steps.append(Step(title, "fuse", o, fuse_mmm))
    return steps


def repetition_seeds(repetition: int, base: int) -> dict[str, int]:
    """The training seed of repetition ``repetition`` of a protocol whose models train with
    seed ``base``: ``base + repetition``; repetition 0 adds nothing (its commands stay those
    of a plan without repetitions, so a first run of a protocol is its repetition 0)."""
    return {"seed": base + repetition} if repetition else {}


def repetition_folder(out: Path, repetition: int) -> Path:
    """Where repetition r of a protocol lives: ``OUT`` for the first (a protocol run once is
    its repetition 0, so ``--seeds 3`` later adds two), ``OUT/repeats/r`` for the others."""
    return out if repetition == 0 else out / "repeats" / str(repetition)


def repeated_plan(
    out: Path,
    seeds: int,
    manifest: Path,
    *,
    prepare_options: Callable[[int], dict[str, Any]],
    plan: Callable[[Path, Path, int], list[Step]],
) -> list[Step]:
    """A protocol ``seeds`` times: repetition r in :func:`repetition_folder` (the first is
    ``out`` itself, on ``manifest``); each later one prepares its own manifest with
    ``prepare_options(r)`` (``data prepare``'s options: the same corpora, the folds drawn with
    another seed), then ``plan(manifest, folder, r)``; with two or more, the comparison of the
    repetitions (:func:`repeated_step`) ends it."""
    steps = []
    for r in range(seeds):
        root = repetition_folder(out, r)
        mine = root / "manifest.csv" if r else manifest
        if r:
            o = {**prepare_options(r), "out": mine}
            steps.append(prepare_step(f"repetition {r}: folds drawn with seed {o['seed']}", o))
        steps += plan(mine, root, r)
    if seeds > 1:
        steps.append(repeated_step(out, seeds))
    return steps


def repeated_step(out: Path, seeds: int) -> Step:
    """The step that compares the repetitions (``emofeat compare --repeated``) into
    ``OUT/repeats``: each figure as mean ± std over them and the paired tests across them."""
    from emofeat.analysis.compare import compare

    o = {
        "paths": [repetition_folder(out, r) / "runs" for r in range(seeds)],
        "repeated": True,
        "out": out / "repeats",
    }

    def run(o=o):
        return compare(o["paths"], o["out"], repeated=True)

    return Step(f"compare the {seeds} repetitions", "compare", o, run, positional=("paths",))


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


def _test_metrics(path: Path) -> dict:
    """A store's own test figures (argmax of its logits on the labelled test rows)."""
    from emofeat.metrics import classification_metrics
    from emofeat.store import open_store

    with open_store(path) as s:
        rows = s.select(split="test")
        rows = rows[s.labels[rows] >= 0]
        pred = s.logits(rows).argmax(1)
        return classification_metrics(s.labels[rows].astype(int), pred)


def comparison(out: Path) -> tuple[str, list[tuple[str, dict]]]:
    """One table of every base model, MMM and every ensemble (test set, reference layout)."""
    from emofeat.stack.folder import StackFolder
    from emofeat.stack.meta import META_LEARNERS
    from emofeat.stack.report import render_table

    stacks = {}
    for meta in META_LEARNERS:
        folder = StackFolder(out / "runs" / f"stack-{meta}")
        if folder.exists():
            stacks[meta] = folder.metrics()
    rows: list[tuple[str, dict]] = []
    if stacks:  # base models from the stack over the most stores (MMM's store included)
        widest = max(stacks.values(), key=lambda m: len(m["test"]["models"]))
        rows += list(widest["test"]["models"].items())
    fused = out / "runs" / "mmm" / "mmm.h5"
    if fused.is_file() and "mmm" not in dict(rows):  # MMM outside the stacks (reference protocol)
        rows.append(("mmm", _test_metrics(fused)))
    for meta, m in stacks.items():
        label = "soft vote, reference weights" if meta == "softvote" else f"stacked: {meta}"
        rows.append((f"ensemble ({label})", m["test"]["ensemble"]))
    return render_table(rows), rows
