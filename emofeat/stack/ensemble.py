"""``emofeat stack`` and ``emofeat predict``: fit a meta-learner over stores without leakage.

Leakage rules: the meta-learner is trained only on train rows, whose level-1 features are
out-of-fold predictions; its hyperparameters (and caruana's selection size) are chosen by
cross-validation over the stores' folds (``PredefinedSplit``); test rows are used once, for the
final report.

:func:`stack` is :func:`fit_stack` (choose hyperparameters, cross-validate, fit), then
:func:`evaluate_stack` (test rows, once) and :func:`write_stack`. Outputs in ``runs/stack-NAME/``:
``model.joblib`` (a scikit-learn ``Pipeline`` of :class:`~emofeat.stack.features.StoreFeatures`
and the meta-learner; loading a joblib file runs code, so load only files you trust, and emofeat
never loads one unless asked), ``config.yaml``, ``metrics.json``, ``report.md``,
``confusion.png``, ``predictions.csv``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import classification_report, confusion_matrix
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from emofeat.atomic import (
    atomic_folder,
    atomic_path,
    write_text,
)
from emofeat.crossfit import FoldPlan, combine_evidence, known_in_sample
from emofeat.errors import EmofeatError
from emofeat.metrics import (
    bootstrap_accuracy,
    classification_metrics,
    fit_temperature,
    fold_summary,
    paired_comparisons,
    softmax,
)
from emofeat.options import OptionError
from emofeat.outputs import check_output, register_csv_kind
from emofeat.records import dump_yaml, provenance, relative_path
from emofeat.stack.calibration import (
    TemperatureScaled,
    calibration_block,
    plot_reliability,
)
from emofeat.stack.config import AUTO, AUTO_CANDIDATES, PredictConfig, StackConfig
from emofeat.stack.dimensional import FittedDimensional
from emofeat.stack.features import StoreFeatures
from emofeat.stack.folder import (
    CALIBRATION_FIGURE,
    CONFIG,
    CONFUSION,
    DIMENSIONAL_MODEL,
    DIMENSIONS_FIGURE,
    METRICS,
    MODEL,
    PREDICTIONS,
    REPORT,
    StackFolder,
)
from emofeat.stack.level1 import Level1, load_level1
from emofeat.stack.meta import MetaContext, get_meta
from emofeat.stack.report import render_report
from emofeat.tasks import has_classes, has_dimensions

log = logging.getLogger(__name__)

SOFT_VOTE = "soft vote (equal weights)"  # the paired comparisons' fixed baseline


def feature_step(cfg: StackConfig) -> StoreFeatures:
    """The design-matrix transformer of this meta-learner."""
    inputs = get_meta(cfg.meta).inputs
    if inputs != "features" and cfg.passthrough:
        raise EmofeatError("--passthrough works with logreg and lgbm")
    if inputs == "embeddings":
        return StoreFeatures("embeddings", embedding=cfg.mixer_embedding)
    if inputs == "proba":
        return StoreFeatures("proba")
    if cfg.features not in ("proba", "logits"):
        raise EmofeatError("--features must be proba or logits")
    return StoreFeatures(cfg.features, passthrough=cfg.passthrough)


@dataclass
class FittedStack:
    """A fitted stack and what fitting learned: the pipeline, the chosen hyperparameters, the
    cross-validated figures and out-of-fold probabilities of the train rows."""

    config: StackConfig
    model: Pipeline
    train: np.ndarray
    test: np.ndarray
    best_params: dict[str, Any]
    cv: dict[str, dict[str, float]]
    cv_protocol: str  # nested | selection-biased | no hyperparameters
    oof: np.ndarray | None
    warning: str
    # Labelled test rows left out of the test figures: a base model trained on them.
    test_in_sample: np.ndarray = dataclasses.field(default_factory=lambda: np.array([], int))


@dataclass
class StackResult:
    out: Path
    metrics: dict[str, Any]


def _check_out_of_fold(
    level1: Level1, train: np.ndarray, cfg: StackConfig, learns: bool | None = None
) -> str:
    """'' when the meta-learner learns only from out-of-fold train rows (or learns nothing:
    ``learns``, by default that of ``cfg.meta``), else the warning for the report; without
    ``allow_in_sample`` an error naming the stores."""
    if not (get_meta(cfg.meta).learns if learns is None else learns):
        return ""  # fixed weights: nothing is fitted on the train rows
    problems = []
    if (level1.fold[train] < 0).any():
        problems.append("train rows have no fold information")
    problems += in_sample_evidence(level1, train)[0]
    if not problems:
        return ""
    text = "; ".join(problems)
    if not cfg.allow_in_sample:
        raise EmofeatError(
            f"refusing to stack: {text}. Stacking needs out-of-fold predictions (prepare and finetune with --folds K, extract with --run). Pass --allow-in-sample to go on anyway; the report will say so."
        )
    return (
        f"WARNING: in-sample level-1 features ({text}); the meta-learner's figures are optimistic."
    )


def in_sample_evidence(level1: Level1, train: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The stores' evidence about their level-1 values, judged once for the refusal, the CV
    label and predictions.csv: what makes ``train`` rows in-sample (messages; a store whose
    ``out_of_fold`` is false counts whole), and per row whether its value is in-sample or of
    unknown status."""
    said = [prov.out_of_fold is False for prov in level1.provenance]
    problems = [
        f"store {name} says its train rows come from one model trained on them (out_of_fold false)"
        for name, whole in zip(level1.names, said)
        if whole
    ]
    problems += combine_evidence(level1.names, level1.in_sample, train).problems
    flags = [np.ones(len(level1), bool) if whole else f for f, whole in zip(level1.in_sample, said)]
    per_row = combine_evidence(level1.names, flags, train).in_sample
    return problems, np.ones(len(level1), bool) if per_row is None else per_row


