"""MMM (MLP-Mixer multimodal fusion) over a text and an audio sequence store: the model.

The published model (docs/explanation/reference-pipeline.md): text token states (frozen KcELECTRA, 128
positions) → Linear(768→256), audio frames (frozen wav2vec2, cut or zero-padded to 512) →
Linear(1024→256), concatenated to (B, 640, 256); one Mixer block — LayerNorm → token-mixing MLP
over the 640 positions (Linear, GELU, Linear, Dropout) → residual; LayerNorm → channel MLP over
256 → residual; then LayerNorm → mean over positions → Dropout(0.1) → Linear(256→512) → GELU →
Dropout → Linear(512→C). AdamW 5e-5, batch 64 × 8 accumulation, 30 epochs, cross-entropy
(optionally weighted N/count_c), seed 1024, final weights. Widths and lengths follow the stores.

Faithful by default, each deviation an option of :class:`MMMConfig`: the block holds one
LayerNorm applied at both of its places (``shared_norm``) and the second time to the token-mixing
output rather than to the residual sum (``faithful_norm``); pads enter the mixing and the mean as
zeros (no mask); batches are not shuffled (``shuffle``); the optimizer steps after batch 0 and
then after every 8th, the rest of an epoch dropped (``accumulation``). The simpler published
fusions: ``concat`` (the text's [CLS] state beside the audio's masked time-mean,
``concat_text``) and ``3way`` (``[t, a, |a − t|, a ⊙ t]``, the text's [CLS] state and the
audio's mean likewise, a 768-wide hidden
layer). A published epoch reuses the loader's order (no shuffle); with ``shuffle`` each epoch
draws its own order (seed + epoch: the old code re-seeded every epoch to the same order).

This module is the model and how one fold model is trained and applied; cross-fitting it over
a text and an audio sequence store into a run and a store of its own is :mod:`emofeat.fuse.run`.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emofeat.errors import EmofeatError
from emofeat.fuse.config import FUSIONS, MMMConfig

log = logging.getLogger(__name__)


class MMM(nn.Module):
    """The MMM fusion network (see the module docstring)."""

    def __init__(
        self,
        text_dim: int,
        audio_dim: int,
        text_len: int,
        audio_len: int,
        n_classes: int,
        *,
        d: int = 256,
        hidden: int = 512,
        dropout: float = 0.1,
        fusion: str = "mixer",
        faithful_norm: bool = True,
        shared_norm: bool = True,
        concat_text: str = "cls",
        hidden_3way: int = 768,
    ):
        super().__init__()
        if fusion not in FUSIONS:
            raise EmofeatError(f"--fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        if concat_text not in ("cls", "mean"):
            raise EmofeatError(f"concat_text must be cls or mean, got {concat_text!r}")
        self.fusion, self.faithful_norm = fusion, faithful_norm
        self.shared_norm, self.concat_text = shared_norm, concat_text
        self.text_proj = nn.Linear(text_dim, d)
        self.audio_proj = nn.Linear(audio_dim, d)
        n = text_len + audio_len
        if fusion == "mixer":
            self.norm1 = nn.LayerNorm(d)
            self.token_mlp = nn.Sequential(
                nn.Linear(n, n), nn.GELU(), nn.Linear(n, n), nn.Dropout(dropout)
            )
            # The published block holds ONE LayerNorm and applies it at both of its places.
            self.norm2 = self.norm1 if shared_norm else nn.LayerNorm(d)
            self.channel_mlp = nn.Sequential(
                nn.Linear(d, d), nn.GELU(), nn.Linear(d, d), nn.Dropout(dropout)
            )
            self.norm3 = nn.LayerNorm(d)
            width = d
        else:
            width = 2 * d if fusion == "concat" else 4 * d
            if fusion == "3way":
                hidden = hidden_3way  # the published 3-way head is 768 wide
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(width, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, text, audio, text_len, audio_len) -> torch.Tensor:
        t, a = self.text_proj(text), self.audio_proj(audio)
        if self.fusion != "mixer":
            # Published: both simpler fusions take the text's [CLS] state (``concat_text``
            # mean: its masked mean instead); the audio's masked time-mean.
            cls = self.concat_text == "cls"
            t = t[:, 0] if cls else _masked_mean(t, text_len)
            a = _masked_mean(a, audio_len)
            fused = torch.cat(
                [t, a] if self.fusion == "concat" else [t, a, (a - t).abs(), a * t], 1
            )
            return self.head(fused)
        x = torch.cat([t, a], dim=1)  # (B, 640, d)
        mixed = self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        x = x + mixed
        x = x + self.channel_mlp(self.norm2(mixed if self.faithful_norm else x))
        return self.head(self.norm3(x).mean(1))


def _masked_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
    return (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)


def steps_after(batch: int, n_batches: int, grad_accum: int, accumulation: str) -> bool:
    """Whether the optimizer steps after batch ``batch`` (0-based) of an epoch of ``n_batches``:
    published, after batch 0 and then after every ``grad_accum``-th (0, 8, 16, ...; gradients of
    the batches after the last step are dropped); standard, after every ``grad_accum`` batches
    and after the last."""
    if accumulation == "published":
        return batch % grad_accum == 0
    return (batch + 1) % grad_accum == 0 or batch == n_batches - 1


IN_MEMORY_BYTES = 2 << 30  # smaller sequence sets are read once; larger ones row by row


class SequencePairs(torch.utils.data.Dataset):
    """Rows of a text and an audio sequence store (``rows_t[i]`` and ``rows_a[i]`` hold the
    same utterance): read into memory when they are small, else one chunk read per row and
    store (the real corpus: ~37 GB of float16 states)."""

    def __init__(self, text, audio, *, rows_t, rows_a, y):
        self.text, self.audio, self.rows_t, self.rows_a = text, audio, rows_t, rows_a
        self.y = np.asarray(y)
        size = sum(
            len(rows_t) * int(np.prod(s.layout.sequences["last"])) * 2 for s in (text, audio)
        )
        self.cache = None
        if size < IN_MEMORY_BYTES:
            self.cache = (text.sequences("last", rows_t), audio.sequences("last", rows_a))

    def __len__(self) -> int:
        return len(self.rows_t)

    def __getitem__(self, i: int):
        if self.cache is not None:
            (t, tl), (a, al) = self.cache
            t, tl, a, al = t[i : i + 1], tl[i : i + 1], a[i : i + 1], al[i : i + 1]
        else:
            t, tl = self.text.sequences("last", [self.rows_t[i]])
            a, al = self.audio.sequences("last", [self.rows_a[i]])
        # The class, or [class, valence, arousal] for a task with dimensions (emofeat.tasks).
        y = self.y[i]
        target = torch.tensor(y, dtype=torch.float32) if np.ndim(y) else int(y)
        return (
            torch.from_numpy(t[0].astype(np.float32)),
            torch.from_numpy(a[0].astype(np.float32)),
            int(tl[0]),
            int(al[0]),
            target,
        )


def _batches(dataset, batch_size, shuffle, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=g, num_workers=0
    )


def new_model(dims: dict[str, int], n_classes: int, cfg: MMMConfig) -> MMM:
    """A freshly initialised MMM (seeded) for sequences of ``dims`` (text_dim, audio_dim,
    text_len, audio_len)."""
    torch.manual_seed(cfg.seed)
    return MMM(**dims, n_classes=n_classes, **cfg.architecture())


def train(
    model: MMM,
    dataset: SequencePairs,
    cfg: MMMConfig,
    *,
    n_classes: int,
    device: str,
    progress: Callable[[int, int, float], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place on ``dataset`` (:func:`emofeat.training.train_head`: the
    published accumulation, weights N/count_c with ``class_weights``); ``progress(epoch, rows,
    loss)`` is called after each batch. Returns the log history (mean training loss per epoch)."""
    from emofeat.tasks import task_loss
    from emofeat.training import inverse_frequency, train_head

    loss_fn = None
    if cfg.task != "categorical":  # n_classes: the classes among the head's outputs
        loss_fn = functools.partial(
            task_loss,
            n_classes=n_classes,
            task=cfg.task,
            dim_loss=cfg.dim_loss,
            dim_weight=cfg.dim_weight,
        )
    torch.manual_seed(cfg.seed)
    return train_head(
        model,
        lambda epoch: _batches(dataset, cfg.batch_size, cfg.shuffle, cfg.seed + epoch),
        epochs=cfg.epochs,
        lr=cfg.lr,
        class_weight=inverse_frequency(dataset.y, n_classes) if cfg.class_weights else None,
        grad_accum=cfg.grad_accum,
        steps_after=lambda batch, n: steps_after(batch, n, cfg.grad_accum, cfg.accumulation),
        device=device,
        progress=progress,
        name="MMM",
        loss_fn=loss_fn,
    )


