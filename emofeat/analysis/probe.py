"""``emofeat probe``: which layer carries emotion, in which model? Layer-wise probes over
all-layer stores (one, or several models compared on the same rows and folds).

For each stored layer (``--layers all``), a classical head (``logreg`` by default; any registered
meta-learner that reads features) is cross-validated over the store's folds on the labelled train
rows; ``probe.csv`` holds one row per layer and metric (mean, std over folds) and ``probe.png``
plots the score per layer with its spread. The best layer is chosen by CV only; test rows are not
read. ``weighted=True`` adds the SUPERB-style probe: a softmax-weighted sum of all layers and a
linear classifier learned together (:class:`LayerWeightedProbe`, a scikit-learn estimator), whose
learned layer weights are written too. Runs on a CPU in minutes for thousands of rows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from emofeat.analysis.config import ProbeConfig
from emofeat.crossfit import FoldPlan
from emofeat.errors import EmofeatError
from emofeat.metrics import ccc, classification_metrics, fold_summary
from emofeat.outputs import check_output, register_csv_kind


class LayerWeightedProbe(ClassifierMixin, BaseEstimator):
    """SUPERB-style probe: a softmax-weighted sum of layers, then a linear classifier.

    One weight per layer and the classifier are learned jointly with AdamW on cross-entropy
    (full batch). ``X`` holds the layers side by side, ``n_layers`` blocks of equal width;
    features are standardised per column first. The network is the layer-sum head's
    (:class:`emofeat.fuse.layersum.LayerSum`: one implementation of the weighted sum). After
    :meth:`fit`, ``layer_weights_`` holds the softmax weights (they sum to 1).

    Args:
        n_layers: The number of equal-width layer blocks in ``X``.
        epochs: Full-batch training epochs.
        lr: AdamW's learning rate.
        weight_decay: AdamW's weight decay.
        seed: The seed of the initial weights.
    """

    def __init__(
        self,
        *,
        n_layers: int = 1,
        epochs: int = 100,
        lr: float = 1e-2,
        weight_decay: float = 1e-3,
        seed: int = 0,
    ):
        self.n_layers = n_layers
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed

    def _blocks(self, X) -> np.ndarray:
        return np.asarray(X, dtype=np.float32).reshape(len(X), self.n_layers, -1)

    def fit(self, X: np.ndarray, y: np.ndarray) -> LayerWeightedProbe:
        """Learn the layer weights and the classifier.

        Args:
            X: (n, n_layers × D) features, the layers side by side.
            y: Class labels.

        Returns:
            The fitted probe.

        Raises:
            ValueError: ``X``'s width is not ``n_layers`` equal blocks.
        """
        import torch

        X, y = validate_data(self, X, y, reset=True)
        check_classification_targets(y)
        if X.shape[1] % self.n_layers:
            raise ValueError(f"X has {X.shape[1]} features, not {self.n_layers} equal layer blocks")
        self.classes_, yi = np.unique(y, return_inverse=True)
        from emofeat.fuse.layersum import LayerSum
        from emofeat.training import train_head

        torch.manual_seed(self.seed)
        blocks = self._blocks(X)
        net = LayerSum([blocks.shape[1:]], len(self.classes_))
        net.standardise_with([blocks])
        xb, target = torch.from_numpy(blocks), torch.tensor(yi)
        train_head(  # full batch: probes are small
            net,
            lambda epoch: [(xb, target)],
            epochs=self.epochs,
            lr=self.lr,
            weight_decay=self.weight_decay,
            name="the layer-weighted probe",
        )
        (self.layer_weights_,) = net.layer_weights()
        self.net_ = net
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities.

        Args:
            X: (n, n_layers × D) features, as in :meth:`fit`.

        Returns:
            (n, classes) probabilities, columns in ``classes_`` order.
        """
        import torch

        check_is_fitted(self, "net_")
        X = validate_data(self, X, reset=False)
        with torch.no_grad():
            logits = self.net_(torch.from_numpy(self._blocks(X)))
            return torch.softmax(logits, 1).numpy().astype(np.float64)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The most probable class of each row.

        Args:
            X: (n, n_layers × D) features, as in :meth:`fit`.

        Returns:
            (n,) labels from ``classes_``.
        """
        return self.classes_[self.predict_proba(X).argmax(1)]


PROBE_HEADER = "model,layer,name,metric,mean,std"


register_csv_kind("probe-table", PROBE_HEADER)


def probe_layers(
    stores: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    **options: Any,
) -> pd.DataFrame:
    """Cross-validate a head on every stored layer of one or more stores; write ``probe.csv``
    (model, layer, name, metric, mean, std; ``weight`` rows for the weighted probe),
    ``probe.md`` (layer x model, CV mean ± std) and ``probe.png``. Several stores (models to
    compare) are aligned by id and probed on the same rows with the same folds, so their
    figures are like for like; stores that disagree on ids, labels or folds are refused.

    Args:
        stores: one store or several (models to compare), each extracted with ``--layers``.
        out: the folder for the table and figure.
        options: the options of :class:`~emofeat.analysis.config.ProbeConfig`.

    Returns:
        The table written to ``probe.csv``: one row per model, layer and metric (mean, std).

    Raises:
        OptionError: an option's value is refused.
    """
    from emofeat.stack.level1 import store_names
    from emofeat.stack.meta import MetaContext, get_meta
    from emofeat.store import aligned

    cfg = ProbeConfig(**options)
    meta, weighted, seed = cfg.meta, cfg.weighted, cfg.seed
    dimensional = cfg.target == "dimensional"
    spec = get_meta(meta)
    paths = [stores] if isinstance(stores, (str, os.PathLike)) else list(stores)
    out = Path(out)
    check_output(out / "probe.csv", kind="probe-table", inputs=paths, what="--out")
    models = store_names(paths)
    with aligned(paths) as a:
        whole = FoldPlan.from_store(a.first)
        rows = a.keep[np.isin(a.keep, whole.train_rows)]  # done everywhere, labelled, train
        targets = None
        if dimensional:
            if not a.first.has_dimension_targets:
                raise EmofeatError(
                    f"{paths[0]}: --target dimensional, but the store holds no valence or "
                    "arousal (its manifest had none)"
                )
            targets = a.first.dimension_targets(rows).astype(np.float64)
            keep = np.isfinite(targets).all(axis=1)  # rows with both (AI Hub has neither)
            rows, targets = rows[keep], targets[keep]
            names = a.first.dimension_names
        plan = whole.subset(rows)
        if not plan.cross_fitted:
            raise EmofeatError(f"{paths[0]}: the train rows need 2 or more folds to cross-validate")
        y = a.first.labels[rows].astype(int)
        classes = list(range(len(a.first.label_names)))
        inputs = []
        for path, store, positions in zip(paths, a.stores, a.positions):
            layers = store.layers
            if len(layers) < 2:
                raise EmofeatError(
                    f"{path}: {len(layers)} layer dataset(s) (layer_NN); extract with --layers all"
                )
            mine = positions[rows]
            inputs.append(
                (layers, {n: store.embeddings(n, mine).astype(np.float32) for _, n in layers})
            )
    estimator = spec.build(MetaContext(classes=classes, seed=seed))
    records: list[dict[str, Any]] = []
    for model, (layers, xs) in zip(models, inputs):
        mine: list[dict[str, Any]] = []
        for index, name in layers:
            if dimensional:
                mine += _summaries(index, name, _cv_dimensions(xs[name], targets, names, plan))
                continue
            mine += _summaries(index, name, _cv(estimator, xs[name], y, plan))
        if weighted:
            stacked = np.hstack([xs[name] for _, name in layers])
            probe = LayerWeightedProbe(n_layers=len(layers), seed=seed)
            mine += _summaries(-1, "weighted", _cv(probe, stacked, y, plan))
            fitted = clone(probe).fit(stacked, y)
            mine += [
                {"layer": i, "name": n, "metric": "weight", "mean": float(w), "std": 0.0}
                for (i, n), w in zip(layers, fitted.layer_weights_)
            ]
        records += [{"model": model, **r} for r in mine]
    table = pd.DataFrame(records)
    out.mkdir(parents=True, exist_ok=True)
    from emofeat.atomic import atomic_path

    with atomic_path(out / "probe.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out / "probe.md") as tmp:
        Path(tmp).write_text(layer_table(table), encoding="utf-8")
    _plot(table, out / "probe.png", "ridge" if dimensional else meta)
    return table


def layer_table(table: pd.DataFrame) -> str:
    """Markdown: one row per layer, one column per model, CV accuracy and UAR mean ± std."""
    models = list(dict.fromkeys(table["model"]))
    parts = []
    for metric in probe_metrics(table):
        part = table[table.metric == metric]
        keys = list(dict.fromkeys(zip(part.layer, part.name)))
        keys.sort(key=lambda k: (k[0] < 0, k[0]))  # layers, then the weighted probe
        lines = [
            f"{metric} (CV over the train folds, mean ± std)",
            "",
            "| layer | " + " | ".join(models) + " |",
            "| --- |" + " --- |" * len(models),
        ]
        for layer, name in keys:
            cells = []
            for m in models:
                hit = part[(part.model == m) & (part.name == name)]
                cells.append(
                    f"{hit['mean'].iloc[0]:.4f} ± {hit['std'].iloc[0]:.4f}" if len(hit) else "-"
                )
            lines.append(f"| {name if layer < 0 else layer} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _cv(estimator, X, y, plan: FoldPlan) -> list[dict[str, float]]:
    scores = []
    for _, fit, held in plan.fold_pairs():
        model = clone(estimator).fit(X[fit], y[fit])
        scores.append(classification_metrics(y[held], model.predict(X[held])))
    return scores


def _cv_dimensions(X, targets, names, plan: FoldPlan) -> list[dict[str, float]]:
    """Per held-out fold, the CCC of a ridge regression (standardised features) of each
    dimension (``<name>_ccc``) and their mean (``mean_ccc``)."""
    scores = []
    for _, fit, held in plan.fold_pairs():
        fold = {}
        for j, name in enumerate(names):
            model = ridge()
            model.fit(X[fit], targets[fit, j])
            fold[f"{name}_ccc"] = ccc(targets[held, j], model.predict(X[held]))
        fold["mean_ccc"] = float(np.mean(list(fold.values())))
        scores.append(fold)
    return scores


def ridge():
    """The dimensional head of probes and cross-corpus cells: standardised features, then ridge
    regression (alpha 10)."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), Ridge(alpha=10.0))


