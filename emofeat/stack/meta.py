"""Meta-learners, each a scikit-learn classifier (``fit``/``predict_proba``/``predict``), and
their registry (:data:`META_LEARNERS`, which also feeds the CLI's choices).

Level-1 features of ``softvote`` and ``caruana`` are the stores' class probabilities side by side
(``n_classes`` columns per base model). ``logreg`` and ``lgbm`` take any level-1 features
(probabilities or logits, optionally with a PCA-reduced embedding appended); ``mixer`` takes the
stores' pooled embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_non_negative, validate_data

from emofeat.errors import EmofeatError


def _blocks(X: np.ndarray, width: int) -> np.ndarray:
    """(n, M*C) → (M, n, C)."""
    if width == 0 or X.shape[1] % width:
        raise ValueError(
            f"X has {X.shape[1]} feature(s), not a whole number of {width}-class probability blocks"
        )
    return X.reshape(X.shape[0], -1, width).transpose(1, 0, 2)


class _BlockVoter(ClassifierMixin, BaseEstimator):
    """Weighted averaging of M probability blocks of ``len(classes_)`` columns each.

    ``classes``: the labels the columns of each block stand for, in order (``stack`` passes the
    stores' class indices, so a class absent from a CV training split keeps its column); by
    default the labels found in ``y``.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True  # probabilities
        return tags

    def _setup(self, X, y):
        X, y = validate_data(self, X, y, reset=True)
        check_non_negative(X, type(self).__name__)
        check_classification_targets(y)
        self.classes_ = np.unique(y) if self.classes is None else np.asarray(self.classes)
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if len(unknown):
            raise ValueError(f"labels {unknown.tolist()} are not among classes {self.classes_}")
        self.n_models_ = _blocks(X, len(self.classes_)).shape[0]
        return X, y

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "weights_")
        X = validate_data(self, X, reset=False)
        check_non_negative(X, type(self).__name__)
        p = np.tensordot(self.weights_, _blocks(X, len(self.classes_)), axes=1)
        total = p.sum(axis=1, keepdims=True)
        return p / np.where(total > 0, total, 1.0)

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "weights_")
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class SoftVote(_BlockVoter):
    """Weighted mean of the base models' probabilities; equal weights by default.

    ``weights=[0.25, 0.25, 1/6, 1/6, 1/6]`` over (wav2vec2 forward, reverse, three KoBERT runs)
    reproduces the reference ensemble. It learns nothing from the rows it is fitted on.
    """

    def __init__(self, weights: Sequence[float] | None = None, classes: Sequence | None = None):
        self.weights = weights
        self.classes = classes

    def fit(self, X, y):
        X, y = self._setup(X, y)
        w = (
            np.ones(self.n_models_)
            if self.weights is None
            else np.asarray(self.weights, dtype=float)
        )
        if len(w) != self.n_models_:
            raise ValueError(f"{len(w)} weights for {self.n_models_} models; give one per store")
        if not np.isfinite(w).all() or (w < 0).any() or w.sum() == 0:
            raise ValueError(f"weights {w.tolist()} must be finite, non-negative and not all zero")
        self.weights_ = w / w.sum()
        return self


class Caruana(_BlockVoter):
    """Greedy ensemble selection with replacement (Caruana et al., 2004).

    Starts from the best single model and repeatedly adds the model (repeats allowed) whose
    addition most improves the criterion on the out-of-fold probabilities; weights are the
    selection counts, normalised. Non-negative and summing to 1 by construction.
    """

    def __init__(self, n_iter: int = 25, metric: str = "log_loss", classes: Sequence | None = None):
        self.n_iter = n_iter
        self.metric = metric
        self.classes = classes

    def _score(self, p: np.ndarray, y_index: np.ndarray) -> float:
        if self.metric == "accuracy":
            return float((p.argmax(1) == y_index).mean())
        hit = p[np.arange(len(y_index)), y_index]
        return float(np.log(np.clip(hit, 1e-12, None)).mean())  # -log loss

    def fit(self, X, y):
        X, y = self._setup(X, y)
        y_index = np.searchsorted(self.classes_, y) if len(self.classes_) else y
        P = _blocks(X, len(self.classes_))
        counts = np.zeros(self.n_models_)
        scores = [self._score(P[m], y_index) for m in range(self.n_models_)]
        counts[int(np.argmax(scores))] = 1
        total = P[int(np.argmax(scores))].copy()
        self.trace_ = [max(scores)]
        for _ in range(self.n_iter - 1):
            k = counts.sum()
            cand = [self._score((total + P[m]) / (k + 1), y_index) for m in range(self.n_models_)]
            best = int(np.argmax(cand))
            counts[best] += 1
            total += P[best]
            self.trace_.append(cand[best])
        self.counts_ = counts
        self.weights_ = counts / counts.sum()
        return self


