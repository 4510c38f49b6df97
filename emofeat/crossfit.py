"""Cross-fitting: the one place that knows which rows fit each fold model and which it predicts.

The rule, used by fine-tuning, extraction, fusion models (MMM) and meta-learner CV alike:

* the **labelled train rows** (``split == "train"``, a known label) are what models learn from;
* fold model k fits the labelled train rows whose fold is not k and **holds out** those of
  fold k; a model of fold -1 (a run without folds) fits every labelled train row;
* a held-out row is predicted by the one fold model that held it out; **every other row** (test
  rows, unlabelled rows, rows left out of training) by the mean over all fold models;
* a row's **evidence** (``in_sample``) is computed, never declared: it is in-sample when a model
  that produced its values trained on it or chose its checkpoint on it, or when the values it
  was computed from were in-sample already (in-sample in means in-sample out);
* a fold never splits a group (a session, else a speaker): :meth:`FoldPlan.spanning_groups`
  finds the groups that do, and an inner validation split keeps each group on one side.

:class:`FoldPlan` is built from a manifest or from a store's (or level-1 data's) rows. It needs
numpy alone (scikit-learn for the splitters, imported when they are asked for).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from emofeat.corpus.labels import segment_of
from emofeat.errors import printable

if TYPE_CHECKING:
    from sklearn.model_selection import PredefinedSplit


@dataclass(frozen=True, eq=False)
class FoldPlan:
    """The fold assignment of a set of rows (see the module docstring for the rule).

    ``ids``, ``split``, ``fold`` and ``labelled`` are per row; ``groups`` names each row's group
    (rows of one group must share a fold) and defaults to the row's own id."""

    ids: np.ndarray
    split: np.ndarray
    fold: np.ndarray
    labelled: np.ndarray
    groups: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        n = len(self.ids)
        object.__setattr__(self, "ids", np.asarray([str(u) for u in self.ids], dtype=object))
        object.__setattr__(self, "split", np.asarray([str(s) for s in self.split], dtype=object))
        object.__setattr__(self, "fold", np.asarray(self.fold, dtype=np.int64).reshape(-1))
        object.__setattr__(self, "labelled", np.asarray(self.labelled, dtype=bool).reshape(-1))
        groups = self.ids if self.groups is None else self.groups
        object.__setattr__(self, "groups", np.asarray([str(g) for g in groups], dtype=object))
        for name in ("split", "fold", "labelled", "groups"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"FoldPlan: {name} has {len(getattr(self, name))} rows, ids {n}")

    # -- construction
    @classmethod
    def from_arrays(
        cls,
        *,
        ids: Sequence[str] | np.ndarray,
        split: Sequence[str] | np.ndarray,
        fold: Sequence[int] | np.ndarray,
        labels: Sequence[int] | np.ndarray,
        groups: Sequence[str] | np.ndarray | None = None,
    ) -> FoldPlan:
        """A plan from per-row arrays; a row is labelled when its label index is >= 0."""
        return cls(ids, split, fold, np.asarray(labels) >= 0, groups)

    @classmethod
    def from_manifest(cls, manifest: Any) -> FoldPlan:
        """The plan of a manifest's rows.

        Args:
            manifest: A :class:`~emofeat.corpus.manifest.Manifest`.

        Returns:
            The plan; a row's group is ``corpus/session``, else ``corpus/speaker``, else its id.
        """
        frame = manifest.frame
        groups = [
            f"{c}/{s or sp or i}"
            for c, s, sp, i in zip(
                frame["corpus"].to_numpy(),
                frame["session"].to_numpy(),
                frame["speaker"].to_numpy(),
                frame["id"].to_numpy(),
            )
        ]
        return cls.from_arrays(
            ids=manifest.ids,
            split=manifest.split,
            fold=manifest.fold,
            labels=manifest.label_indices,
            groups=groups,
        )

    @classmethod
    def from_store(cls, store: Any) -> FoldPlan:
        """The plan of a store's rows.

        Args:
            store: A :class:`~emofeat.store.Store`, or anything with ``ids``, ``split``, ``fold`` and
                ``labels`` (such as level-1 data).

        Returns:
            The plan; each row is its own group.
        """
        return cls.from_arrays(
            ids=store.ids, split=store.split, fold=store.fold, labels=store.labels
        )

    def excluding(self, rows: Iterable[int]) -> FoldPlan:
        """The same plan with ``rows`` left out of training (rows that could not be read): they
        become "other rows", predicted by every fold model and trained on by none."""
        labelled = self.labelled.copy()
        labelled[np.asarray(list(rows), dtype=np.int64)] = False
        return FoldPlan(self.ids, self.split, self.fold, labelled, self.groups)

    def subset(self, rows: np.ndarray) -> FoldPlan:
        """The plan of ``rows`` alone, indexed 0..len(rows)-1 (e.g. the rows done in a store)."""
        rows = np.asarray(rows, dtype=np.int64)
        return FoldPlan(
            self.ids[rows],
            self.split[rows],
            self.fold[rows],
            self.labelled[rows],
            self.groups[rows],
        )

    # -- the rule
    def __len__(self) -> int:
        return len(self.ids)

    @property
    def labelled_train(self) -> np.ndarray:
        """Mask of the rows models learn from: train rows with a known label."""
        return (self.split == "train") & self.labelled

    @property
    def train_rows(self) -> np.ndarray:
        """Indices of the labelled train rows."""
        return np.flatnonzero(self.labelled_train)

    @property
    def folds(self) -> list[int]:
        """The folds of the labelled train rows (sorted; -1, "no fold", is not a fold)."""
        return sorted(int(k) for k in np.unique(self.fold[self.labelled_train]) if k >= 0)

    @property
    def cross_fitted(self) -> bool:
        """Whether every labelled train row has a fold and there are at least two folds, so
        each of them can be held out by a model that did not fit it."""
        train = self.labelled_train
        return bool(train.any()) and bool((self.fold[train] >= 0).all()) and len(self.folds) >= 2

    def fit_rows(self, k: int) -> np.ndarray:
        """The rows fold model ``k`` is trained on.

        Args:
            k: A fold, or -1 for a model of every labelled train row.

        Returns:
            Row indices: the labelled train rows of the other folds (every labelled train row for -1).
        """
        mask = self.labelled_train if k < 0 else self.labelled_train & (self.fold != k)
        return np.flatnonzero(mask)

    def held_rows(self, k: int) -> np.ndarray:
        """The rows fold model ``k`` holds out, and alone predicts.

        Args:
            k: A fold, or -1 (a model that holds out nothing).

        Returns:
            Row indices: the labelled train rows of fold ``k`` (none for -1).
        """
        if k < 0:
            return np.array([], dtype=np.int64)
        return np.flatnonzero(self.labelled_train & (self.fold == k))

    def model_groups(
        self, model_folds: Sequence[int], *, refit: bool = False
    ) -> list[tuple[list[int], np.ndarray]]:
        """Which models compute which rows: ``[(model indices, rows), ...]``, the values of a
        row being the mean over its models. ``model_folds[i]`` is the fold model ``i`` held
        out; model ``i`` alone predicts those rows, the fold models together predict the rest.
        A model refit on all train rows (fold -1 beside fold models) predicts the rest alone
        with ``refit``, and nothing otherwise. Groups without rows are left out."""
        folds = [i for i, k in enumerate(model_folds) if k >= 0]
        if not folds:  # one model on all train rows: it predicts every row
            return [([0], np.arange(len(self)))] if len(self) else []
        held = np.zeros(len(self), bool)
        groups = []
        for i in folds:
            rows = self.held_rows(model_folds[i]) if len(folds) > 1 else np.array([], np.int64)
            held[rows] = True
            groups.append(([i], rows))
        others = [list(model_folds).index(-1)] if refit else folds
        groups.append((others, np.flatnonzero(~held)))
        return [(models, rows) for models, rows in groups if len(rows)]

    def other_models(self, groups: Sequence[tuple[Sequence[int], np.ndarray]]) -> list[int]:
        """The models that predict the rows outside the labelled train rows (test rows,
        unlabelled rows) in ``groups`` (from :meth:`model_groups`); [] when there are none."""
        others = ~self.labelled_train
        for models, rows in groups:
            if others[np.asarray(rows, dtype=np.int64)].any():
                return list(models)
        return []

    def in_sample(
        self,
        groups: Sequence[tuple[Sequence[int], np.ndarray]],
        used: Sequence[Iterable[str]],
        inputs: np.ndarray | None = None,
    ) -> np.ndarray:
        """Each row's evidence: did a model that produced its values learn from it?

        Args:
            groups: Which models produced which rows, from :meth:`model_groups`.
            used: Per model, the ids it trained on or chose its checkpoint on (a fold's ``rows.json``).
            inputs: Per row, whether its inputs were in-sample already (for models over stores);
                None when the model reads no store.

        Returns:
            (N,) bool: true where the row is in-sample.
        """
        used_sets = _segments(used)
        segments = [segment_of(u) for u in self.ids]
        out = np.zeros(len(self), bool) if inputs is None else np.asarray(inputs, bool).copy()
        for models, rows in groups:
            for r in rows:
                out[r] |= any(segments[r] in used_sets[i] for i in models)
        return out

    # -- checks
    def check_models(
        self, model_folds: Sequence[int], used: Sequence[Iterable[str]], limit: int = 5
    ) -> tuple[int, list[str]]:
        """Compare the plan with what fold models recorded they trained on.

        Rows left out of the plan (:meth:`excluding`) may be unseen by every model.

        Args:
            model_folds: Per model, the fold it held out (-1 for a model of all train rows).
            used: Per model, the ids it trained on or chose its checkpoint on.
            limit: How many disagreements to describe.

        Returns:
            ``(count, messages)``: the number of rows that disagree — a labelled train row no model
            saw, one held out by other models than its fold's, a row outside the labelled train rows
            that a model learned from — and the first ``limit`` of them in words.
        """
        used_sets = _segments(used)
        seen = set().union(*used_sets) if used_sets else set()
        train = self.labelled_train
        problems: list[str] = []
        count = 0
        for r, uid in enumerate(self.ids):
            segment = segment_of(uid)
            holders = [model_folds[i] for i, u in enumerate(used_sets) if segment not in u]
            shown = printable(uid)  # an id may hold control characters
            message = ""
            if train[r] and len(model_folds) > 1:
                if segment not in seen:
                    message = f"{shown}: train row in fold {self.fold[r]} of the manifest, never seen by the run"
                elif holders != [self.fold[r]]:
                    held_by = holders[0] if len(holders) == 1 else holders
                    message = f"{shown}: manifest fold {self.fold[r]}, run fold {held_by}"
            elif self.split[r] != "train" and segment in seen:
                message = (
                    f"{uid}: {self.split[r]} row in the manifest, but fold models trained on it"
                )
            if message:
                count += 1
                if len(problems) < limit:
                    problems.append(message)
        return count, problems

    def spanning_groups(self) -> dict[str, list[int]]:
        """Groups (sessions, speakers) whose labelled train rows fall in more than one fold."""
        train = self.labelled_train
        folds: dict[str, set[int]] = {}
        for g, k in zip(self.groups[train], self.fold[train]):
            folds.setdefault(g, set()).add(int(k))
        return {g: sorted(ks) for g, ks in folds.items() if len(ks) > 1}

    def assignment_sha256(self, rows: np.ndarray | None = None) -> str:
        """sha256 of the fold assignment of ``rows`` (default: the labelled train rows): their
        ``id<TAB>fold`` lines, sorted by id."""
        rows = self.train_rows if rows is None else np.asarray(rows)
        h = hashlib.sha256()
        for uid, fold in sorted(zip(self.ids[rows], map(int, self.fold[rows]))):
            h.update(f"{uid}\t{fold}\n".encode())
        return h.hexdigest()

    # -- splitters
    def inner_split(
        self, rows: np.ndarray, fraction: float, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """A group-aware validation split of a model's own training rows.

        A session or speaker never lands on both sides, so checkpoint selection never peeks at a group
        the model trained on.

        Args:
            rows: The model's training rows.
            fraction: The share of rows (by group) to hold out for validation.
            seed: The random seed of the split.

        Returns:
            ``(fit rows, validation rows)``.
        """
        from sklearn.model_selection import GroupShuffleSplit

        rows = np.asarray(rows)
        split = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        fit, val = next(split.split(rows, groups=self.groups[rows]))
        return rows[np.sort(fit)], rows[np.sort(val)]

    def splitter(self, rows: np.ndarray | None = None) -> PredefinedSplit:
        """A scikit-learn CV splitter that holds out one fold at a time.

        Args:
            rows: The rows to split (indices into the plan); None for the train rows.

        Returns:
            A ``PredefinedSplit`` over ``rows``, for meta-learner hyperparameter search.
        """
        from sklearn.model_selection import PredefinedSplit

        rows = self.train_rows if rows is None else np.asarray(rows)
        return PredefinedSplit(self.fold[rows])

    def fold_pairs(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """``[(k, fit rows, held rows), ...]`` for every fold of the labelled train rows."""
        return [(k, self.fit_rows(k), self.held_rows(k)) for k in self.folds]


@dataclass(frozen=True)
class Evidence:
    """The out-of-fold evidence of several aligned inputs: ``in_sample`` per row (a row is
    in-sample when it is in any input; None when some input does not say) and, for the rows a
    model would learn from, what is wrong with it (empty when those rows are all out-of-fold)."""

    in_sample: np.ndarray | None
    problems: list[str]


def known_in_sample(flags: Sequence[np.ndarray | None], n: int) -> np.ndarray:
    """Per row, whether any of several inputs' evidence says a model that produced one of its
    values learned from it; inputs that record no evidence (None) count as not known to be.

    Args:
        flags: Each input's per-row ``in_sample``, or None where it records none.
        n: The number of rows.

    Returns:
        (n,) bool.
    """
    known = [np.asarray(f, bool) for f in flags if f is not None]
    return np.logical_or.reduce(known) if known else np.zeros(n, bool)


def combine_evidence(
    names: Sequence[str], flags: Sequence[np.ndarray | None], rows: np.ndarray
) -> Evidence:
    """Combine per-input ``flags`` (aligned rows; None: unknown) and judge them on ``rows``
    (the labelled train rows a model would learn from)."""
    problems = []
    for name, f in zip(names, flags):
        if f is None:
            problems.append(
                f"store {name} has no per-row out-of-fold evidence (/in_sample): unknown"
            )
        elif f[rows].any():
            problems.append(
                f"store {name}: {int(f[rows].sum())} of {len(rows)} train rows are in-sample "
                "(their values come from a model trained on them)"
            )
    known = [np.asarray(f, bool) for f in flags if f is not None]
    combined = None if len(known) < len(flags) else np.logical_or.reduce(known)
    return Evidence(combined, problems)


def _segments(used: Sequence[Iterable[str]]) -> list[set[str]]:
    """Per model, the segments it learned from: the copies of a multi-label segment
    (``SEG#label``) are one segment, so evidence holds across manifests made with any
    ``--multilabel`` policy."""
    return [{segment_of(str(u)) for u in ids} for ids in used]