def probe_metrics(table: pd.DataFrame) -> tuple[str, ...]:
    """The figures a probe table holds, in the order they are shown (accuracy and UAR for the
    classes, each dimension's CCC for valence and arousal)."""
    present = list(dict.fromkeys(m for m in table["metric"] if m != "weight"))
    shown = [m for m in ("accuracy", "uar") if m in present]
    return tuple(shown or [m for m in present if m.endswith("_ccc") and m != "mean_ccc"])


def _summaries(index: int, name: str, per_fold: list[dict[str, float]]) -> list[dict[str, Any]]:
    keys = ("accuracy", "macro_f1", "uar") if "accuracy" in per_fold[0] else tuple(per_fold[0])
    summary = fold_summary(per_fold, keys)
    return [
        {"layer": index, "name": name, "metric": m, "mean": s["mean"], "std": s["std"]}
        for m, s in summary.items()
    ]


def best_layer(table: pd.DataFrame, metric: str = "accuracy", model: str | None = None) -> str:
    """The layer with the best CV mean (the weighted probe is not a layer), of ``model`` (the
    first model of the table when None)."""
    model = model if model is not None else table["model"].iloc[0]
    rows = table[(table.metric == metric) & (table.layer >= 0) & (table.model == model)]
    return str(rows.loc[rows["mean"].idxmax(), "name"])


