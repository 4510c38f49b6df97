"""``emofeat fuse``: a fusion model trained over feature stores, cross-fitted like any base model.

MMM (:mod:`emofeat.fuse.mmm`) reads a text and an audio sequence store (``extract --sequence``).
Like ``emofeat finetune`` it trains one model per fold by the cross-fitting rule
(:mod:`emofeat.crossfit`) into a run folder (:class:`emofeat.runs.RunFolder`: ``config.yaml``,
``fold-k/`` with the model as safetensors, ``rows.json`` and the held-out ``metrics.json``, the
run's ``metrics.json`` with mean ± std over folds, ``training_curves.png``); like ``emofeat
extract --run`` it writes a store of its own, ``OUT/mmm.h5``: held-out train rows from the fold
model that did not fit them, every other row the mean over the fold models. That store joins the
soft vote and the meta-learners as one more base model.

Evidence is derived, never declared: each row's ``in_sample`` flag is computed from the input
stores' flags (in-sample in means in-sample out) and from the ids each fold model trained on.
Inputs whose train rows are in-sample, or that do not say, are refused unless
``allow_in_sample``; the fused store then records what it knows (an unknown input leaves the
fused store's evidence unknown too).

Resumable: a finished fold is kept (its model is loaded back); the run is refused if its
options, its inputs' identities or the fold assignment changed, unless ``overwrite``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np

from emofeat.atomic import atomic_path
from emofeat.corpus.manifest import DIMENSIONS
from emofeat.crossfit import FoldPlan, combine_evidence
from emofeat.errors import EmofeatError, StoreError
from emofeat.fuse.config import FuseConfig, MMMConfig
from emofeat.metrics import logits_metrics
from emofeat.options import option_defaults
from emofeat.records import sha256_of_weights
from emofeat.runs import RunFolder
from emofeat.store import Aligned, Provenance, Store, StoreLayout, aligned, create_store
from emofeat.store.layout import describe_test_predictions
from emofeat.tasks import has_dimensions, output_names, split_outputs, task_metrics

log = logging.getLogger(__name__)


def fuse(
    stores: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    config: MMMConfig | None = None,
    overwrite: bool = False,
    **options: Any,
) -> dict[int, dict[str, Any]]:
    """Cross-fit fusion ``model`` over ``stores`` (MMM: a text, then an audio sequence store)
    into the run folder ``out`` with its store ``out/<model>.h5``; returns each fold's held-out
    metrics (as ``emofeat finetune`` does). ``folds=0`` trains one model on all train rows
    instead (MMM's own protocol: one model evaluated on test); its store's train rows are then
    in-sample, so it joins tables but not stacks.

    Args:
        stores: MMM's text, then audio sequence store.
        out: the run folder.
        config: MMM's training options (default: the published ones).
        overwrite: replace a run made with other options or inputs.
        options: the options of :class:`~emofeat.fuse.config.FuseConfig`.

    Returns:
        ``{fold: held-out metrics}`` of each fold model (``{-1: ...}`` with ``folds=0``).

    Raises:
        OptionError: an option's value is refused (before anything is read or written).
        EmofeatError: not two stores, folds that do not fit the stores, in-sample inputs
            (without ``allow_in_sample``), a run made with other options (without ``overwrite``).
    """
    from emofeat.device import pick_device
    from emofeat.fuse import mmm

    run_cfg = FuseConfig(**options)
    cfg = config or MMMConfig()
    if len(stores) != 2:
        raise EmofeatError(
            f"MMM fuses two sequence stores (--store TEXT --store AUDIO); got {len(stores)}"
        )
    run = RunFolder(out)
    device = pick_device(cfg.device)
    with aligned(stores, allow_incomplete=run_cfg.allow_incomplete) as inputs:
        pairs = FusionInputs.of(inputs, cfg.task)
        model_folds = _model_folds(pairs.plan, run_cfg)
        evidence = _evidence(pairs, allow_in_sample=run_cfg.allow_in_sample)
        options = {**run_cfg.to_dict(), **cfg.to_dict()}
        run.start(
            _run_record(pairs, stores, run_cfg, options=options, n_models=len(model_folds)),
            cfg.seed,
            overwrite,
            defaults=option_defaults(FuseConfig, MMMConfig),
        )
        train = partial(_train_fold, pairs, run=run, cfg=cfg, device=device)
        trained = run.train_folds(pairs.plan, model_folds, train, load=mmm.load)
        _write_fused(
            run,
            pairs,
            [trained.models[k] for k in model_folds],
            model_folds=model_folds,
            evidence=evidence,
            keep=inputs.keep,
            run_cfg=run_cfg,
            options=options,
            device=device,
        )
    run.write_summary(trained.metrics, [])
    return trained.metrics


@dataclass
class FusionInputs:
    """A text and an audio sequence store aligned by id, and the fold plan of their common
    rows."""

    text: Store
    audio: Store
    positions: list[np.ndarray]  # each store's row of every id of the text store
    plan: FoldPlan
    task: str = "categorical"  # what the fusion head predicts (emofeat.tasks)

    @classmethod
    def of(cls, inputs: Aligned, task: str = "categorical") -> FusionInputs:
        """The pair in ``inputs`` (refused without sequences, or without valence and arousal
        for a ``task`` with dimensions)."""
        for s in inputs.stores:
            if "last" not in s.sequence_names:
                raise StoreError(f"{s.path}: no sequences; extract it with --sequence")
        text, audio = inputs.stores
        # The stores say what they hold: MMM's first input is text, its second speech.
        said = [s.provenance.modality for s in (text, audio)]
        if said != ["text", "speech"] and all(said):
            raise StoreError(
                f"MMM fuses a text store, then a speech store (--store TEXT --store AUDIO); "
                f"got {text.name} ({said[0]}) then {audio.name} ({said[1]})"
                + ("; give them the other way round" if said == ["speech", "text"] else "")
            )
        if has_dimensions(task) and not text.has_dimension_targets:
            raise StoreError(
                f"--task {task}: {text.path} holds no valence or arousal (its manifest had "
                "none); extract the sequence stores with a manifest that has them"
            )
        usable = np.zeros(len(text), bool)
        usable[inputs.keep] = True
        plan = FoldPlan.from_store(text).excluding(np.flatnonzero(~usable))
        return cls(text, audio, inputs.positions, plan, task)

    @property
    def n_classes(self) -> int:
        return len(self.text.label_names)

    @property
    def n_outputs(self) -> int:
        """The head's outputs: the classes, then valence and arousal (emofeat.tasks)."""
        return len(output_names(self.text.label_names, self.task))

    @cached_property
    def targets(self) -> np.ndarray:
        """Per row ``[class, valence, arousal]`` (-1 / NaN where a row has none)."""
        dims = self.text.dimension_targets() if self.text.has_dimension_targets else None
        if dims is None:
            dims = np.full((len(self.text), 2), np.nan)
        return np.column_stack([self.labels, dims]).astype(np.float64)

    @cached_property
    def labels(self) -> np.ndarray:
        return self.text.labels.astype(int)

    @property
    def dims(self) -> dict[str, int]:
        """The sequences' widths and lengths (what MMM's architecture follows)."""
        (tl, th), (al, ah) = (s.layout.sequences["last"] for s in (self.text, self.audio))
        return {"text_dim": th, "audio_dim": ah, "text_len": tl, "audio_len": al}

    def dataset(self, rows: np.ndarray):
        """The rows (of the text store) as MMM's training pairs."""
        from emofeat.fuse import mmm

        return mmm.SequencePairs(
            self.text,
            self.audio,
            rows_t=self.positions[0][rows],
            rows_a=self.positions[1][rows],
            y=self.labels[rows] if self.task == "categorical" else self.targets[rows],
        )


def _model_folds(plan: FoldPlan, run_cfg: FuseConfig) -> list[int]:
    """The fold models to train: the stores' folds, or one model on all train rows (-1)."""
    folds = run_cfg.folds
    if folds not in (None, 0, len(plan.folds)):
        raise EmofeatError(
            f"--folds must be 0 (one model) or the stores' {len(plan.folds)} folds (the "
            f"default), got {folds!r}"
        )
    if folds == 0:
        return [-1]
    if not plan.cross_fitted:
        raise EmofeatError(
            f"{run_cfg.model} is cross-fitted: the stores' labelled train rows need 2 or more "
            "folds (prepare the manifest with --folds K), or pass --folds 0 for one model"
        )
    if folds is None and plan.folds != list(range(len(plan.folds))):
        raise EmofeatError(f"the stores' folds must be 0..K-1, got {plan.folds}")
    return plan.folds


def _evidence(pairs: FusionInputs, *, allow_in_sample: bool):
    """The inputs' combined evidence per row; in-sample or unknown inputs are refused unless
    ``allow_in_sample``."""
    opened = (pairs.text, pairs.audio)
    evidence = combine_evidence(
        [s.name for s in opened],
        [
            s.in_sample[p] if s.in_sample is not None else None
            for s, p in zip(opened, pairs.positions)
        ],
        pairs.plan.train_rows,
    )
    if evidence.problems and not allow_in_sample:
        raise EmofeatError(
            f"refusing to fuse: {'; '.join(evidence.problems)}. A fused store is out-of-fold only "
            "when its inputs are. Pass --allow-in-sample to go on; the fused store records "
            "those rows as in-sample (or its evidence as unknown)."
        )
    return evidence


def _run_record(
    pairs: FusionInputs,
    stores: Sequence[str | os.PathLike],
    run_cfg: FuseConfig,
    *,
    options: dict[str, Any],
    n_models: int,
) -> dict[str, Any]:
    """The run's ``config.yaml``: the options, the inputs' identities and the fold assignment."""
    return {
        **options,
        "family": run_cfg.model,
        "modality": "text+speech",
        "source": run_cfg.model,
        "folds": 0 if run_cfg.folds == 0 else n_models,
        "label_names": list(pairs.text.label_names),
        "stores": [str(Path(p).resolve()) for p in stores],
        "store_identities": [s.identity for s in (pairs.text, pairs.audio)],
        "split_scheme": pairs.text.provenance.split_scheme,
        "assignment_sha256": pairs.plan.assignment_sha256(),
    }


def _train_fold(
    pairs: FusionInputs, k: int, label: str, *, run: RunFolder, cfg: MMMConfig, device: str
):
    """Train, evaluate on its held-out rows and save fold model ``k``; (metrics, model)."""
    from emofeat.fuse import mmm

    fit, held = pairs.plan.fit_rows(k), pairs.plan.held_rows(k)
    dims, n_classes = pairs.dims, pairs.n_classes
    net = mmm.new_model(dims, pairs.n_outputs, cfg)
    history = _train_with_progress(
        net, pairs.dataset(fit), cfg=cfg, n_classes=n_classes, device=device, label=label
    )
    metrics = {}
    if len(held):
        outputs = mmm.predict(net, pairs.dataset(held), device)
        metrics = (
            logits_metrics(pairs.labels[held], outputs)
            if pairs.task == "categorical"
            else task_metrics(outputs, pairs.targets[held], n_classes, pairs.task)
        )
    metrics.update(fold=k, train_rows=len(fit), heldout_rows=len(held), kept="final")
    run.save_fold(
        k,
        lambda folder: mmm.save(net, folder, dims=dims, n_classes=pairs.n_outputs, cfg=cfg),
        metrics=metrics,
        log_history=history,
        train_ids=pairs.plan.ids[fit],
        select_ids=[],
    )
    return metrics, net


def _train_with_progress(
    net, dataset, *, cfg: MMMConfig, n_classes: int, device: str, label: str
) -> list[dict[str, float]]:
    """Train one fold model with a progress bar in rows (rows/s), epoch and loss."""
    from tqdm.auto import tqdm

    from emofeat.fuse import mmm

    bar = tqdm(total=cfg.epochs * len(dataset), unit="row", desc=label, dynamic_ncols=True)

    def progress(epoch: int, rows: int, loss: float) -> None:
        bar.update(rows)
        bar.set_postfix(epoch=f"{epoch}/{cfg.epochs}", loss=f"{loss:.3f}", refresh=False)

    try:
        return mmm.train(net, dataset, cfg, n_classes=n_classes, device=device, progress=progress)
    finally:
        bar.close()


def _provenance(
    run: RunFolder, pairs: FusionInputs, run_cfg: FuseConfig, *, in_sample: np.ndarray | None
) -> Provenance:
    """The fused store's attributes; ``out_of_fold`` is derived from its rows' evidence (true
    only when no labelled train row is in-sample; unknown, not written, when the evidence is)."""
    train = pairs.plan.labelled_train
    if in_sample is None:
        out_of_fold = None
    else:
        out_of_fold = bool(pairs.plan.cross_fitted and run_cfg.folds != 0) and not bool(
            in_sample[train].any()
        )
    return Provenance(
        model_id=run_cfg.model,
        checkpoint_sha256=sha256_of_weights([str(d) for d in run.finished_fold_dirs()]),
        family=run_cfg.model,
        modality="text+speech",
        layers=[],
        split_scheme=pairs.text.provenance.split_scheme,
        run=str(run.path),
        out_of_fold=out_of_fold,
    )


def _write_fused(
    run: RunFolder,
    pairs: FusionInputs,
    models: list,
    *,
    model_folds: list[int],
    evidence,
    keep: np.ndarray,
    run_cfg: FuseConfig,
    options: dict[str, Any],
    device: str,
) -> None:
    """The fused store ``run/<model>.h5``: each row's logits from the fold models the
    cross-fitting rule routes it to, its evidence, and what predicted the test rows."""
    from emofeat.fuse import mmm

    groups = pairs.plan.model_groups(model_folds)
    outputs = np.full((len(pairs.text), pairs.n_outputs), np.nan, np.float32)
    for members, rows in groups:
        outputs[rows] = np.mean(
            [mmm.predict(models[i], pairs.dataset(rows), device) for i in members], axis=0
        )
    logits, dims = split_outputs(outputs, pairs.n_classes, pairs.task)
    # Evidence from what trained each fold model (its rows.json) and from the inputs.
    in_sample = (
        pairs.plan.in_sample(groups, run.fold_usage(), evidence.in_sample)
        if evidence.in_sample is not None
        else None
    )
    # What predicted the test rows, from the groups (stack reports and compare name it).
    tested = describe_test_predictions(len(pairs.plan.other_models(groups)))
    _write_store(
        run.path / f"{run_cfg.model}.h5",
        ref=pairs.text,
        rows=keep,
        logits=logits,
        dimensions=dims,
        in_sample=in_sample,
        provenance=_provenance(run, pairs, run_cfg, in_sample=in_sample),
        config={**options, "test_predictions": tested},
    )


def _write_store(
    path: Path,
    *,
    ref: Store,
    rows: np.ndarray,
    logits: np.ndarray | None,
    in_sample: np.ndarray | None,
    provenance: Provenance,
    config: dict[str, Any],
    dimensions: np.ndarray | None = None,
) -> None:
    """The fused store, built under a temporary name and renamed into place (its logits, its
    valence and arousal for a task with dimensions, the true values as its input's)."""
    with atomic_path(path, suffix=".h5") as tmp:
        layout = StoreLayout(
            ids=ref.ids,
            labels=ref.labels,
            split=ref.split,
            fold=ref.fold,
            label_names=ref.label_names,
            logits=logits is not None,
            config=config,
            in_sample=in_sample,
            targets=ref.dimension_targets() if ref.has_dimension_targets else None,
            dimensions=dimensions is not None,
            dimension_names=ref.dimension_names or list(DIMENSIONS),
        )
        writer = create_store(tmp, layout, attrs=provenance.to_attrs())
        with writer:
            writer.write(
                rows,
                logits=logits[rows] if logits is not None else None,
                dimensions=dimensions[rows] if dimensions is not None else None,
            )
            missing = np.setdiff1d(np.arange(len(ref)), rows)
            writer.skip(missing, "not done in every input store")
        writer.finalize()
