"""Stacking valence and arousal: regression meta-learners over the stores' out-of-fold
dimensional predictions and class probabilities, chosen and scored by CCC.

The rules of the categorical stack hold (:mod:`emofeat.stack.ensemble`): the meta-learner learns
only from train rows whose level-1 values are out-of-fold, its hyperparameters are chosen by CV
over the stores' folds (nested with 3 or more folds), and test rows are used once. Each dimension
is fitted and scored on the rows that carry it (AI Hub has none: it is counted nowhere).

Meta-learners (``--dim-meta``): ``mean`` (the stores' predictions averaged with equal weights:
the soft vote's counterpart, fits nothing), ``ridge`` (over every store's dimensions and class
probabilities), ``lgbm`` (LightGBM over the same) and ``caruana`` (greedy forward
selection with replacement of the stores' predictions, maximising the out-of-fold CCC).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.metrics import make_scorer
from sklearn.model_selection import GridSearchCV

from emofeat.crossfit import FoldPlan
from emofeat.errors import EmofeatError, StoreError
from emofeat.metrics import bootstrap_ccc, ccc, dimensional_metrics, fold_summary, softmax
from emofeat.stack.config import DIM_METAS
from emofeat.stack.features import match_stores
from emofeat.stack.level1 import Level1

CCC_SCORER = make_scorer(ccc)


def dimensional_features(
    level1: Level1, order: list[int] | None = None
) -> tuple[np.ndarray, list[list[int]]]:
    """The level-1 design matrix of the dimensions: per store (in ``order``, default as given),
    its dimensional predictions, then its class probabilities (stores with logits), side by side.

    Returns:
        ``(X, columns)``: ``columns[j]`` lists the columns that hold a store's prediction of
        dimension j (what ``mean`` and ``caruana`` combine).

    Raises:
        StoreError: no store holds dimensional predictions, or a value is not finite.
    """
    parts, columns, at = [], [[] for _ in level1.dimension_names], 0
    for k in range(len(level1.names)) if order is None else order:
        dims = level1.dimensions[k]
        if dims is not None:
            for j in range(dims.shape[1]):
                columns[j].append(at + j)
            parts.append(dims.astype(np.float64))
            at += dims.shape[1]
        if level1.logits[k] is not None:
            parts.append(softmax(level1.logits[k].astype(np.float64)))
            at += level1.logits[k].shape[1]
    if not any(columns):
        raise StoreError(
            f"no store among {level1.names} holds dimensional predictions (/dimensions); "
            "extract runs fine-tuned with --task dimensional or both"
        )
    X = np.hstack(parts)
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise StoreError(
            f"non-finite level-1 values in {int(bad.sum())} row(s), e.g. id "
            f"{level1.ids[np.flatnonzero(bad)[0]]!r}; re-extract the store that holds them"
        )
    return X, columns


class StoreMean(RegressorMixin, BaseEstimator):
    """The mean of the stores' predictions of one dimension (``columns``): fits nothing."""

    def __init__(self, columns: tuple[int, ...] = ()):
        self.columns = columns

    def fit(self, X, y):
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict(self, X):
        return np.asarray(X)[:, list(self.columns)].mean(axis=1)


class CaruanaCCC(RegressorMixin, BaseEstimator):
    """Greedy forward selection with replacement of the stores' predictions of one dimension
    (``columns``), each step adding the one that most raises the CCC of their mean (Caruana et
    al. 2004, with CCC as the figure); ``weights_``: how often each was chosen, normalised."""

    def __init__(self, columns: tuple[int, ...] = (), n_iter: int = 20):
        self.columns = columns
        self.n_iter = n_iter

    def fit(self, X, y):
        X = np.asarray(X, np.float64)[:, list(self.columns)]
        counts = np.zeros(X.shape[1])
        total = np.zeros(len(X))
        for step in range(1, self.n_iter + 1):
            scores = [ccc(y, (total + X[:, m]) / step) for m in range(X.shape[1])]
            best = int(np.argmax(scores))
            counts[best] += 1
            total += X[:, best]
        self.weights_ = counts / counts.sum()
        self.n_features_in_ = len(self.columns)
        return self

    def predict(self, X):
        return np.asarray(X, np.float64)[:, list(self.columns)] @ self.weights_


