"""Figures: embedding maps and confusion matrices (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out: str | Path, dpi: int = 120) -> Path:
    """Save a figure as PNG atomically (temporary name, then rename) and close it."""
    from emofeat.atomic import atomic_path

    fig.tight_layout()
    out = Path(out)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)
    return out


def plot_embedding(
    store_path: str | Path,
    embedding: str,
    out: str | Path,
    method: str = "pca",
    max_points: int = 5000,
    seed: int = 0,
) -> Path:
    """A 2-D PCA or t-SNE map of a store's embedding, coloured by label, marked by split."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from emofeat.store import open_store

    with open_store(store_path) as s:
        rows = s.select()
        if len(rows) > max_points:
            rows = np.sort(np.random.default_rng(seed).choice(rows, max_points, replace=False))
        x = s.embeddings(embedding, rows).astype(np.float32)
        y, split, names = s.labels[rows], s.split[rows], s.label_names
    if method == "tsne":
        xy = TSNE(
            n_components=2, random_state=seed, perplexity=min(30, max(5, len(x) // 4))
        ).fit_transform(x)
    else:
        xy = PCA(n_components=2, random_state=seed).fit_transform(x)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    cmap = plt.get_cmap("tab10")
    for k, name in [*enumerate(names), (-1, "unknown")]:
        for sp, marker in (("train", "o"), ("test", "^")):
            m = (y == k) & (split == sp)
            if m.any():
                ax.scatter(
                    xy[m, 0],
                    xy[m, 1],
                    s=10,
                    marker=marker,
                    color=cmap(k % 10) if k >= 0 else "grey",
                    alpha=0.7,
                    label=f"{name} ({sp})",
                )
    ax.set_title(f"{Path(store_path).name}: {embedding} ({method.upper()})")
    ax.legend(fontsize=6, ncol=2, markerscale=1.5)
    return save_figure(fig, out)


def plot_confusion(cm: np.ndarray, names: list[str], out: str | Path, title: str = "") -> Path:
    """A confusion-matrix heat map with counts."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
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
                fontsize=8,
                color="white" if cm[i, j] > cm.max() / 2 else "black",
            )
    ax.set_title(title)
    return save_figure(fig, out)
