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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from emofeat.atomic import atomic_path
from emofeat.corpus.manifest import DIMENSIONS
from emofeat.crossfit import FoldPlan, combine_evidence
from emofeat.errors import EmofeatError, StoreError
from emofeat.fuse.config import FuseConfig, LayerSumConfig, MMMConfig
from emofeat.fuse.inputs import StoreInputs
from emofeat.metrics import logits_metrics
from emofeat.options import option_defaults
from emofeat.records import relative_path, sha256_of_weights
from emofeat.runs import RunFolder
from emofeat.store import Aligned, Provenance, Store, StoreLayout, aligned, create_store
from emofeat.store.layout import describe_test_predictions
from emofeat.tasks import split_outputs, task_metrics

log = logging.getLogger(__name__)


def fuse(
    stores: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    config: MMMConfig | None = None,
    overwrite: bool = False,
    **options: Any,
) -> dict[int, dict[str, Any]]:
    """Cross-fit fusion ``model`` over ``stores`` into the run folder ``out`` with its store
    ``out/<model>.h5``; returns each fold's held-out metrics (as ``emofeat finetune`` does).
    MMM reads a text, then an audio sequence store; layer-sum (:mod:`emofeat.fuse.layersum`)
    one or more stores of layers (``extract --layers all``), one weighted sum each, side by
    side, one head, and writes each fold's layer weights (``layer_weights.csv``,
    ``layer_weights.png``) and the weighted sums (the store's ``last`` embedding) too.
    ``folds=0`` trains one model on all train rows instead (MMM's own protocol: one model
    evaluated on test); its store's train rows are then in-sample, so it joins tables but not
    stacks.

    Args:
        stores: MMM's text, then audio sequence store; layer-sum's stores of layers.
        out: the run folder.
        config: the model's training options (:class:`~emofeat.fuse.config.MMMConfig`, default
            the published ones; :class:`~emofeat.fuse.config.LayerSumConfig`).
        overwrite: replace a run made with other options or inputs.
        options: the options of :class:`~emofeat.fuse.config.FuseConfig`.

    Returns:
        ``{fold: held-out metrics}`` of each fold model (``{-1: ...}`` with ``folds=0``).

    Raises:
        OptionError: an option's value is refused (before anything is read or written).
        EmofeatError: not two stores (MMM), no store or a store without layers (layer-sum),
            folds that do not fit the stores, in-sample inputs (without ``allow_in_sample``), a
            run made with other options (without ``overwrite``).
    """
    from emofeat.device import pick_device

    run_cfg = FuseConfig(**options)
    model = fusion_model(run_cfg.model)
    cfg = config or model.config()
    if not isinstance(cfg, model.config):
        raise EmofeatError(
            f"--model {run_cfg.model} takes {model.config.__name__}, got {type(cfg).__name__}"
        )
    model.check_stores(stores)
    run = RunFolder(out)
    device = pick_device(cfg.device)
    with aligned(stores, allow_incomplete=run_cfg.allow_incomplete) as aligned_inputs:
        inputs = model.inputs(aligned_inputs, cfg.task)
        model_folds = _model_folds(inputs.plan, run_cfg)
        evidence = _evidence(inputs, allow_in_sample=run_cfg.allow_in_sample)
        options = {**run_cfg.to_dict(), **cfg.to_dict()}
        n_models = len(model_folds)
        record = _run_record(
            inputs, stores, run_cfg, model, options=options, n_models=n_models, out=run.path
        )
        run.start(record, cfg.seed, overwrite, defaults=option_defaults(FuseConfig, model.config))
        train = partial(_train_fold, inputs, model=model, run=run, cfg=cfg, device=device)
        trained = run.train_folds(inputs.plan, model_folds, train, load=model.load)
        models = [trained.models[k] for k in model_folds]
        _write_fused(
            run,
            inputs,
            models,
            model=model,
            model_folds=model_folds,
            evidence=evidence,
            keep=aligned_inputs.keep,
            run_cfg=run_cfg,
            options=options,
            device=device,
        )
        if model.report is not None:
            model.report(run, inputs, models, model_folds)
    run.write_summary(trained.metrics, [])
    return trained.metrics


