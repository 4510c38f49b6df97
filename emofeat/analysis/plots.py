"""Figures: class distributions, valence/arousal, embedding maps and confusion matrices
(matplotlib, Agg backend; .png, .pdf or .svg by the file's suffix). Every figure gives a class
the same colour (:data:`CLASS_COLORS`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


FORMATS = (".png", ".pdf", ".svg")
# One colour per class in every figure emofeat draws (matplotlib's tab10, in label order).
CLASS_COLORS = {
    "angry": "#d62728",
    "disqust": "#8c564b",
    "fear": "#9467bd",
    "happy": "#ff7f0e",
    "neutral": "#7f7f7f",
    "sad": "#1f77b4",
    "surprise": "#2ca02c",
}


def class_color(name: str, index: int = 0) -> str:
    """The colour of a class (classes outside the seven get tab10 colours by index)."""
    if name in CLASS_COLORS:
        return CLASS_COLORS[name]
    return pyplot().get_cmap("tab10")(index % 10)


def save_figure(fig, out: str | Path, dpi: int = 150) -> Path:
    """Save a figure atomically (temporary name, then rename) in the format its suffix names
    (.png, .pdf, .svg) and close it."""
    from emofeat.atomic import atomic_path
    from emofeat.errors import EmofeatError

    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        pyplot().close(fig)
        raise EmofeatError(f"{out}: figures are written as {', '.join(FORMATS)}; use one of those")
    with atomic_path(out, suffix=out.suffix.lower()) as tmp:
        fig.savefig(tmp, dpi=dpi, format=out.suffix.lower()[1:], bbox_inches="tight")
    pyplot().close(fig)
    return out


def plot_embedding(
    store_path: str | Path,
    out: str | Path,
    **options: Any,
) -> np.ndarray:
    """A 2-D PCA or t-SNE map of a store's embedding: one colour per class, train rows filled
    circles, test rows open triangles, axes labelled (PCA: explained variance), the legend
    outside the data. Over ``max_points`` done rows, a seeded random subset is drawn and the
    title says so. Returns the plotted (x, y) coordinates, in the order of the drawn rows."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from emofeat.analysis.config import PlotConfig
    from emofeat.store import open_store

    cfg = PlotConfig(**options)
    embedding, method, max_points, seed = cfg.embedding, cfg.method, cfg.max_points, cfg.seed
    with open_store(store_path) as s:
        rows = s.select()
        total = len(rows)
        if total > max_points:
            rows = np.sort(np.random.default_rng(seed).choice(rows, max_points, replace=False))
        x = s.embeddings(embedding, rows).astype(np.float32)
        y, split, names = s.labels[rows], s.split[rows], s.label_names
    if len(x) < 3 or (method == "tsne" and len(x) < 6):
        from emofeat.errors import EmofeatError

        raise EmofeatError(
            f"{store_path}: {len(x)} done row(s); a {method} map needs "
            f"{6 if method == 'tsne' else 3} at least"
        )
    if method == "tsne":
        xy = TSNE(
            n_components=2, random_state=seed, perplexity=min(30, max(5, len(x) // 4))
        ).fit_transform(x)
        labels = ("t-SNE 1", "t-SNE 2")
    else:
        pca = PCA(n_components=2, random_state=seed).fit(x)
        xy = pca.transform(x)
        ev = pca.explained_variance_ratio_ * 100
        labels = (f"PC 1 ({ev[0]:.1f} % of variance)", f"PC 2 ({ev[1]:.1f} % of variance)")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    size = 14 if len(x) <= 2000 else 5
    for k, name in [*enumerate(names), (-1, "unknown")]:
        colour = class_color(name, k) if k >= 0 else "#bbbbbb"
        for sp, marker, face in (("train", "o", colour), ("test", "^", "none")):
            m = (y == k) & (split == sp)
            if m.any():
                ax.scatter(
                    xy[m, 0],
                    xy[m, 1],
                    s=size,
                    marker=marker,
                    facecolors=face,
                    edgecolors=colour,
                    linewidths=0.6,
                    alpha=0.7,
                    label=f"{name} ({sp}, {int(m.sum())})",
                )
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    shown = (
        f"{len(rows)} of {total} rows (random, seed {seed})"
        if total > len(rows)
        else f"{total} rows"
    )
    ax.set_title(f"{Path(store_path).stem}: {embedding}, {method.upper()}; {shown}")
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        frameon=False,
        title="class (split, n)",
        title_fontsize=8,
    )
    save_figure(fig, out)
    return xy


def plot_confusions(
    matrices: dict[str, np.ndarray], names: list[str], out: str | Path, *, title: str = ""
) -> Path:
    """One confusion-matrix panel per model (rows: true, columns: predicted; counts and
    row-normalised shading, so minority classes are readable)."""
    plt = pyplot()
    n = len(matrices)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.4 * rows), squeeze=False)
    for k, (ax, (label, cm)) in enumerate(zip(axes.ravel(), matrices.items())):
        _confusion_panel(ax, np.asarray(cm), names, label)
        if k % cols:
            ax.set_ylabel("")  # only the first column: the labels would meet the next panel
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return save_figure(fig, out)


def _confusion_panel(ax, cm: np.ndarray, names: list[str], title: str) -> None:
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                int(cm[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if share[i, j] > 0.5 else "black",
            )
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"{title} (accuracy {acc:.3f})", fontsize=9)


def plot_training_curves(histories: dict[str, list[dict]], out: str | Path, title: str) -> Path:
    """Training loss (and, where an inner split chose the checkpoint, its accuracy) per epoch,
    one line per fold model, from Trainer's log history."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax2 = None
    for k, (fold, history) in enumerate(histories.items()):
        colour = plt.get_cmap("tab10")(k % 10)
        train = [(h["epoch"], h["loss"]) for h in history if "loss" in h and "epoch" in h]
        if train:
            ax.plot(*zip(*train), marker="o", ms=3, color=colour, label=f"{fold} training loss")
        select = [(h["epoch"], h["eval_accuracy"]) for h in history if "eval_accuracy" in h]
        if select:
            ax2 = ax2 or ax.twinx()
            ax2.plot(*zip(*select), ls="--", color=colour, label=f"{fold} selection accuracy")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    if ax2 is not None:
        ax2.set_ylabel("accuracy on the inner selection split")
    handles = ax.get_legend_handles_labels()
    if ax2 is not None:
        extra = ax2.get_legend_handles_labels()
        handles = (handles[0] + extra[0], handles[1] + extra[1])
    ax.legend(
        *handles,
        loc="upper left",
        bbox_to_anchor=(1.12 if ax2 else 1.01, 1.0),
        fontsize=8,
        frameon=False,
    )
    ax.set_title(f"{title}: training curves")
    return save_figure(fig, out)