class MixerClassifier(ClassifierMixin, BaseEstimator):
    """Early fusion over pooled embeddings, after the MMM benchmark: each store's embedding is
    projected to ``d_model`` (one token per store), then an MLP-Mixer block mixes tokens and
    channels, LayerNorm, mean over tokens, MLP head. ``groups`` gives each store's width in X."""

    def __init__(
        self,
        groups: Sequence[int] | None = None,
        *,
        d_model: int = 64,
        epochs: int = 60,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        batch_size: int = 64,
        dropout: float = 0.1,
        seed: int = 0,
    ):
        self.groups = groups
        self.d_model = d_model
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.dropout = dropout
        self.seed = seed

    def fit(self, X, y):
        import torch

        X, y = validate_data(self, X, y, reset=True)
        check_classification_targets(y)
        groups = list(self.groups) if self.groups is not None else [X.shape[1]]
        if sum(groups) != X.shape[1]:
            raise ValueError(f"groups {groups} sum to {sum(groups)}, X has {X.shape[1]} columns")
        self.classes_, yi = np.unique(y, return_inverse=True)
        self.mean_, self.scale_ = X.mean(0), X.std(0) + 1e-6
        torch.manual_seed(self.seed)
        g = torch.Generator().manual_seed(self.seed)
        from emofeat.stack.mixer import Mixer
        from emofeat.training import train_head

        net = Mixer(groups, len(self.classes_), d=self.d_model, dropout=self.dropout)
        xt = torch.tensor((X - self.mean_) / self.scale_, dtype=torch.float32)
        yt = torch.tensor(yi, dtype=torch.long)

        def batches(epoch: int):
            return [
                (xt[idx], yt[idx])
                for idx in torch.randperm(len(xt), generator=g).split(self.batch_size)
            ]

        from tqdm.auto import tqdm

        # Each fit (hyperparameter search and nested CV fit it many times) shows its progress
        # in rows/s; the bar is cleared when the fit ends.
        bar = tqdm(total=self.epochs * len(xt), unit="row", desc="pooled-mixer fit", leave=False)

        def progress(epoch: int, rows: int, loss: float) -> None:
            bar.update(rows)
            bar.set_postfix(epoch=f"{epoch}/{self.epochs}", loss=f"{loss:.3f}", refresh=False)

        try:
            train_head(
                net,
                batches,
                epochs=self.epochs,
                lr=self.lr,
                weight_decay=self.weight_decay,
                progress=progress,
                name="the mixer meta-learner",
            )
        finally:
            bar.close()
        self.net_ = net
        return self

    def predict_proba(self, X) -> np.ndarray:
        import torch

        check_is_fitted(self, "net_")
        X = validate_data(self, X, reset=False)
        with torch.no_grad():
            logits = self.net_(torch.tensor((X - self.mean_) / self.scale_, dtype=torch.float32))
        return torch.softmax(logits, dim=1).numpy().astype(np.float64)

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "net_")
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class AllClasses(ClassifierMixin, BaseEstimator):
    """A classifier whose probability columns always follow ``classes``, also when a class is
    absent from the rows it is fitted on (a small corpus, one CV split): such a class gets
    probability 0 instead of shifting the other columns."""

    def __init__(self, estimator=None, classes: Sequence | None = None):
        self.estimator = estimator
        self.classes = classes

    def fit(self, X, y):
        from sklearn.base import clone

        X, y = validate_data(self, X, y, reset=True, ensure_all_finite=True)
        check_classification_targets(y)
        self.classes_ = np.unique(y) if self.classes is None else np.asarray(self.classes)
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if len(unknown):
            raise ValueError(f"labels {unknown.tolist()} are not among classes {self.classes_}")
        self.estimator_ = clone(self.estimator).fit(X, y)
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        X = validate_data(self, X, reset=False)
        part = self.estimator_.predict_proba(X)
        out = np.zeros((len(X), len(self.classes_)))
        out[:, np.searchsorted(self.classes_, self.estimator_.classes_)] = part
        return out

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


