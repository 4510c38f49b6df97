"""Meta-learners, each a scikit-learn classifier (``fit``/``predict_proba``/``predict``).

Level-1 features of ``softvote`` and ``caruana`` are the stores' class probabilities side by side
(``n_classes`` columns per base model). ``logreg`` and ``lgbm`` take any level-1 features
(probabilities or logits, optionally with a PCA-reduced embedding appended); ``mixer`` takes the
stores' pooled embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_X_y, validate_data


def _blocks(X: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, M*C) → (M, n, C)."""
    if X.shape[1] % n_classes:
        raise ValueError(
            f"{X.shape[1]} level-1 columns are not a whole number of {n_classes}-class probability blocks"
        )
    return X.reshape(X.shape[0], -1, n_classes).transpose(1, 0, 2)


class _BlockVoter(ClassifierMixin, BaseEstimator):
    """Shared prediction of weighted probability averaging."""

    def _check_blocks(self, X, y=None):
        if y is not None:
            X, y = check_X_y(X, y)
        else:
            X = np.asarray(X, dtype=np.float64)
        return X, y

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "weights_")
        X, _ = self._check_blocks(X)
        p = np.tensordot(self.weights_, _blocks(X, self.n_classes_), axes=1)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "weights_")
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def _setup(self, X, y):
        X, y = self._check_blocks(X, y)
        check_classification_targets(y)
        self.n_classes_ = self.n_classes or int(np.max(y)) + 1
        self.classes_ = np.arange(self.n_classes_)
        self.n_models_ = _blocks(X, self.n_classes_).shape[0]
        return X, y


class SoftVote(_BlockVoter):
    """Weighted mean of the base models' probabilities; equal weights by default.

    ``weights=[0.25, 0.25, 1/6, 1/6, 1/6]`` over (wav2vec2 forward, reverse, three KoBERT runs)
    reproduces the reference ensemble.
    """

    def __init__(self, weights: Sequence[float] | None = None, n_classes: int | None = None):
        self.weights = weights
        self.n_classes = n_classes

    def fit(self, X, y):
        X, y = self._setup(X, y)
        w = (
            np.ones(self.n_models_)
            if self.weights is None
            else np.asarray(self.weights, dtype=float)
        )
        if len(w) != self.n_models_ or (w < 0).any() or w.sum() == 0:
            raise ValueError(
                f"{len(w)} weights for {self.n_models_} models; give one non-negative weight per store"
            )
        self.weights_ = w / w.sum()
        return self


class Caruana(_BlockVoter):
    """Greedy ensemble selection with replacement (Caruana et al., 2004).

    Starts from the best single model and repeatedly adds the model (repeats allowed) whose
    addition most improves the criterion on the out-of-fold probabilities; weights are the
    selection counts, normalised. Non-negative and summing to 1 by construction.
    """

    def __init__(self, n_iter: int = 25, metric: str = "log_loss", n_classes: int | None = None):
        self.n_iter = n_iter
        self.metric = metric
        self.n_classes = n_classes

    def _score(self, p: np.ndarray, y: np.ndarray) -> float:
        if self.metric == "accuracy":
            return float((p.argmax(1) == y).mean())
        return float(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())  # -log loss

    def fit(self, X, y):
        X, y = self._setup(X, y)
        P = _blocks(X, self.n_classes_)
        counts = np.zeros(self.n_models_)
        scores = [self._score(P[m], y) for m in range(self.n_models_)]
        counts[int(np.argmax(scores))] = 1
        total = P[int(np.argmax(scores))].copy()
        self.trace_ = [max(scores)]
        for _ in range(self.n_iter - 1):
            k = counts.sum()
            cand = [self._score((total + P[m]) / (k + 1), y) for m in range(self.n_models_)]
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

        net = Mixer(groups, len(self.classes_), self.d_model, self.dropout)
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        xt = torch.tensor((X - self.mean_) / self.scale_, dtype=torch.float32)
        yt = torch.tensor(yi, dtype=torch.long)
        net.train()
        for _ in range(self.epochs):
            for idx in torch.randperm(len(xt), generator=g).split(self.batch_size):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
                opt.step()
        self.net_ = net.eval()
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


def make_meta(
    name: str,
    n_classes: int,
    weights: Sequence[float] | None = None,
    groups: Sequence[int] | None = None,
    passthrough_dims: int = 0,
    seed: int = 0,
):
    """(estimator, hyperparameter grid) of a meta-learner by name.

    With ``passthrough_dims`` the last that many columns of X are an embedding, reduced by a PCA
    fitted inside the estimator (so only on the rows it is fitted on: no leakage through CV).
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    def with_passthrough(model):
        steps = []
        if passthrough_dims:
            steps.append(
                (
                    "features",
                    ColumnTransformer(
                        [
                            (
                                "pca",
                                Pipeline(
                                    [
                                        ("scale", StandardScaler()),
                                        ("pca", PCA(n_components=16, random_state=seed)),
                                    ]
                                ),
                                slice(-passthrough_dims, None),
                            )
                        ],
                        remainder="passthrough",
                    ),
                )
            )
        return Pipeline([*steps, ("scale", StandardScaler()), ("model", model)])

    if name == "softvote":
        return SoftVote(weights=weights, n_classes=n_classes), {}
    if name == "caruana":
        return Caruana(n_classes=n_classes), {"n_iter": [5, 10, 25, 50]}
    if name == "logreg":
        return with_passthrough(LogisticRegression(max_iter=5000)), {
            "model__C": [0.01, 0.1, 1.0, 10.0]
        }
    if name == "lgbm":
        from lightgbm import LGBMClassifier

        # One thread: level-1 data are small (models x classes columns), and LightGBM's OpenMP
        # threads spin; beside torch's threads on 2 cores that was ~50x slower here.

        model = LGBMClassifier(
            learning_rate=0.05,
            min_child_samples=10,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            random_state=seed,
            n_jobs=1,
            verbose=-1,
        )
        return with_passthrough(model), {
            "model__n_estimators": [100, 300],
            "model__num_leaves": [7, 15],
        }
    if name == "mixer":
        return MixerClassifier(groups=groups, seed=seed), {"weight_decay": [1e-2, 1e-1]}
    raise ValueError(
        f"unknown meta-learner {name!r}; known: softvote, caruana, logreg, lgbm, mixer"
    )
