"""Cross-fitted fine-tuning with ``transformers.Trainer``.

Fold model k trains on the manifest's train rows with ``fold != k`` and makes no decision on fold
k (final weights, or a checkpoint chosen on an inner split of its own training rows), so that
every train row later gets a prediction from a model that neither saw it nor chose on it
(``emofeat extract --run``). ``folds=0`` trains one model on all train rows.

The run folder's layout is owned by :class:`emofeat.runs.RunFolder`. A finished fold is never
retrained; an interrupted fold resumes from its last checkpoint. Everything that differs between
text and speech is asked of the model's encoder family (:mod:`emofeat.encoders`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emofeat import distributed
from emofeat.corpus.manifest import Manifest, read_manifest
from emofeat.crossfit import FoldPlan
from emofeat.device import pick_device
from emofeat.encoders import ModelSpec, resolve
from emofeat.encoders.base import Encoder, InputOptions, RowCheck
from emofeat.encoders.source import loading, local_source
from emofeat.errors import EmofeatError
from emofeat.extract.inputs import default_workers
from emofeat.finetune.config import FinetuneConfig
from emofeat.metrics import classification_metrics
from emofeat.options import OptionError, option_defaults
from emofeat.runs import RunFolder
from emofeat.tasks import output_names, target, task_loss, task_metrics

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------- data
class UtteranceDataset(torch.utils.data.Dataset):
    """Rows of a manifest as training items ``{"input": text or waveform, "labels": target}``
    (the class, or ``[class, valence, arousal]`` for a task with dimensions:
    :func:`emofeat.tasks.target`)."""

    def __init__(
        self,
        manifest: Manifest,
        rows: np.ndarray,
        encoder: Encoder,
        *,
        min_len: int = 1,
        lengths: np.ndarray | None = None,
        task: str = "categorical",
    ):
        self.manifest, self.rows, self.encoder, self.min_len = (
            manifest,
            np.asarray(rows),
            encoder,
            min_len,
        )
        self.y = manifest.label_indices[self.rows].astype(int)
        self.dims = manifest.dimensions[self.rows]
        self.task = task
        self.lengths = lengths  # read by the length-grouping sampler

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        pieces = self.encoder.load_pieces(self.manifest, int(self.rows[i]), self.min_len)
        # One piece (whole clips, a transcript), except for an encoder with a fixed span: Whisper
        # trains on a clip's first 30 s, which is all its feature extractor would keep.
        return {"input": pieces[0], "labels": target(self.y[i], self.dims[i], self.task)}


# --------------------------------------------------------------------------------------- models
def input_options(cfg: FinetuneConfig) -> InputOptions:
    """What the run's models see of a row (recorded in the run and re-applied by extraction)."""
    return InputOptions(max_len=cfg.max_len, sample_rate=cfg.sample_rate, reverse=cfg.reverse)


def build_model(
    spec: ModelSpec,
    cfg: FinetuneConfig,
    label_names: Sequence[str],
    encoder: Encoder | None = None,
) -> tuple[torch.nn.Module, Encoder, int]:
    """(classifier, encoder, minimum input length) for a fresh head of ``label_names`` (the
    manifest's classes) on a pretrained encoder (``encoder``: one already loaded, whose
    tokenizer or feature extractor is reused)."""
    source = local_source(spec.source)
    encoder = encoder or spec.encoder_class.from_folder(source, input_options(cfg))
    outputs = output_names(label_names, cfg.task)  # the classes, then the dimensions
    model = encoder.new_classifier(source, outputs, cfg.dropout, cfg.attention)
    if cfg.freeze_feature_encoder and hasattr(model, "freeze_feature_encoder"):
        model.freeze_feature_encoder()
    return model, encoder, encoder.min_input_length(model.config)


def _metrics(pred, *, task: str = "categorical", n_classes: int = 0) -> dict[str, float]:
    """Trainer's compute_metrics: the figures of :mod:`emofeat.metrics` (Trainer adds the loss):
    the classification figures over the rows with a class, and per dimension CCC, Pearson's r
    and RMSE over the rows that carry it (``valence_ccc``, ..., ``mean_ccc``; ``valence_n``)."""
    outputs = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    outputs = np.asarray(outputs)
    if task == "categorical":
        return classification_metrics(pred.label_ids, outputs.argmax(-1))
    return task_metrics(outputs, pred.label_ids, n_classes, task)