def regressor(name: str, columns: list[int], seed: int) -> tuple[Any, dict[str, list]]:
    """A fresh regression meta-learner of one dimension and its hyperparameter grid."""
    if name == "mean":
        return StoreMean(tuple(columns)), {}
    if name == "caruana":
        return CaruanaCCC(tuple(columns)), {"n_iter": [5, 20]}
    if name == "ridge":
        from sklearn.linear_model import Ridge

        # Unscaled: the inputs share scales (ratings 1-5, probabilities 0-1), and standardising
        # a near-constant prediction would blow its noise up on held-out rows.
        return Ridge(), {"alpha": [0.1, 1.0, 10.0]}
    if name == "lgbm":
        from lightgbm import LGBMRegressor

        model = LGBMRegressor(
            n_estimators=100,
            learning_rate=0.05,
            num_leaves=7,
            min_child_samples=10,
            random_state=seed,
            n_jobs=1,
            verbose=-1,
        )
        return model, {"num_leaves": [7, 15]}
    raise EmofeatError(f"unknown dimensional meta-learner {name!r}; one of {', '.join(DIM_METAS)}")


class DimensionalModel(BaseEstimator):
    """The fitted dimensional meta-learner: one regressor per dimension over the design matrix
    of :func:`dimensional_features` (``predict``: (n, D) on the rating scale). It remembers the
    stores it was fitted on by identity (``stores``, ``store_names``) and reorders given stores
    to match, and the ids of the rows it learned from (``fitted_ids``)."""

    def __init__(
        self,
        models: dict[str, Any] | None = None,
        names: tuple[str, ...] = (),
        stores: tuple[str, ...] = (),
        store_names: tuple[str, ...] = (),
        fitted_ids: tuple[str, ...] = (),
    ):
        self.models = models
        self.names = names
        self.stores = stores
        self.store_names = store_names
        self.fitted_ids = fitted_ids

    def predict(self, level1: Level1) -> np.ndarray:
        order = match_stores(list(self.stores), list(self.store_names), level1)
        X, _ = dimensional_features(level1, order)
        return np.column_stack([self.models[n].predict(X) for n in self.names])


@dataclass
class FittedDimensional:
    """What fitting the dimensions learned: the model, per dimension its chosen hyperparameters,
    its CV figures (per fold) and the train rows' out-of-fold predictions."""

    meta: str
    model: DimensionalModel
    best_params: dict[str, dict[str, Any]]
    cv: dict[str, dict[str, dict[str, float]]]
    cv_protocol: str
    oof: np.ndarray  # (n, D): the train rows' cross-validated predictions, NaN elsewhere
    train: np.ndarray
    test: np.ndarray = field(default_factory=lambda: np.array([], np.int64))  # rows scored


