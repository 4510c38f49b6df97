"""``emofeat data stats``: class counts per split and fold, and the reference's plots."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from emofeat import labels as label_set
from emofeat.corpus.manifest import Manifest


def class_counts(manifest: Manifest) -> pd.DataFrame:
    """Utterances per (corpus, split, fold) × class, with totals."""
    frame = manifest.frame.copy()
    frame["label"] = frame["label"].replace("", "unknown")
    table = pd.crosstab([frame["corpus"], frame["split"], frame["fold"]], frame["label"])
    cols = [c for c in (*label_set.LABEL_NAMES, "unknown") if c in table.columns]
    table = table[cols]
    table["total"] = table.sum(axis=1)
    return table


def plot_stats(manifest: Manifest, out_dir: str | Path) -> list[Path]:
    """Class-distribution bars per corpus and split, and valence/arousal per emotion (PNG files)."""
    from emofeat.plots import pyplot, save_figure

    plt = pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = manifest.frame
    written = []
    groups = list(frame.groupby(["corpus", "split"]))
    fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 3.2), squeeze=False)
    for ax, ((corpus, split), part) in zip(axes[0], groups):
        counts = part["label"].value_counts().reindex(label_set.LABEL_NAMES, fill_value=0)
        ax.bar(counts.index, counts.to_numpy(), color="tab:blue")
        ax.set_title(f"{corpus} / {split} (n={len(part)})")
        ax.tick_params(axis="x", rotation=45)
    written.append(save_figure(fig, out_dir / "class_distribution.png"))

    va = frame.dropna(subset=["valence", "arousal"])
    if len(va):
        fig, ax = plt.subplots(figsize=(5, 4.5))
        for name in label_set.LABEL_NAMES:
            part = va[va["label"] == name]
            ax.scatter(part["valence"], part["arousal"], s=8, alpha=0.6, label=name)
        ax.set_xlabel("valence")
        ax.set_ylabel("arousal")
        ax.legend(fontsize=7, markerscale=2)
        written.append(save_figure(fig, out_dir / "valence_arousal.png"))
    return written