class FusionInputs(StoreInputs):
    """MMM's inputs: a text and an audio sequence store aligned by id."""

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
        hint = "extract the sequence stores with a manifest that has them"
        plan = cls.common_plan(inputs, task, hint=hint)
        return cls([text, audio], list(inputs.positions), plan, task)

    @property
    def text(self) -> Store:
        return self.stores[0]

    @property
    def audio(self) -> Store:
        return self.stores[1]

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
            y=self.y(rows),
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


def _evidence(inputs, *, allow_in_sample: bool):
    """The inputs' combined evidence per row; in-sample or unknown inputs are refused unless
    ``allow_in_sample``."""
    evidence = combine_evidence(
        [s.name for s in inputs.stores],
        [
            s.in_sample[p] if s.in_sample is not None else None
            for s, p in zip(inputs.stores, inputs.positions)
        ],
        inputs.plan.train_rows,
    )
    if evidence.problems and not allow_in_sample:
        raise EmofeatError(
            f"refusing to fuse: {'; '.join(evidence.problems)}. A fused store is out-of-fold only "
            "when its inputs are. Pass --allow-in-sample to go on; the fused store records "
            "those rows as in-sample (or its evidence as unknown)."
        )
    return evidence


def _run_record(
    inputs,
    stores: Sequence[str | os.PathLike],
    run_cfg: FuseConfig,
    model: FusionModel,
    *,
    options: dict[str, Any],
    n_models: int,
    out: Path,
) -> dict[str, Any]:
    """The run's ``config.yaml``: the options, the inputs' identities and the fold assignment."""
    return {
        **options,
        "family": run_cfg.model,
        "modality": model.modality(inputs),
        "source": run_cfg.model,
        "folds": 0 if run_cfg.folds == 0 else n_models,
        "label_names": list(inputs.ref.label_names),
        "stores": [str(Path(p).resolve()) for p in stores],
        # beside the run too, so that a moved project finds them (records.recorded_stores)
        "stores_relative": [relative_path(p, out) for p in stores],
        "store_identities": [s.identity for s in inputs.stores],
        "split_scheme": inputs.ref.provenance.split_scheme,
        "assignment_sha256": inputs.plan.assignment_sha256(),
    }


def _train_fold(
    inputs, k: int, label: str, *, model: FusionModel, run: RunFolder, cfg, device: str
):
    """Train, evaluate on its held-out rows and save fold model ``k``; (metrics, model)."""
    fit, held = inputs.plan.fit_rows(k), inputs.plan.held_rows(k)
    net = model.new(inputs, fit, cfg)
    history = _train_with_progress(
        lambda progress: model.train(net, inputs, fit, cfg, device=device, progress=progress),
        rows=len(fit),
        epochs=cfg.epochs,
        label=label,
    )
    metrics = {}
    if len(held):
        outputs, _ = model.predict(net, inputs, held, device)
        metrics = (
            logits_metrics(inputs.labels[held], outputs)
            if inputs.task == "categorical"
            else task_metrics(outputs, inputs.targets[held], inputs.n_classes, inputs.task)
        )
    metrics.update(fold=k, train_rows=len(fit), heldout_rows=len(held), kept="final")
    run.save_fold(
        k,
        lambda folder: model.save(net, folder, inputs, cfg),
        metrics=metrics,
        log_history=history,
        train_ids=inputs.plan.ids[fit],
        select_ids=[],
    )
    return metrics, net


def _train_with_progress(
    train: Callable, *, rows: int, epochs: int, label: str
) -> list[dict[str, float]]:
    """Run ``train(progress)`` with a progress bar in rows (rows/s), epoch and loss."""
    from tqdm.auto import tqdm

    bar = tqdm(total=epochs * rows, unit="row", desc=label, dynamic_ncols=True)

    def progress(epoch: int, n: int, loss: float) -> None:
        bar.update(n)
        bar.set_postfix(epoch=f"{epoch}/{epochs}", loss=f"{loss:.3f}", refresh=False)

    try:
        return train(progress)
    finally:
        bar.close()


