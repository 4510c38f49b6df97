"""The one small training loop of emofeat's torch heads: the meta-learner mixer
(:class:`emofeat.stack.meta.MixerClassifier`), the layer-weighted probe
(:class:`emofeat.analysis.probe.LayerWeightedProbe`) and MMM (:mod:`emofeat.fuse.mmm`).

Fine-tuning a pretrained encoder is ``transformers.Trainer``'s job; these heads are small enough
that a plain loop is clearer than a framework: AdamW on (optionally class-weighted)
cross-entropy, gradient accumulation by a rule the caller gives, and a stop at the first
non-finite loss (NaN weights are never kept as a model). Seeding stays with the caller, so each
head's random stream is its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from emofeat.errors import EmofeatError


def every_batch(batch: int, n_batches: int) -> bool:
    """The default accumulation rule: the optimizer steps after every batch."""
    return True


def train_head(
    model: nn.Module,
    batches: Callable[[int], Iterable[Sequence[torch.Tensor]]],
    *,
    epochs: int,
    lr: float,
    weight_decay: float = 0.01,
    class_weight: torch.Tensor | None = None,
    grad_accum: int = 1,
    steps_after: Callable[[int, int], bool] = every_batch,
    device: str = "cpu",
    progress: Callable[[int, int, float], None] | None = None,
    name: str = "training",
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place; it is left in eval mode.

    Args:
        model: the head (its ``forward`` takes the batch's inputs and returns logits).
        batches: ``batches(epoch)`` (1-based) gives the epoch's batches, each a sequence of
            tensors whose last is the class index per row and the others the model's inputs;
            it must have a length when ``steps_after`` uses it.
        epochs: passes over the data.
        lr: AdamW's learning rate.
        weight_decay: AdamW's weight decay (torch's default 0.01).
        class_weight: cross-entropy's per-class weight (None: unweighted).
        grad_accum: the loss of each batch is divided by it (accumulated gradients).
        steps_after: ``steps_after(batch, n_batches)`` (0-based batch) says whether the
            optimizer steps after that batch; gradients are cleared at each epoch's start.
        device: where the model and the batches go.
        progress: called after each batch with (epoch, rows, loss).
        name: names the model in the error on a non-finite loss.
        loss_fn: ``loss_fn(outputs, targets)`` instead of the (weighted) cross-entropy (a head
            of valence and arousal: :func:`emofeat.tasks.task_loss`).

    Returns:
        The log history: the mean training loss of each epoch.

    Raises:
        EmofeatError: a non-finite loss (the inputs hold NaN/Inf, or the learning rate is too
            high).
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    weight = class_weight.to(device) if class_weight is not None else None
    model.to(device).train()
    history = []
    for epoch in range(1, epochs + 1):
        opt.zero_grad()  # (an accumulation rule may leave gradients after the last step)
        epoch_batches = batches(epoch)
        total, seen = 0.0, 0
        for step, batch in enumerate(epoch_batches):
            *inputs, y = (t.to(device) for t in batch)
            outputs = model(*inputs)
            if loss_fn is not None:
                loss = loss_fn(outputs, y)
            else:
                loss = nn.functional.cross_entropy(outputs, y, weight=weight)
            if not torch.isfinite(loss):
                raise EmofeatError(
                    f"{name}: non-finite training loss at epoch {epoch}, step {step + 1}; check "
                    "the inputs for NaN/Inf or lower the learning rate"
                )
            (loss / grad_accum).backward()
            if steps_after is every_batch or steps_after(step, len(epoch_batches)):
                opt.step()
                opt.zero_grad()
            total += loss.item() * len(y)
            seen += len(y)
            if progress is not None:
                progress(epoch, len(y), loss.item())
        history.append({"epoch": float(epoch), "loss": total / max(seen, 1)})
    model.eval()
    return history


def inverse_frequency(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """Class weights N / count_c (0 for a class absent from ``y``)."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    return torch.tensor(
        np.where(counts > 0, counts.sum() / np.maximum(counts, 1), 0.0), dtype=torch.float32
    )