# ----------------------------------------------------------------------------------------- train
class LengthBucketSampler(torch.utils.data.Sampler[int]):
    """Training rows in batches of similar length, the batches in random order.

    Each epoch sorts the rows by their length times a random factor in [1 - jitter, 1 + jitter]
    (so batches differ from epoch to epoch), cuts the order into batches of ``batch_size`` and
    yields them in random order, the short remainder last (the DataLoader cuts the yielded rows
    every ``batch_size``: a short batch anywhere else would shift every batch after it).
    ``benchmarks/finetune_bench.py`` reports its padding beside that of transformers'
    LengthGroupedSampler (which sorts within random megabatches) on the same rows."""

    def __init__(self, lengths, batch_size: int, *, seed: int, jitter: float = 0.05):
        self.lengths = np.asarray(lengths, dtype=np.float64)
        self.batch_size, self.seed, self.jitter = int(batch_size), int(seed), jitter
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order to yield next (Trainer sets it, through accelerate, before
        each epoch), so that a run resumed at epoch ``e`` sees epoch ``e``'s order."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def _order(self, generator: torch.Generator) -> list[int]:
        n, size = len(self.lengths), self.batch_size
        noise = torch.rand(n, generator=generator, dtype=torch.float64).numpy()
        order = np.argsort(self.lengths * (1 + self.jitter * (2 * noise - 1)), kind="stable")
        full = n // size * size
        batches = order[:full].reshape(-1, size)
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return [i for b in shuffled for i in batches[b].tolist()] + order[full:].tolist()

    def __iter__(self) -> Iterator[int]:
        # One generator seeded once, drawn epoch after epoch: epoch e's order is the (e+1)-th
        # draw. It is replayed from the seed, so the order depends on (seed, epoch) alone and a
        # resumed run is identical to an uninterrupted one.
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        for _ in range(self.epoch):
            self._order(generator)
        order = self._order(generator)
        self.epoch += 1  # without set_epoch, successive passes are successive epochs
        yield from order


