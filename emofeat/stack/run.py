"""``emofeat stack`` and ``emofeat predict``: fit a meta-learner over stores without leakage.

Leakage rules: the meta-learner is trained only on train rows, whose level-1 features are
out-of-fold predictions; its hyperparameters (and caruana's selection size) are chosen by
cross-validation over the stores' folds (``PredefinedSplit``); test rows are used once, for the
final report.

Outputs in ``runs/stack-NAME/``: ``model.joblib`` (the fitted meta model: loading a joblib file
runs code, so load only files you trust, and emofeat never loads one unless asked), ``config.yaml``,
``metrics.json``, ``report.md``, ``confusion.png``, ``predictions.csv``.
"""

from __future__ import annotations

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
from sklearn.model_selection import GridSearchCV, PredefinedSplit

from emofeat.atomic import atomic_path, write_text
from emofeat.errors import EmofeatError, StoreError
from emofeat.provenance import dump_yaml, provenance
from emofeat.stack.evaluate import bootstrap_accuracy, classification_metrics
from emofeat.stack.level1 import Level1, load_level1
from emofeat.stack.meta import make_meta

log = logging.getLogger(__name__)
METAS = ("softvote", "caruana", "logreg", "lgbm", "mixer")


def parse_weights(text: str | Sequence[float] | None) -> list[float] | None:
    """'0.25,0.25,1/6,1/6,1/6' → floats (fractions allowed)."""
    if text is None or isinstance(text, (list, tuple)):
        return list(text) if text is not None else None
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if "/" in part:
            a, b = part.split("/")
            out.append(float(a) / float(b))
        else:
            out.append(float(part))
    return out


@dataclass
class StackResult:
    out: Path
    metrics: dict[str, Any]


def _design(
    L: Level1, meta: str, features: str, passthrough: str | None, mixer_embedding: str
) -> tuple[np.ndarray, dict]:
    """The meta-learner's input X over all rows, and what make_meta needs to know of it."""
    if meta == "mixer":
        x, dims = L.embeddings(mixer_embedding)
        return x, {"groups": dims}
    x = L.features("proba" if meta in ("softvote", "caruana") else features)
    info: dict[str, Any] = {}
    if passthrough:
        if meta in ("softvote", "caruana"):
            raise EmofeatError("--passthrough works with logreg and lgbm")
        emb, dims = L.embeddings(passthrough)
        x = np.hstack([x, emb])
        info["passthrough_dims"] = int(sum(dims))
    return x, info


def _check_out_of_fold(L: Level1, train: np.ndarray, allow_in_sample: bool, meta: str) -> str:
    """'' when every train row carries out-of-fold values, else the warning for the report."""
    problems = []
    if (L.fold[train] < 0).any():
        problems.append("train rows have no fold information")
    if meta != "mixer":
        for name, attrs in zip(L.names, L.attrs):
            if attrs.get("out_of_fold") is False or attrs.get("out_of_fold") == 0:
                problems.append(
                    f"store {name} holds in-sample logits for its train rows (a run without folds)"
                )
    if not problems:
        return ""
    text = "; ".join(problems)
    if not allow_in_sample:
        raise EmofeatError(
            f"refusing to stack: {text}. Stacking needs out-of-fold predictions (finetune and prepare with --folds K). Pass --allow-in-sample to go on anyway; the report will say so."
        )
    return (
        f"WARNING: in-sample level-1 features ({text}); the meta-learner's figures are optimistic."
    )