def fit_dimensional(level1: Level1, meta: str, train: np.ndarray, seed: int) -> FittedDimensional:
    """Choose hyperparameters by CV over the stores' folds (scored by CCC), cross-validate and
    fit one regressor per dimension on the out-of-fold train rows that carry it.

    Args:
        level1: The aligned stores.
        meta: One of :data:`DIM_METAS`.
        train: The train rows the meta-learner may learn from (evidence already checked).
        seed: The meta-learner's seed.

    Returns:
        The fitted dimensions.

    Raises:
        EmofeatError: no train row carries a dimension.
    """
    X, columns = dimensional_features(level1)
    Y = level1.targets
    plan = FoldPlan.from_store(level1)
    models, params, cv = {}, {}, {}
    oof = np.full((len(level1), len(level1.dimension_names)), np.nan)
    protocol = "no hyperparameters"
    for j, name in enumerate(level1.dimension_names):
        rows = train[np.isfinite(Y[train, j])]
        if len(rows) < 2:
            raise EmofeatError(
                f"{len(rows)} train row(s) carry {name}; a dimensional stack needs rows with "
                "valence and arousal (AI Hub has none)"
            )
        estimator, grid = regressor(meta, columns[j], seed)
        sub = plan.subset(rows)
        chosen: dict[str, Any] = {}
        if grid and sub.cross_fitted:
            search = GridSearchCV(estimator, grid, cv=sub.splitter(), scoring=CCC_SCORER)
            search.fit(X[rows], Y[rows, j])
            estimator.set_params(**search.best_params_)
            chosen = {
                k: getattr(v, "item", lambda v=v: v)() for k, v in search.best_params_.items()
            }
        params[name] = chosen
        if sub.cross_fitted:
            nested = bool(grid) and len(sub.folds) >= 3
            protocol = "nested" if nested else ("selection-biased" if grid else protocol)
            per_fold = []
            for _, fit_idx, held_idx in sub.fold_pairs():
                fit_rows, held_rows = rows[fit_idx], rows[held_idx]
                if nested:
                    inner = plan.subset(fit_rows)
                    search = GridSearchCV(
                        clone(estimator), grid, cv=inner.splitter(), scoring=CCC_SCORER
                    )
                    model = search.fit(X[fit_rows], Y[fit_rows, j]).best_estimator_
                else:
                    model = clone(estimator).fit(X[fit_rows], Y[fit_rows, j])
                oof[held_rows, j] = model.predict(X[held_rows])
                per_fold.append({"ccc": ccc(Y[held_rows, j], oof[held_rows, j])})
            cv[name] = fold_summary(per_fold)
        models[name] = clone(estimator).fit(X[rows], Y[rows, j])
    model = DimensionalModel(
        models,
        tuple(level1.dimension_names),
        tuple(level1.keys),
        tuple(level1.names),
        tuple(map(str, level1.ids[train])),
    )
    return FittedDimensional(meta, model, params, cv, protocol, oof, train)


def choose_dimensional(
    level1: Level1, train: np.ndarray, seed: int
) -> tuple[FittedDimensional, dict[str, Any]]:
    """``--dim-meta auto``: fit every meta-learner of :data:`DIM_METAS` and keep the one with
    the best mean CCC over the dimensions by CV over the train folds (ties: the earlier, simpler
    one). Test rows are not touched; the chosen one's CV is optimistic by the choice itself.

    Args:
        level1: The aligned stores.
        train: The train rows the meta-learners may learn from.
        seed: The meta-learners' seed.

    Returns:
        The chosen fit, and the choice (``chosen``, every candidate's CV mean CCC, ``by``).

    Raises:
        EmofeatError: the train rows have fewer than 2 folds (no CV to choose by).
    """
    fitted = {m: fit_dimensional(level1, m, train, seed) for m in DIM_METAS}
    if any(not f.cv for f in fitted.values()):
        raise EmofeatError(
            "--dim-meta auto chooses by cross-validation over the train folds; these stores' "
            "train rows need 2 or more folds"
        )
    scores = {
        m: float(np.mean([d["ccc"]["mean"] for d in f.cv.values()])) for m, f in fitted.items()
    }
    chosen = max(DIM_METAS, key=lambda m: (scores[m], -DIM_METAS.index(m)))
    protocols = {m: f.cv_protocol for m, f in fitted.items()}
    by = (
        "mean CCC of the dimensions, CV over the train folds ("
        + ", ".join(f"{m}: {p}" for m, p in protocols.items())
        + "); the chosen one's CV figure is optimistic by the choice"
    )
    return fitted[chosen], {"chosen": chosen, "cv_mean_ccc": scores, "by": by}


