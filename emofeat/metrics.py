"""Classification metrics (scikit-learn) and a bootstrap interval for accuracy."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
)

METRICS = ("accuracy", "weighted_precision", "weighted_recall", "weighted_f1", "macro_f1", "uar")


def classification_metrics(y: np.ndarray, pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy, weighted precision/recall/F1, macro F1 and UAR (unweighted average recall)."""
    labels = list(range(n_classes))
    kw = dict(labels=labels, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "weighted_precision": float(precision_score(y, pred, average="weighted", **kw)),
        "weighted_recall": float(recall_score(y, pred, average="weighted", **kw)),
        "weighted_f1": float(f1_score(y, pred, average="weighted", **kw)),
        "macro_f1": float(f1_score(y, pred, average="macro", **kw)),
        "uar": float(balanced_accuracy_score(y, pred)),
    }


def bootstrap_accuracy(
    y: np.ndarray, pred: np.ndarray, *, n: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of accuracy over utterances."""
    rng = np.random.default_rng(seed)
    correct = (np.asarray(y) == np.asarray(pred)).astype(float)
    idx = rng.integers(0, len(correct), size=(n, len(correct)))
    means = correct[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)
