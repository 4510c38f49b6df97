"""Level-1 data: several stores aligned by utterance id (never by row order)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emofeat.errors import StoreError
from emofeat.store import Store, open_store


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class Level1:
    """Aligned stores: ``ids``, ``labels``, ``split``, ``fold`` (of the first store's order) and,
    per store, its logits and embeddings in that order. ``usable`` marks rows done in every store."""

    names: list[str]
    paths: list[Path]
    label_names: list[str]
    ids: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    fold: np.ndarray
    usable: np.ndarray
    logits: list[np.ndarray | None]
    stores: list[Store] = field(repr=False, default_factory=list)
    order: list[np.ndarray] = field(repr=False, default_factory=list)
    attrs: list[dict] = field(repr=False, default_factory=list)
    dropped: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def features(self, kind: str = "proba", rows: np.ndarray | None = None) -> np.ndarray:
        """(n, M*C) level-1 features: each store's probabilities (or logits), store by store."""
        blocks = []
        for name, lg in zip(self.names, self.logits):
            if lg is None:
                raise StoreError(
                    f"store {name} has no logits; logit-based meta-learners need fine-tuned stores (extract --run)"
                )
            lg = lg.astype(np.float64)
            blocks.append(softmax(lg) if kind == "proba" else lg)
        x = np.hstack(blocks).astype(np.float64)
        return x if rows is None else x[rows]

    def embeddings(
        self, name: str, rows: np.ndarray | None = None, stores: Sequence[int] | None = None
    ) -> tuple[np.ndarray, list[int]]:
        """Embedding ``name`` of each store (those holding it), side by side, and their widths."""
        parts, dims = [], []
        for k, s in enumerate(self.stores):
            if stores is not None and k not in stores:
                continue
            if name not in s.embedding_names:
                continue
            e = s.embeddings(name, self.order[k]).astype(np.float32)
            parts.append(e)
            dims.append(e.shape[1])
        if not parts:
            raise StoreError(f"no store holds an embedding named {name!r}")
        x = np.hstack(parts)
        return (x if rows is None else x[rows]), dims

    def close(self) -> None:
        for s in self.stores:
            s.close()


def _first_differences(a: np.ndarray, b: np.ndarray, ids: np.ndarray, what: str, n: int = 5) -> str:
    bad = np.flatnonzero(a != b)[:n]
    return ", ".join(f"{ids[i]}: {what} {a[i]} vs {b[i]}" for i in bad)


def load_level1(paths: Sequence[str | os.PathLike], allow_incomplete: bool = False) -> Level1:
    """Open stores and align them by id; refuse differing ids, labels, label names or splits."""
    if not paths:
        raise StoreError("no stores given")
    stores = [open_store(p) for p in paths]
    try:
        first = stores[0]
        names = [s.name for s in stores]
        if len(set(names)) != len(names):
            names = [f"{s.path.parent.name}/{s.name}" for s in stores]
        for s in stores:
            if not s.complete and not allow_incomplete:
                raise StoreError(
                    f"{s.path} is not complete ({int(s.done.sum())}/{len(s)} rows done); finish its extraction, or pass --allow-incomplete"
                )
            if s.label_names != first.label_names:
                raise StoreError(
                    f"{s.path}: label_names {s.label_names} differ from {first.path}'s {first.label_names}"
                )
        index = {uid: i for i, uid in enumerate(first.ids)}
        order, usable = [], first.done.copy()
        for s in stores:
            if set(s.ids) != set(first.ids):
                only_a = sorted(set(first.ids) - set(s.ids))[:5]
                only_b = sorted(set(s.ids) - set(first.ids))[:5]
                raise StoreError(
                    f"{s.path} and {first.path} hold different ids: only in {first.path.name}: {only_a}; only in {s.path.name}: {only_b}"
                )
            pos = np.empty(len(first), dtype=np.int64)
            pos[[index[u] for u in s.ids]] = np.arange(len(s))
            for what, mine, theirs in (
                ("label", s.labels[pos], first.labels),
                ("split", s.split[pos], first.split),
            ):
                if np.any(mine != theirs):
                    raise StoreError(
                        f"{s.path} and {first.path} disagree on {what}s: "
                        + _first_differences(theirs, mine, first.ids, what)
                    )
            if np.any(s.fold[pos] != first.fold):
                raise StoreError(
                    f"{s.path} and {first.path} use different folds: "
                    + _first_differences(first.fold, s.fold[pos], first.ids, "fold")
                )
            usable &= s.done[pos]
            order.append(pos)
        logits = [s.logits(o) if s.has_logits else None for s, o in zip(stores, order)]
        return Level1(
            names=names,
            paths=[s.path for s in stores],
            label_names=list(first.label_names),
            ids=first.ids,
            labels=first.labels.astype(int),
            split=first.split,
            fold=first.fold.astype(int),
            usable=usable,
            logits=logits,
            stores=stores,
            order=order,
            attrs=[s.attrs for s in stores],
            dropped=int((~usable).sum()),
        )
    except Exception:
        for s in stores:
            s.close()
        raise