def _plot(table: pd.DataFrame, out: Path, meta: str) -> None:
    """Per metric (accuracy, UAR) a panel with one line per model: CV mean ± std per layer."""
    from matplotlib.ticker import MaxNLocator

    from emofeat.analysis.plots import pyplot, save_figure

    plt = pyplot()
    models = list(dict.fromkeys(table["model"]))
    metrics = probe_metrics(table)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), sharey=True)
    axes = np.atleast_1d(axes)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes, metrics):
        for j, model in enumerate(models):
            colour = colours[j % len(colours)]
            mine = table[(table.model == model) & (table.metric == metric)]
            part = mine[mine.layer >= 0]
            ax.errorbar(
                part.layer,
                part["mean"],
                yerr=part["std"],
                marker="o",
                ms=4,
                capsize=3,
                color=colour,
                label=f"{model} (best {best_layer(table, metric, model)})",
            )
            weighted = mine[mine.name == "weighted"]
            if len(weighted):
                ax.axhline(weighted["mean"].iloc[0], ls="--", color=colour, lw=1)
        ax.set_xlabel("hidden state (0: input embeddings / CNN features)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{metric} ({meta} probe, CV mean ± std over folds)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cross-validated score")
    if table["name"].eq("weighted").any():
        axes[-1].plot([], [], ls="--", color="grey", label="weighted sum of layers")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    save_figure(fig, out)