def evaluate_dimensional(
    fitted: FittedDimensional, level1: Level1, test: np.ndarray, seed: int
) -> dict[str, Any]:
    """The dimensional block of metrics.json: per dimension CCC, Pearson's r and RMSE of the
    ensemble and of every base model with dimensions, on the test rows that carry it (each CCC
    with a bootstrap interval), and the CV figures of both.

    Args:
        fitted: The fitted dimensions.
        level1: The aligned stores.
        test: The test rows the figures may use (evidence already checked).
        seed: The bootstrap seed.

    Returns:
        ``{"meta", "best_params", "cv", "cv_protocol", "train_rows", "test_rows", "test",
        "models_cv"}``; every test CCC with its 95 % bootstrap interval (``ccc_ci95``).
    """
    names = list(level1.dimension_names)
    Y = level1.targets
    block: dict[str, Any] = {
        "meta": fitted.meta,
        "best_params": fitted.best_params,
        "cv": fitted.cv,
        "cv_protocol": fitted.cv_protocol,
        "train_rows": {n: int(np.isfinite(Y[fitted.train, j]).sum()) for j, n in enumerate(names)},
        "test_rows": {n: int(np.isfinite(Y[test, j]).sum()) for j, n in enumerate(names)},
    }
    test_block: dict[str, Any] = {"models": {}}
    if len(test) and np.isfinite(Y[test]).any():

        def scored(pred: np.ndarray) -> dict[str, Any]:
            figures = dimensional_metrics(Y[test], pred[test], names)
            for j, n in enumerate(names):
                rows = test[np.isfinite(Y[test, j])]
                if n in figures and len(rows) >= 2:
                    figures[n]["ccc_ci95"] = bootstrap_ccc(Y[rows, j], pred[rows, j], seed=seed)
            return figures

        test_block["ensemble"] = scored(fitted.model.predict(level1))
        for store, dims in zip(level1.names, level1.dimensions):
            if dims is not None:
                test_block["models"][store] = scored(dims)
    block["test"] = test_block
    block["models_cv"] = _models_cv(level1, fitted.train)
    return block


def _models_cv(level1: Level1, train: np.ndarray) -> dict[str, dict[str, Any]]:
    """Each base model's CCC on its out-of-fold train rows, per fold (mean ± std over folds)."""
    out: dict[str, dict[str, Any]] = {}
    folds = level1.fold[train]
    if len(np.unique(folds)) < 2:
        return out
    for store, dims, flags in zip(level1.names, level1.dimensions, level1.in_sample):
        if dims is None or flags is None or flags[train].any():
            continue
        out[store] = {}
        for j, name in enumerate(level1.dimension_names):
            per_fold = []
            for k in np.unique(folds):
                rows = train[folds == k]
                rows = rows[np.isfinite(level1.targets[rows, j])]
                if len(rows) >= 2:
                    per_fold.append({"ccc": ccc(level1.targets[rows, j], dims[rows, j])})
            out[store][name] = fold_summary(per_fold)
    return out