def _provenance(
    run: RunFolder,
    inputs,
    run_cfg: FuseConfig,
    modality: str,
    *,
    in_sample: np.ndarray | None,
    path: Path,
) -> Provenance:
    """The fused store's attributes; ``out_of_fold`` is derived from its rows' evidence (true
    only when no labelled train row is in-sample; unknown, not written, when the evidence is)."""
    train = inputs.plan.labelled_train
    if in_sample is None:
        out_of_fold = None
    else:
        out_of_fold = bool(inputs.plan.cross_fitted and run_cfg.folds != 0) and not bool(
            in_sample[train].any()
        )
    return Provenance(
        model_id=run_cfg.model,
        checkpoint_sha256=sha256_of_weights([str(d) for d in run.finished_fold_dirs()]),
        family=run_cfg.model,
        modality=modality,
        layers=[],
        split_scheme=inputs.ref.provenance.split_scheme,
        run=relative_path(run.path, path.parent),  # relative to the store: a project can move
        out_of_fold=out_of_fold,
    )


def _write_fused(
    run: RunFolder,
    inputs,
    models: list,
    *,
    model: FusionModel,
    model_folds: list[int],
    evidence,
    keep: np.ndarray,
    run_cfg: FuseConfig,
    options: dict[str, Any],
    device: str,
    path: Path | None = None,
) -> None:
    """The fused store (``path``, by default ``run/<model>.h5``): each row's outputs (and, for
    a model that has one, its embedding) from the fold models the cross-fitting rule routes it
    to (their mean where several), its evidence, and what predicted the test rows."""
    groups = inputs.plan.model_groups(model_folds)
    outputs = np.full((len(inputs.ref), inputs.n_outputs), np.nan, np.float32)
    embedding = None  # for a model whose predictions come with the embedding its head read
    for members, rows in groups:
        each = [model.predict(models[i], inputs, rows, device) for i in members]
        outputs[rows] = np.mean([o for o, _ in each], axis=0)
        if each[0][1] is not None:
            mean = np.mean([e for _, e in each], axis=0)
            if embedding is None:
                embedding = np.zeros((len(inputs.ref), mean.shape[1]), np.float32)
            embedding[rows] = mean
    logits, dims = split_outputs(outputs, inputs.n_classes, inputs.task)
    # Evidence from what trained each fold model (its rows.json) and from the inputs.
    in_sample = (
        inputs.plan.in_sample(groups, run.fold_usage(), evidence.in_sample)
        if evidence.in_sample is not None
        else None
    )
    # What predicted the test rows, from the groups (stack reports and compare name it).
    tested = describe_test_predictions(len(inputs.plan.other_models(groups)))
    path = path or run.path / f"{run_cfg.model}.h5"
    modality = model.modality(inputs)
    _write_store(
        path,
        ref=inputs.ref,
        rows=keep,
        logits=logits,
        dimensions=dims,
        embedding=embedding,
        in_sample=in_sample,
        provenance=_provenance(run, inputs, run_cfg, modality, in_sample=in_sample, path=path),
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
    embedding: np.ndarray | None = None,
) -> None:
    """The fused store, built under a temporary name and renamed into place (its logits, its
    valence and arousal for a task with dimensions, the true values as its input's, and an
    embedding ``last`` when the model has one)."""
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
            embeddings={"last": embedding.shape[1]} if embedding is not None else {},
        )
        writer = create_store(tmp, layout, attrs=provenance.to_attrs())
        with writer:
            writer.write(
                rows,
                logits=logits[rows] if logits is not None else None,
                dimensions=dimensions[rows] if dimensions is not None else None,
                embeddings={"last": embedding[rows]} if embedding is not None else None,
            )
            missing = np.setdiff1d(np.arange(len(ref)), rows)
            writer.skip(missing, "not done in every input store")
        writer.finalize()


