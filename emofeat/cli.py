"""The ``emofeat`` command line: thin commands that parse options and call library functions."""

from __future__ import annotations

import errno
import functools
import logging
import sys
from pathlib import Path

import click

from emofeat import __version__
from emofeat.errors import EmofeatError
from emofeat.fuse import FUSION_MODELS
from emofeat.pipeline import PROTOCOLS
from emofeat.presets import PRESETS
from emofeat.stack.meta import META_LEARNERS

# Options shared by several commands.
model_path_option = click.option(
    "--model-path", type=click.Path(path_type=Path), help="Local copy of the named hub model."
)
manifest_option = click.option("--manifest", type=click.Path(path_type=Path))
config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML options, or the record an earlier run wrote beside its output (it re-runs the "
    "command unchanged); flags override it.",
)


def _configured(params: dict, ignore=(), rename=None, out_beside: str | None = None) -> dict:
    """The command's parameters completed from ``--config``; ``out_beside``: a record with this
    file name (``config.yaml``) lives in the output folder, which is then the default --out."""
    from emofeat.configfile import apply_config

    ctx = click.get_current_context()
    config_file = params.get("config_file")
    params = apply_config(ctx, config_file, params, ignore=ignore, rename=rename)
    if out_beside and config_file and not params.get("out") and config_file.name == out_beside:
        params["out"] = config_file.parent
    return params


def _need(params: dict, *names: str) -> None:
    missing = [n for n in names if params.get(n) in (None, ())]
    if missing:
        raise click.UsageError(
            "missing "
            + ", ".join("--" + n.replace("_", "-") for n in missing)
            + " (give it on the command line or in --config)"
        )


