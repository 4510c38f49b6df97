"""Markdown of a stack's figures: the reference's table layout, CV figures, per-class report."""

from __future__ import annotations

from typing import Any

from emofeat.stack.folder import CONFUSION


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


def models_cv_table(metrics: dict) -> str:
    """Base models: accuracy cross-validated over the train folds (their out-of-fold rows)
    beside test accuracy, so that none is chosen on test."""
    lines = [
        "\n| base model | CV accuracy (out-of-fold train rows, mean ± std over folds) | test accuracy |",
        "|---|---|---|",
    ]
    test = metrics.get("test", {}).get("models", {})
    for name, figures in metrics["models_cv"].items():
        cv, t = figures["accuracy"], test.get(name, {}).get("accuracy")
        lines.append(
            f"| {name} | {cv['mean']:.4f} ± {cv['std']:.4f} | {'' if t is None else f'{t:.4f}'} |"
        )
    return "\n".join(lines)


def test_predictions_line(sources: dict[str, str]) -> str:
    """One sentence naming what predicted each base model's test rows (grouped)."""
    groups: dict[str, list[str]] = {}
    for name, what in sources.items():
        groups.setdefault(what, []).append(name)
    return (
        "Base models' test rows: "
        + "; ".join(f"{what} ({', '.join(names)})" for what, names in groups.items())
        + "."
    )


def render_report(metrics: dict, label_names: list[str]) -> str:
    """report.md: warning line (if any), the table, CV figures, CI, per-class report, confusion,
    then valence and arousal where the stack has them (alone for ``--target dimensional``)."""
    from emofeat.stack.dimensional import render_dimensional

    dims = metrics.get("dimensional")
    if "meta" not in metrics:  # valence and arousal alone
        warning = [metrics["in_sample_warning"], ""] if metrics.get("in_sample_warning") else []
        header = [*warning, f"# Stacked valence and arousal: {dims['meta']}", ""]
        return "\n".join([*header, *render_dimensional(dims)]) + "\n"
    return _render_classes(metrics, label_names) + (
        "\n" + "\n".join(render_dimensional(dims)) + "\n" if dims else ""
    )