def _trainer_class():
    from transformers import Trainer

    class EmofeatTrainer(Trainer):
        """Length grouping from precomputed lengths (the stock one would decode every clip), and
        a stop at the first non-finite loss (NaN weights are never saved as a model).
        ``batch_order``: :data:`~emofeat.finetune.config.BATCH_ORDERS`."""

        def __init__(self, *args, batch_order: str = "length", loss: dict | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.batch_order = batch_order
            self.loss = loss  # task_loss's options; None: the model's own cross-entropy

        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            if self.loss is None:
                return super().compute_loss(model, inputs, return_outputs, **kwargs)
            inputs = dict(inputs)
            targets = inputs.pop("labels")
            outputs = model(**inputs)
            loss = task_loss(outputs.logits, targets, **self.loss)
            return (loss, outputs) if return_outputs else loss

        def training_step(self, model, inputs, *args, **kwargs):
            loss = super().training_step(model, inputs, *args, **kwargs)
            if not torch.isfinite(loss).all():
                raise EmofeatError(
                    f"non-finite training loss ({float(loss)}) at step {self.state.global_step + 1} "
                    f"of {self.args.output_dir.rsplit('/', 2)[-2]}; check the inputs for NaN/Inf "
                    "or lower the learning rate. Nothing of this fold was kept."
                )
            return loss

        def _get_train_sampler(self, *args, **kwargs):
            lengths = getattr(self.train_dataset, "lengths", None)
            if self.batch_order == "file":
                return torch.utils.data.SequentialSampler(self.train_dataset)
            if self.batch_order == "length" and lengths is not None:
                # A global batch: every process's share of it (DDP) has similar lengths too.
                size = self.args.per_device_train_batch_size * self.args.world_size
                return LengthBucketSampler(lengths, size, seed=self.args.seed)
            return super()._get_train_sampler(*args, **kwargs)

        def _get_eval_sampler(self, eval_dataset):
            return torch.utils.data.SequentialSampler(eval_dataset)

    return EmofeatTrainer


@dataclass
class FoldRows:
    """The rows of one fold model: those it fits, those that choose its checkpoint (``select
    inner``) and those it holds out (evaluated afterwards, for the record only)."""

    fit: np.ndarray
    select: np.ndarray
    held: np.ndarray


def fold_rows(plan: FoldPlan, fold: int, cfg: FinetuneConfig) -> FoldRows:
    """The rows of fold model ``fold`` by the cross-fitting rule (:mod:`emofeat.crossfit`),
    with ``train_fraction`` (a random share of the fit rows, the rest never used) and the inner
    split of ``select="inner"`` (group-aware, from the fit rows alone)."""
    fit, held = plan.fit_rows(fold), plan.held_rows(fold)
    if cfg.train_fraction < 1:
        from sklearn.model_selection import train_test_split

        fit = np.sort(
            train_test_split(fit, train_size=cfg.train_fraction, random_state=cfg.seed)[0]
        )
    select = fit[:0]
    if cfg.select == "inner":
        fit, select = plan.inner_split(fit, cfg.inner_fraction, cfg.seed)
    return FoldRows(fit, select, held)


def train_fold(
    manifest: Manifest,
    plan: FoldPlan,
    *,
    spec: ModelSpec,
    cfg: FinetuneConfig,
    fold: int,
    run: RunFolder,
    length_of: dict[int, float],
    encoder: Encoder | None = None,
) -> dict:
    """Train fold model ``fold`` (-1: one model on all train rows) into the run.

    The rows it fits and holds out come from ``plan`` (:func:`fold_rows`); it makes no decision
    on its held-out rows: with ``select="none"`` it keeps its final weights; with ``"inner"``
    the best checkpoint and early stopping are chosen on a group-aware split of its training
    rows. The held-out rows are evaluated afterwards, for the record only.

    ``length_of`` maps row index → input length (length grouping); ``encoder`` is one already
    loaded (its tokenizer or feature extractor is reused). Returns the fold's held-out metrics
    and how it was trained (as saved in its ``metrics.json``).
    """
    from transformers import set_seed

    set_seed(cfg.seed)
    device = pick_device(cfg.device)
    model, encoder, min_len = build_model(spec, cfg, manifest.label_names, encoder)
    rows = fold_rows(plan, fold, cfg)

    def dataset(part: np.ndarray, with_lengths: bool = False) -> UtteranceDataset:
        lens = np.array([length_of[r] for r in part.tolist()]) if with_lengths else None
        return UtteranceDataset(
            manifest, part, encoder, min_len=min_len, lengths=lens, task=cfg.task
        )

    select = dataset(rows.select) if len(rows.select) else None
    trainer = _trainer(
        model,
        cfg=cfg,
        args=_training_arguments(
            cfg, run=run, fold=fold, device=device, encoder=encoder, selects=select is not None
        ),
        train=dataset(rows.fit, with_lengths=True),
        select=select,
        encoder=encoder,
        label=f"{run.path.name} {run.fold_name(fold)}",
        manifest_classes=manifest.label_names,
    )
    resume = run.last_checkpoint(fold)
    if resume is not None:
        log.info("fold %d: resuming from %s", fold, resume)
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    metrics: dict[str, Any] = {}  # (evaluation is collective: every process takes part)
    if len(rows.held):  # the held-out fold, evaluated after all decisions were made
        metrics = trainer.evaluate(eval_dataset=dataset(rows.held), metric_key_prefix="heldout")
        metrics = {k.removeprefix("heldout_"): v for k, v in metrics.items()}
    metrics.update(_how_trained(trainer, fold=fold, rows=rows, cfg=cfg))
    _save_fold(
        run, fold, trainer=trainer, encoder=encoder, metrics=metrics, rows=rows, ids=manifest.ids
    )
    distributed.barrier()
    return metrics


def _save_fold(
    run: RunFolder,
    fold: int,
    *,
    trainer,
    encoder: Encoder,
    metrics: dict[str, Any],
    rows: FoldRows,
    ids: np.ndarray,
) -> None:
    """The main process saves the fold (whole or not at all) and drops its checkpoints; the
    others wait for it."""
    if distributed.is_main():
        run.save_fold(
            fold,
            lambda folder: encoder.save(trainer.model, str(folder)),
            metrics=metrics,
            log_history=trainer.state.log_history,
            train_ids=ids[rows.fit],
            select_ids=ids[rows.select],
        )
        shutil.rmtree(run.checkpoints(fold), ignore_errors=True)


def _training_arguments(
    cfg: FinetuneConfig,
    *,
    run: RunFolder,
    fold: int,
    device: str,
    encoder: Encoder,
    selects: bool,
):
    """Trainer's arguments for one fold (``selects``: a checkpoint is chosen on inner rows)."""
    from transformers import TrainingArguments

    workers = default_workers(device)
    return TrainingArguments(
        output_dir=str(run.checkpoints(fold)),
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
        eval_strategy="epoch" if selects else "no",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=selects,
        metric_for_best_model=cfg.metric_for_best,
        greater_is_better=True,
        logging_strategy="epoch",
        report_to=cfg.report_to,
        logging_dir=str(run.path / "logs" / run.fold_name(fold)),
        seed=cfg.seed,
        data_seed=cfg.seed,
        fp16=cfg.fp16 and device == "cuda",
        bf16=cfg.bf16,
        gradient_checkpointing=cfg.gradient_checkpointing,
        adam_epsilon=cfg.adam_epsilon,
        remove_unused_columns=False,
        use_cpu=device == "cpu",
        save_safetensors=True,
        # On a GPU, worker processes decode and resample audio (tokenise text) into pinned
        # batches while the device trains, as extraction does; on a CPU the cores train.
        dataloader_num_workers=workers,
        dataloader_pin_memory=device.startswith("cuda"),
        dataloader_persistent_workers=workers > 0,
        dataloader_prefetch_factor=2 if workers > 0 else None,
        disable_tqdm=False,
        # DDP (torchrun): the speech classifier has parameters a forward may not use
        # (wav2vec2's masked_spec_embed); text classifiers use all of theirs.
        ddp_find_unused_parameters=encoder.modality == "speech",
    )


def _trainer(
    model,
    *,
    cfg: FinetuneConfig,
    args,
    train,
    select,
    encoder: Encoder,
    label: str,
    manifest_classes: Sequence[str],
):
    """emofeat's Trainer for one fold: early stopping on the inner rows (when they choose),
    a progress bar labelled with the run and fold."""
    from transformers import EarlyStoppingCallback
    from transformers.trainer_callback import ProgressCallback

    callbacks = (
        [EarlyStoppingCallback(cfg.early_stopping_patience)]
        if select is not None and cfg.early_stopping_patience > 0
        else []
    )
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=select,
        data_collator=encoder.collator(),
        compute_metrics=functools.partial(_metrics, task=cfg.task, n_classes=len(manifest_classes)),
        callbacks=callbacks,
        batch_order=cfg.batch_order,
        loss=None
        if cfg.task == "categorical"
        else dict(
            n_classes=len(manifest_classes),
            task=cfg.task,
            dim_loss=cfg.dim_loss,
            dim_weight=cfg.dim_weight,
        ),
    )
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_labelled_progress(label))
    return trainer