def friendly(fn):
    """Print user-caused failures as one clear message and exit 2, not a traceback: emofeat's
    own errors, and what the system says about files (missing, permissions, disk full). With
    ``-v`` the traceback is shown too."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (EmofeatError, OSError) as err:
            if _verbose():
                raise
            if isinstance(err, OSError) and not isinstance(err, EmofeatError):
                where = f"{err.filename}: " if err.filename else ""
                text = f"{where}{err.strerror or err}"
                if err.errno == errno.ENOSPC:
                    text += " (free some space, then re-run the same command: it resumes)"
            else:
                text = str(err)
            click.secho(f"error: {text}", fg="red", err=True)
            sys.exit(2)

    return wrapper


def _fields(values) -> str:
    """``key value, key value`` for a report dict (nested dicts as key=value lists)."""
    if not isinstance(values, dict):
        return str(values)
    parts = []
    for key, value in values.items():
        if isinstance(value, dict):
            value = " ".join(f"{k}={v}" for k, v in value.items())
        parts.append(f"{str(key).replace('_', ' ')} {value}")
    return ", ".join(parts)


def _verbose() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().params.get("verbose"))


class VerboseAnywhere(click.Group):
    """``-v``/``--verbose`` is accepted after the subcommand too (``emofeat stack ... -v``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            head, tail = args[: args.index("--")], args[args.index("--") :]
        else:
            head, tail = args, []
        flags = [a for a in head if a in ("-v", "--verbose")]
        rest = [a for a in head if a not in ("-v", "--verbose")]
        return super().parse_args(ctx, flags[:1] + rest + tail)


@click.group(cls=VerboseAnywhere)
@click.version_option(__version__, prog_name="emofeat")
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
def main(verbose: bool) -> None:
    """Multimodal emotion recognition: fine-tune, extract feature stores, stack."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


# ---------------------------------------------------------------- data
@main.group()
def data() -> None:
    """Corpora and manifests."""


@data.command("synth")
@click.option(
    "--out", required=True, type=click.Path(path_type=Path), help="Folder to write the corpus into."
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--sessions", default=10, show_default=True, help="KEMDy20 sessions (2 speakers each)."
)
@click.option("--per-session", default=40, show_default=True, help="Utterances per session.")
@click.option("--aihub", default=200, show_default=True, help="AI Hub utterances (0: none).")
@click.option("--min-seconds", default=1.0, show_default=True)
@click.option("--max-seconds", default=2.0, show_default=True)
@friendly
def data_synth(out, seed, sessions, per_session, aihub, min_seconds, max_seconds):
    """Write a synthetic KEMDy20 + AI Hub corpus in the real on-disk formats."""
    from emofeat.corpus.synth import synthesize

    report = synthesize(
        out,
        seed=seed,
        sessions=sessions,
        per_session=per_session,
        aihub=aihub,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
    )
    for corpus, counts in report.items():
        click.echo(f"{corpus}: " + _fields(counts))
    click.echo(f"corpus written to {out}")


@data.command("prepare")
@click.option(
    "--kemdy20",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="KEMDy20_v1_1 folder.",
)
@click.option(
    "--aihub", type=click.Path(exists=True, file_okay=False, path_type=Path), help="AI Hub folder."
)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Generic corpus CSV (id, audio_path, text[, label, session, speaker, split]).",
)
@click.option(
    "--split",
    default="emo-ensemble",
    show_default=True,
    type=click.Choice(["emo-ensemble", "session-kfold", "mmm"]),
)
@click.option(
    "--folds", default=5, show_default=True, help="Cross-fitting folds of the train rows (0: none)."
)
@click.option("--text", default="raw", show_default=True, type=click.Choice(["raw", "clean"]))
@click.option(
    "--multilabel", default="drop", show_default=True, type=click.Choice(["drop", "first", "soft"])
)
@click.option("--seed", default=0, show_default=True, help="Seed of the fold assignment.")
@click.option("--skip-missing", is_flag=True, help="Leave out utterances whose wav/txt is missing.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Manifest CSV to write.",
)
@config_option
@friendly
def data_prepare(**params):
    """Read corpora into a manifest with a split recipe."""
    from emofeat.corpus.prepare import prepare

    p = _configured(params, rename={"csv": "csv_path"})
    _need(p, "out")
    out = p["out"]
    manifest, report = prepare(
        out,
        kemdy20=p["kemdy20"],
        aihub=p["aihub"],
        csv=p["csv_path"],
        split=p["split"],
        folds=p["folds"],
        text=p["text"],
        multilabel=p["multilabel"],
        seed=p["seed"],
        skip_missing=p["skip_missing"],
    )
    for corpus, r in report.items():
        skipped = r.pop("skipped_missing", [])
        click.echo(
            f"{corpus}: "
            + _fields(r)
            + (f", skipped (missing files): {len(skipped)}" if skipped else "")
        )
    f = manifest.frame
    click.echo(
        f"wrote {out}: {len(f)} utterances, {int((f.split == 'train').sum())} train, {int((f.split == 'test').sum())} test, {manifest.num_folds} folds"
    )


@data.command("stats")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option(
    "--plot",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write class_counts.csv and the class-distribution and valence/arousal figures here.",
)
@click.option("--log", "log_scale", is_flag=True, help="Log-scale count axes.")
@friendly
def data_stats(manifest, plot, log_scale):
    """Class counts per corpus, split and fold."""
    from emofeat.corpus.manifest import read_manifest
    from emofeat.corpus.stats import class_counts, plot_stats

    m = read_manifest(manifest)
    click.echo(class_counts(m).to_string())
    if plot:
        for path in plot_stats(m, plot, log_scale):
            click.echo(f"wrote {path}")


# ---------------------------------------------------------------- models
@main.group()
def models() -> None:
    """Model helpers."""


@models.command("tiny")
@click.option("--kind", required=True, type=click.Choice(["kobert", "kcelectra", "wav2vec2"]))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--manifest",
    type=click.Path(path_type=Path),
    help="Texts to train KoBERT's SentencePiece tokenizer on.",
)
@click.option("--hidden", default=64, show_default=True)
@click.option("--layers", default=2, show_default=True)
@click.option("--seed", default=0, show_default=True)
@friendly
def models_tiny(kind, out, manifest, hidden, layers, seed):
    """Build a tiny random model in the on-disk format of the hub model."""
    from emofeat.encoders.tiny import build_tiny_electra, build_tiny_kobert, build_tiny_wav2vec2

    if kind in ("kobert", "kcelectra"):
        if not manifest:
            raise click.UsageError(
                f"--kind {kind} needs --manifest (its texts make the vocabulary)"
            )
        from emofeat.corpus.manifest import read_manifest

        build = build_tiny_kobert if kind == "kobert" else build_tiny_electra
        texts = list(read_manifest(manifest).frame["text"])
        build(out, texts, hidden=hidden, layers=layers, seed=seed)
    else:
        build_tiny_wav2vec2(out, hidden=hidden, layers=layers, seed=seed)
    click.echo(f"wrote tiny {kind} to {out}")


# ---------------------------------------------------------------- finetune
@main.command()
@click.option("--model", help="kobert, wav2vec2, a hub id or a local folder.")
@model_path_option
@manifest_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder, e.g. runs/kobert-p05 (default with --config RUN/config.yaml: RUN).",
)
@click.option("--preset", type=click.Choice(list(PRESETS)))
@config_option
@click.option(
    "--folds",
    type=int,
    help="Cross-fitting folds (default: the manifest's; 0: one model on all train rows).",
)
@click.option("--dropout", type=float)
@click.option(
    "--reverse/--no-reverse",
    default=None,
    help="Time-reverse the audio (the reference's second speech model).",
)
@click.option("--epochs", type=float)
@click.option("--batch-size", type=int)
@click.option("--grad-accum", type=int)
@click.option("--lr", type=float)
@click.option("--max-len", type=int, help="Text: token limit.")
@click.option("--seed", type=int)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]))
@click.option(
    "--skip-bad",
    is_flag=True,
    default=None,
    help="Leave out unreadable audio / empty text (recorded in skipped.csv).",
)
@click.option(
    "--select",
    type=click.Choice(["none", "inner"]),
    help="What chooses the kept weights: none (final weights; reference presets) or inner "
    "(best checkpoint and early stopping on a group-aware split of the fold model's own "
    "training rows). Never the held-out fold.",
)
@click.option("--overwrite", is_flag=True, help="Replace a run folder made with other options.")
@click.option("--print-config", is_flag=True, help="Print the resolved options as YAML and exit.")
@friendly
def finetune(
    model, model_path, manifest, out, preset, config_file, overwrite, print_config, **options
):
    """Fine-tune a classifier per fold (cross-fitting) with transformers.Trainer."""
    from emofeat.configfile import read_options
    from emofeat.finetune import finetune as finetune_run
    from emofeat.finetune import resolve_config

    recorded = read_options(config_file) if config_file else {}
    manifest = manifest or recorded.get("manifest")
    if not out and config_file and config_file.name == "config.yaml" and "family" in recorded:
        out = config_file.parent  # a run's own record: re-run (resume) that run
    cfg = resolve_config(
        preset,
        config_file,
        model=model,
        model_path=str(model_path) if model_path else None,
        **options,
    )
    if print_config:
        import dataclasses

        from emofeat.provenance import dump_yaml

        click.echo(dump_yaml(dataclasses.asdict(cfg)), nl=False)
        return
    _need({"manifest": manifest, "out": out}, "manifest", "out")
    results = finetune_run(manifest, out, cfg, overwrite=overwrite)
    from emofeat.runs import fold_summary

    _print_folds(results, fold_summary(results))
    click.echo(f"run written to {out}")


def _print_folds(results: dict, summary: dict) -> None:
    """Each fold's held-out figures and their mean ± std."""
    for fold, met in results.items():
        click.echo(
            f"fold {fold}: "
            + ", ".join(f"{k} {met[k]:.4f}" for k in ("accuracy", "macro_f1", "uar") if k in met)
        )
    if summary:
        click.echo(
            "held-out folds: "
            + ", ".join(
                f"{k} {v['mean']:.4f} ± {v['std']:.4f}" for k, v in summary.items() if k != "loss"
            )
        )


# ---------------------------------------------------------------- extract
@main.command()
@click.option("--model", help="Frozen encoder: kobert, wav2vec2, a hub id or a folder.")
@model_path_option
@click.option(
    "--run",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A fine-tuned run (out-of-fold logits).",
)
@manifest_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Store to write, e.g. store/kobert.h5 (its options are recorded in store/kobert.yaml).",
)
@click.option(
    "--layers",
    default="last",
    show_default=True,
    help="last, all, or hidden-state indices like 0,6,12.",
)
@click.option(
    "--pooling", default="mean", show_default=True, type=click.Choice(["mean", "mean+std"])
)
@click.option(
    "--batch-seconds",
    type=float,
    default=None,
    help="Speech: padded audio seconds per batch (default 64 on GPU, 12 on CPU).",
)
@click.option(
    "--batch-size", type=int, default=32, show_default=True, help="Text: utterances per batch."
)
@click.option(
    "--dtype",
    default="float32",
    show_default=True,
    type=click.Choice(["float16", "float32"]),
    help="Embedding storage type.",
)
@click.option(
    "--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"])
)
@click.option(
    "--precision", default="fp32", show_default=True, type=click.Choice(["fp32", "bf16", "fp16"])
)
@click.option(
    "--max-seconds",
    type=float,
    default=20.0,
    show_default=True,
    help="Speech: window length for long clips.",
)
@click.option("--max-len", type=int, help="Text: token limit (default: the run's, else 64).")
@click.option(
    "--flush-rows",
    type=int,
    help="Rows per write window (default 2048, 256 with --sequence): batched by length inside "
    "it and written as one block; a kill loses at most the rows since the last write (one "
    "window, or 5 s of compute), recomputed on resume.",
)
@click.option(
    "--sequence",
    is_flag=True,
    help="Also store each row's last-layer token/frame states (float16), for MMM.",
)
@click.option(
    "--sequence-length",
    type=int,
    help="Positions a stored sequence keeps (default: text --max-len, speech 512 frames).",
)
@click.option(
    "--reverse/--no-reverse", default=None, help="Speech: time-reverse (default: the run's)."
)
@click.option(
    "--skip-bad", is_flag=True, help="Record unreadable rows as skipped instead of stopping."
)
@click.option(
    "--workers",
    type=int,
    help="Input worker processes that read and encode the next batches while one computes "
    "(default: none on CPU, where the model's threads use every core; up to 8 on CUDA).",
)
@click.option("--overwrite", is_flag=True, help="Replace a store made for other rows or options.")
@config_option
@friendly
def extract(**params):
    """Pooled embeddings (and out-of-fold logits with --run) into an HDF5 store; resumable."""
    from emofeat.extract import ExtractConfig
    from emofeat.extract import extract as do_extract

    p = _configured(params)
    _need(p, "manifest", "out")
    options = {k: v for k, v in p.items() if k not in ("manifest", "out", "config_file")}
    for key in ("model_path", "run"):
        options[key] = str(options[key]) if options.get(key) else None
    out = p["out"]
    do_extract(p["manifest"], out, ExtractConfig(**options))
    click.echo(f"store written to {out}")