def render_dimensional(block: dict[str, Any]) -> list[str]:
    """The report.md section of the dimensions."""
    lines = [f"## Valence and arousal ({block['meta']})", ""]
    if block.get("auto"):
        auto = block["auto"]
        listed = ", ".join(f"{m} {s:.4f}" for m, s in auto["cv_mean_ccc"].items())
        lines += [f"Chosen by --dim-meta auto: {auto['chosen']} ({listed}; by {auto['by']}).", ""]
    rows = ", ".join(f"{n} {c}" for n, c in block["test_rows"].items())
    lines.append(
        "CCC is Lin's concordance correlation over all test rows that carry the dimension "
        f"(population moments); test rows: {rows}; rows without a value (AI Hub) are counted "
        "nowhere."
    )
    lines.append("")
    test = block["test"]
    if "ensemble" in test:
        names = [n for n in block["test_rows"] if n in test["ensemble"]]
        head = "| method | " + " | ".join(f"{n} CCC | {n} r | {n} RMSE" for n in names)
        lines += [head + " | mean CCC |", "|---|" + "---|" * (3 * len(names) + 1)]
        entries = [(f"ensemble ({block['meta']})", test["ensemble"])]
        entries += list(test["models"].items())
        for label, m in [entries[0], *sorted(entries[1:], key=lambda e: e[0])]:
            cells = []
            for n in names:
                cells += [f"{m[n]['ccc']:.4f}", f"{m[n]['pearson']:.4f}", f"{m[n]['rmse']:.4f}"]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {m['mean']['ccc']:.4f} |")
        lines.append("")
        lines.append("CCC 95 % bootstrap intervals (2,000 resamples of the test rows):")
        lines.append("")
        for label, m in [entries[0], *sorted(entries[1:], key=lambda e: e[0])]:
            spans = [
                f"{n} [{m[n]['ccc_ci95'][0]:.4f}, {m[n]['ccc_ci95'][1]:.4f}]"
                for n in names
                if m[n].get("ccc_ci95")
            ]
            lines.append(f"- {label}: " + ", ".join(spans))
        lines.append("")
    if block["cv"]:
        lines.append(f"CV over the train folds ({block['cv_protocol']}), CCC mean ± std:")
        lines.append("")
        lines += [
            "| method | " + " | ".join(block["cv"]) + " |",
            "|---|" + "---|" * len(block["cv"]),
        ]
        cells = [f"{v['ccc']['mean']:.4f} ± {v['ccc']['std']:.4f}" for v in block["cv"].values()]
        lines.append("| ensemble | " + " | ".join(cells) + " |")
        for store, per in block["models_cv"].items():
            cells = [
                f"{per[n]['ccc']['mean']:.4f} ± {per[n]['ccc']['std']:.4f}" if per.get(n) else "-"
                for n in block["cv"]
            ]
            lines.append(f"| {store} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("![valence and arousal](dimensions.png)")
    return lines


def plot_dimensions(level1: Level1, pred: np.ndarray, test: np.ndarray, out) -> None:
    """Predicted versus true per dimension on the test rows: a 2-D histogram (rows overlap on
    the 0.1 steps of averaged votes), the identity line and the 1-5 scale."""
    from emofeat.analysis.plots import pyplot, save_figure

    plt = pyplot()
    names = list(level1.dimension_names)
    from matplotlib.colors import LinearSegmentedColormap

    # From a light tint, not white: a cell of one row stays visible.
    cmap = LinearSegmentedColormap.from_list("rows", ["#c6dbef", "#08306b"])
    fig, axes = plt.subplots(
        1, len(names), figsize=(5.0 * len(names), 4.4), squeeze=False, layout="constrained"
    )
    bins = np.linspace(1, 5, 33)
    for ax, (j, name) in zip(axes[0], enumerate(names)):
        rows = test[np.isfinite(level1.targets[test, j])]
        if len(rows):
            h = ax.hist2d(
                level1.targets[rows, j], pred[rows, j], bins=[bins, bins], cmap=cmap, cmin=1
            )
            fig.colorbar(h[3], ax=ax, shrink=0.8, label="test rows")
            title = f"{name}: CCC {ccc(level1.targets[rows, j], pred[rows, j]):.3f} (n={len(rows)})"
        else:
            title = f"{name}: no test rows"
        ax.plot([1, 5], [1, 5], ls="--", lw=0.8, color="black", label="identity")
        ax.set_xlim(1, 5)
        ax.set_ylim(1, 5)
        ax.set_xlabel(f"true {name} (1-5)")
        ax.set_ylabel(f"predicted {name}")
        ax.set_title(title)
        ax.legend(loc="upper left", frameon=False)
    fig.suptitle("Test set: stacked valence and arousal")
    save_figure(fig, out)
