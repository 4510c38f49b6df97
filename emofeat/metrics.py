"""The figures emofeat reports, computed in one place (scikit-learn).

Convention: macro F1 and UAR (unweighted average recall) average over the classes present in
``y_true``. A class absent from a small fold is not scored as 0 (which would put a 0.35 beside a
0.82 for the same predictions on a toy fold); predictions of an absent class still count, as
errors against the true class. Weighted figures weight by support, so absent classes do not
enter them either. Per-fold figures are summarised as mean and population standard deviation
(ddof 0) over folds. Fine-tuning, fusion, probes, stacking and ``compare`` all use this module.

Dimensional figures (valence, arousal): Lin's concordance correlation coefficient

    CCC = 2 cov(y, p) / (var(y) + var(p) + (mean(y) - mean(p))^2),

with population (co)variances (ddof 0), computed once over all rows of a split that carry the
target (never averaged over batches or folds); beside it Pearson's r and the RMSE. Rows without
a target (NaN: AI Hub has none) are left out and counted (``n``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_score,
    recall_score,
)

METRICS = ("accuracy", "weighted_precision", "weighted_recall", "weighted_f1", "macro_f1", "uar")
# What a run's fold summary reports (each figure some fold has: CCC with valence and arousal).
FOLD_KEYS = ("accuracy", "macro_f1", "uar", "loss", "valence_ccc", "arousal_ccc", "mean_ccc")


def classification_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Accuracy, weighted precision/recall/F1, macro F1 and UAR over the classes of ``y``.

    Args:
        y: true class indices.
        pred: predicted class indices.

    Returns:
        One float per name in :data:`METRICS`.
    """
    y, pred = np.asarray(y), np.asarray(pred)
    kw = dict(labels=np.unique(y), zero_division=0)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "weighted_precision": float(precision_score(y, pred, average="weighted", **kw)),
        "weighted_recall": float(recall_score(y, pred, average="weighted", **kw)),
        "weighted_f1": float(f1_score(y, pred, average="weighted", **kw)),
        "macro_f1": float(f1_score(y, pred, average="macro", **kw)),
        "uar": float(recall_score(y, pred, average="macro", **kw)),
    }