# ---------------------------------------------------------------- stack
@main.command()
@click.option(
    "--store",
    "stores",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A feature store; repeat for each base model.",
)
@click.option(
    "--meta",
    type=click.Choice(list(META_LEARNERS)),
    help="; ".join(f"{m.name}: {m.summary}" for m in META_LEARNERS.values()),
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
@click.option(
    "--allow-incomplete", is_flag=True, help="Use stores whose extraction did not finish."
)
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

    p = _configured(params, out_beside="config.yaml")
    _need(p, "stores", "meta", "out")
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


# ---------------------------------------------------------------- fuse
@main.command()
@click.option(
    "--model", "model", default="mmm", show_default=True, type=click.Choice(FUSION_MODELS)
)
@click.option(
    "--store",
    "stores",
    multiple=True,
    type=click.Path(path_type=Path),
    help="MMM: a text sequence store, then an audio one (extract --sequence).",
)
@click.option("--epochs", type=int, help="Epochs (published: 30).")
@click.option("--lr", type=float, help="AdamW learning rate (published: 5e-5).")
@click.option("--batch-size", type=int, help="Batch size (published: 64).")
@click.option("--grad-accum", type=int, help="Gradient accumulation (published: 8).")
@click.option("--fusion", type=click.Choice(["mixer", "concat", "3way"]), help="MMM's fusion.")
@click.option(
    "--faithful-norm/--no-faithful-norm",
    default=None,
    help="MMM's second LayerNorm on the token-mixing output, as the published code (default), "
    "or on the residual sum.",
)
@click.option("--class-weights", is_flag=True, default=None, help="Weight classes N/count.")
@click.option("--seed", type=int, help="Seed (published: 1024).")
@click.option(
    "--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"])
)
@click.option(
    "--allow-in-sample",
    is_flag=True,
    help="Fuse stores whose train rows are in-sample or unknown (the fused store says so).",
)
@click.option(
    "--allow-incomplete", is_flag=True, help="Use stores whose extraction did not finish."
)
@click.option("--overwrite", is_flag=True, help="Replace a fusion run made with other options.")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Run folder, e.g. runs/mmm."
)
@config_option
@friendly
def fuse(**params):
    """Cross-fit a fusion model (MMM) over stores into a run and a store of its own (OUT/mmm.h5)."""
    from emofeat.fuse import RUN_DERIVED
    from emofeat.fuse import fuse as fuse_stores
    from emofeat.mmm import MMMConfig
    from emofeat.runs import fold_summary

    p = _configured(params, ignore=RUN_DERIVED, out_beside="config.yaml")
    _need(p, "stores", "out")
    keys = ("epochs", "lr", "batch_size", "grad_accum", "fusion", "faithful_norm")
    keys += ("class_weights", "seed", "device")
    config = MMMConfig(**{k: p[k] for k in keys if p[k] is not None})
    results = fuse_stores(
        p["stores"],
        p["out"],
        model=p["model"],
        config=config,
        allow_in_sample=p["allow_in_sample"],
        allow_incomplete=p["allow_incomplete"],
        overwrite=p["overwrite"],
    )
    _print_folds(results, fold_summary(results))
    click.echo(f"run written to {p['out']}; its store: {p['out'] / (p['model'] + '.h5')}")


