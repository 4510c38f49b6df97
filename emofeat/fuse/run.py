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
from pathlib import Path
from typing import Any

import numpy as np

from emofeat.atomic import atomic_path
from emofeat.crossfit import FoldPlan, combine_evidence
from emofeat.errors import EmofeatError, StoreError
from emofeat.fuse.config import FuseConfig, MMMConfig
from emofeat.metrics import logits_metrics
from emofeat.records import sha256_of_weights
from emofeat.runs import RunFolder
from emofeat.store import Provenance, StoreLayout, aligned, create_store
from emofeat.store.layout import describe_test_predictions

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

    Raises:
        OptionError: an option's value is refused (before anything is read or written).
    """
    from tqdm.auto import tqdm

    from emofeat.device import pick_device
    from emofeat.fuse import mmm

    run_cfg = FuseConfig(**options)
    model, folds = run_cfg.model, run_cfg.folds
    cfg = config or MMMConfig()
    if len(stores) != 2:
        raise EmofeatError(
            f"MMM fuses two sequence stores (--store TEXT --store AUDIO); got {len(stores)}"
        )
    run = RunFolder(out)
    device = pick_device(cfg.device)
    with aligned(stores, allow_incomplete=run_cfg.allow_incomplete) as inputs:
        opened, positions = inputs.stores, inputs.positions
        text, audio = opened
        for s in opened:
            if "last" not in s.sequence_names:
                raise StoreError(f"{s.path}: no sequences; extract it with --sequence")
        usable = np.zeros(len(text), bool)
        usable[inputs.keep] = True
        plan = FoldPlan.from_store(text).excluding(np.flatnonzero(~usable))
        if folds not in (None, 0, len(plan.folds)):
            raise EmofeatError(
                f"--folds must be 0 (one model) or the stores' {len(plan.folds)} folds (the "
                f"default), got {folds!r}"
            )
        if folds == 0:
            model_folds = [-1]
        elif not plan.cross_fitted:
            raise EmofeatError(
                f"{model} is cross-fitted: the stores' labelled train rows need 2 or more folds "
                "(prepare the manifest with --folds K), or pass --folds 0 for one model"
            )
        else:
            model_folds = plan.folds
        if folds is None and model_folds != list(range(len(model_folds))):
            raise EmofeatError(f"the stores' folds must be 0..K-1, got {model_folds}")
        names = [s.name for s in opened]
        evidence = combine_evidence(
            names,
            [
                s.in_sample[p] if s.in_sample is not None else None
                for s, p in zip(opened, positions)
            ],
            plan.train_rows,
        )
        if evidence.problems and not run_cfg.allow_in_sample:
            raise EmofeatError(
                f"refusing to fuse: {'; '.join(evidence.problems)}. A fused store is out-of-fold only "
                "when its inputs are. Pass --allow-in-sample to go on; the fused store records "
                "those rows as in-sample (or its evidence as unknown)."
            )
        (tl, th), (al, ah) = text.layout.sequences["last"], audio.layout.sequences["last"]
        dims = {"text_dim": th, "audio_dim": ah, "text_len": tl, "audio_len": al}
        n_classes = len(text.label_names)
        options = {**run_cfg.to_dict(), **cfg.to_dict()}
        record = {
            **options,
            "family": model,
            "modality": "text+speech",
            "source": model,
            "folds": 0 if folds == 0 else len(model_folds),
            "label_names": list(text.label_names),
            "stores": [str(Path(p).resolve()) for p in stores],
            "store_identities": [s.identity for s in opened],
            "split_scheme": text.provenance.split_scheme,
            "assignment_sha256": plan.assignment_sha256(),
        }
        run.start(record, record.get("seed"), overwrite)
        labels = text.labels.astype(int)

        def dataset(rows: np.ndarray) -> mmm.SequencePairs:
            return mmm.SequencePairs(
                text, audio, rows_t=positions[0][rows], rows_a=positions[1][rows], y=labels[rows]
            )

        models, results = [], {}
        for n, k in enumerate(model_folds, 1):
            fit, held = plan.fit_rows(k), plan.held_rows(k)
            header = f"[{run.path.name}] fold {n}/{len(model_folds)} ({run.fold_name(k)})"
            if run.is_finished(k):
                tqdm.write(f"{header}: already trained, kept")
                models.append(mmm.load(run.fold_dir(k)))
                results[k] = run.fold_metrics(k)
                continue
            tqdm.write(f"{header}: training on {len(fit)} rows, {len(held)} held out")
            net = mmm.new_model(dims, n_classes, cfg)
            history = _train_with_progress(net, dataset(fit), cfg, n_classes, device, header)
            metrics = (
                logits_metrics(labels[held], mmm.predict(net, dataset(held), device))
                if len(held)
                else {}
            )
            metrics.update(fold=k, train_rows=len(fit), heldout_rows=len(held), kept="final")
            run.save_fold(
                k,
                lambda folder, net=net: mmm.save(
                    net, folder, dims=dims, n_classes=n_classes, cfg=cfg
                ),
                metrics=metrics,
                log_history=history,
                train_ids=plan.ids[fit],
                select_ids=[],
            )
            models.append(net)
            results[k] = metrics
        groups = plan.model_groups(model_folds)
        logits = np.full((len(text), n_classes), np.nan, np.float32)
        for members, rows in groups:
            logits[rows] = np.mean(
                [mmm.predict(models[i], dataset(rows), device) for i in members], axis=0
            )
        # Evidence from what trained each fold model (its rows.json) and from the inputs.
        used = run.fold_usage()
        in_sample = (
            plan.in_sample(groups, used, evidence.in_sample)
            if evidence.in_sample is not None
            else None
        )
        provenance = Provenance(
            model_id=model,
            checkpoint_sha256=sha256_of_weights([str(d) for d in run.finished_fold_dirs()]),
            family=model,
            modality="text+speech",
            layers=[],
            split_scheme=text.provenance.split_scheme,
            run=str(run.path),
            out_of_fold=plan.cross_fitted and folds != 0,
        )
        # What predicted the test rows, from the groups (stack reports and compare name it).
        tested = describe_test_predictions(len(plan.other_models(groups)))
        config = {**options, "test_predictions": tested}
        _write_store(
            run.path / f"{model}.h5", text, inputs.keep, logits, in_sample, provenance, config
        )
    run.write_summary(results, [])
    return results


def _train_with_progress(net, dataset, cfg: MMMConfig, n_classes: int, device: str, label: str):
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


def _write_store(
    path: Path,
    ref,
    rows: np.ndarray,
    logits: np.ndarray,
    in_sample: np.ndarray | None,
    provenance: Provenance,
    config: dict[str, Any],
) -> None:
    """The fused store, built under a temporary name and renamed into place."""
    with atomic_path(path, suffix=".h5") as tmp:
        layout = StoreLayout(
            ids=ref.ids,
            labels=ref.labels,
            split=ref.split,
            fold=ref.fold,
            label_names=ref.label_names,
            logits=True,
            config=config,
            in_sample=in_sample,
        )
        writer = create_store(tmp, layout, attrs=provenance.to_attrs())
        with writer:
            writer.write(rows, logits=logits[rows])
            missing = np.setdiff1d(np.arange(len(ref)), rows)
            writer.skip(missing, "not done in every input store")
        writer.finalize()