def fit_stack(level1: Level1, cfg: StackConfig) -> FittedStack:
    """Choose hyperparameters by CV over the stores' folds, cross-validate the ensemble on the
    train rows and fit the final meta-learner on all of them. Test rows are not touched."""
    spec = get_meta(cfg.meta)
    plan = FoldPlan.from_store(level1)
    train = plan.train_rows
    labelled_test = np.flatnonzero(plan.labelled & (plan.split == "test"))
    # A test row a base model trained on (its store's evidence says so) is never scored as test.
    seen = known_in_sample(level1.in_sample, len(level1))[labelled_test]
    test, test_in_sample = labelled_test[~seen], labelled_test[seen]
    if not len(train):
        raise EmofeatError("no labelled train rows are done in every store")
    warning = _check_out_of_fold(level1, train, cfg)
    features = feature_step(cfg).fit(level1)
    X, y = features.transform(level1), level1.labels
    estimator = spec.build(
        MetaContext(
            classes=list(range(level1.num_classes)),
            weights=cfg.weights,
            groups=features.widths_,
            passthrough_dims=features.passthrough_dims_,
            seed=cfg.seed,
        )
    )
    try:
        best_params, cv, oof, protocol, final = _fit(
            spec, estimator, X, y, plan, level1.num_classes
        )
    except ValueError as err:  # the estimator's own validation (weights, labels, ...)
        raise EmofeatError(f"cannot fit {cfg.meta}: {err}") from None
    if cv and in_sample_evidence(level1, train)[0]:
        # Figures over train rows whose base-model values are in-sample (the reference
        # protocol's single models, say) are not cross-validation, whatever the meta-learner did.
        protocol = "in-sample"
    features.fitted_ids_ = list(level1.ids[train])  # the rows the meta-learner learned from
    if cfg.calibrate == "temperature":
        if oof is None:
            raise EmofeatError(
                "--calibrate temperature is fitted on the train rows' cross-validated "
                "probabilities; these stores' train rows need 2 or more folds"
            )
        # One temperature, fitted on out-of-fold train rows: it never sees a test label.
        final = TemperatureScaled(final, fit_temperature(y[train], np.log(np.clip(oof, 1e-12, 1))))
    model = Pipeline([("features", features), ("meta", final)])
    if len(test_in_sample):
        log.warning(
            "%d labelled test row(s) were produced by a base model that trained on them; "
            "they are left out of the test figures",
            len(test_in_sample),
        )
    return FittedStack(
        cfg, model, train, test, best_params, cv, protocol, oof, warning, test_in_sample
    )