def logits_metrics(y: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """Classification figures of the arg-max of logits, and the mean cross-entropy.

    Args:
        y: True class indices, (n,).
        logits: (n, C) logits.

    Returns:
        :func:`classification_metrics` plus ``loss``, the mean cross-entropy.
    """
    y = np.asarray(y).astype(int)
    metrics = classification_metrics(y, np.asarray(logits).argmax(1))
    p = softmax(np.asarray(logits, np.float64))
    metrics["loss"] = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))
    return metrics


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fold_summary(
    per_fold: Iterable[Mapping[str, object]], keys: Iterable[str] | None = None
) -> dict[str, dict[str, float]]:
    """Mean, population standard deviation and count over folds of each numeric figure.

    Args:
        per_fold: one mapping of figures per fold.
        keys: the figures to summarise (default: every numeric one of the first fold).

    Returns:
        ``{name: {"mean", "std", "n"}}`` for each figure some fold has.
    """
    per_fold = list(per_fold)
    if keys is None:
        keys = [k for k, v in (per_fold[0] if per_fold else {}).items() if _number(v)]
    out = {}
    for key in keys:
        values = [float(f[key]) for f in per_fold if _number(f.get(key))]
        if values:
            out[key] = {
                "mean": float(np.mean(values)),
                "std": float(np.std(values)),
                "n": len(values),
            }
    return out


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def bootstrap_accuracy(
    y: np.ndarray, pred: np.ndarray, *, n: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of accuracy over utterances (``scipy.stats.bootstrap``).

    Percentile rather than scipy's default BCa: BCa is undefined when every resample agrees
    (a perfect or all-wrong prediction), and the two differ little for a mean of 0/1 values.

    Args:
        y: True classes per utterance.
        pred: Predicted classes per utterance.
        n: Bootstrap resamples.
        seed: The resampling seed (the interval is reproducible).
        level: The confidence level.

    Returns:
        ``(low, high)``.

    Raises:
        ValueError: no utterances.
    """
    correct = (np.asarray(y) == np.asarray(pred)).astype(float)
    if len(correct) == 0:
        raise ValueError("no utterances to bootstrap")
    if correct.min() == correct.max():  # every resample has the same accuracy
        return float(correct[0]), float(correct[0])
    return _percentile_interval((correct,), np.mean, n=n, seed=seed, level=level)


DIMENSION_METRICS = ("ccc", "pearson", "rmse")


def ccc(y: np.ndarray, pred: np.ndarray) -> float:
    """Lin's concordance correlation coefficient of two equally long vectors (population
    moments; see the module docstring). 0 when both are constant and unequal, 1 when equal.

    Args:
        y: True values.
        pred: Predicted values.

    Returns:
        The CCC, in [-1, 1].

    Raises:
        ValueError: the vectors are empty or of different lengths.
    """
    y, pred = np.asarray(y, np.float64), np.asarray(pred, np.float64)
    if y.shape != pred.shape or y.size == 0:
        raise ValueError(
            f"ccc needs two equally long, non-empty vectors; got {y.shape}, {pred.shape}"
        )
    return float(_ccc(y, pred))


def _ccc(y: np.ndarray, pred: np.ndarray, axis: int = -1) -> np.ndarray:
    """Lin's CCC along ``axis`` (population moments), for one pair or many resamples at once;
    1 where both are constant and equal (perfect agreement)."""
    my, mp = y.mean(axis, keepdims=True), pred.mean(axis, keepdims=True)
    cov = ((y - my) * (pred - mp)).mean(axis)
    den = y.var(axis) + pred.var(axis) + np.squeeze(my - mp, axis) ** 2
    return np.where(den > 0, 2 * cov / np.where(den > 0, den, 1), 1.0)


def _percentile_interval(
    data: tuple[np.ndarray, ...], statistic, *, n: int, seed: int, level: float
) -> tuple[float, float]:
    """``scipy.stats.bootstrap``'s percentile interval of a vectorised ``statistic`` over rows
    (several arrays are resampled together: paired)."""
    from scipy.stats import bootstrap

    result = bootstrap(
        data,
        statistic,
        paired=len(data) > 1,
        n_resamples=n,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
        vectorized=True,
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def dimensional_metrics(
    y: np.ndarray, pred: np.ndarray, names: tuple[str, ...] | list[str]
) -> dict[str, dict[str, float]]:
    """CCC, Pearson's r and RMSE per dimension over the rows that carry it, and their mean.

    Args:
        y: (n, D) true values, NaN where a row has none.
        pred: (n, D) predictions.
        names: The D dimension names.

    Returns:
        ``{name: {"ccc", "pearson", "rmse", "n"}, "mean": {"ccc", "pearson", "rmse"}}``; a
        dimension no row carries is left out (and of the mean).
    """
    from scipy.stats import pearsonr

    y, pred = np.asarray(y, np.float64), np.asarray(pred, np.float64)
    out: dict[str, dict[str, float]] = {}
    for j, name in enumerate(names):
        rows = np.isfinite(y[:, j])
        if not rows.any():
            continue
        a, b = y[rows, j], pred[rows, j]
        r = float(pearsonr(a, b).statistic) if rows.sum() > 1 and a.std() and b.std() else 0.0
        out[name] = {
            "ccc": ccc(a, b),
            "pearson": r,
            "rmse": float(np.sqrt(np.mean((a - b) ** 2))),
            "n": int(rows.sum()),
        }
    if out:
        out["mean"] = {m: float(np.mean([d[m] for d in out.values()])) for m in DIMENSION_METRICS}
    return out


def bootstrap_ccc(
    y: np.ndarray, pred: np.ndarray, *, n: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the CCC over rows (``scipy.stats.bootstrap``, paired:
    a row's truth and prediction are resampled together).

    Args:
        y: True values (rows without one already left out).
        pred: Predictions.
        n: Bootstrap resamples.
        seed: The resampling seed (the interval is reproducible).
        level: The confidence level.

    Returns:
        ``(low, high)``.

    Raises:
        ValueError: fewer than two rows.
    """
    y, pred = np.asarray(y, np.float64), np.asarray(pred, np.float64)
    if len(y) < 2:
        raise ValueError("a CCC interval needs two rows at least")
    return _percentile_interval((y, pred), _ccc, n=n, seed=seed, level=level)


PAIRED_METRICS = ("accuracy", "weighted_f1", "macro_f1", "uar")