def stack(
    stores: Sequence[str | os.PathLike],
    meta: str,
    out: str | os.PathLike,
    weights: str | Sequence[float] | None = None,
    features: str = "proba",
    passthrough: str | None = None,
    mixer_embedding: str = "last",
    allow_in_sample: bool = False,
    allow_incomplete: bool = False,
    seed: int = 0,
) -> StackResult:
    """Fit a meta-learner on the stores' train rows, evaluate it by CV and on test, write a report."""
    if meta not in METAS:
        raise EmofeatError(f"unknown --meta {meta!r}; known: {', '.join(METAS)}")
    if features not in ("proba", "logits"):
        raise EmofeatError("--features must be proba or logits")
    out = Path(out)
    L = load_level1(stores, allow_incomplete)
    try:
        C = L.num_classes
        labelled = L.usable & (L.labels >= 0)
        train = np.flatnonzero(labelled & (L.split == "train"))
        test = np.flatnonzero(labelled & (L.split == "test"))
        if not len(train):
            raise EmofeatError("no labelled train rows are done in every store")
        warning = _check_out_of_fold(L, train, allow_in_sample, meta)
        X, info = _design(L, meta, features, passthrough, mixer_embedding)
        estimator, grid = make_meta(
            meta,
            C,
            parse_weights(weights),
            info.get("groups"),
            info.get("passthrough_dims", 0),
            seed,
        )
        y = L.labels
        folds = L.fold[train]
        has_folds = (folds >= 0).all() and len(np.unique(folds)) >= 2
        if grid and has_folds:
            search = GridSearchCV(
                estimator, grid, cv=PredefinedSplit(folds), scoring="accuracy", refit=False
            )
            search.fit(X[train], y[train])
            estimator.set_params(**search.best_params_)
            best_params = search.best_params_
        else:
            best_params = {}
        cv, oof = _cross_validate(estimator, X, y, train, folds, C) if has_folds else ({}, None)
        final = clone(estimator).fit(X[train], y[train])
        metrics: dict[str, Any] = {
            "meta": meta,
            "best_params": _plain(best_params),
            "cv": cv,
            "train_rows": int(len(train)),
            "test_rows": int(len(test)),
            "dropped_rows": int(L.dropped),
            "in_sample_warning": warning,
        }
        test_block: dict[str, Any] = {"models": {}}
        if len(test):
            proba = final.predict_proba(X[test])
            pred = proba.argmax(1)
            test_block["ensemble"] = classification_metrics(y[test], pred, C)
            test_block["ensemble"]["accuracy_ci95"] = bootstrap_accuracy(y[test], pred, seed=seed)
            for name, lg in zip(L.names, L.logits):
                if lg is not None:
                    test_block["models"][name] = classification_metrics(
                        y[test], lg[test].argmax(1), C
                    )
            test_block["report"] = classification_report(
                y[test],
                pred,
                labels=list(range(C)),
                target_names=L.label_names,
                zero_division=0,
                output_dict=True,
            )
            test_block["confusion"] = confusion_matrix(
                y[test], pred, labels=list(range(C))
            ).tolist()
        metrics["test"] = test_block
        if hasattr(final, "weights_"):
            metrics["weights"] = dict(zip(L.names, map(float, final.weights_)))
        _write_outputs(
            out,
            L,
            final,
            X,
            train,
            oof,
            metrics,
            dict(
                stores=[str(p) for p in L.paths],
                meta=meta,
                weights=parse_weights(weights),
                features=features,
                passthrough=passthrough,
                mixer_embedding=mixer_embedding,
                allow_in_sample=allow_in_sample,
                seed=seed,
            ),
            seed,
            info,
        )
        return StackResult(out, metrics)
    finally:
        L.close()


def _plain(d: dict) -> dict:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in d.items()}


def _cross_validate(estimator, X, y, train, folds, C) -> tuple[dict, np.ndarray]:
    """The ensemble's figures per held-out fold (fit on the other folds): mean and std, and the
    out-of-fold probabilities of the train rows."""
    per_fold, oof = [], np.zeros((len(train), C))
    for k in np.unique(folds):
        fit_rows, held = train[folds != k], train[folds == k]
        model = clone(estimator).fit(X[fit_rows], y[fit_rows])
        proba = model.predict_proba(X[held])
        oof[folds == k] = proba
        per_fold.append(classification_metrics(y[held], proba.argmax(1), C))
    summary = {
        m: {
            "mean": float(np.mean([f[m] for f in per_fold])),
            "std": float(np.std([f[m] for f in per_fold])),
        }
        for m in per_fold[0]
    }
    return summary, oof


def _write_outputs(out: Path, L: Level1, model, X, train, oof, metrics, config, seed, info) -> None:
    import joblib

    from emofeat.plots import plot_confusion

    out.mkdir(parents=True, exist_ok=True)
    bundle = {
        "model": model,
        "stores": L.names,
        "label_names": L.label_names,
        "config": config,
        "design": info,
    }
    with atomic_path(out / "model.joblib") as tmp:
        joblib.dump(bundle, tmp)
    write_text(out / "config.yaml", dump_yaml(provenance(config, seed)))
    write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    # Train rows get the meta-learner's cross-validated (out-of-fold) predictions, other rows the
    # final model's: no row's prediction comes from a model that was fitted on it.
    rows = np.flatnonzero(L.usable)
    proba = model.predict_proba(X[rows])
    if oof is not None:
        pos = {r: i for i, r in enumerate(rows)}
        proba[[pos[r] for r in train]] = oof
    _write_predictions(out / "predictions.csv", L, proba, rows)
    if "confusion" in metrics["test"]:
        plot_confusion(
            np.array(metrics["test"]["confusion"]),
            L.label_names,
            out / "confusion.png",
            title=f"{metrics['meta']} (test)",
        )
    write_text(out / "report.md", render_report(metrics, L.label_names))