def _fit(spec, estimator, X, y, plan: FoldPlan, C):
    """Hyperparameters by CV over the folds, the (nested) CV figures, and the final fit."""
    train = plan.train_rows
    best_params: dict[str, Any] = {}
    if spec.grid and plan.cross_fitted:
        search = GridSearchCV(
            estimator, spec.grid, cv=plan.splitter(), scoring="accuracy", refit=False
        )
        search.fit(X[train], y[train])
        estimator.set_params(**search.best_params_)
        best_params = {
            k: getattr(v, "item", lambda v=v: v)() for k, v in search.best_params_.items()
        }
    cv, oof, protocol = (
        _cross_validate(estimator, spec.grid, X, y, plan, C)
        if plan.cross_fitted
        else ({}, None, "")
    )
    final = clone(estimator).fit(X[train], y[train])
    return best_params, cv, oof, protocol, final


def _cross_validate(estimator, grid, X, y, plan: FoldPlan, C) -> tuple[dict, np.ndarray, str]:
    """The ensemble's figures per held-out fold (fit on the other folds): mean and std, the
    out-of-fold probabilities of the train rows, and how hyperparameters were chosen.

    With a grid and at least 3 folds the CV is nested: each outer fold's hyperparameters are
    chosen by CV over the remaining folds only, so the figures are not selection-biased. With 2
    folds that is impossible, and the figures are labelled selection-biased."""
    train = plan.train_rows
    nested = bool(grid) and len(plan.folds) >= 3
    protocol = "nested" if nested else ("selection-biased" if grid else "no hyperparameters")
    per_fold, oof = [], np.zeros((len(train), C))
    for _, fit_rows, held in plan.fold_pairs():
        if nested:
            search = GridSearchCV(
                clone(estimator), grid, cv=plan.splitter(fit_rows), scoring="accuracy"
            )
            model = search.fit(X[fit_rows], y[fit_rows]).best_estimator_
        else:
            model = clone(estimator).fit(X[fit_rows], y[fit_rows])
        proba = model.predict_proba(X[held])
        oof[np.searchsorted(train, held)] = proba
        per_fold.append(classification_metrics(y[held], proba.argmax(1)))
    summary = fold_summary(per_fold)
    return summary, oof, protocol


def evaluate_stack(fitted: FittedStack, level1: Level1) -> dict[str, Any]:
    """metrics.json: CV figures, and the test rows' figures for the ensemble and every base
    model (the only place test rows are used)."""
    y, test = level1.labels, fitted.test
    meta = fitted.model.named_steps["meta"]
    if isinstance(meta, TemperatureScaled):
        meta = meta.estimator
    metrics: dict[str, Any] = {
        "meta": fitted.config.meta,
        "best_params": fitted.best_params,
        "cv": fitted.cv,
        "cv_protocol": fitted.cv_protocol,
        "train_rows": int(len(fitted.train)),
        "test_rows": int(len(test)),
        "test_rows_in_sample": int(len(fitted.test_in_sample)),
        "dropped_rows": int(level1.dropped),
        # Rows without a label (new recordings, or labels a --label-map dropped): predicted,
        # never fitted or scored.
        "unlabelled_rows": int((level1.labels < 0).sum()),
        "in_sample_warning": fitted.warning,
        "stores": list(level1.names),
        "inputs": _inputs(fitted.model.named_steps["features"]),
        # Like for like: what predicted each base model's test rows.
        "test_predictions": {n: s.test_predictions for n, s in zip(level1.names, level1.stores)},
    }
    block: dict[str, Any] = {"models": {}}
    if len(test):
        proba = fitted.model.predict_proba(level1)[test]
        pred = proba.argmax(1)
        block["ensemble"] = classification_metrics(y[test], pred)
        block["ensemble"]["accuracy_ci95"] = bootstrap_accuracy(
            y[test], pred, seed=fitted.config.seed
        )
        block.update(_per_class(y[test], pred, level1.label_names))
        block["model_reports"] = {}
        others = {}
        for name, lg in zip(level1.names, level1.logits):
            if lg is not None:
                model_pred = lg[test].argmax(1)
                block["models"][name] = classification_metrics(y[test], model_pred)
                block["model_reports"][name] = _per_class(y[test], model_pred, level1.label_names)
                others[name] = model_pred
        metrics["calibration"] = _calibration(fitted, level1, meta)
        probas = [softmax(lg[test].astype(np.float64)) for lg in level1.logits if lg is not None]
        if len(probas) > 1 and fitted.config.meta != "softvote":
            # The fixed soft vote of the same stores: what the learned ensemble must beat.
            others[SOFT_VOTE] = np.mean(probas, axis=0).argmax(1)
        block["paired"] = paired_comparisons(
            y[test], pred, others, level1.num_classes, seed=fitted.config.seed
        )
    metrics["test"] = block
    metrics["models_cv"] = _models_cv(level1, fitted.train)
    if hasattr(meta, "weights_"):
        metrics["weights"] = dict(zip(level1.names, map(float, meta.weights_)))
    return metrics


