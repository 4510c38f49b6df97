"""Calibration of a stack's probabilities: figures for every system on the test rows, and
temperature scaling fitted on the out-of-fold train rows only (``stack --calibrate
temperature``).

A temperature is one number per system, fitted by :func:`emofeat.metrics.fit_temperature` on
the train rows' out-of-fold values (the meta-learner's cross-validated probabilities, a base
model's out-of-fold logits), so it never sees a test label; the test rows are scored before and
after it. The ensemble's temperature is part of the fitted stack (:class:`TemperatureScaled`), so
``predict`` and ``infer`` apply it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from emofeat.metrics import CALIBRATION_BINS, calibration_metrics, fit_temperature, softmax

CALIBRATIONS = ("none", "temperature")


def scaled(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities with their log divided by ``temperature`` (then normalised)."""
    return softmax(np.log(np.clip(np.asarray(proba, np.float64), 1e-12, 1)) / temperature)


class TemperatureScaled(ClassifierMixin, BaseEstimator):
    """A fitted meta-learner whose probabilities are temperature-scaled (``estimator``: fitted;
    ``temperature``: fitted on out-of-fold train rows)."""

    def __init__(self, estimator: Any = None, temperature: float = 1.0):
        self.estimator = estimator
        self.temperature = temperature

    def fit(self, X, y):  # the estimator and the temperature are fitted by the stack
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return self.estimator is not None

    @property
    def classes_(self) -> np.ndarray:
        return self.estimator.classes_

    def predict_proba(self, X) -> np.ndarray:
        return scaled(self.estimator.predict_proba(X), self.temperature)

    def predict(self, X) -> np.ndarray:
        return self.predict_proba(X).argmax(1)


def calibration_block(
    y: np.ndarray,
    test: np.ndarray,
    train: np.ndarray,
    systems: dict[str, tuple[np.ndarray, np.ndarray | None]],
    *,
    temperature: bool,
) -> dict[str, Any]:
    """metrics.json's ``calibration``: per system its test figures (ECE, Brier, log loss), and
    with ``temperature`` its temperature fitted on the train rows and its test figures after it.

    Args:
        y: Every row's class.
        test: The test rows scored.
        train: The out-of-fold train rows a temperature may be fitted on.
        systems: Name → (every row's probabilities, the train rows' out-of-fold probabilities
            or None when the system has none: no temperature for it).
        temperature: Fit and apply temperatures.

    Returns:
        ``{"bins": B, "systems": {name: {"test": {...}, "temperature": T, "test_scaled": {...}}}}``.
    """
    out: dict[str, Any] = {"bins": CALIBRATION_BINS, "systems": {}}
    for name, (proba, oof) in systems.items():
        entry: dict[str, Any] = {"test": calibration_metrics(y[test], proba[test])}
        if temperature and oof is not None:
            t = fit_temperature(y[train], np.log(np.clip(oof, 1e-12, 1)))
            entry["temperature"] = t
            entry["test_scaled"] = calibration_metrics(y[test], scaled(proba[test], t))
        out["systems"][name] = entry
    return out


def render_calibration(block: dict[str, Any]) -> list[str]:
    """report.md's calibration section."""
    scaled_any = any("temperature" in e for e in block["systems"].values())
    lines = [
        "\n## Calibration (test)\n",
        f"ECE over {block['bins']} equal-width bins of the top class's probability, the "
        "multi-class Brier score and the log loss"
        + (
            "; temperatures fitted on the out-of-fold train rows only, test figures after them."
            if scaled_any
            else "."
        )
        + "\n",
        "| system | ECE | Brier | log loss"
        + (" | temperature | ECE after | Brier after | log loss after |" if scaled_any else " |"),
        "|---|---|---|---|" + ("---|---|---|---|" if scaled_any else ""),
    ]
    for name, e in block["systems"].items():
        cells = [f"{e['test'][k]:.4f}" for k in ("ece", "brier", "log_loss")]
        if scaled_any:
            if "temperature" in e:
                cells.append(f"{e['temperature']:.3f}")
                cells += [f"{e['test_scaled'][k]:.4f}" for k in ("ece", "brier", "log_loss")]
            else:
                cells += ["-"] * 4
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("\n![reliability](calibration.png)")
    return lines


def plot_reliability(
    y: np.ndarray, test: np.ndarray, systems: dict[str, np.ndarray], out: Path
) -> None:
    """Reliability diagram of the test rows: per system, the accuracy of each bin of the top
    class's probability against its mean probability (the diagonal: perfect calibration)."""
    from emofeat.analysis.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 5.4), layout="constrained")
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="black", label="perfectly calibrated")
    edges = np.linspace(0, 1, CALIBRATION_BINS + 1)
    for name, proba in systems.items():
        p = np.asarray(proba)[test]
        confidence, right = p.max(1), p.argmax(1) == y[test]
        which = np.minimum((confidence * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
        xs, ys = [], []
        for b in range(CALIBRATION_BINS):
            rows = which == b
            if rows.any():
                xs.append(confidence[rows].mean())
                ys.append(right[rows].mean())
        ax.plot(xs, ys, marker="o", ms=3, lw=1, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xticks(edges[::3])
    ax.set_xlabel("top class's probability (bin mean)")
    ax.set_ylabel("accuracy in the bin")
    ax.set_title("Reliability on the test rows")
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    save_figure(fig, out)
