"""The layer-sum head: a softmax-weighted sum of an encoder's stored layers, then a small head
(SUPERB's protocol for frozen encoders), trained on stored features instead of recomputing the
encoder every epoch.

Each input store contributes its ``layer_NN`` datasets (``extract --layers all``; a store of one
embedding, such as openSMILE's functionals, contributes that one); each layer is standardised
per column with the fold's training rows' mean and standard deviation; store s's layers are
summed with weights ``softmax(w_s)`` (one weight per layer, starting equal; they sum to 1), and
the sums of all input stores, side by side, feed the head: ``linear`` (one Linear) or ``mlp``
(Linear → ReLU → Linear). Trained with AdamW on mini-batches in a seeded order (epoch e:
``numpy.random.default_rng(seed + e).permutation``) by :func:`emofeat.training.train_head`,
cross-entropy for the classes and :func:`emofeat.tasks.task_loss` with valence and arousal.

:class:`LayerSum` is also the network of ``emofeat probe --weighted``
(:class:`emofeat.analysis.probe.LayerWeightedProbe`): one implementation of the weighted sum.
Cross-fitting it over the fold plan into a run folder and a store of its own is
:mod:`emofeat.fuse.run`'s job, as for MMM.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emofeat.errors import EmofeatError, StoreError
from emofeat.fuse.config import LayerSumConfig
from emofeat.fuse.inputs import StoreInputs

ARCHITECTURE = "layersum.json"
WEIGHTS = "model.safetensors"


class LayerSum(nn.Module):
    """Softmax-weighted sums of layer blocks (one weight vector per input), then a head.

    Args:
        shapes: Per input, its (layers, width).
        n_outputs: The head's outputs.
        head: ``linear`` or ``mlp``.
        hidden: The MLP's hidden width.
    """

    def __init__(
        self,
        shapes: Sequence[tuple[int, int]],
        n_outputs: int,
        *,
        head: str = "linear",
        hidden: int = 256,
    ):
        super().__init__()
        self.shapes = [tuple(map(int, s)) for s in shapes]
        # One weight per layer, zeros: the layers start equally weighted (softmax 1/L).
        self.weights = nn.ParameterList(nn.Parameter(torch.zeros(n)) for n, _ in self.shapes)
        for k, (n, d) in enumerate(self.shapes):  # standardisation, fitted rows' moments
            self.register_buffer(f"mean_{k}", torch.zeros(n, d))
            self.register_buffer(f"scale_{k}", torch.ones(n, d))
        width = sum(d for _, d in self.shapes)
        if head == "linear":
            self.head = nn.Linear(width, n_outputs)
        elif head == "mlp":
            self.head = nn.Sequential(
                nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, n_outputs)
            )
        else:
            raise ValueError(f"head must be linear or mlp, got {head!r}")

    def standardise_with(self, blocks: Sequence[np.ndarray]) -> None:
        """Set each input's per-column mean and scale from ``blocks`` (the fitted rows)."""
        for k, x in enumerate(blocks):
            getattr(self, f"mean_{k}").copy_(torch.as_tensor(x.mean(0), dtype=torch.float32))
            scale = torch.as_tensor(x.std(0), dtype=torch.float32) + 1e-6
            getattr(self, f"scale_{k}").copy_(scale)

    def layer_weights(self) -> list[np.ndarray]:
        """Per input, its softmax layer weights (they sum to 1)."""
        return [torch.softmax(w.detach(), 0).cpu().numpy().astype(np.float64) for w in self.weights]

    def mixed(self, *blocks: torch.Tensor) -> torch.Tensor:
        """The weighted sums of the standardised layers, side by side: (B, sum of widths)."""
        parts = []
        for k, x in enumerate(blocks):
            z = (x - getattr(self, f"mean_{k}")) / getattr(self, f"scale_{k}")
            parts.append((torch.softmax(self.weights[k], 0)[None, :, None] * z).sum(1))
        return torch.cat(parts, 1)

    def forward(self, *blocks: torch.Tensor) -> torch.Tensor:
        return self.head(self.mixed(*blocks))


