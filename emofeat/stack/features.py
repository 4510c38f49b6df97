"""The design matrix of a meta-learner, built from aligned stores by a scikit-learn transformer.

:class:`StoreFeatures` is the first step of every fitted stack (``model.joblib`` is
``Pipeline([("features", StoreFeatures), ("meta", estimator)])``), so a fitted stack predicts
from stores with public calls only::

    from emofeat.stack.level1 import load_level1
    with load_level1(["w2v.h5", "kobert.h5"]) as level1:      # any order
        proba = model.predict_proba(level1)                   # rows: level1.ids

It remembers which stores it was fitted on (by identity: the producing weights and every option
that decided the stored values, or the file name for stores that do not record them) and
reorders the given stores to match; a missing, duplicated or foreign store is an error that
names it.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from emofeat.errors import EmofeatError, StoreError
from emofeat.stack.level1 import Level1

INPUTS = ("proba", "logits", "embeddings")


class StoreFeatures(TransformerMixin, BaseEstimator):
    """Level-1 design matrix from a :class:`~emofeat.stack.level1.Level1`.

    ``inputs``: ``proba`` (each store's class probabilities), ``logits``, or ``embeddings`` (the
    pooled embedding ``embedding`` of each store). ``passthrough``: an embedding appended to
    probabilities/logits. Stateless apart from the store identities and widths it records.
    """

    def __init__(
        self, inputs: str = "proba", embedding: str = "last", passthrough: str | None = None
    ):
        self.inputs = inputs
        self.embedding = embedding
        self.passthrough = passthrough

    def fit(self, level1: Level1, y=None) -> StoreFeatures:
        if self.inputs not in INPUTS:
            raise EmofeatError(f"inputs must be one of {INPUTS}, got {self.inputs!r}")
        if len(set(level1.keys)) != len(level1.keys):
            raise StoreError(f"the same store was given twice: {level1.names}")
        self.stores_ = list(level1.keys)
        self.store_names_ = list(level1.names)
        self.label_names_ = list(level1.label_names)
        X, self.widths_, self.passthrough_widths_ = self._build(
            level1, list(range(len(level1.names)))
        )
        self.passthrough_dims_ = int(sum(self.passthrough_widths_))
        self.n_features_out_ = X.shape[1]
        return self

    def transform(self, level1: Level1) -> np.ndarray:
        check_is_fitted(self, "stores_")
        if level1.label_names != self.label_names_:
            raise StoreError(
                f"label_names {level1.label_names} differ from the stack's {self.label_names_}"
            )
        X, _, _ = self._build(level1, self.match(level1))
        return X

    def match(self, level1: Level1) -> list[int]:
        """Indices of ``level1``'s stores in the order the stack was fitted on."""
        check_is_fitted(self, "stores_")
        return match_stores(self.stores_, self.store_names_, level1)

    def _build(self, level1: Level1, order: list[int]) -> tuple[np.ndarray, list[int], list[int]]:
        """(X, each store's width, each store's passthrough width); non-finite values are an
        error naming the store and a row."""
        parts, widths, extra = [], [], []
        for k in order:
            if self.inputs == "embeddings":
                part, _ = level1.embeddings(self.embedding, [k])
            else:
                part = level1.features(self.inputs, [k])
            parts.append(_finite(part, level1, k))
            widths.append(part.shape[1])
        if self.passthrough and self.inputs != "embeddings":
            for k in order:
                part, _ = level1.embeddings(self.passthrough, [k])
                parts.append(_finite(part, level1, k))
                extra.append(part.shape[1])
        return np.hstack(parts), widths, extra


def _finite(part: np.ndarray, level1: Level1, k: int) -> np.ndarray:
    bad = ~np.isfinite(part).all(axis=1)
    if bad.any():
        raise StoreError(
            f"store {level1.names[k]}: non-finite values in {int(bad.sum())} row(s), e.g. id "
            f"{level1.ids[np.flatnonzero(bad)[0]]!r}; re-extract that store"
        )
    return part


def match_stores(fitted: list[str], names: list[str], level1: Level1) -> list[int]:
    """Indices of ``level1``'s stores in the order a stack was fitted on them (``fitted``: their
    identities, ``names``: their names then), matched by identity, never by order or name.

    Raises:
        StoreError: a store is missing, duplicated or foreign to the stack (named).
    """
    given = list(level1.keys)
    dup = sorted({n for n, k in zip(level1.names, given) if given.count(k) > 1})
    if dup:
        raise StoreError(f"the same store was given twice: {dup}")
    # A stack fitted before stores listed their identity keys recorded their legacy
    # identity: such a stack matches stores by it (weights, reverse, layers, pooling).
    if not set(fitted) & set(given) and level1.legacy_keys:
        given = list(level1.legacy_keys)
    missing = [n for n, k in zip(names, fitted) if k not in given]
    extra = [n for n, k in zip(level1.names, given) if k not in fitted]
    if missing or extra:
        raise StoreError(
            f"the stack was fitted on stores {names}; "
            + (f"missing: {missing}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"not part of the stack: {extra}" if extra else "")
            + ". Give the stores extracted with the same runs and options."
        )
    return [given.index(k) for k in fitted]
