"""What every model of ``emofeat fuse`` reads: its input stores aligned by id, the fold plan
of the rows done in all of them, and the targets of the first (the store whose rows, labels
and valence/arousal the run follows)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from emofeat.crossfit import FoldPlan
from emofeat.errors import StoreError
from emofeat.store import Aligned, Store
from emofeat.tasks import has_dimensions, output_names


@dataclass
class StoreInputs:
    """Input stores aligned by id and the fold plan of their common rows."""

    stores: list[Store]
    positions: list[np.ndarray]  # each store's row of every id of the first store
    plan: FoldPlan
    task: str = "categorical"  # what the head predicts (emofeat.tasks)

    @staticmethod
    def common_plan(inputs: Aligned, task: str, *, hint: str) -> FoldPlan:
        """The first store's fold plan without the rows some store has not done; refused for a
        ``task`` with dimensions when the first store holds no valence or arousal (``hint``:
        what to extract instead)."""
        first = inputs.first
        if has_dimensions(task) and not first.has_dimension_targets:
            raise StoreError(
                f"--task {task}: {first.path} holds no valence or arousal (its manifest had "
                f"none); {hint}"
            )
        usable = np.zeros(len(first), bool)
        usable[inputs.keep] = True
        return FoldPlan.from_store(first).excluding(np.flatnonzero(~usable))

    @property
    def ref(self) -> Store:
        """The store whose rows, labels and targets the run follows (the first)."""
        return self.stores[0]

    @property
    def n_classes(self) -> int:
        return len(self.ref.label_names)

    @property
    def n_outputs(self) -> int:
        """The head's outputs: the classes, then valence and arousal (emofeat.tasks)."""
        return len(output_names(self.ref.label_names, self.task))

    @cached_property
    def labels(self) -> np.ndarray:
        return self.ref.labels.astype(int)

    @cached_property
    def targets(self) -> np.ndarray:
        """Per row ``[class, valence, arousal]`` (-1 / NaN where a row has none)."""
        ref = self.ref
        dims = ref.dimension_targets() if ref.has_dimension_targets else None
        if dims is None:
            dims = np.full((len(ref), 2), np.nan)
        return np.column_stack([self.labels, dims]).astype(np.float64)

    def y(self, rows: np.ndarray) -> np.ndarray:
        """The training targets of the rows (class indices, or ``[class, valence, arousal]``)."""
        return self.labels[rows] if self.task == "categorical" else self.targets[rows]