def _calibration(fitted: FittedStack, level1: Level1, meta) -> dict[str, Any]:
    """Every system's calibration on the test rows (and, with ``--calibrate temperature``, its
    temperature fitted on the out-of-fold train rows and its figures after it): the ensemble
    before its temperature, and each base model."""
    X = fitted.model.named_steps["features"].transform(level1)
    systems = {"ensemble": (meta.predict_proba(X), fitted.oof)}
    for name, lg in zip(level1.names, level1.logits):
        if lg is not None:
            proba = softmax(lg.astype(np.float64))
            systems[name] = (proba, proba[fitted.train])
    return calibration_block(
        level1.labels,
        fitted.test,
        fitted.train,
        systems,
        temperature=fitted.config.calibrate == "temperature",
    )


def _models_cv(level1: Level1, train: np.ndarray) -> dict[str, dict[str, float]]:
    """Each base model's cross-validated accuracy beside its test figure: its out-of-fold train
    rows' accuracy per fold, mean ± std over folds. Only stores whose train rows are all
    out-of-fold: an in-sample figure is never shown as cross-validation."""
    out = {}
    folds = level1.fold[train]
    for name, lg, flags in zip(level1.names, level1.logits, level1.in_sample):
        if lg is None or flags is None or flags[train].any() or len(np.unique(folds)) < 2:
            continue
        per_fold = [
            classification_metrics(
                level1.labels[train[folds == k]], lg[train[folds == k]].argmax(1)
            )
            for k in np.unique(folds)
        ]
        out[name] = fold_summary(per_fold)
    return out


def _inputs(features: StoreFeatures) -> list[dict[str, Any]]:
    """What the meta-learner read: per store, the dataset and its width."""
    what = features.embedding if features.inputs == "embeddings" else features.inputs
    rows = [
        {"store": name, "input": what, "columns": int(width)}
        for name, width in zip(features.store_names_, features.widths_)
    ]
    if features.passthrough:  # reduced together by a PCA to 16 inside the pipeline
        rows += [
            {"store": name, "input": f"embedding {features.passthrough}", "columns": int(width)}
            for name, width in zip(features.store_names_, features.passthrough_widths_)
        ]
    return rows