@main.command()
@click.option(
    "--stack",
    "stack_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option("--store", "stores", multiple=True, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--allow-incomplete", is_flag=True)
@friendly
def predict(stack_dir, stores, out, allow_incomplete):
    """Predict with a fitted stack (loads its model.joblib: only use stacks you trust)."""
    from emofeat.stack.ensemble import predict as predict_stack

    predict_stack(stack_dir, stores, out, allow_incomplete)
    click.echo(f"wrote {out}")


@main.command()
@click.option(
    "--stack",
    "stack_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A stack folder written by `emofeat stack` (its model.joblib is loaded: trusted only).",
)
@click.option(
    "--csv",
    "csv_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="id, audio_path, text[, label] (audio paths relative to the CSV).",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--run",
    "runs",
    multiple=True,
    help="STORE=DIR: the run folder of one of the stack's stores, if it moved.",
)
@click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the new stores go (default: OUT.stores/); re-running resumes.",
)
@click.option(
    "--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"])
)
@click.option("--skip-bad", is_flag=True, help="Leave out unreadable audio / empty text.")
@friendly
def infer(stack_dir, csv_path, out, runs, work, device, skip_bad):
    """Predict new recordings with a trained stack: extract with every base run, then stack."""
    from emofeat.inference import infer as infer_rows

    overrides = {}
    for item in runs:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise click.BadParameter(f"{item!r}: expected STORE=DIR", param_hint="--run")
        overrides[name] = folder
    infer_rows(stack_dir, csv_path, out, overrides, work, device, skip_bad)
    click.echo(f"wrote {out}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write compare.md and compare.csv here.",
)
@friendly
def compare(paths, out):
    """One table across stack and run folders; mean ± std over seeds of the same configuration."""
    from emofeat.compare import compare as compare_folders
    from emofeat.compare import to_markdown

    click.echo(to_markdown(compare_folders(paths, out)), nl=False)


