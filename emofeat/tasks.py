"""What a model predicts: the classes (``categorical``), valence and arousal (``dimensional``),
or both, and how its outputs and training targets are laid out.

A fine-tuned head has one output per class, then one per dimension (``both``), or the
dimensions alone: the run records its task, and extraction splits the head's outputs into a
store's ``/logits`` and ``/dimensions``. A training target is the class index alone
(``categorical``, as Trainer expects) or ``[class, valence, arousal]`` with -1 and NaN where a
row has none: the loss leaves those rows out of the part they lack, never imputes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from emofeat.corpus.manifest import DIMENSIONS

TASKS = ("categorical", "dimensional", "both")
# The centre of the 1-5 rating scale: a head's dimensional outputs are offsets from it, so that
# a fresh head starts on the scale (a CCC loss far off the targets' mean learns slowly).
SCALE_CENTRE = 3.0
DIMENSION_LOSSES = ("ccc", "mse")


def has_classes(task: str) -> bool:
    """Whether a model of ``task`` predicts the classes."""
    return task in ("categorical", "both")


def has_dimensions(task: str) -> bool:
    """Whether a model of ``task`` predicts valence and arousal."""
    return task in ("dimensional", "both")


def output_names(label_names: Sequence[str], task: str) -> list[str]:
    """The names of a head's outputs, in order: the classes, then the dimensions."""
    return [
        *(label_names if has_classes(task) else []),
        *(DIMENSIONS if has_dimensions(task) else []),
    ]


def split_outputs(
    outputs: np.ndarray, n_classes: int, task: str
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A head's (n, outputs) values as ``(logits, dimensions)`` (None for the part the task
    lacks); the dimensions on the rating scale (the head's offsets from :data:`SCALE_CENTRE`)."""
    logits = outputs[:, :n_classes] if has_classes(task) else None
    start = n_classes if has_classes(task) else 0
    dims = None
    if has_dimensions(task):
        dims = outputs[:, start : start + len(DIMENSIONS)] + SCALE_CENTRE
    return logits, dims


def target(label: int, dims: np.ndarray, task: str) -> int | list[float]:
    """A row's training target: its class (``categorical``) or ``[class, valence, arousal]``."""
    if task == "categorical":
        return int(label)
    return [float(label), *map(float, dims)]


def task_option(default: str = "categorical") -> Any:
    """``--task``, declared the same way by every command that trains a head."""
    from emofeat.options import option

    return option(
        default,
        help="What the model predicts: the classes (categorical), valence and arousal on their "
        "1-5 scale (dimensional), or both from one head.",
        choices=TASKS,
    )


def dim_loss_option() -> Any:
    """``--dim-loss``, declared the same way by every command that trains a head."""
    from emofeat.options import option

    return option(
        "ccc",
        help="The dimensional loss: ccc (1 - the batch's concordance correlation, averaged over "
        "valence and arousal) or mse.",
        choices=DIMENSION_LOSSES,
    )


def dim_weight_option() -> Any:
    """``--dim-weight``, declared the same way by every command that trains a head."""
    from emofeat.options import option

    return option(
        1.0,
        help="With --task both: the dimensional loss's weight beside the cross-entropy.",
        low=0,
        high=1000,
    )


def task_metrics(
    outputs: np.ndarray, targets: np.ndarray, n_classes: int, task: str
) -> dict[str, float]:
    """A head's held-out figures for a task with dimensions: the classification figures over
    the rows with a class (``both``), and per dimension CCC, Pearson's r, RMSE and the row count
    over the rows that carry it (``valence_ccc``, ..., ``mean_ccc``).

    Args:
        outputs: (n, outputs) head values (:func:`output_names`).
        targets: (n, 3) ``[class, valence, arousal]``, -1 / NaN where a row has none.
        n_classes: The number of classes.
        task: ``dimensional`` or ``both``.

    Returns:
        Flat figures, as a fold's metrics.json holds them.
    """
    from emofeat.metrics import classification_metrics, dimensional_metrics

    targets = np.asarray(targets, dtype=np.float64)
    logits, dims = split_outputs(np.asarray(outputs), n_classes, task)
    out: dict[str, float] = {}
    if logits is not None:
        known = targets[:, 0] >= 0
        out.update(classification_metrics(targets[known, 0].astype(int), logits[known].argmax(-1)))
    for name, figures in dimensional_metrics(targets[:, 1:], dims, DIMENSIONS).items():
        out.update({f"{name}_{k}": v for k, v in figures.items()})
    return out


def task_loss(outputs, targets, *, n_classes: int, task: str, dim_loss: str, dim_weight: float):
    """The training loss of a batch (torch): cross-entropy over the rows with a class, plus (or
    alone) the dimensional loss over the rows with each dimension — ``1 - CCC`` of the batch
    (Lin's, population moments) averaged over the dimensions, or the mean squared error.

    Args:
        outputs: (B, outputs) head values (:func:`output_names`).
        targets: (B, 3) ``[class, valence, arousal]``, -1 / NaN where a row has none.
        n_classes: The number of classes.
        task: One of :data:`TASKS` (not ``categorical``: Trainer's own loss does that).
        dim_loss: ``ccc`` or ``mse``.
        dim_weight: The dimensional loss's weight beside the cross-entropy (``both``).

    Returns:
        The scalar loss (0 for a batch that has nothing to learn, so that it still steps).
    """
    import torch

    logits = outputs[:, :n_classes]
    dims = outputs[:, -len(DIMENSIONS) :] + SCALE_CENTRE
    loss = outputs.sum() * 0.0  # keeps the graph for a batch without targets
    if has_classes(task):
        y = targets[:, 0].long()
        known = y >= 0
        if known.any():
            loss = loss + torch.nn.functional.cross_entropy(logits[known], y[known])
    if has_dimensions(task):
        parts = []
        for j in range(len(DIMENSIONS)):
            t = targets[:, 1 + j]
            rows = torch.isfinite(t)
            if rows.sum() == 0:
                continue
            p, t = dims[rows, j].float(), t[rows].float()
            if dim_loss == "mse":
                parts.append(torch.mean((p - t) ** 2))
            else:  # the differentiable twin of emofeat.metrics.ccc, over the batch
                mp, mt = p.mean(), t.mean()
                cov = torch.mean((p - mp) * (t - mt))
                den = p.var(unbiased=False) + t.var(unbiased=False) + (mp - mt) ** 2
                parts.append(1 - 2 * cov / (den + 1e-8))
        if parts:
            weight = dim_weight if has_classes(task) else 1.0
            loss = loss + weight * torch.stack(parts).mean()
    return loss
