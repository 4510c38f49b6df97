"""``emofeat data stats``: class counts per split and fold, and the reference's plots."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from emofeat.corpus.kemdy20 import CORPUS as KEMDY20
from emofeat.corpus.manifest import Manifest


def class_counts(manifest: Manifest) -> pd.DataFrame:
    """Utterances per (corpus, split, fold) × class, with totals."""
    frame = manifest.frame.copy()
    frame["label"] = frame["label"].replace("", "unknown")
    table = pd.crosstab([frame["corpus"], frame["split"], frame["fold"]], frame["label"])
    cols = [c for c in (*manifest.label_names, "unknown") if c in table.columns]
    table = table[cols]
    table["total"] = table.sum(axis=1)
    return table


def audio_hours(manifest: Manifest) -> pd.DataFrame | None:
    """Hours of audio per (corpus, split) from the manifest's durations (None without them)."""
    if manifest.durations is None:
        return None
    frame = manifest.frame[["corpus", "split"]].assign(hours=manifest.durations / 3600)
    return frame.groupby(["corpus", "split"])["hours"].sum().round(3).to_frame()


def long_counts(manifest: Manifest) -> pd.DataFrame:
    """(corpus, split, class, count) for every corpus and split of the manifest and every class
    (zeros included): the numbers behind the class-distribution figures."""
    frame = manifest.frame
    rows = []
    for (corpus, split), part in frame.groupby(["corpus", "split"], sort=True):
        counts = part["label"].value_counts()
        for name in manifest.label_names:
            rows.append((corpus, split, name, int(counts.get(name, 0))))
    return pd.DataFrame(rows, columns=["corpus", "split", "class", "count"])


def plot_stats(manifest: Manifest, out_dir: str | Path, log_scale: bool = False) -> list[Path]:
    """``class_counts.csv`` and the reference's figures: ``class_distribution_kemdy20.png``
    (Fig. 1, KEMDy20 train/test), ``class_distribution_all.png`` (Fig. 2, all corpora of the
    manifest combined) and ``valence_arousal.png`` (one panel per emotion, KEMDy20 train rows)
    with its numbers in ``valence_arousal.csv`` (class, n, mean valence, mean arousal)."""
    from emofeat.atomic import atomic_path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = long_counts(manifest)
    with atomic_path(out_dir / "class_counts.csv") as tmp:
        counts.to_csv(tmp, index=False)
    written = [out_dir / "class_counts.csv"]
    kemdy = counts[counts["corpus"] == KEMDY20]
    if len(kemdy):
        written.append(
            _distribution(
                kemdy,
                "KEMDy20",
                out_dir / "class_distribution_kemdy20.png",
                log_scale,
                manifest.label_names,
            )
        )
    corpora = ", ".join(sorted(counts["corpus"].unique()))
    written.append(
        _distribution(
            counts,
            f"all corpora ({corpora})",
            out_dir / "class_distribution_all.png",
            log_scale,
            manifest.label_names,
        )
    )
    va = manifest.frame[
        (manifest.frame["corpus"] == KEMDY20) & (manifest.frame["split"] == "train")
    ]
    va = va.dropna(subset=["valence", "arousal"])
    if len(va):
        written.append(_valence_arousal(va, out_dir / "valence_arousal.png", manifest.label_names))
        summary = (
            va.groupby("label")[["valence", "arousal"]]
            .agg(["count", "mean"])
            .reindex(manifest.label_names)
        )
        summary.columns = ["n", "valence_mean", "arousal_n", "arousal_mean"]
        summary = summary.drop(columns="arousal_n").fillna({"n": 0}).astype({"n": int})
        with atomic_path(out_dir / "valence_arousal.csv") as tmp:
            summary.rename_axis("class").to_csv(tmp)
        written.append(out_dir / "valence_arousal.csv")
    return written


def _distribution(
    counts: pd.DataFrame, what: str, out: Path, log_scale: bool, names: list[str]
) -> Path:
    """Grouped bars: per class, train and test side by side (train filled, test hatched), each
    bar labelled with its count, in the class's colour."""
    import numpy as np

    from emofeat.analysis.plots import class_color, pyplot, save_figure

    plt = pyplot()
    table = counts.groupby(["split", "class"])["count"].sum()
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(names) + 0.5), 4.2))
    width = 0.4
    for offset, split, hatch in ((-width / 2, "train", None), (width / 2, "test", "//")):
        heights = [int(table.get((split, n), 0)) for n in names]
        bars = ax.bar(
            x + offset,
            heights,
            width,
            color=[class_color(n, i) for i, n in enumerate(names)],
            edgecolor="black",
            linewidth=0.5,
            hatch=hatch,
            alpha=1.0 if split == "train" else 0.55,
            label=f"{split} (n={sum(heights)})",
        )
        ax.bar_label(bars, labels=[str(h) for h in heights], fontsize=7, padding=1)
    ax.set_xticks(x, names)
    ax.set_xlabel("emotion")
    ax.set_ylabel("utterances" + (" (log scale)" if log_scale else ""))
    if log_scale:
        ax.set_yscale("log")
    ax.set_title(f"Class distribution: {what}, train and test")
    ax.legend(frameon=False)
    ax.margins(y=0.12)
    return save_figure(fig, out)


def _valence_arousal(frame: pd.DataFrame, out: Path, names: list[str]) -> Path:
    """One panel per emotion: a 2-D histogram of (valence, arousal) on the 1-5 scale, so that
    thousands of overlapping points stay readable; dashed lines at the neutral 3."""
    import numpy as np

    from emofeat.analysis.plots import class_color, pyplot, save_figure

    plt = pyplot()
    from matplotlib.colors import LinearSegmentedColormap, to_rgba

    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.25 * cols, 3.3 * rows), sharex=True, sharey=True, squeeze=False
    )
    bins = np.arange(0.875, 5.2, 0.25)  # centred on the quarter-steps of averaged votes
    for i, (ax, name) in enumerate(zip(axes.ravel(), names)):
        part = frame[frame["label"] == name]
        color = class_color(name, i)
        # From a light tint, not white: a cell of one utterance stays visible.
        cmap = LinearSegmentedColormap.from_list(name, [to_rgba(color, 0.18), color])
        if len(part):
            h = ax.hist2d(part["valence"], part["arousal"], bins=[bins, bins], cmap=cmap, cmin=1)
            fig.colorbar(h[3], ax=ax, shrink=0.8, label="utterances")
        ax.axvline(3, ls="--", lw=0.8, color="black")
        ax.axhline(3, ls="--", lw=0.8, color="black")
        ax.set_xlim(1, 5)
        ax.set_ylim(1, 5)
        ax.set_title(f"{name} (n={len(part)})", color=color)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("valence (1-5)")
    for ax in axes[:, 0]:
        ax.set_ylabel("arousal (1-5)")
    fig.suptitle("KEMDy20 train rows: valence and arousal per emotion")
    return save_figure(fig, out)