@main.command()
@click.option(
    "--store",
    "store_path",
    required=True,
    type=click.Path(path_type=Path),
    help="A store extracted with --layers all.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--meta", default="logreg", show_default=True, help="The head: logreg or lgbm.")
@click.option(
    "--weighted", is_flag=True, help="Also the SUPERB-style learned weighted sum of layers."
)
@click.option("--seed", default=0, show_default=True)
@friendly
def probe(store_path, out, meta, weighted, seed):
    """Layer-wise probes: CV score of a head on each stored layer (probe.csv, probe.png)."""
    from emofeat.probe import best_layer, probe_layers

    table = probe_layers(store_path, out, meta=meta, weighted=weighted, seed=seed)
    acc = table[table.metric == "accuracy"]
    for _, r in acc.iterrows():
        click.echo(f"{r['name']:>10}  accuracy {r['mean']:.4f} ± {r['std']:.4f}")
    click.echo(f"best layer by CV accuracy: {best_layer(table)}; wrote {out / 'probe.csv'}")


# ---------------------------------------------------------------- demo and recipe
@main.command()
@click.option(
    "--out", default="demo-out", show_default=True, type=click.Path(file_okay=False, path_type=Path)
)
@click.option("--seed", default=0, show_default=True)
@click.option("--folds", default=3, show_default=True)
@friendly
def demo(out, seed, folds):
    """The whole pipeline on a synthetic corpus with tiny models (minutes on 2 CPU cores)."""
    from emofeat.demo import demo as run_demo

    run_demo(out, seed=seed, folds=folds)


