"""Figures: each one opens, has a sensible size, and the numbers behind it are read back and
compared with an independent computation."""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from matplotlib import image as mpimg
from sklearn.decomposition import PCA
from sklearn.metrics import confusion_matrix

from emofeat.analysis.plots import plot_embedding
from emofeat.cli import main
from emofeat.corpus.labels import LABEL_NAMES
from emofeat.store import StoreLayout, create_store, open_store


def png_size(path):
    height, width = mpimg.imread(path).shape[:2]
    return width, height


def test_data_stats_figures_and_their_numbers(manifest_path, manifest, tmp_path):
    r = CliRunner().invoke(main, ["data", "stats", str(manifest_path), "--plot", str(tmp_path)])
    assert r.exit_code == 0, r.output
    counts = pd.read_csv(tmp_path / "class_counts.csv")
    frame = manifest.frame
    for (corpus, split, name), n in counts.set_index(["corpus", "split", "class"])["count"].items():
        hand = int(
            ((frame.corpus == corpus) & (frame.split == split) & (frame.label == name)).sum()
        )
        assert n == hand
    assert counts["count"].sum() == int((frame.label != "").sum())
    assert set(counts["class"]) == set(LABEL_NAMES)  # zeros included: minority classes shown
    va = pd.read_csv(tmp_path / "valence_arousal.csv").set_index("class")
    train = frame[(frame.corpus == "kemdy20") & (frame.split == "train")]
    for name in LABEL_NAMES:
        part = train[train.label == name]
        assert va.loc[name, "n"] == len(part)
        if len(part):
            assert va.loc[name, "valence_mean"] == pytest.approx(part.valence.mean())
    for fig in ("class_distribution_kemdy20", "class_distribution_all", "valence_arousal"):
        w, h = png_size(tmp_path / f"{fig}.png")
        assert w > 800 and h > 400, (fig, w, h)
    r = CliRunner().invoke(
        main, ["data", "stats", str(manifest_path), "--plot", str(tmp_path / "log"), "--log"]
    )
    assert r.exit_code == 0 and (tmp_path / "log" / "class_distribution_all.png").is_file()


def test_store_plot_is_the_pca_of_the_rows_it_draws(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, 7, n)
    x = rng.normal(size=(n, 16)) + 3 * np.eye(7, 16)[y]
    split = np.where(np.arange(n) < 200, "train", "test")
    w = create_store(
        tmp_path / "s.h5",
        StoreLayout(
            ids=[f"u{i}" for i in range(n)],
            labels=y,
            split=split,
            fold=np.where(split == "train", np.arange(n) % 2, -1),
            label_names=LABEL_NAMES,
            embeddings={"last": 16},
            logits=False,
        ),
    )
    w.write(np.arange(n), embeddings={"last": x})
    w.finalize()
    xy = plot_embedding(tmp_path / "s.h5", tmp_path / "map.png", max_points=120, seed=3)
    with open_store(tmp_path / "s.h5") as s:
        rows = np.sort(np.random.default_rng(3).choice(s.select(), 120, replace=False))
        ref = PCA(n_components=2, random_state=3).fit_transform(s.embeddings("last", rows))
    np.testing.assert_allclose(np.abs(xy), np.abs(ref), atol=1e-4)  # up to the axes' signs
    w_px, h_px = png_size(tmp_path / "map.png")
    assert w_px > 900 and h_px > 600
    for suffix, magic in ((".pdf", b"%PDF"), (".svg", b"<?xml")):
        r = CliRunner().invoke(
            main, ["store", "plot", str(tmp_path / "s.h5"), "-o", str(tmp_path / f"m{suffix}")]
        )
        assert r.exit_code == 0, r.output
        assert (tmp_path / f"m{suffix}").read_bytes()[:5].startswith(magic)
    r = CliRunner().invoke(
        main, ["store", "plot", str(tmp_path / "s.h5"), "-o", str(tmp_path / "m.jpg")]
    )
    assert r.exit_code == 2 and ".png, .pdf, .svg" in r.output


def test_stack_reports_every_base_model(tmp_path):
    from emofeat.stack.ensemble import stack
    from emofeat.stack.level1 import load_level1

    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 3, n)
    split = np.where(np.arange(n) < 150, "train", "test")
    fold = np.where(split == "train", np.arange(n) % 3, -1)
    paths = []
    for k in range(2):
        w = create_store(
            tmp_path / f"m{k}.h5",
            StoreLayout(
                ids=[f"u{i}" for i in range(n)],
                labels=y,
                split=split,
                fold=fold,
                label_names=["a", "b", "c"],
                in_sample=np.zeros(n, bool),
            ),
        )
        w.write(np.arange(n), logits=rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[y])
        w.finalize()
        paths.append(tmp_path / f"m{k}.h5")
    m = stack(paths, "caruana", tmp_path / "st").metrics
    with load_level1(paths) as level1:
        test = level1.split == "test"
        for name, lg in zip(level1.names, level1.logits):
            hand = confusion_matrix(level1.labels[test], lg[test].argmax(1), labels=[0, 1, 2])
            assert m["test"]["model_reports"][name]["confusion"] == hand.tolist()
    report = (tmp_path / "st" / "report.md").read_text()
    assert "## Per class (test): m0" in report and "## Per class (test): m1" in report
    w_px, h_px = png_size(tmp_path / "st" / "confusion.png")
    assert w_px > 1500  # three panels: the ensemble and both base models
