"""MMM (MLP-Mixer multimodal fusion) over sequence stores, cross-fitted into a store of its own.

The published model (``../shared/reference.md``): text token states (frozen KcELECTRA, 128
positions) → Linear(768→256), audio frames (frozen wav2vec2, cut or zero-padded to 512) →
Linear(1024→256), concatenated to (B, 640, 256); one Mixer block — LayerNorm → token-mixing MLP
over the 640 positions (Linear, GELU, Linear, Dropout) → residual; LayerNorm → channel MLP over
256 → residual; then LayerNorm → mean over positions → Dropout(0.1) → Linear(256→512) → GELU →
Dropout → Linear(512→C). AdamW 5e-5, batch 64 × 8 accumulation, 30 epochs, cross-entropy
(optionally weighted N/count_c), seed 1024, final weights. Widths and lengths follow the stores.

Faithful by default (``faithful_norm``): the published code applies the second LayerNorm to the
token-mixing output rather than to the residual sum, and pads enter the mixing and the mean as
zeros (no mask), as it did. The simpler published fusions are options: ``concat`` (the two
masked time-means side by side) and ``3way`` (``[t, a, |a − t|, a ⊙ t]``).

Cross-fitting: fold model k trains on the train rows of the other folds and predicts fold k; test
rows get the mean of the fold models' logits. The result is a regular store
(``OUT/mmm.h5``, logits with out-of-fold evidence; named for the model, so tables say "mmm"), so MMM joins the soft vote and the
meta-learners as one more base model, and a report in the reference's table layout.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emofeat.device import pick_device
from emofeat.errors import EmofeatError, StoreError
from emofeat.store import Provenance, align_stores, create_store, open_store

log = logging.getLogger(__name__)
FUSIONS = ("mixer", "concat", "3way")


class MMM(nn.Module):
    """The MMM fusion network (see the module docstring)."""

    def __init__(
        self,
        text_dim: int,
        audio_dim: int,
        text_len: int,
        audio_len: int,
        n_classes: int,
        d: int = 256,
        hidden: int = 512,
        dropout: float = 0.1,
        fusion: str = "mixer",
        faithful_norm: bool = True,
    ):
        super().__init__()
        if fusion not in FUSIONS:
            raise EmofeatError(f"--fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        self.fusion, self.faithful_norm = fusion, faithful_norm
        self.text_proj = nn.Linear(text_dim, d)
        self.audio_proj = nn.Linear(audio_dim, d)
        n = text_len + audio_len
        if fusion == "mixer":
            self.norm1 = nn.LayerNorm(d)
            self.token_mlp = nn.Sequential(
                nn.Linear(n, n), nn.GELU(), nn.Linear(n, n), nn.Dropout(dropout)
            )
            self.norm2 = nn.LayerNorm(d)
            self.channel_mlp = nn.Sequential(
                nn.Linear(d, d), nn.GELU(), nn.Linear(d, d), nn.Dropout(dropout)
            )
            self.norm3 = nn.LayerNorm(d)
            width = d
        else:
            width = 2 * d if fusion == "concat" else 4 * d
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
            t = _masked_mean(t, text_len)
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


@dataclass(frozen=True)
class MMMConfig:
    """MMM's training options; the published values are the defaults."""

    epochs: int = 30
    lr: float = 5e-5
    batch_size: int = 64
    grad_accum: int = 8
    fusion: str = "mixer"
    faithful_norm: bool = True
    class_weights: bool = False  # N / count_c
    seed: int = 1024
    device: str = "auto"


IN_MEMORY_BYTES = 2 << 30  # smaller sequence sets are read once; larger ones row by row


class _Rows(torch.utils.data.Dataset):
    """Rows of the two sequence stores: read into memory when they are small, else one chunk
    read per row and store (the real corpus: ~37 GB of float16 states)."""

    def __init__(self, text, audio, rows_t, rows_a, y):
        self.text, self.audio, self.rows_t, self.rows_a, self.y = text, audio, rows_t, rows_a, y
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
        return (
            torch.from_numpy(t[0].astype(np.float32)),
            torch.from_numpy(a[0].astype(np.float32)),
            int(tl[0]),
            int(al[0]),
            int(self.y[i]),
        )


def _batches(dataset, batch_size, shuffle, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=g, num_workers=0
    )


def _train(model, dataset, cfg: MMMConfig, n_classes: int, device: str) -> nn.Module:
    torch.manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    weight = None
    if cfg.class_weights:
        counts = np.bincount(dataset.y, minlength=n_classes).astype(np.float64)
        weight = torch.tensor(
            np.where(counts > 0, counts.sum() / np.maximum(counts, 1), 0.0), dtype=torch.float32
        ).to(device)
    model.to(device).train()
    for _ in range(cfg.epochs):
        opt.zero_grad()
        for step, (t, a, tl, al, y) in enumerate(
            _batches(dataset, cfg.batch_size, True, cfg.seed), 1
        ):
            logits = model(t.to(device), a.to(device), tl.to(device), al.to(device))
            loss = nn.functional.cross_entropy(logits, y.to(device), weight=weight)
            if not torch.isfinite(loss):
                raise EmofeatError("MMM: non-finite training loss; check the sequence stores")
            (loss / cfg.grad_accum).backward()
            if step % cfg.grad_accum == 0:
                opt.step()
                opt.zero_grad()
        opt.step()  # the last, partial accumulation (a few hundred rows: one step per epoch)
        opt.zero_grad()
    return model.eval()


@torch.no_grad()
def _predict(model, dataset, device: str) -> np.ndarray:
    out = []
    for t, a, tl, al, _ in _batches(dataset, 64, False, 0):
        out.append(model(t.to(device), a.to(device), tl.to(device), al.to(device)).float().cpu())
    return torch.cat(out).numpy()