def _per_class(y: np.ndarray, pred: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    """scikit-learn's classification report (as a dict) and confusion matrix."""
    labels = list(range(len(label_names)))
    return {
        "report": classification_report(
            y, pred, labels=labels, target_names=label_names, zero_division=0, output_dict=True
        ),
        "confusion": confusion_matrix(y, pred, labels=labels).tolist(),
    }


def write_stack(
    out: Path,
    fitted: FittedStack | None,
    level1: Level1,
    *,
    metrics: dict[str, Any],
    dims: FittedDimensional | None = None,
    config: StackConfig | None = None,
) -> None:
    """model.joblib, config.yaml, metrics.json, predictions.csv, confusion.png, report.md (and
    with dimensions, dimensional.joblib and dimensions.png) — written into a temporary folder
    that then takes the place of ``out``, so a stack folder is always whole (a kill leaves the
    previous one, or none). ``fitted`` is None for a stack of valence and arousal alone."""
    StackFolder(out).check_writable()
    with atomic_folder(out) as tmp:
        predicted = _write_dimensional_files(tmp, dims, level1) if dims is not None else None
        if fitted is not None:
            _write_stack_files(
                tmp, fitted=fitted, level1=level1, metrics=metrics, dimensions=predicted
            )
            return
        folder = StackFolder(tmp)
        record = provenance(_stack_record(config, level1, tmp), config.seed, output="stack")
        write_text(folder.file(CONFIG), dump_yaml(record))
        write_text(folder.file(METRICS), json.dumps(metrics, indent=2))
        origin = _origins(level1, dims.train, cross_validated=True)
        write_predictions(
            folder.file(PREDICTIONS), level1, None, origin=origin, dimensions=predicted
        )
        write_text(folder.file(REPORT), render_report(metrics, level1.label_names))


def _write_dimensional_files(out: Path, dims: FittedDimensional, level1: Level1) -> np.ndarray:
    """The valence/arousal model and figure of a stack folder; returns every row's predicted
    dimensions (train rows: the cross-validated ones), as predictions.csv holds them."""
    import joblib

    from emofeat.stack.dimensional import plot_dimensions

    folder = StackFolder(out)
    with atomic_path(folder.file(DIMENSIONAL_MODEL)) as tmp:
        joblib.dump(dims.model, tmp)
    pred = dims.model.predict(level1)
    cross = np.isfinite(dims.oof)
    pred[cross] = dims.oof[cross]
    plot_dimensions(level1, pred, dims.test, folder.file(DIMENSIONS_FIGURE))
    return pred


def _origins(level1: Level1, train: np.ndarray, *, cross_validated: bool) -> np.ndarray:
    """Each row's provenance in predictions.csv: ``in-sample`` where a base model trained on it
    (or the meta-learner was fitted on it without CV), ``cross-validated`` for train rows the
    meta-learner predicted from the other folds, ``out-of-sample`` otherwise. A row whose
    level-1 values are in-sample (or unknown) stays ``in-sample``: the meta-learner's CV cannot
    make a base model's in-sample value cross-validated."""
    origin = np.where(
        known_in_sample(level1.in_sample, len(level1)), "in-sample", "out-of-sample"
    ).astype(object)
    origin[train] = "in-sample"
    if cross_validated:
        tainted = in_sample_evidence(level1, train)[1]
        origin[train] = np.where(tainted[train], "in-sample", "cross-validated")
    return origin


def _stack_record(config: StackConfig, level1: Level1, out: Path) -> dict[str, Any]:
    """A stack's config.yaml: its options, the stores it was fitted on and their classes."""
    return {
        **config.record(),
        "stores": [str(p.resolve()) for p in level1.paths],  # --config re-runs from anywhere
        # ... and from the stack's folder, so that a project folder can move (StackFolder).
        "stores_relative": [relative_path(p, out) for p in level1.paths],
        "label_names": list(level1.label_names),  # the classes its figures are over
    }


def _write_stack_files(
    out: Path,
    *,
    fitted: FittedStack,
    level1: Level1,
    metrics: dict[str, Any],
    dimensions: np.ndarray | None = None,
) -> None:
    import joblib

    from emofeat.analysis.plots import plot_confusions

    folder = StackFolder(out)
    with atomic_path(folder.file(MODEL)) as tmp:
        joblib.dump(fitted.model, tmp)
    record = provenance(
        _stack_record(fitted.config, level1, out), fitted.config.seed, output="stack"
    )
    write_text(folder.file(CONFIG), dump_yaml(record))
    write_text(folder.file(METRICS), json.dumps(metrics, indent=2))
    # Train rows get the meta-learner's cross-validated (out-of-fold) predictions, other rows the
    # final model's: no row's prediction comes from a model that was fitted on it.
    final = fitted.model.predict_proba(level1)
    proba = final.copy()
    if fitted.oof is not None:
        proba[fitted.train] = fitted.oof
    origin = _origins(level1, fitted.train, cross_validated=fitted.oof is not None)
    write_predictions(folder.file(PREDICTIONS), level1, proba, origin=origin, dimensions=dimensions)
    if metrics.get("calibration"):
        label = "ensemble" + (
            " (temperature-scaled)" if fitted.config.calibrate == "temperature" else ""
        )
        systems = {label: final}
        systems.update(
            {
                n: softmax(lg.astype(np.float64))
                for n, lg in zip(level1.names, level1.logits)
                if lg is not None
            }
        )
        plot_reliability(level1.labels, fitted.test, systems, folder.file(CALIBRATION_FIGURE))
    test = metrics["test"]
    if "confusion" in test:
        panels = {f"ensemble ({metrics['meta']})": test["confusion"]}
        panels.update({name: r["confusion"] for name, r in test.get("model_reports", {}).items()})
        plot_confusions(panels, level1.label_names, folder.file(CONFUSION), title="Test set")
    write_text(folder.file(REPORT), render_report(metrics, level1.label_names))


def stack(
    stores: Sequence[str | os.PathLike],
    meta: str,
    out: str | os.PathLike,
    **options: Any,
) -> StackResult:
    """Fit a meta-learner on the stores' out-of-fold train rows, evaluate it, write a stack folder.

    Hyperparameters are chosen by cross-validation over the stores' folds; the CV figures are
    nested with 3 or more folds; test rows are used once. The folder holds ``model.joblib``,
    ``config.yaml``, ``metrics.json``, ``report.md``, ``confusion.png`` and ``predictions.csv``.

    Args:
        stores: The base models' feature stores (any order).
        meta: The meta-learner; ``"auto"`` chooses it by nested CV over the train folds.
        out: The stack folder.
        **options: The other options of :class:`~emofeat.stack.config.StackConfig`.

    Returns:
        The folder and its metrics.

    Raises:
        OptionError: an option's value is refused (before any store is opened).
        EmofeatError: in-sample or unknown evidence in the train rows (without
            ``allow_in_sample``), stores that disagree, an output that is an input.
    """
    cfg = StackConfig(meta=meta, **options)
    if cfg.meta is None and has_classes(cfg.target):
        raise OptionError(
            f"--meta is required with --target {cfg.target} (the classes' meta-learner; "
            "`emofeat stack --list-meta` describes each)"
        )
    StackFolder(out).check_writable(stores)
    with load_level1(stores, allow_incomplete=cfg.allow_incomplete) as level1:
        fitted, dims, metrics = None, None, {"target": cfg.target}
        if has_classes(cfg.target):
            choice = None
            if meta == AUTO:
                fitted, choice = choose_meta(level1, cfg)
            else:
                fitted = fit_stack(level1, cfg)
            metrics.update(evaluate_stack(fitted, level1))  # test rows: once
            if choice is not None:
                metrics["auto"] = choice
                fitted = dataclasses.replace(fitted, config=cfg)  # config.yaml re-runs the choice
        if has_dimensions(cfg.target):
            dims, metrics = _stack_dimensions(level1, cfg, fitted, metrics)
        write_stack(Path(out), fitted, level1, metrics=metrics, dims=dims, config=cfg)
    return StackResult(Path(out), metrics)


def _stack_dimensions(
    level1: Level1, cfg: StackConfig, fitted: FittedStack | None, metrics: dict[str, Any]
) -> tuple[FittedDimensional, dict[str, Any]]:
    """Fit and score valence and arousal on the rows the categorical part uses (or, alone, on
    rows chosen by the same rules: out-of-fold train rows, test rows no base model trained on)."""
    from emofeat.stack.dimensional import (
        choose_dimensional,
        evaluate_dimensional,
        fit_dimensional,
    )

    if level1.targets is None or not np.isfinite(level1.targets).any():
        raise EmofeatError(
            f"--target {cfg.target}: the stores hold no valence or arousal (their manifest had "
            "none: AI Hub, a CSV without them)"
        )
    if fitted is not None:
        train, test = fitted.train, fitted.test
    else:
        plan = FoldPlan.from_store(level1)
        train = plan.train_rows
        candidates = np.flatnonzero(plan.split == "test")
        test = candidates[~known_in_sample(level1.in_sample, len(level1))[candidates]]
        metrics.update(stores=list(level1.names), dropped_rows=int(level1.dropped))
    # The same refusal of in-sample train rows as the classes' meta-learner (the mean learns
    # nothing from them).
    warning = _check_out_of_fold(level1, train, cfg, learns=cfg.dim_meta != "mean")
    if warning and not metrics.get("in_sample_warning"):
        metrics["in_sample_warning"] = warning
    choice = None
    if cfg.dim_meta == AUTO:
        dims, choice = choose_dimensional(level1, train, cfg.seed)
    else:
        dims = fit_dimensional(level1, cfg.dim_meta, train, cfg.seed)
    dims = dataclasses.replace(dims, test=test)  # the rows its figures and figure are over
    block = evaluate_dimensional(dims, level1, test, cfg.seed)
    if choice is not None:
        block["auto"] = choice
    metrics["dimensional"] = block
    return dims, metrics


def choose_meta(level1: Level1, cfg: StackConfig) -> tuple[FittedStack, dict[str, Any]]:
    """``--meta auto``: fit every candidate, choose the one with the best nested-CV accuracy over
    the train folds (ties: the simpler, earlier candidate), and return it with the choice. Test
    rows are not touched. The chosen one's CV figure is optimistic by the choice itself (the
    best of several), which the report says."""
    fitted = {
        name: fit_stack(level1, dataclasses.replace(cfg, meta=name)) for name in AUTO_CANDIDATES
    }
    if any(not f.cv for f in fitted.values()):
        raise EmofeatError(
            "--meta auto chooses by cross-validation over the train folds; these stores' train "
            "rows need 2 or more folds"
        )
    scores = {name: f.cv["accuracy"] for name, f in fitted.items()}
    chosen = max(AUTO_CANDIDATES, key=lambda n: (scores[n]["mean"], -AUTO_CANDIDATES.index(n)))
    biased = sorted(n for n, f in fitted.items() if f.cv_protocol == "selection-biased")
    by = "accuracy, nested CV over the train folds"
    if biased:  # the wording follows the CV each candidate had
        by = (
            f"accuracy, CV over the train folds; selection-biased for {', '.join(biased)}, whose "
            "hyperparameters were chosen on the same folds (nested CV needs 3 or more)"
        )
    return fitted[chosen], {"chosen": chosen, "by": by, "candidates": scores}


# The header predictions.csv starts with (CSV has nowhere else to hold a marker).
PREDICTIONS_HEADER = "id,split,label,predicted,provenance"


register_csv_kind("predictions", PREDICTIONS_HEADER)


def write_predictions(
    path: Path,
    level1: Level1,
    proba: np.ndarray | None,
    *,
    origin: np.ndarray,
    dimensions: np.ndarray | None = None,
) -> None:
    """predictions.csv: id, split, label, predicted, provenance (``in-sample``: the meta-learner
    was fitted on the row; ``cross-validated``: predicted by a meta-learner fitted on the other
    folds; ``out-of-sample``: never fitted on) and one probability column per class; with
    ``dimensions``, the true ``valence``/``arousal`` (where known) and ``predicted_*``."""
    frame = pd.DataFrame({"id": level1.ids, "split": level1.split})
    if proba is not None:
        frame["label"] = [level1.label_names[i] if i >= 0 else "" for i in level1.labels]
        frame["predicted"] = [level1.label_names[i] for i in proba.argmax(1)]
    frame["provenance"] = origin
    for j, name in enumerate(level1.label_names if proba is not None else []):
        frame[f"p_{name}"] = proba[:, j]
    for j, name in enumerate(level1.dimension_names if dimensions is not None else []):
        if level1.targets is not None:
            frame[name] = level1.targets[:, j]
        frame[f"predicted_{name}"] = dimensions[:, j]
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def predict(
    stack_dir: str | os.PathLike,
    stores: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    **options: Any,
) -> Path:
    """Apply a fitted stack to stores of the same models, in any order.

    Loads ``model.joblib``, a pickle: only do this with stack folders you trust, since loading it
    runs code. Stores are matched to those the stack was fitted on by identity.

    Args:
        stack_dir: A folder written by :func:`stack`.
        stores: The base models' stores (any order).
        out_csv: The predictions CSV to write (id, predicted class, probabilities, provenance).
        **options: The options of :class:`~emofeat.stack.config.PredictConfig`.

    Returns:
        The path of the written CSV.

    Raises:
        OptionError: an option's value is refused.
        EmofeatError: a store missing, duplicated or foreign to the stack, or an output that is
            an input.
    """
    allow_incomplete = PredictConfig(**options).allow_incomplete
    check_output(out_csv, kind="predictions", inputs=[*stores, stack_dir], what="-o")
    folder = StackFolder(stack_dir)
    with load_level1(stores, allow_incomplete=allow_incomplete) as level1:
        out_csv = Path(out_csv)
        apply_stack(folder, level1, out_csv)
    return out_csv


def apply_stack(
    folder: StackFolder, level1: Level1, out_csv: Path, *, origin: np.ndarray | None = None
) -> None:
    """Write the predictions of a fitted stack (its classes, its valence and arousal, or both)
    for aligned stores. ``origin``: each row's provenance; default: ``in-sample`` where the
    meta-learner was fitted on the row or a base model trained on it, else ``out-of-sample``.
    Loads the folder's joblib files: trusted folders only."""
    model = folder.load_model() if folder.has_classes() else None
    dims = folder.load_dimensional_model()
    if origin is None:
        fitted_on = set(model.named_steps["features"].fitted_ids_) if model else set()
        fitted_on |= set(dims.fitted_ids) if dims is not None else set()
        seen = known_in_sample(level1.in_sample, len(level1))
        origin = np.array(
            [
                "in-sample" if u in fitted_on or s else "out-of-sample"
                for u, s in zip(level1.ids, seen)
            ],
            dtype=object,
        )
    proba = model.predict_proba(level1) if model is not None else None
    write_predictions(
        out_csv,
        level1,
        proba,
        origin=origin,
        dimensions=dims.predict(level1) if dims is not None else None,
    )