def apply_fusion(
    run_dir: str | os.PathLike,
    stores: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    device: str = "auto",
) -> Path:
    """A fused store of new rows: the fold models of the fusion run ``run_dir`` applied to
    ``stores`` — stores of the new rows made as the run's inputs were (the same encoders and
    options: their identities must equal those the run recorded) — every row predicted by the
    mean of the fold models, as test rows are. ``emofeat infer`` uses it to rebuild a stack's
    fused base models (MMM, layer-sum heads) for new recordings.

    Args:
        run_dir: A finished ``emofeat fuse`` run.
        stores: The new rows' input stores, in the run's order.
        out: The fused store to write (replaced when it exists).
        device: Where the fold models run.

    Returns:
        ``out``.

    Raises:
        EmofeatError: the run is unfinished, or the stores are not made as its inputs were.
    """
    from emofeat.device import pick_device
    from emofeat.options import resolve
    from emofeat.outputs import check_output

    check_output(Path(out), kind="store", inputs=[*stores, run_dir])
    run = RunFolder(run_dir)
    record = run.read_config()
    source = str(run.config_path)
    run_cfg = resolve(FuseConfig, file_values=record, source=source, record=True)
    model = fusion_model(run_cfg.model)
    cfg = resolve(
        model.config, given={"device": device}, file_values=record, source=source, record=True
    )
    folds = run.fold_ids()
    dirs = run.finished_fold_dirs(folds)
    with aligned(stores) as aligned_inputs:
        given = [s.identity for s in aligned_inputs.stores]
        if given != list(record.get("store_identities", [])):
            raise EmofeatError(
                f"the stores {[str(p) for p in stores]} are not made as run {run.path}'s inputs "
                "were (other encoders, options or order); extract them with its inputs' options"
            )
        inputs = model.inputs(aligned_inputs, cfg.task)
        _write_fused(
            run,
            inputs,
            [model.load(d) for d in dirs],
            model=model,
            model_folds=folds,
            evidence=_evidence(inputs, allow_in_sample=True),
            keep=aligned_inputs.keep,
            run_cfg=run_cfg,
            options={**run_cfg.to_dict(), **cfg.to_dict()},
            device=pick_device(device),
            path=Path(out),
        )
    return Path(out)


@dataclass(frozen=True)
class FusionModel:
    """What the cross-fitting of :func:`fuse` needs of one fusion model: its options, its
    inputs, and how one fold model is made, trained, applied, saved and loaded."""

    config: type
    check_stores: Callable[[Sequence], None]
    inputs: Callable[[Aligned, str], Any]
    new: Callable[[Any, np.ndarray, Any], Any]
    train: Callable[..., list[dict[str, float]]]
    # (outputs, the embedding its head read or None) of rows
    predict: Callable[[Any, Any, np.ndarray, str], tuple[np.ndarray, np.ndarray | None]]
    save: Callable[[Any, Path, Any, Any], None]
    load: Callable[[Path], Any]
    modality: Callable[[Any], str]
    report: Callable[[RunFolder, Any, list, list[int]], None] | None = None


def _mmm() -> FusionModel:
    from emofeat.fuse import mmm

    def check(stores: Sequence) -> None:
        if len(stores) != 2:
            raise EmofeatError(
                f"MMM fuses two sequence stores (--store TEXT --store AUDIO); got {len(stores)}"
            )

    return FusionModel(
        config=MMMConfig,
        check_stores=check,
        inputs=FusionInputs.of,
        new=lambda inputs, rows, cfg: mmm.new_model(inputs.dims, inputs.n_outputs, cfg),
        train=lambda net, inputs, rows, cfg, *, device, progress: mmm.train(
            net,
            inputs.dataset(rows),
            cfg,
            n_classes=inputs.n_classes,
            device=device,
            progress=progress,
        ),
        predict=lambda net, inputs, rows, device: (
            mmm.predict(net, inputs.dataset(rows), device),
            None,
        ),
        save=lambda net, folder, inputs, cfg: mmm.save(
            net, folder, dims=inputs.dims, n_classes=inputs.n_outputs, cfg=cfg
        ),
        load=mmm.load,
        modality=lambda inputs: "text+speech",
    )


def _layer_sum() -> FusionModel:
    from emofeat.fuse import layersum

    def check(stores: Sequence) -> None:
        if not stores:
            raise EmofeatError("layer-sum needs one store of layers or more (--store)")

    return FusionModel(
        config=LayerSumConfig,
        check_stores=check,
        inputs=layersum.LayerInputs.of,
        new=layersum.new_model,
        train=layersum.train,
        predict=layersum.predict,
        save=lambda net, folder, inputs, cfg: layersum.save(net, folder, inputs=inputs, cfg=cfg),
        load=layersum.load,
        modality=lambda inputs: "+".join(
            dict.fromkeys(s.provenance.modality or "unknown" for s in inputs.stores)
        ),
        report=layersum.report,
    )


def fusion_model(name: str) -> FusionModel:
    """The fusion model ``name`` (its module, and torch, imported when asked for)."""
    return {"mmm": _mmm, "layer-sum": _layer_sum}[name]()