def mcnemar_exact(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict[str, float]:
    """McNemar's exact test of two classifiers' accuracy on the same rows: the rows only A got
    right (``b``) against those only B got right (``c``), a two-sided binomial test of b out of
    b + c at 1/2 (``scipy.stats.binomtest``); p = 1 when they disagree on no row.

    Args:
        y: True classes.
        pred_a: A's predictions of the same rows.
        pred_b: B's predictions.

    Returns:
        ``{"b", "c", "p"}``.
    """
    from scipy.stats import binomtest

    right_a, right_b = np.asarray(pred_a) == np.asarray(y), np.asarray(pred_b) == np.asarray(y)
    b, c = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"b": b, "c": c, "p": p}


def resample_weights(n_rows: int, *, n: int = 2000, seed: int = 0) -> np.ndarray:
    """The paired bootstrap's resamples of ``n_rows`` rows, as row counts (n, n_rows): resample
    r draws row i ``weights[r, i]`` times (multinomial, seeded). Every system compared on the
    rows is scored on the same resamples."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_rows, np.full(n_rows, 1.0 / n_rows), size=n)


def weighted_classification(
    y: np.ndarray, pred: np.ndarray, weights: np.ndarray, n_classes: int
) -> dict[str, np.ndarray]:
    """:data:`PAIRED_METRICS` of the rows counted ``weights`` times, for many weightings at once
    (the resamples of :func:`resample_weights`), with this module's convention: macro F1 and UAR
    over the classes present in the (resampled) true labels.

    Args:
        y: True classes (n_rows,).
        pred: Predicted classes (n_rows,).
        weights: (n_resamples, n_rows) row counts.
        n_classes: The number of classes.

    Returns:
        Per metric, (n_resamples,) values.
    """
    cells = np.asarray(y) * n_classes + np.asarray(pred)
    onehot = np.zeros((len(cells), n_classes * n_classes))
    onehot[np.arange(len(cells)), cells] = 1.0
    confusion = (weights @ onehot).reshape(len(weights), n_classes, n_classes)
    diag = np.diagonal(confusion, axis1=1, axis2=2)
    support, predicted = confusion.sum(2), confusion.sum(1)
    total = support.sum(1)
    present = support > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(present, diag / np.where(present, support, 1), 0.0)
        precision = np.where(predicted > 0, diag / np.where(predicted > 0, predicted, 1), 0.0)
        f1 = np.where(
            precision + recall > 0, 2 * precision * recall / (precision + recall + 1e-300), 0.0
        )
    n_present = present.sum(1)
    return {
        "accuracy": diag.sum(1) / total,
        "weighted_f1": (f1 * support).sum(1) / total,
        "macro_f1": (f1 * present).sum(1) / n_present,
        "uar": (recall * present).sum(1) / n_present,
    }


def paired_comparisons(
    y: np.ndarray,
    pred_a: np.ndarray,
    others: Mapping[str, np.ndarray],
    n_classes: int,
    *,
    n: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict[str, Any]]:
    """A against each of ``others`` on the same rows: per metric the difference A − B with its
    paired percentile bootstrap interval (every system scored on the same resamples of the
    rows, drawn once), and McNemar's exact test of their accuracy.

    Args:
        y: True classes.
        pred_a: A's predicted classes.
        others: Name → B's predicted classes, of the same rows.
        n_classes: The number of classes.
        n: Bootstrap resamples.
        seed: The resampling seed (:func:`resample_weights`).
        level: The confidence level.

    Returns:
        Per name ``{metric: {"difference", "ci95"}, ..., "mcnemar": {"b", "c", "p"},
        "rows": n_rows}``.

    Raises:
        ValueError: no rows.
    """
    y, pred_a = np.asarray(y).astype(int), np.asarray(pred_a).astype(int)
    if not len(y):
        raise ValueError("no rows to compare")
    weights = resample_weights(len(y), n=n, seed=seed)
    a, full_a = (
        weighted_classification(y, pred_a, weights, n_classes),
        classification_metrics(y, pred_a),
    )
    tail = (1 - level) / 2 * 100
    results = {}
    for name, pred_b in others.items():
        pred_b = np.asarray(pred_b).astype(int)
        b, full_b = (
            weighted_classification(y, pred_b, weights, n_classes),
            classification_metrics(y, pred_b),
        )
        out: dict[str, Any] = {"rows": int(len(y))}
        for m in PAIRED_METRICS:
            low, high = np.percentile(a[m] - b[m], [tail, 100 - tail])
            out[m] = {"difference": full_a[m] - full_b[m], "ci95": (float(low), float(high))}
        out["mcnemar"] = mcnemar_exact(y, pred_a, pred_b)
        results[name] = out
    return results


def paired_repetitions(a: Iterable[float], b: Iterable[float]) -> dict[str, Any]:
    """Two systems scored in each of several repetitions of one protocol (seeds, redrawn folds),
    paired by repetition: the mean difference A − B, its standard deviation (ddof 1), the paired
    t-test (``scipy.stats.ttest_rel``) and the exact Wilcoxon signed-rank test
    (``scipy.stats.wilcoxon``; it cannot go below p = 2 / 2^n: 0.25 for 3 repetitions, 0.0625
    for 5), and how often A won, lost, tied. The unit of the test is the repetition, not the
    row: it asks whether A beats B however the models were seeded and the folds drawn.

    Args:
        a: A's figure in each repetition.
        b: B's figure in the same repetitions, in the same order.

    Returns:
        ``{"n", "mean_difference", "std_difference", "t", "t_p", "wilcoxon_p", "wins",
        "losses", "ties"}``; the tests' values are NaN with fewer than 2 repetitions (and the
        t-test's when every difference is equal), the Wilcoxon p is 1 when every difference is 0.

    Raises:
        ValueError: ``a`` and ``b`` differ in length, or hold a non-finite value.
    """
    from scipy.stats import ttest_rel, wilcoxon

    a, b = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"{len(a)} figures of A against {len(b)} of B: pair them by repetition")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("a repetition's figure is not finite")
    d = a - b
    n = len(d)
    out: dict[str, Any] = {
        "n": n,
        "mean_difference": float(d.mean()) if n else float("nan"),
        "std_difference": float(d.std(ddof=1)) if n > 1 else float("nan"),
        "t": float("nan"),
        "t_p": float("nan"),
        "wilcoxon_p": float("nan"),
        "wins": int((d > 0).sum()),
        "losses": int((d < 0).sum()),
        "ties": int((d == 0).sum()),
    }
    if n < 2:
        return out
    if np.ptp(d) > 1e-12:  # a constant difference has no spread for the t statistic
        t = ttest_rel(a, b)
        out["t"], out["t_p"] = float(t.statistic), float(t.pvalue)
    # zero_method="zsplit" keeps tied repetitions in the ranks; exact for small n.
    out["wilcoxon_p"] = (
        1.0 if not d.any() else float(wilcoxon(d, zero_method="zsplit", method="exact").pvalue)
    )
    return out


CALIBRATION_BINS = 15  # equal-width bins of the top class's probability, for ECE


def calibration_metrics(
    y: np.ndarray, proba: np.ndarray, *, bins: int = CALIBRATION_BINS
) -> dict[str, float]:
    """How well probabilities are calibrated: ECE (the top class's probability in ``bins``
    equal-width bins over [0, 1]; the row-weighted mean of |accuracy − mean probability| per
    bin), the multi-class Brier score (mean over rows of the squared distance between the
    probability vector and the one-hot truth) and the log loss (``sklearn.metrics.log_loss``
    over every class).

    Args:
        y: True classes (n,).
        proba: (n, C) probabilities.
        bins: ECE's bins.

    Returns:
        ``{"ece", "brier", "log_loss"}``.
    """
    from sklearn.metrics import log_loss

    y, proba = np.asarray(y).astype(int), np.asarray(proba, np.float64)
    confidence, predicted = proba.max(1), proba.argmax(1)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        rows = which == b
        if rows.any():
            ece += rows.mean() * abs((predicted[rows] == y[rows]).mean() - confidence[rows].mean())
    onehot = np.eye(proba.shape[1])[y]
    return {
        "ece": float(ece),
        "brier": float(((proba - onehot) ** 2).sum(1).mean()),
        "log_loss": float(log_loss(y, np.clip(proba, 1e-12, 1), labels=range(proba.shape[1]))),
    }


def fit_temperature(y: np.ndarray, logits: np.ndarray) -> float:
    """The temperature T that minimises the log loss of ``softmax(logits / T)`` (Guo et al.
    2017), by bounded scalar search over T in [0.05, 20] (``scipy.optimize``). Fit it on
    out-of-fold train rows only: it then never saw a test label.

    Args:
        y: True classes of the rows it is fitted on.
        logits: Their (n, C) logits (or log-probabilities).

    Returns:
        T (> 1 softens over-confident probabilities, < 1 sharpens them).
    """
    from scipy.optimize import minimize_scalar

    y, z = np.asarray(y).astype(int), np.asarray(logits, np.float64)

    def nll(t: float) -> float:
        p = softmax(z / t)
        return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))

    return float(minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded").x)
