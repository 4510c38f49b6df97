"""``emofeat demo`` / ``make demo``: the whole pipeline on the synthetic corpus, end to end.

synthesise → manifest (emo-ensemble split, K folds) → tiny KoBERT and wav2vec2 → fine-tune five
models with cross-fitting (KoBERT at dropout 0.3/0.5/0.7, wav2vec2 forward and reverse) → five
stores → MMM over frozen tiny KcELECTRA and wav2vec2 sequence stores as a sixth → ensembles
(reference soft vote over the five, caruana, logreg, lgbm over all six) → valence and arousal
→ frozen encoders (layer-sum heads over the tiny encoders' layers and openSMILE's eGeMAPS, and
their stacks) → one comparison report.
Re-running it continues where it stopped. It uses 3 folds (the recipe uses 5) so that the six
tiny speech fold models train end to end within the 15-minute budget on 2 CPU cores.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import click

from emofeat.atomic import write_text
from emofeat.recipes.pipeline import (
    comparison,
    dimensional_comparison,
    dimensional_plan,
    ensemble_plan,
    frozen_comparison,
    frozen_plan,
    repeated_plan,
    run_plan,
)


def demo(out: str | Path = "demo-out", **options: Any) -> Path:
    """Run the whole pipeline on a synthetic corpus into ``out``.

    Synthesise a corpus → manifest → tiny KoBERT, KcELECTRA and wav2vec2 → five cross-fitted
    fine-tuned models → their stores → MMM over two frozen sequence stores → the soft vote, caruana,
    logreg and lgbm stacks → one comparison report. Re-running it continues where it stopped.

    Args:
        out: The demo's folder.
        **options: The options of :class:`~emofeat.recipes.config.DemoConfig`.

    Returns:
        The path of the report (``OUT/report.md``).

    Raises:
        OptionError: an option's value is refused.
    """
    from emofeat.recipes.config import DemoConfig

    cfg = DemoConfig(**options)
    seed, folds = cfg.seed, cfg.folds
    from emofeat.corpus.manifest import read_manifest
    from emofeat.corpus.prepare import prepare
    from emofeat.recipes.pipeline import MMMPlan
    from emofeat.testing.synth import synthesize
    from emofeat.testing.tiny import build_tiny_electra, build_tiny_kobert, build_tiny_wav2vec2

    out = Path(out)
    t0 = time.perf_counter()
    corpus, models = out / "corpus", out / "models"
    manifest = corpus / "manifest.csv"
    marker = corpus / "synth.json"
    # The corpus's options (the folds and repetitions are the manifests', not the corpus's).
    wanted = {k: v for k, v in cfg.to_dict().items() if k not in ("folds", "seeds")}
    click.secho("[corpus] synthetic KEMDy20 + AI Hub", bold=True)
    if not marker.is_file() or json.loads(marker.read_text()).get("options") != wanted:
        report = synthesize(corpus, **wanted)
        write_text(marker, json.dumps({"options": wanted, "report": report}, indent=2))
    click.echo(f"    {json.loads(marker.read_text())['report']}")
    if not manifest.is_file():
        prepare(
            manifest,
            kemdy20=corpus / "KEMDy20_v1_1",
            aihub=corpus / "AI_Hub",
            split="emo-ensemble",
            folds=folds,
            seed=seed,
        )
    m = read_manifest(manifest)
    click.echo(
        f"    manifest {manifest}: {len(m)} utterances, {int((m.split == 'train').sum())} train / {int((m.split == 'test').sum())} test, {m.num_folds} folds"
    )
    click.secho("[models] tiny KoBERT and wav2vec2 in the hub formats", bold=True)
    if not (models / "kobert" / "vocab.txt").is_file():
        build_tiny_kobert(
            models / "kobert", list(m.frame.loc[m.frame.split == "train", "text"]), seed=seed
        )
    if not (models / "wav2vec2" / "preprocessor_config.json").is_file():
        build_tiny_wav2vec2(models / "wav2vec2", seed=seed)
    if not (models / "kcelectra" / "vocab.txt").is_file():
        texts = list(m.frame.loc[m.frame.split == "train", "text"])
        build_tiny_electra(models / "kcelectra", texts, seed=seed)
    # MMM over frozen tiny encoders. Overrides of the published training (64 x 8 per step would
    # be one optimizer step per epoch on 464 rows) and shorter sequences (the clips are 1-2 s,
    # the transcripts short) keep it within a minute on 2 cores.
    mmm = MMMPlan(
        str(models / "kcelectra"),
        str(models / "wav2vec2"),
        text_len=32,
        audio_len=100,
        options={"epochs": 20, "lr": 1e-3, "batch_size": 16, "grad_accum": 1},
    )
    shared = dict(
        kobert=str(models / "kobert"),
        wav2vec2=str(models / "wav2vec2"),
        preset_set="tiny",
        device="cpu",
    )
    prepared = {  # how the manifest was prepared; a repetition draws its folds again
        "kemdy20": corpus / "KEMDy20_v1_1",
        "aihub": corpus / "AI_Hub",
        "split": "emo-ensemble",
        "folds": folds,
    }

    def repetition(manifest: Path, root: Path, r: int) -> list:
        return [
            *ensemble_plan(manifest, root, mmm=mmm, repetition=r, **shared),
            *dimensional_plan(manifest, root, repetition=r, **shared),
        ]

    steps = repeated_plan(
        out,
        cfg.seeds,
        manifest,
        prepare_options=lambda r: {**prepared, "seed": seed + r},
        plan=repetition,
    )
    # Frozen encoders instead of fine-tuning: a layer-sum head over every layer of each tiny
    # encoder and over openSMILE's eGeMAPS functionals, then their stacks.
    frozen_models = {"kobert": str(models / "kobert"), "wav2vec2": str(models / "wav2vec2")}
    if importlib.util.find_spec("opensmile") is not None:
        frozen_models["eGeMAPSv02"] = "opensmile:eGeMAPSv02"
    steps += frozen_plan(manifest, out / "frozen", frozen_models, device="cpu")
    run_plan(steps)
    table, _ = comparison(out)
    dims = dimensional_comparison(out)
    dims += (
        "\n\n## Frozen encoders (no fine-tuning): layer-sum heads and their stacks\n\n"
        "CV: each head's held-out fold models (mean ± std over folds); test: the test rows.\n\n"
        + frozen_comparison(out / "frozen", list(frozen_models))
    )
    if cfg.seeds > 1:  # the repetitions' comparison, as the last step wrote it
        import pandas as pd

        from emofeat.analysis.compare import repeated_markdown

        repeats = out / "repeats"
        summary = pd.read_csv(repeats / "repeated.csv")
        dims += "\n\n" + repeated_markdown(summary, pd.read_csv(repeats / "repeated-pairs.csv"))
    minutes = (time.perf_counter() - t0) / 60
    report = out / "report.md"
    write_text(
        report,
        f"# emofeat demo (synthetic corpus)\n\nTest set of the emo-ensemble split; {m.num_folds}-fold cross-fitting; {minutes:.1f} min.\n\n{table}\n\n"
        f"## Valence and arousal (test rows of KEMDy20; AI Hub has none)\n\nLin's CCC, with the ensembles' 95 % bootstrap intervals.\n\n{dims}\n",
    )
    click.echo("\n" + table + "\n\n" + dims + "\n")
    click.echo(
        f"report: {report}\nstacks and runs: {out / 'runs'}\nstores: {out / 'stores'}\ncorpus and manifest: {corpus}"
    )
    return report