def _render_classes(metrics: dict, label_names: list[str]) -> str:
    parts = []
    if metrics.get("in_sample_warning"):
        parts.append(metrics["in_sample_warning"] + "\n")
    parts.append(f"# Stacked ensemble: {metrics['meta']}\n")
    parts.append(
        f"Train rows {metrics['train_rows']}, test rows {metrics['test_rows']}, rows dropped (not done in every store) {metrics['dropped_rows']}."
        + (
            f" {metrics['unlabelled_rows']} row(s) without a label were predicted, never fitted "
            "or scored."
            if metrics.get("unlabelled_rows")
            else ""
        )
        + (
            f" **{metrics['test_rows_in_sample']} labelled test row(s) were left out of the test "
            "figures: a base model trained on them (their stores' evidence says so).**"
            if metrics.get("test_rows_in_sample")
            else ""
        )
    )
    if metrics.get("inputs"):
        parts.append(
            "Inputs: "
            + "; ".join(
                f"{i['store']}: {i['input']} ({i['columns']} columns)" for i in metrics["inputs"]
            )
            + "."
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
        if metrics.get("test_predictions"):
            parts.append("\n" + test_predictions_line(metrics["test_predictions"]))
        if metrics.get("models_cv"):
            parts.append(models_cv_table(metrics))
        lo, hi = test["ensemble"]["accuracy_ci95"]
        parts.append(f"\nEnsemble test accuracy 95 % bootstrap interval: [{lo:.4f}, {hi:.4f}].")
        if test.get("paired"):
            parts += paired_table(test["paired"], metrics["meta"])
        if metrics.get("calibration"):
            from emofeat.stack.calibration import render_calibration

            parts += render_calibration(metrics["calibration"])
    else:
        parts.append("No labelled test rows.")
    auto = metrics.get("auto")
    if auto:
        parts.append("\n## Meta-learner chosen by cross-validation (`--meta auto`)\n")
        parts.append(
            f"Chosen: **{auto['chosen']}**, by {auto['by']}; test rows were used once, for the "
            "chosen one only. Its CV figure is the best of several, so it is optimistic by the "
            "choice itself.\n"
        )
        parts.append("| candidate | CV accuracy mean | std |\n|---|---|---|")
        parts += [
            f"| {name} | {v['mean']:.4f} | {v['std']:.4f} |"
            for name, v in auto["candidates"].items()
        ]
    protocol = metrics.get("cv_protocol", "")
    if metrics.get("cv") and protocol == "in-sample":
        parts.append("\n## In-sample figures over the train rows (not cross-validation)\n")
        parts.append(
            "The base models' values of these rows come from models trained on them, so these "
            "figures say how well the ensemble fits its training data, not how it generalises.\n"
        )
        parts.append("| metric | mean | std |\n|---|---|---|")
        parts += [f"| {k} | {v['mean']:.4f} | {v['std']:.4f} |" for k, v in metrics["cv"].items()]
    elif metrics.get("cv"):
        parts.append("\n## Cross-validation over the train folds (ensemble)\n")
        if protocol == "nested":
            parts.append(
                "Nested: each held-out fold's hyperparameters were chosen by CV over the other folds only.\n"
            )
        elif protocol == "selection-biased":
            parts.append(
                "Selection-biased: the hyperparameters were chosen by CV over the same folds (nested CV needs 3 or more folds), so these figures are optimistic.\n"
            )
        parts.append("| metric | mean | std |\n|---|---|---|")
        parts += [f"| {k} | {v['mean']:.4f} | {v['std']:.4f} |" for k, v in metrics["cv"].items()]
    if "report" in test:
        parts.append("\n## Per class (test): ensemble\n")
        parts += per_class_table(test["report"], test["confusion"], label_names)
        parts.append(f"\n![confusion]({CONFUSION})")
        for name, block in test.get("model_reports", {}).items():
            parts.append(f"\n## Per class (test): {name}\n")
            parts += per_class_table(block["report"], block["confusion"], label_names)
    return "\n".join(parts) + "\n"


def paired_table(paired: dict[str, Any], meta: str) -> list[str]:
    """The ensemble against each base model and the fixed soft vote on the same test rows: the
    differences with their paired bootstrap intervals, and McNemar's exact test."""
    rows = next(iter(paired.values()))["rows"]
    lines = [
        f"\n## Paired comparisons on the same {rows} test rows\n",
        f"The ensemble ({meta}) minus each system, with 95 % paired bootstrap intervals (2,000 "
        "resamples of the rows, both scored on each); McNemar's exact test of accuracy counts "
        "the rows only the ensemble got right (b) and only the other got right (c). An interval "
        "that holds 0, or p ≥ 0.05, settles nothing.\n",
        "| versus | Δ accuracy | Δ weighted F1 | Δ macro F1 | Δ UAR | McNemar b / c | p |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p in paired.items():
        cells = [
            f"{p[m]['difference']:+.4f} [{p[m]['ci95'][0]:+.3f}, {p[m]['ci95'][1]:+.3f}]"
            for m in ("accuracy", "weighted_f1", "macro_f1", "uar")
        ]
        test = p["mcnemar"]
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {test['b']} / {test['c']} | {test['p']:.3g} |"
        )
    return lines


def per_class_table(report: dict, confusion: list[list[int]], label_names: list[str]) -> list[str]:
    """Markdown lines: precision/recall/F1/support per class, then the confusion matrix."""
    lines = ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name in label_names:
        r = report[name]
        lines.append(
            f"| {name} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1-score']:.3f} | {int(r['support'])} |"
        )
    lines.append("\nConfusion matrix (rows: true, columns: predicted)\n")
    lines.append("| | " + " | ".join(label_names) + " |")
    lines.append("|---|" + "---|" * len(label_names))
    for name, row in zip(label_names, confusion):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return lines