@torch.no_grad()
def predict(model: MMM, dataset: SequencePairs, device: str) -> np.ndarray:
    """Logits (n, C) of the rows of ``dataset``, in order."""
    model.to(device).eval()
    out = []
    for t, a, tl, al, _ in _batches(dataset, 64, False, 0):
        out.append(model(t.to(device), a.to(device), tl.to(device), al.to(device)).float().cpu())
    return torch.cat(out).numpy()


ARCHITECTURE = "mmm.json"
WEIGHTS = "model.safetensors"


def save(model: MMM, folder: Path, *, dims: dict[str, int], n_classes: int, cfg: MMMConfig) -> None:
    """A fold model as data: its architecture (``mmm.json``) and weights (safetensors; the
    shared LayerNorm stored once)."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    spec = {**dims, "n_classes": n_classes, **cfg.architecture()}
    (folder / ARCHITECTURE).write_text(json.dumps(spec, indent=1))
    save_model(model.cpu(), str(folder / WEIGHTS))


def load(folder: Path) -> MMM:
    """A fold model saved by :func:`save`."""
    from safetensors.torch import load_model

    try:
        spec = json.loads((folder / ARCHITECTURE).read_text())
        model = MMM(**spec)
        load_model(model, str(folder / WEIGHTS))
    except (OSError, ValueError, TypeError, RuntimeError) as err:
        raise EmofeatError(
            f"{folder}: not an MMM fold model ({err}); re-run `emofeat fuse --overwrite`"
        ) from None
    return model.eval()