def store_layers(store) -> list[str]:
    """The layer datasets a store gives the head: its ``layer_NN`` in order, else its one
    embedding (a store of functionals), else an error naming what it holds."""
    layers = store.layers
    if layers:
        return [name for _, name in layers]
    datasets = list(store.layout.embeddings)  # (aliases such as "last" name one of them)
    if len(datasets) == 1:
        return datasets
    raise StoreError(
        f"{store.path}: no layer_NN embeddings (it holds {datasets}); extract it with --layers all"
    )


@dataclass
class LayerInputs(StoreInputs):
    """The stores of a layer-sum run aligned by id, their layers in memory, the fold plan."""

    keep: np.ndarray | None = None  # rows of the first store done in every store

    @classmethod
    def of(cls, inputs, task: str = "categorical") -> LayerInputs:
        """The aligned stores ``inputs`` (refused without valence and arousal for a ``task``
        with dimensions)."""
        plan = cls.common_plan(inputs, task, hint="extract it with a manifest that has them")
        found = cls(list(inputs.stores), list(inputs.positions), plan, task, inputs.keep)
        _ = found.data  # read and checked (finite values) before the run folder is written
        return found

    @cached_property
    def layers(self) -> list[list[str]]:
        return [store_layers(s) for s in self.stores]

    @cached_property
    def data(self) -> list[np.ndarray]:
        """Per store, (rows of the first store, layers, width) float32; rows not done in every
        store stay zero (no model reads them)."""
        out = []
        for store, positions, names in zip(self.stores, self.positions, self.layers):
            width = store.layout.embeddings[names[0]]
            block = np.zeros((len(self.ref), len(names), width), np.float32)
            mine = positions[self.keep]
            for j, name in enumerate(names):
                values = store.embeddings(name, mine).astype(np.float32)
                if not np.isfinite(values).all():
                    bad = self.ref.ids[self.keep[np.flatnonzero(~np.isfinite(values).all(1))[0]]]
                    raise StoreError(
                        f"{store.path}: non-finite values in {name} (e.g. row {bad!r}); "
                        "re-extract it"
                    )
                block[self.keep, j] = values
            out.append(block)
        return out

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return [(b.shape[1], b.shape[2]) for b in self.data]

    def blocks(self, rows: np.ndarray) -> list[np.ndarray]:
        """The rows' layers, per store."""
        return [b[rows] for b in self.data]


def new_model(inputs: LayerInputs, rows: np.ndarray, cfg: LayerSumConfig) -> LayerSum:
    """A freshly initialised head (seeded) standardised with ``rows``' moments."""
    torch.manual_seed(cfg.seed)
    net = LayerSum(inputs.shapes, inputs.n_outputs, head=cfg.head, hidden=cfg.hidden)
    net.standardise_with(inputs.blocks(rows))
    return net


def batch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of an epoch's rows: a permutation seeded by ``seed + epoch``."""
    return np.random.default_rng(seed + epoch).permutation(n)


