"""Level-1 data: several stores aligned by utterance id (never by row order).

:func:`load_level1` opens stores, checks that they agree (ids, labels, splits, folds, label
names) and keeps the rows done in every store, in the first store's order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emofeat.errors import StoreError
from emofeat.metrics import softmax
from emofeat.store import Provenance, Store, aligned


@dataclass
class Level1:
    """Aligned stores over the rows done in every one of them.

    ``ids``, ``labels``, ``split`` and ``fold`` are in the first store's order; ``logits`` and
    ``in_sample`` hold each store's values in that order (None where a store has no logits or does
    not record its evidence). ``names`` and ``keys`` name each store (``keys``: its identity, which
    a fitted stack matches stores by).
    """

    names: list[str]
    keys: list[str]
    paths: list[Path]
    label_names: list[str]
    ids: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    fold: np.ndarray
    logits: list[np.ndarray | None]
    in_sample: list[np.ndarray | None]  # per store, aligned rows; None: the store does not say
    provenance: list[Provenance]
    stores: list[Store] = field(repr=False, default_factory=list)
    rows: list[np.ndarray] = field(repr=False, default_factory=list)  # per store: its row indices
    dropped: int = 0  # rows not done in every store
    # Per store, the identity stacks fitted before stores listed their identity keys recorded.
    legacy_keys: list[str] = field(default_factory=list)
    # Valence and arousal: per store its predictions (None: it has none), the true values of
    # the rows (NaN: none; None: the stores hold no targets) and the dimensions' names.
    dimensions: list[np.ndarray | None] = field(default_factory=list)
    targets: np.ndarray | None = None
    dimension_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        """The number of classes (the stores' label names)."""
        return len(self.label_names)

    def features(self, kind: str = "proba", order: Sequence[int] | None = None) -> np.ndarray:
        """Level-1 features: each store's class probabilities (or logits), side by side.

        Args:
            kind: ``proba`` (softmax of the logits) or ``logits``.
            order: Store indices in the order to lay them out; None for all stores as given.

        Returns:
            (n, M*C) features: store by store, C columns each.

        Raises:
            StoreError: a store has no logits (a frozen-encoder store).
        """
        blocks = []
        for k in range(len(self.names)) if order is None else order:
            lg = self.logits[k]
            if lg is None:
                raise StoreError(
                    f"store {self.names[k]} has no logits: it holds a frozen encoder's embeddings. "
                    "Make it a base model with a cross-fitted head over its layers (`emofeat fuse "
                    "--model layer-sum --store` it; its store has logits and stacks), score it "
                    "with `emofeat probe`, or stack it with --meta pooled-mixer (it reads "
                    "embeddings)"
                )
            lg = lg.astype(np.float64)
            blocks.append(softmax(lg) if kind == "proba" else lg)
        return np.hstack(blocks)

    def embeddings(
        self, name: str, order: Sequence[int] | None = None
    ) -> tuple[np.ndarray, list[int]]:
        """One embedding of each store, side by side.

        Args:
            name: The embedding (``last``, ``layer_07``, ...).
            order: Store indices in the order to lay them out; None for all stores as given.

        Returns:
            ``(X, widths)``: the (n, sum of D) features and each store's width.

        Raises:
            StoreError: a store has no embedding ``name`` (the message names the store).
        """
        parts = []
        for k in range(len(self.names)) if order is None else order:
            s = self.stores[k]
            if name not in s.embedding_names:
                raise StoreError(
                    f"store {self.names[k]} has no embedding {name!r}; available: {s.embedding_names}"
                )
            parts.append(s.embeddings(name, self.rows[k]).astype(np.float32))
        return np.hstack(parts), [p.shape[1] for p in parts]

    def close(self) -> None:
        """Close the stores (a context manager closes them on exit)."""
        for s in self.stores:
            s.close()

    def __enter__(self) -> Level1:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def store_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """How stores are named beside each other (stack reports, probes, infer's work folder):
    their file names without the suffix; with their folder in front where file names repeat
    (``kobert/layer-sum``); their whole paths where even those repeat.

    Args:
        paths: The stores' paths.

    Returns:
        One unique name per store, in order.
    """
    stems = [Path(p).stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    names = [f"{Path(p).parent.name}/{Path(p).stem}" for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def load_level1(
    paths: Sequence[str | os.PathLike],
    *,
    allow_incomplete: bool = False,
    flag: str = "--allow-incomplete",
) -> Level1:
    """Open stores and align them by utterance id, as a stack's input.

    Args:
        paths: The stores, in the order their features are laid side by side.
        allow_incomplete: Accept stores whose ``complete`` attribute is false.
        flag: The option named in the error that refuses an incomplete store.

    Returns:
        A :class:`Level1` over the rows done in every store; close it (or use it as a context
        manager) to close the stores.

    Raises:
        StoreError: a store is missing or incomplete (without ``allow_incomplete``), or the stores
            disagree on ids, labels, label names, splits or folds.
    """
    a = aligned(paths, allow_incomplete=allow_incomplete, flag=flag)
    try:
        stores, first, keep = a.stores, a.first, a.keep
        return Level1(
            names=store_names([s.path for s in stores]),
            keys=[s.identity for s in stores],
            legacy_keys=[s.legacy_identity for s in stores],
            paths=[s.path for s in stores],
            label_names=list(first.label_names),
            ids=first.ids[keep],
            labels=first.labels[keep].astype(int),
            split=first.split[keep],
            fold=first.fold[keep].astype(int),
            logits=[s.logits(r) if s.has_logits else None for s, r in zip(stores, a.rows)],
            in_sample=[
                s.in_sample[r] if s.in_sample is not None else None for s, r in zip(stores, a.rows)
            ],
            provenance=[s.provenance for s in stores],
            stores=stores,
            rows=a.rows,
            dropped=a.dropped,
            dimensions=[
                s.dimensions(r) if s.has_dimensions else None for s, r in zip(stores, a.rows)
            ],
            targets=(
                first.dimension_targets(keep).astype(np.float64)
                if first.has_dimension_targets
                else None
            ),
            dimension_names=first.dimension_names,
        )
    except Exception:
        a.close()
        raise