# ------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class MetaLearner:
    """A meta-learner by name: what it reads from the stores (``inputs``), how to build it and
    the hyperparameter grid cross-validation chooses from."""

    name: str
    inputs: str  # "proba": class probabilities only; "features": proba or logits (+ passthrough);
    # "embeddings": pooled embeddings
    build: Callable[[MetaContext], BaseEstimator]
    grid: dict[str, list]
    summary: str
    learns: bool = True  # False: fits nothing on level-1 rows (in-sample rows do no harm)


@dataclass(frozen=True)
class MetaContext:
    """What a meta-learner needs to know of its input."""

    classes: Sequence[int]
    weights: Sequence[float] | None = None
    groups: Sequence[int] | None = None  # embeddings: each store's width
    passthrough_dims: int = 0  # features: trailing embedding columns, PCA-reduced inside
    seed: int = 0


META_LEARNERS: dict[str, MetaLearner] = {}


def register_meta(
    name: str, *, inputs: str, grid: dict[str, list], summary: str, learns: bool = True
):
    """Decorator: register a builder ``(MetaContext) -> estimator`` under ``name``."""

    def deco(build: Callable[[MetaContext], BaseEstimator]):
        META_LEARNERS[name] = MetaLearner(name, inputs, build, grid, summary, learns)
        return build

    return deco


def get_meta(name: str) -> MetaLearner:
    """The registered meta-learner ``name``; an error listing the known ones otherwise."""
    if name not in META_LEARNERS:
        raise EmofeatError(f"unknown meta-learner {name!r}; known: {', '.join(META_LEARNERS)}")
    return META_LEARNERS[name]


def _scaled(model, ctx: MetaContext):
    """StandardScaler → model, with the trailing ``passthrough_dims`` embedding columns reduced
    by a PCA fitted inside the pipeline (so only on the rows it is fitted on: no leakage
    through CV)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps = []
    if ctx.passthrough_dims:
        pca = Pipeline(
            [("scale", StandardScaler()), ("pca", PCA(n_components=16, random_state=ctx.seed))]
        )
        steps.append(
            (
                "features",
                ColumnTransformer(
                    [("pca", pca, slice(-ctx.passthrough_dims, None))], remainder="passthrough"
                ),
            )
        )
    return Pipeline([*steps, ("scale", StandardScaler()), ("model", model)])


@register_meta(
    "softvote",
    inputs="proba",
    grid={},
    summary="weighted mean of probabilities (fixed weights; the reference)",
    learns=False,
)
def _softvote(ctx: MetaContext):
    return SoftVote(weights=ctx.weights, classes=ctx.classes)


@register_meta(
    "caruana",
    inputs="proba",
    grid={"n_iter": [5, 10, 25, 50]},
    summary="greedy ensemble selection with replacement (learned non-negative weights)",
)
def _caruana(ctx: MetaContext):
    return Caruana(classes=ctx.classes)


@register_meta(
    "logreg",
    inputs="features",
    grid={"estimator__model__C": [0.01, 0.1, 1.0, 10.0]},
    summary="multinomial logistic regression",
)
def _logreg(ctx: MetaContext):
    from sklearn.linear_model import LogisticRegression

    return AllClasses(_scaled(LogisticRegression(max_iter=5000), ctx), ctx.classes)


@register_meta(
    "lgbm",
    inputs="features",
    grid={"estimator__model__n_estimators": [100, 300], "estimator__model__num_leaves": [7, 15]},
    summary="LightGBM gradient-boosted trees",
)
def _lgbm(ctx: MetaContext):
    from lightgbm import LGBMClassifier

    # One thread: level-1 data are small (models x classes columns), and LightGBM's OpenMP
    # threads spin; beside torch's threads on 2 cores that was ~50x slower here.
    model = LGBMClassifier(
        learning_rate=0.05,
        min_child_samples=10,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.8,
        random_state=ctx.seed,
        n_jobs=1,
        verbose=-1,
    )
    return AllClasses(_scaled(model, ctx), ctx.classes)


@register_meta(
    "pooled-mixer",
    inputs="embeddings",
    grid={"estimator__weight_decay": [1e-2, 1e-1]},
    summary="an MLP-Mixer over one pooled embedding per store (not MMM, which mixes sequences: see "
    "emofeat fuse); sound over frozen-encoder stores only",
)
def _mixer(ctx: MetaContext):
    return AllClasses(MixerClassifier(groups=ctx.groups, seed=ctx.seed), ctx.classes)