def _how_trained(trainer, *, fold: int, rows: FoldRows, cfg: FinetuneConfig) -> dict[str, Any]:
    """What a fold's record says of its training beside its held-out metrics."""
    selects = len(rows.select) > 0
    return dict(
        fold=fold,
        train_rows=len(rows.fit),
        select_rows=len(rows.select),
        heldout_rows=len(rows.held),
        select=cfg.select,
        kept=trainer.state.best_model_checkpoint if selects else "final",
        kept_epoch=_kept_epoch(trainer.state) if selects else trainer.state.epoch,
        # What trained it: processes (DDP under torchrun) and optimizer steps.
        world_size=int(trainer.args.world_size),
        optimizer_steps=int(trainer.state.global_step),
    )


def _labelled_progress(label: str):
    """Trainer's progress bar with a label (run and fold) and without the log dicts it prints:
    they are in the fold's log_history.json (and --report-to's sink)."""
    from tqdm.auto import tqdm
    from transformers.trainer_callback import ProgressCallback

    class LabelledProgress(ProgressCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.training_bar = tqdm(
                    total=state.max_steps, desc=label, unit="step", dynamic_ncols=True
                )
            self.current_step = 0

        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    return LabelledProgress()


def _kept_epoch(state) -> float | None:
    """The epoch of the checkpoint Trainer kept as the best."""
    best = state.best_model_checkpoint
    step = int(best.rsplit("-", 1)[-1]) if best else None
    for entry in state.log_history:
        if step is not None and entry.get("step") == step and "epoch" in entry:
            return float(entry["epoch"])
    return None


def finetune(
    manifest: str | Path | Manifest,
    out: str | Path,
    cfg: FinetuneConfig,
    *,
    overwrite: bool = False,
    only_folds: Sequence[int] | None = None,
) -> dict:
    """Fine-tune an encoder with cross-fitting into the run folder ``out``.

    Re-running the same command continues an interrupted run: finished folds are kept, an
    unfinished one resumes from its last checkpoint. Each fold is its own folder, checkpoints and
    logs, so processes training different folds of one run can run at once (one per GPU, a SLURM
    array); the run is complete when every fold is. Everything is checked before anything is
    written or deleted: a model that cannot be found or a bad row leaves no run folder behind, and
    ``overwrite`` never runs on a failing command.

    Args:
        manifest: The manifest (a path or a read :class:`~emofeat.corpus.manifest.Manifest`).
        out: The run folder.
        cfg: The options (:func:`~emofeat.finetune.config.resolve_config` builds them from a
            preset, a config file and overrides).
        overwrite: Replace a run folder made with other options.
        only_folds: Train these folds alone (``--fold K``); None for every fold.

    Returns:
        ``{fold: held-out metrics}`` of the folds this call trained (or found finished).

    Raises:
        EmofeatError: no labelled train rows, ``folds`` other than the manifest's, a model that
            cannot be found, a row that cannot be read (without ``skip_bad``), a run folder made
            with other options (without ``overwrite``).
    """
    m = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    spec = resolve(cfg.model, cfg.model_path)
    run = RunFolder(out)
    plan = FoldPlan.from_manifest(m)
    cfg = cfg.replace(folds=_fold_count(m, plan, cfg))
    spec.encoder_class.check_max_len(local_source(spec.source), cfg.max_len)
    _check_report_to(cfg.report_to)
    if len(m.label_names) < 2:
        raise EmofeatError(
            f"{m.path or m.root}: the manifest's label set is {m.label_names}; a classifier needs "
            "two classes at least (prepare it with the corpus's labels, or --labels)"
        )
    encoder = spec.encoder_class.from_folder(local_source(spec.source), input_options(cfg))
    checked = _check_rows(m, plan, spec=spec, encoder=encoder, cfg=cfg)
    fold_ids = _selected_folds(run.fold_ids(cfg.folds, cfg.refit), only_folds, overwrite=overwrite)
    # Under torchrun every process runs this command and trains each fold together (DDP); the
    # main process writes the run's files, the others wait for it.
    distributed.init(pick_device(cfg.device))
    if distributed.is_main():
        run.start(
            _run_record(m, plan, spec=spec, cfg=cfg),
            cfg.seed,
            overwrite,
            defaults=option_defaults(FinetuneConfig),
        )
    distributed.barrier()
    unknown_train = int(((plan.split == "train") & ~plan.labelled).sum())
    if unknown_train:
        log.warning("%d train row(s) without a label are not used for training", unknown_train)
    # Rows that cannot be read are left out of every fold model's training.
    plan = plan.excluding(checked.bad_rows)
    length_of = dict(zip(checked.good.tolist(), np.asarray(checked.lengths).tolist()))

    def train(fold: int, label: str) -> tuple[dict, None]:
        got = train_fold(
            m, plan, spec=spec, cfg=cfg, fold=fold, run=run, length_of=length_of, encoder=encoder
        )
        return got, None

    with quiet_repeats():
        results = run.train_folds(plan, fold_ids, train).metrics
    # The run's summary covers every fold finished so far (other processes' too).
    every = run.fold_ids(cfg.folds, cfg.refit)
    done = {f: run.fold_metrics(f) for f in every if run.is_finished(f)}
    if distributed.is_main():
        run.write_summary(done, checked.bad)
    return results


def _fold_count(m: Manifest, plan: FoldPlan, cfg: FinetuneConfig) -> int:
    """The run's folds: the manifest's (or 0, one model); a warning when groups span folds."""
    if not len(plan.train_rows):
        raise EmofeatError(f"{m.root}: the manifest has no labelled train rows")
    k = m.num_folds if cfg.folds is None else cfg.folds
    if k not in (0, m.num_folds):
        # Fewer fold models than manifest folds would train every model on some rows that the
        # extraction then treats as out-of-fold.
        raise EmofeatError(
            f"--folds {k}, but the manifest has {m.num_folds} folds; use --folds {m.num_folds} "
            f"(or 0 for one model), or prepare the manifest with --folds {k}"
        )
    spanning = plan.spanning_groups()
    if k and spanning:
        group, folds = next(iter(spanning.items()))
        log.warning(
            "%d session(s) or speaker(s) span several folds (e.g. %s: folds %s), so a fold model "
            "sees the speaker of rows it predicts; prepare the manifest with a group-aware split",
            len(spanning),
            group,
            folds,
        )
    return k


def _check_rows(
    m: Manifest, plan: FoldPlan, *, spec: ModelSpec, encoder: Encoder, cfg: FinetuneConfig
) -> RowCheck:
    """The train rows checked for the model's minimum input (before anything is written)."""
    from transformers import AutoConfig

    with loading(spec.source):
        model_config = AutoConfig.from_pretrained(
            local_source(spec.source), trust_remote_code=False
        )
    return encoder.check_rows(
        m,
        plan.train_rows,
        skip_bad=cfg.skip_bad,
        min_length=encoder.min_input_length(model_config),
    )


def _selected_folds(
    fold_ids: list[int], only_folds: Sequence[int] | None, *, overwrite: bool
) -> list[int]:
    """The folds this process trains: every fold of the run, or ``only_folds`` (``--fold``)."""
    if only_folds is None:
        return fold_ids
    unknown = sorted(set(only_folds) - set(fold_ids))
    if unknown or overwrite:
        raise EmofeatError(
            f"--fold {unknown or list(only_folds)}: "
            + (
                f"the run has folds {fold_ids}"
                if unknown
                else "not with --overwrite, which would delete the folds other processes train"
            )
        )
    return [f for f in fold_ids if f in set(only_folds)]


def _run_record(m: Manifest, plan: FoldPlan, *, spec: ModelSpec, cfg: FinetuneConfig) -> dict:
    """The run's ``config.yaml``: the options, the model and the manifest it was made from."""
    return {
        **cfg.to_dict(),
        # The head's classes: the manifest's label set, never an option (one source of truth).
        "label_names": m.label_names,
        "family": spec.family,
        "modality": spec.modality,
        "source": spec.source,
        "manifest": str(m.path or m.root),
        "split_scheme": m.split_scheme,
        "assignment_sha256": plan.assignment_sha256(),
    }


@contextlib.contextmanager
def quiet_repeats() -> Iterator[None]:
    """Each warning once per command: the same Python warning or transformers log message
    (a new head per fold, the tokenizer's class note) is shown the first time only."""
    seen: set[str] = set()

    def first_time(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in seen:
            return False
        seen.add(message)
        return True

    # transformers' modules log through their own loggers (transformers.modeling_utils, ...):
    # a filter on each of them sees their records wherever they are handled.
    import transformers  # noqa: F401  (its modules' loggers exist once it is imported)

    loggers = [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name == "transformers" or name.startswith("transformers.")
    ]
    for logger in loggers:
        logger.addFilter(first_time)
    shown: set[tuple[str, type]] = set()

    def show_once(message, category, *args, **kwargs):
        # Libraries that enter warnings.catch_warnings() reset Python's "once" registry (Trainer
        # repeated its mtime note at every checkpoint), so repeats are also dropped here.
        key = (str(message), category)
        if key not in shown:
            shown.add(key)
            original(message, category, *args, **kwargs)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("once")
            original = warnings.showwarning
            warnings.showwarning = show_once
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(first_time)


def _check_report_to(report_to: str) -> None:
    """Trainer fails on a logging integration that is not installed only once training starts,
    after the run folder exists: check before anything is written."""
    import importlib.util

    if report_to == "tensorboard" and not any(
        importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")
    ):
        raise OptionError(
            "--report-to tensorboard needs TensorBoard: pip install 'emofeat[tensorboard]'"
        )