def fit_mmm(
    stores: Sequence[str | os.PathLike], out: str | os.PathLike, cfg: MMMConfig | None = None
) -> dict[str, Any]:
    """Cross-fit MMM over a text and an audio sequence store into ``out`` (``mmm.h5``,
    ``metrics.json``, ``report.md``, ``config.yaml``); returns the metrics."""
    cfg = cfg or MMMConfig()
    if len(stores) != 2:
        raise EmofeatError(f"MMM fuses two sequence stores (text, then audio); got {len(stores)}")
    out = Path(out)
    device = pick_device(cfg.device)
    opened = [open_store(p) for p in stores]
    try:
        text, audio = opened
        for s in opened:
            if "last" not in s.sequence_names:
                raise StoreError(f"{s.path}: no sequences; extract it with --sequence")
        positions, usable = align_stores(opened)
        rows = np.flatnonzero(usable)
        labels, split, fold = text.labels.astype(int), text.split, text.fold.astype(int)
        train = rows[(split[rows] == "train") & (labels[rows] >= 0) & (fold[rows] >= 0)]
        if len(np.unique(fold[train])) < 2:
            raise EmofeatError("MMM is cross-fitted: the train rows need 2 or more folds")
        n_classes = len(text.label_names)
        (tl, th), (al, ah) = text.layout.sequences["last"], audio.layout.sequences["last"]

        def dataset(r):
            return _Rows(text, audio, positions[0][r], positions[1][r], labels[r])

        def new_model():
            torch.manual_seed(cfg.seed)
            return MMM(
                th, ah, tl, al, n_classes, fusion=cfg.fusion, faithful_norm=cfg.faithful_norm
            )

        logits = np.full((len(text), n_classes), np.nan, np.float32)
        others = rows[~np.isin(rows, train)]  # test rows (and unlabelled): every fold model
        other_sum = np.zeros((len(others), n_classes))
        folds = np.unique(fold[train])
        for k in folds:
            fit = train[fold[train] != k]
            model = _train(new_model(), dataset(fit), cfg, n_classes, device)
            held = train[fold[train] == k]
            logits[held] = _predict(model, dataset(held), device)
            if len(others):
                other_sum += _predict(model, dataset(others), device)
            log.info("MMM fold %d done", k)
        if len(others):
            logits[others] = other_sum / len(folds)
        config = {**asdict(cfg), "stores": [str(Path(p).resolve()) for p in stores]}
        _write_store(out / "mmm.h5", text, rows, logits, config)
        metrics = _report(out, text, logits, rows, config)
    finally:
        for s in opened:
            s.close()
    return metrics


def _write_store(path: Path, ref, rows: np.ndarray, logits: np.ndarray, config: dict) -> None:
    from emofeat.atomic import temp_folder

    prov = Provenance(
        model_id="mmm",
        family="mmm",
        modality="text+speech",
        run=str(path.parent),
        out_of_fold=True,
        layers=[],
    )
    tmp = temp_folder(path) / path.name
    writer = create_store(
        tmp,
        ref.ids,
        ref.labels,
        ref.split,
        ref.fold,
        ref.label_names,
        {},
        True,
        attrs={**prov.to_attrs(), "config": config},
        in_sample=np.zeros(len(ref), bool),  # fold models never predict rows they trained on
    )
    with writer:
        writer.write(rows, logits=logits[rows])
        missing = np.setdiff1d(np.arange(len(ref)), rows)
        writer.skip(missing, "not done in both sequence stores")
    writer.finalize()
    os.replace(tmp, path)
    tmp.parent.rmdir()


def _report(out: Path, ref, logits, rows, config) -> dict[str, Any]:
    from emofeat.atomic import write_text
    from emofeat.provenance import dump_yaml, provenance
    from emofeat.stack.evaluate import bootstrap_accuracy, classification_metrics
    from emofeat.stack.report import per_class_table, render_table

    test = rows[(ref.split[rows] == "test") & (ref.labels[rows] >= 0)]
    train = rows[(ref.split[rows] == "train") & (ref.labels[rows] >= 0) & (ref.fold[rows] >= 0)]
    C = len(ref.label_names)
    y = ref.labels.astype(int)
    metrics: dict[str, Any] = {"meta": "mmm", "train_rows": len(train), "test_rows": len(test)}
    metrics["cv"] = classification_metrics(y[train], logits[train].argmax(1), C)
    parts = ["# MMM (MLP-Mixer fusion over sequence stores)\n"]
    if len(test):
        pred = logits[test].argmax(1)
        metrics["test"] = classification_metrics(y[test], pred, C)
        metrics["test"]["accuracy_ci95"] = bootstrap_accuracy(y[test], pred)
        from sklearn.metrics import classification_report, confusion_matrix

        report = classification_report(
            y[test],
            pred,
            labels=list(range(C)),
            target_names=ref.label_names,
            zero_division=0,
            output_dict=True,
        )
        confusion = confusion_matrix(y[test], pred, labels=list(range(C))).tolist()
        parts += ["## Test set\n", render_table([("MMM", metrics["test"])])]
        parts += ["\n## Per class (test)\n", *per_class_table(report, confusion, ref.label_names)]
    parts.append(
        f"\nOut-of-fold accuracy of the train rows (cross-fitted): {metrics['cv']['accuracy']:.4f}."
    )
    write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    write_text(out / "report.md", "\n".join(parts) + "\n")
    write_text(out / "config.yaml", dump_yaml(provenance(config, config.get("seed"))))
    return metrics
