"""Cross-fitted fine-tuning with ``transformers.Trainer``.

Fold model k trains on the manifest's train rows with ``fold != k`` and is validated on fold k
(best checkpoint kept, early stopping), so that every train row later gets a prediction from a
model that never saw it (``emofeat extract --run``). ``folds=0`` trains one model on all train rows.

Output ``runs/NAME/``: ``config.yaml`` (resolved), ``fold-k/`` in ``save_pretrained`` format (model,
head, tokenizer or feature extractor) with ``metrics.json`` and ``log_history.json``, and
``skipped.csv`` for rows left out with ``skip_bad``. A finished fold is never retrained; an
interrupted fold resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from emofeat import labels as L
from emofeat.atomic import write_text
from emofeat.audio import AudioError, duration, load_audio
from emofeat.corpus.manifest import Manifest, read_manifest
from emofeat.encoders import ModelSpec, resolve
from emofeat.errors import EmofeatError
from emofeat.presets import PRESETS
from emofeat.provenance import dump_yaml, provenance

log = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    """Every option of a fine-tuning run; ``resolve_config`` fills it from preset, YAML and overrides."""

    model: str = "kobert"
    model_path: str | None = None
    preset: str | None = None
    folds: int | None = None  # None: the manifest's folds; 0: one model on all train rows
    epochs: float = 3
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 5e-5
    weight_decay: float = 0.01
    scheduler: str = "linear"
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    dropout: float = 0.1
    max_len: int = 64
    reverse: bool = False
    sample_rate: int = 16000
    fp16: bool = False  # used on CUDA only
    bf16: bool = False
    gradient_checkpointing: bool = False
    freeze_feature_encoder: bool = True
    early_stopping_patience: int = 3
    group_by_length: bool = True
    seed: int = 0
    device: str = "auto"
    skip_bad: bool = False
    max_steps: int = -1  # for smoke tests
    label_names: list[str] = field(default_factory=lambda: list(L.LABEL_NAMES))


def resolve_config(
    preset: str | None = None, config_file: str | Path | None = None, **overrides: Any
) -> FinetuneConfig:
    """Preset values, then a YAML file, then explicit overrides (``None`` means not given)."""
    values: dict[str, Any] = {}
    if preset:
        if preset not in PRESETS:
            raise EmofeatError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        values.update(PRESETS[preset], preset=preset)
    if config_file:
        loaded = yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise EmofeatError(f"{config_file}: expected a mapping of options")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(FinetuneConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise EmofeatError(f"unknown option(s) {unknown}; known: {sorted(known)}")
    return FinetuneConfig(**values)


def pick_device(device: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise EmofeatError("--device cuda asked for, but no CUDA device is available")
    return device


# ----------------------------------------------------------------------------------------- data
class UtteranceDataset(torch.utils.data.Dataset):
    """Rows of a manifest as training items: ``text`` or decoded ``audio``, and ``labels``."""

    def __init__(
        self,
        manifest: Manifest,
        rows: np.ndarray,
        modality: str,
        cfg: FinetuneConfig,
        min_len: int = 1,
        lengths: np.ndarray | None = None,
    ):
        self.m, self.rows, self.modality, self.cfg, self.min_len = (
            manifest,
            np.asarray(rows),
            modality,
            cfg,
            min_len,
        )
        self.y = manifest.label_indices[self.rows].astype(int)
        self.lengths = lengths

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = int(self.rows[i])
        item: dict[str, Any] = {"labels": int(self.y[i])}
        if self.modality == "text":
            item["text"] = self.m.frame["text"].iat[row]
        else:
            x = load_audio(self.m.audio_path(row), self.cfg.sample_rate, self.cfg.reverse)
            if len(x) < self.min_len:  # shorter than the receptive field: pad with silence
                x = np.pad(x, (0, self.min_len - len(x)))
            item["audio"] = x
        return item


def check_rows(
    manifest: Manifest, rows: np.ndarray, modality: str, skip_bad: bool, min_seconds: float = 0.0
) -> tuple[np.ndarray, list[tuple[str, str]], np.ndarray]:
    """Rows that can be used, the (id, reason) of rows that cannot, and each usable row's length.

    Text: empty transcripts are bad. Speech: unreadable headers are bad; clips shorter than the
    receptive field are padded (and counted in the log). Without ``skip_bad`` a bad row is an error.
    """
    good, bad, lengths, short = [], [], [], 0
    for r in rows:
        uid = manifest.frame["id"].iat[r]
        if modality == "text":
            text = manifest.frame["text"].iat[r]
            if not text.strip():
                bad.append((uid, "empty text"))
                continue
            lengths.append(len(text))
        else:
            try:
                d = duration(manifest.audio_path(r))
            except AudioError as err:
                bad.append((uid, str(err)))
                continue
            short += d < min_seconds
            lengths.append(d)
        good.append(r)
    if bad and not skip_bad:
        listing = "\n".join(f"  {u}: {why}" for u, why in bad[:10])
        raise EmofeatError(
            f"{len(bad)} unusable utterance(s); first ones:\n{listing}\nFix them, or pass --skip-bad to leave them out (recorded in the run)."
        )
    if short:
        log.warning(
            "%d clip(s) shorter than the model's receptive field (%.3f s) are padded with silence",
            short,
            min_seconds,
        )
    return np.asarray(good, dtype=int), bad, np.asarray(lengths)


# --------------------------------------------------------------------------------------- models
def build_model(spec: ModelSpec, cfg: FinetuneConfig):
    """(model, processor, collator, min_samples) for a fresh classifier on a pretrained encoder."""
    if spec.modality == "text":
        from emofeat.encoders.text import TextCollator, load_text_classifier, load_tokenizer

        tok = load_tokenizer(spec)
        model = load_text_classifier(
            spec.source, len(cfg.label_names), cfg.dropout, cfg.label_names
        )
        return model, tok, TextCollator(tok, cfg.max_len), 1
    from emofeat.encoders.speech import (
        SpeechClassifier,
        SpeechCollator,
        load_feature_extractor,
        load_speech_encoder,
        min_samples,
    )

    encoder = load_speech_encoder(spec.source)
    fe = load_feature_extractor(spec.source)
    model = SpeechClassifier(encoder, len(cfg.label_names), cfg.dropout, cfg.label_names)
    if cfg.freeze_feature_encoder:
        model.freeze_feature_encoder()
    return model, fe, SpeechCollator(fe, cfg.sample_rate), min_samples(encoder)


def load_fold_model(fold_dir: str | Path, modality: str):
    """(model, processor) of a fine-tuned fold folder, in eval mode."""
    fold_dir = Path(fold_dir)
    if modality == "text":
        from emofeat.encoders.text import load_text_classifier, load_tokenizer

        return load_text_classifier(fold_dir).eval(), load_tokenizer(resolve(str(fold_dir)))
    from emofeat.encoders.speech import SpeechClassifier, load_feature_extractor

    return SpeechClassifier.from_pretrained(fold_dir).eval(), load_feature_extractor(fold_dir)


def _metrics(pred) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    y = pred.label_ids
    p = np.asarray(
        pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    ).argmax(-1)
    return {
        "accuracy": float(accuracy_score(y, p)),
        "macro_f1": float(f1_score(y, p, average="macro")),
    }


# ----------------------------------------------------------------------------------------- train
def _trainer_class():
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class EmofeatTrainer(Trainer):
        """Length grouping from precomputed lengths (the stock one would decode every clip)."""

        def _get_train_sampler(self, *args, **kwargs):
            lengths = getattr(self.train_dataset, "lengths", None)
            if self.args.group_by_length and lengths is not None:
                size = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps
                g = torch.Generator()
                g.manual_seed(self.args.seed)
                return LengthGroupedSampler(size, lengths=list(map(float, lengths)), generator=g)
            return super()._get_train_sampler(*args, **kwargs)

        def _get_eval_sampler(self, eval_dataset):
            return torch.utils.data.SequentialSampler(eval_dataset)

    return EmofeatTrainer


def train_fold(
    manifest: Manifest,
    spec: ModelSpec,
    cfg: FinetuneConfig,
    fold: int,
    out: Path,
    rows: np.ndarray,
    lengths: np.ndarray,
) -> dict:
    """Train one fold model (``fold`` -1: all train rows, no validation) into ``out``."""
    from transformers import EarlyStoppingCallback, TrainingArguments, set_seed

    set_seed(cfg.seed)
    device = pick_device(cfg.device)
    model, processor, collator, min_len = build_model(spec, cfg)
    folds = manifest.fold[rows]
    train_mask = folds != fold if fold >= 0 else np.ones(len(rows), bool)
    train = UtteranceDataset(
        manifest, rows[train_mask], spec.modality, cfg, min_len, lengths[train_mask]
    )
    evaluate = (
        UtteranceDataset(manifest, rows[~train_mask], spec.modality, cfg, min_len)
        if fold >= 0
        else None
    )
    ckpt = out / "checkpoints"
    args = TrainingArguments(
        output_dir=str(ckpt),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.scheduler,
        warmup_ratio=cfg.warmup_ratio,
        max_grad_norm=cfg.max_grad_norm,
        eval_strategy="epoch" if evaluate is not None else "no",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=evaluate is not None,
        metric_for_best_model="accuracy",
        greater_is_better=True,
        logging_strategy="epoch",
        report_to="none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        fp16=cfg.fp16 and device == "cuda",
        bf16=cfg.bf16,
        gradient_checkpointing=cfg.gradient_checkpointing,
        group_by_length=cfg.group_by_length,
        remove_unused_columns=False,
        use_cpu=device == "cpu",
        save_safetensors=True,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    callbacks = (
        [EarlyStoppingCallback(cfg.early_stopping_patience)]
        if evaluate is not None and cfg.early_stopping_patience > 0
        else []
    )
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluate,
        data_collator=collator,
        compute_metrics=_metrics,
        callbacks=callbacks,
    )
    resume = ckpt.is_dir() and any(ckpt.glob("checkpoint-*"))
    if resume:
        log.info("fold %d: resuming from %s", fold, ckpt)
    trainer.train(resume_from_checkpoint=resume or None)
    metrics = trainer.evaluate() if evaluate is not None else {}
    metrics = {k.removeprefix("eval_"): v for k, v in metrics.items()}
    metrics.update(
        fold=fold, train_rows=len(train), eval_rows=len(evaluate) if evaluate is not None else 0
    )
    # Final folder: written under a temporary name, then renamed, so a fold folder is either whole or absent.
    tmp = out.with_name(out.name + ".saving")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    trainer.model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    shutil.rmtree(ckpt, ignore_errors=True)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return metrics


def finetune(
    manifest: str | Path | Manifest, out: str | Path, cfg: FinetuneConfig, overwrite: bool = False
) -> dict:
    """Fine-tune with cross-fitting into ``out``; returns per-fold validation metrics.

    Re-running the same command continues an interrupted run: finished folds are kept, an
    unfinished one resumes from its last checkpoint. A run folder made with another config is
    refused unless ``overwrite``.
    """
    m = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    spec = resolve(cfg.model, cfg.model_path)
    out = Path(out)
    labels = m.label_indices
    unknown_train = int(((m.split == "train") & (labels < 0)).sum())
    rows = np.flatnonzero((m.split == "train") & (labels >= 0))
    if not len(rows):
        raise EmofeatError(f"{m.root}: the manifest has no labelled train rows")
    k = m.num_folds if cfg.folds is None else cfg.folds
    if k not in (0, m.num_folds):
        # Fewer fold models than manifest folds would train every model on some rows that the
        # extraction then treats as out-of-fold.
        raise EmofeatError(
            f"--folds {k}, but the manifest has {m.num_folds} folds; use --folds {m.num_folds} "
            f"(or 0 for one model), or prepare the manifest with --folds {k}"
        )
    cfg.folds = k
    config = {
        **dataclasses.asdict(cfg),
        "modality": spec.modality,
        "source": spec.source,
        "manifest": str(m.path or m.root),
        "split_scheme": m.split_scheme,
    }
    saved = out / "config.yaml"
    if saved.is_file() and not overwrite:
        old = yaml.safe_load(saved.read_text(encoding="utf-8")).get("config", {})
        differ = sorted(
            key for key in config if old.get(key) != config[key] and key not in ("device",)
        )
        if differ:
            raise EmofeatError(
                f"{out} holds a run made with other options ({', '.join(differ)}); pass --overwrite or use another --out"
            )
    elif overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(saved, dump_yaml(provenance(config, cfg.seed)))
    if unknown_train:
        log.warning("%d train row(s) without a label are not used for training", unknown_train)
    min_seconds = 0.0
    if spec.modality == "speech":
        min_seconds = 400 / cfg.sample_rate  # wav2vec2-family receptive field
    rows, bad, lengths = check_rows(m, rows, spec.modality, cfg.skip_bad, min_seconds)
    if bad:
        pd.DataFrame(bad, columns=["id", "reason"]).to_csv(out / "skipped.csv", index=False)
    results = {}
    for fold in range(k) if k else [-1]:
        fold_dir = out / (f"fold-{fold}" if fold >= 0 else "fold-all")
        if (fold_dir / "metrics.json").is_file():
            results[fold] = json.loads((fold_dir / "metrics.json").read_text())
            log.info("fold %d already trained: %s", fold, results[fold])
            continue
        results[fold] = train_fold(m, spec, cfg, fold, fold_dir, rows, lengths)
    write_text(out / "metrics.json", json.dumps({str(k): v for k, v in results.items()}, indent=2))
    return results


def read_run_config(run: str | Path) -> dict:
    """The resolved config of a fine-tuning run (``runs/NAME/config.yaml``)."""
    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise EmofeatError(f"{run}: no config.yaml; not a run folder written by `emofeat finetune`")
    return yaml.safe_load(path.read_text(encoding="utf-8"))["config"]


def fold_dirs(run: str | Path) -> list[Path]:
    """The fold model folders of a run, in fold order (``fold-all`` for a run without folds)."""
    run = Path(run)
    cfg = read_run_config(run)
    names = [f"fold-{k}" for k in range(cfg["folds"])] if cfg["folds"] else ["fold-all"]
    missing = [n for n in names if not (run / n / "metrics.json").is_file()]
    if missing:
        raise EmofeatError(
            f"{run}: fold model(s) {missing} not trained yet; re-run `emofeat finetune` to finish the run"
        )
    return [run / n for n in names]