def _write_predictions(path: Path, L: Level1, proba: np.ndarray, rows: np.ndarray) -> None:
    frame = pd.DataFrame(
        {
            "id": L.ids[rows],
            "split": L.split[rows],
            "label": [L.label_names[i] if i >= 0 else "" for i in L.labels[rows]],
            "predicted": [L.label_names[i] for i in proba.argmax(1)],
        }
    )
    for j, name in enumerate(L.label_names):
        frame[f"p_{name}"] = proba[:, j]
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def table_rows(metrics: dict) -> list[tuple[str, dict]]:
    """(method, test metrics) rows: each base model, then the ensemble."""
    test = metrics.get("test", {})
    rows = list(test.get("models", {}).items())
    if "ensemble" in test:
        rows.append((f"ensemble ({metrics['meta']})", test["ensemble"]))
    return rows


def render_table(rows: list[tuple[str, dict]]) -> str:
    """The reference's table layout (accuracy, weighted precision, weighted F1) plus macro F1 and UAR."""
    lines = [
        "| method | accuracy | weighted precision | weighted F1 | macro F1 | UAR |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in rows:
        lines.append(
            f"| {name} | {m['accuracy']:.4f} | {m['weighted_precision']:.4f} | {m['weighted_f1']:.4f} | {m['macro_f1']:.4f} | {m['uar']:.4f} |"
        )
    return "\n".join(lines)


def render_report(metrics: dict, label_names: list[str]) -> str:
    """report.md: warning line (if any), the table, CV figures, CI, per-class report, confusion."""
    parts = []
    if metrics.get("in_sample_warning"):
        parts.append(metrics["in_sample_warning"] + "\n")
    parts.append(f"# Stacked ensemble: {metrics['meta']}\n")
    parts.append(
        f"Train rows {metrics['train_rows']}, test rows {metrics['test_rows']}, rows dropped (not done in every store) {metrics['dropped_rows']}."
    )
    if metrics.get("best_params"):
        parts.append(
            f"Hyperparameters chosen by cross-validation over the stores' folds: `{metrics['best_params']}`."
        )
    if metrics.get("weights"):
        parts.append(
            "Weights: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics["weights"].items()) + "."
        )
    parts.append("\n## Test set\n")
    test = metrics.get("test", {})
    if "ensemble" in test:
        parts.append(render_table(table_rows(metrics)))
        lo, hi = test["ensemble"]["accuracy_ci95"]
        parts.append(f"\nEnsemble test accuracy 95 % bootstrap interval: [{lo:.4f}, {hi:.4f}].")
    else:
        parts.append("No labelled test rows.")
    if metrics.get("cv"):
        parts.append("\n## Cross-validation over the train folds (ensemble)\n")
        parts.append("| metric | mean | std |\n|---|---|---|")
        parts += [f"| {k} | {v['mean']:.4f} | {v['std']:.4f} |" for k, v in metrics["cv"].items()]
    if "report" in test:
        parts.append("\n## Per class (test)\n")
        parts.append("| class | precision | recall | F1 | support |\n|---|---|---|---|---|")
        for name in label_names:
            r = test["report"][name]
            parts.append(
                f"| {name} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1-score']:.3f} | {int(r['support'])} |"
            )
        parts.append("\n## Confusion matrix (rows: true, columns: predicted)\n")
        parts.append("| | " + " | ".join(label_names) + " |\n|---|" + "---|" * len(label_names))
        for name, row in zip(label_names, test["confusion"]):
            parts.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
        parts.append("\n![confusion](confusion.png)")
    return "\n".join(parts) + "\n"


def predict(
    stack_dir: str | os.PathLike,
    stores: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    allow_incomplete: bool = False,
) -> Path:
    """Apply a fitted stack to new stores (same models, same order). Loads ``model.joblib``:
    only do this with stack folders you trust, since loading a joblib file runs code."""
    import joblib

    path = Path(stack_dir) / "model.joblib"
    if not path.is_file():
        raise EmofeatError(f"{stack_dir}: no model.joblib; not a folder written by `emofeat stack`")
    bundle = joblib.load(path)
    L = load_level1(stores, allow_incomplete)
    try:
        if len(L.names) != len(bundle["stores"]):
            raise StoreError(
                f"the stack was fitted on {len(bundle['stores'])} stores ({', '.join(bundle['stores'])}); got {len(L.names)}"
            )
        if L.label_names != bundle["label_names"]:
            raise StoreError(
                f"label_names {L.label_names} differ from the stack's {bundle['label_names']}"
            )
        cfg = bundle["config"]
        X, _ = _design(L, cfg["meta"], cfg["features"], cfg["passthrough"], cfg["mixer_embedding"])
        rows = np.flatnonzero(L.usable)
        out_csv = Path(out_csv)
        _write_predictions(out_csv, L, bundle["model"].predict_proba(X[rows]), rows)
        return out_csv
    finally:
        L.close()