def train(
    net: LayerSum,
    inputs: LayerInputs,
    rows: np.ndarray,
    cfg: LayerSumConfig,
    *,
    device: str,
    progress: Callable[[int, int, float], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``net`` in place on ``rows`` (mini-batches of ``batch_size`` in
    :func:`batch_order`); returns the mean training loss of each epoch."""
    from emofeat.tasks import task_loss
    from emofeat.training import train_head

    blocks = [torch.from_numpy(b) for b in inputs.blocks(rows)]
    y = torch.as_tensor(inputs.y(rows))
    y = y.long() if inputs.task == "categorical" else y.float()

    def batches(epoch: int):
        order = torch.from_numpy(batch_order(len(rows), cfg.seed, epoch))
        return [(*(b[part] for b in blocks), y[part]) for part in order.split(cfg.batch_size)]

    loss_fn = None
    if inputs.task != "categorical":
        loss_fn = functools.partial(
            task_loss,
            n_classes=inputs.n_classes,
            task=inputs.task,
            dim_loss=cfg.dim_loss,
            dim_weight=cfg.dim_weight,
        )
    return train_head(
        net,
        batches,
        epochs=cfg.epochs,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        device=device,
        progress=progress,
        name="the layer-sum head",
        loss_fn=loss_fn,
    )


@torch.no_grad()
def predict(
    net: LayerSum, inputs: LayerInputs, rows: np.ndarray, device: str
) -> tuple[np.ndarray, np.ndarray]:
    """The head's outputs (n, outputs) for ``rows``, in order, and the weighted sums it read
    (n, sum of widths): one pass over the rows' layers, 1,024 rows at a time."""
    net.to(device).eval()
    outputs, mixed = [], []
    for part in np.array_split(rows, max(1, -(-len(rows) // 1024))):
        blocks = [torch.from_numpy(b).to(device) for b in inputs.blocks(part)]
        sums = net.mixed(*blocks)
        outputs.append(net.head(sums).float().cpu().numpy())
        mixed.append(sums.float().cpu().numpy())
    return np.concatenate(outputs), np.concatenate(mixed)


def save(net: LayerSum, folder: Path, *, inputs: LayerInputs, cfg: LayerSumConfig) -> None:
    """A fold model as data: its architecture (``layersum.json``, with each input's layer
    names and learned weights for the reader) and weights (safetensors)."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "shapes": net.shapes,
        "n_outputs": inputs.n_outputs,
        "head": cfg.head,
        "hidden": cfg.hidden,
        "layers": inputs.layers,
        "layer_weights": [w.tolist() for w in net.layer_weights()],
    }
    (folder / ARCHITECTURE).write_text(json.dumps(spec, indent=1))
    save_model(net.cpu(), str(folder / WEIGHTS))


def load(folder: Path) -> LayerSum:
    """A fold model saved by :func:`save`."""
    from safetensors.torch import load_model

    try:
        spec = json.loads((folder / ARCHITECTURE).read_text())
        net = LayerSum(spec["shapes"], spec["n_outputs"], head=spec["head"], hidden=spec["hidden"])
        load_model(net, str(folder / WEIGHTS))
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as err:
        raise EmofeatError(
            f"{folder}: not a layer-sum fold model ({err}); re-run `emofeat fuse --overwrite`"
        ) from None
    return net.eval()


def report(run, inputs: LayerInputs, models: list[LayerSum], model_folds: list[int]) -> None:
    """The run folder's ``layer_weights.csv`` (fold, store, layer, weight) and
    ``layer_weights.png`` (each store's weight per layer, mean ± std over the fold models)."""
    import pandas as pd

    from emofeat.analysis.plots import pyplot, save_figure
    from emofeat.atomic import atomic_path
    from emofeat.runs import LAYER_WEIGHTS, LAYER_WEIGHTS_FIGURE

    records = []
    for k, net in zip(model_folds, models):
        for store, names, weights in zip(inputs.stores, inputs.layers, net.layer_weights()):
            for name, w in zip(names, weights):
                records.append({"fold": k, "store": store.name, "layer": name, "weight": w})
    table = pd.DataFrame(records)
    with atomic_path(run.path / LAYER_WEIGHTS) as tmp:
        table.to_csv(tmp, index=False)
    plt = pyplot()
    stores = list(dict.fromkeys(table["store"]))
    fig, axes = plt.subplots(
        len(stores), 1, figsize=(max(5.0, 0.35 * table["layer"].nunique() + 2), 3 * len(stores))
    )
    for ax, store in zip(np.atleast_1d(axes), stores):
        part = table[table.store == store].groupby("layer", sort=False)["weight"]
        mean, std = part.mean(), part.std(ddof=0)
        x = np.arange(len(mean))
        ax.bar(x, mean.to_numpy(), yerr=std.to_numpy(), capsize=3, color="tab:blue")
        ax.axhline(1 / len(mean), ls="--", color="grey", lw=1, label="equal weights")
        ax.set_xticks(x, [n.replace("layer_", "") for n in mean.index], fontsize=8)
        ax.set_xlabel("layer (0: the encoder's input embeddings / CNN features)")
        ax.set_ylabel("softmax weight")
        ax.set_title(f"{store}: layer weights, mean ± std over {len(models)} fold model(s)")
        ax.legend(fontsize=8, frameon=False)
    save_figure(fig, run.path / LAYER_WEIGHTS_FIGURE)