@main.group()
def recipe() -> None:
    """Documented end-to-end protocols on real data."""


@recipe.command("emo-ensemble")
@click.option("--kemdy20", type=click.Path(path_type=Path), help="KEMDy20_v1_1 folder.")
@click.option("--aihub", type=click.Path(path_type=Path), help="AI Hub folder (5차년도_2차).")
@click.option(
    "--kobert",
    default="kobert",
    show_default=True,
    help="KoBERT id or local copy of monologg/kobert.",
)
@click.option(
    "--wav2vec2",
    default="wav2vec2",
    show_default=True,
    help="wav2vec2 id or local copy of kresnik/wav2vec2-large-xlsr-korean.",
)
@click.option(
    "--kcelectra",
    default="kcelectra",
    show_default=True,
    help="MMM's text encoder: id or local copy of beomi/KcELECTRA-base.",
)
@click.option("--folds", default=5, show_default=True)
@click.option(
    "--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"])
)
@click.option(
    "--precision",
    default="fp16",
    show_default=True,
    type=click.Choice(["fp32", "bf16", "fp16"]),
    help="Extraction precision (GPU).",
)
@click.option(
    "--out",
    default="emo-ensemble",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check the inputs and print the steps; needs no GPU and no models.",
)
@click.option(
    "--protocol",
    default="crossfit",
    show_default=True,
    type=click.Choice(list(PROTOCOLS)),
    help="crossfit: K fold models per configuration, out-of-fold stores, every meta-learner. "
    "reference: as the reference ran (one model per configuration on all train rows, the "
    "fixed-weight soft vote).",
)
@config_option
@friendly
def recipe_emo_ensemble(**params):
    """The reference's models on KEMDy20 + AI Hub with the real encoders, and their ensembles."""
    from emofeat.recipe import emo_ensemble

    p = _configured(params, ignore=("dry_run",), out_beside="recipe.yaml")
    _need(p, "kemdy20")
    emo_ensemble(
        p["kemdy20"],
        aihub=p["aihub"],
        kobert=p["kobert"],
        wav2vec2=p["wav2vec2"],
        out=p["out"],
        folds=p["folds"],
        device=p["device"],
        precision=p["precision"],
        dry_run=p["dry_run"],
        protocol=p["protocol"],
        kcelectra=p["kcelectra"],
    )


# ---------------------------------------------------------------- store
@main.group()
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

    export_store(path, out, fmt, embedding)
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
    from emofeat.plots import plot_embedding

    plot_embedding(path, embedding, out, method=method, max_points=max_points, seed=seed)
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
