"""The cross-corpus matrix: one cell per ordered pair of corpora, each equal to a head fitted
by independent code; the diagonal cross-validated over the fold plan; refusals."""

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import recall_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from emofeat.cli import main
from emofeat.errors import EmofeatError


def cli(*args):
    r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


@pytest.fixture(scope="module")
def three(kemdy19, corpus_dir, tiny_kobert, tmp_path_factory):
    """A manifest of KEMDy19, KEMDy20 and AI Hub and a frozen encoder's store of it."""
    from emofeat.corpus.prepare import prepare

    root = tmp_path_factory.mktemp("cross")
    manifest = root / "m.csv"
    prepare(
        manifest,
        kemdy19=kemdy19[0],
        kemdy20=corpus_dir / "KEMDy20_v1_1",
        aihub=corpus_dir / "AI_Hub",
        folds=2,
    )
    store = root / "frozen.h5"
    cli("extract", "--model", tiny_kobert, "--manifest", manifest, "--out", store)
    return manifest, store


def uar(y, pred):
    return recall_score(y, pred, labels=np.unique(y), average="macro")


def ccc(y, p):
    return 2 * np.cov(y, p, bias=True)[0, 1] / (y.var() + p.var() + (y.mean() - p.mean()) ** 2)


def test_one_cell_per_ordered_pair_each_equal_to_an_independent_fit(three, tmp_path):
    manifest, store = three
    out = tmp_path / "cc"
    text = cli("crosscorpus", "--store", store, "--manifest", manifest, "--out", out)
    table = pd.read_csv(out / "crosscorpus.csv")
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False).set_index("id")
    with h5py.File(store) as f:
        ids = f["ids"].asstr()[:]
        X = f["embeddings/last"][:].astype(np.float64)
        y = f["labels"][:].astype(int)
        fold = f["fold"][:]
    corpus = frame.loc[ids, "corpus"].to_numpy()
    corpora = ["kemdy19", "kemdy20", "aihub"]
    cells = table[table.metric == "uar"]
    assert sorted(zip(cells.train, cells.test)) == sorted((a, b) for a in corpora for b in corpora)
    for a in corpora:
        for b in corpora:
            got = cells[(cells.train == a) & (cells.test == b)].value.iloc[0]
            in_a, in_b = (corpus == a) & (y >= 0), (corpus == b) & (y >= 0)
            if a == b:  # pooled out-of-fold predictions of A's train rows
                rows = np.flatnonzero(in_a & (fold >= 0))
                pred = np.empty(len(rows), int)
                for k in np.unique(fold[rows]):
                    held = fold[rows] == k
                    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
                    model.fit(X[rows[~held]], y[rows[~held]])
                    pred[held] = model.predict(X[rows[held]])
                assert got == pytest.approx(uar(y[rows], pred)), (a, b)
                continue
            shared = np.intersect1d(y[in_a], y[in_b])
            fit = np.flatnonzero(in_a & np.isin(y, shared))
            held = np.flatnonzero(in_b & np.isin(y, shared))
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
            model.fit(X[fit], y[fit])
            assert got == pytest.approx(uar(y[held], model.predict(X[held]))), (a, b)
    # valence and arousal: only between the corpora that carry them (AI Hub has none)
    dims = table[table.metric == "mean_ccc"]
    assert sorted(zip(dims.train, dims.test)) == [
        (a, b) for a in ("kemdy19", "kemdy20") for b in ("kemdy19", "kemdy20")
    ]
    with h5py.File(store) as f:
        targets = f["dimension_targets"][:].astype(np.float64)
    fit, held = np.flatnonzero(corpus == "kemdy20"), np.flatnonzero(corpus == "kemdy19")
    expected = np.mean(
        [
            ccc(
                targets[held, j],
                make_pipeline(StandardScaler(), Ridge(alpha=10.0))
                .fit(X[fit], targets[fit, j])
                .predict(X[held]),
            )
            for j in (0, 1)
        ]
    )
    got = dims[(dims.train == "kemdy20") & (dims.test == "kemdy19")].value.iloc[0]
    assert got == pytest.approx(expected)
    assert "## uar" in text and "kemdy20 → aihub" in text
    assert (out / "crosscorpus.png").stat().st_size > 10_000


def test_refusals_name_what_is_wrong(three, corpus_dir, manifest_path, tmp_path):
    from emofeat.analysis.crosscorpus import cross_corpus
    from emofeat.store import StoreLayout, create_store

    manifest, store = three
    with pytest.raises(EmofeatError, match="different ids: only in the store"):  # wrong manifest
        cross_corpus(store, manifest_path, tmp_path / "a")
    with pytest.raises(EmofeatError, match="no embedding 'layer_03'"):
        cross_corpus(store, manifest, tmp_path / "b", embedding="layer_03")
    from emofeat.corpus.prepare import prepare

    one = tmp_path / "one.csv"
    prepare(one, kemdy20=corpus_dir / "KEMDy20_v1_1", folds=2)
    with pytest.raises(EmofeatError, match="one corpus"):
        cross_corpus(_frozen_store(one, tmp_path / "one.h5"), one, tmp_path / "c")
    with h5py.File(store) as f:
        ids, labels = f["ids"].asstr()[:], f["labels"][:]
        split, fold = f["split"].asstr()[:], f["fold"][:]
        names = list(f.attrs["label_names"])
    w = create_store(
        tmp_path / "tuned.h5",
        StoreLayout(ids=ids, labels=labels, split=split, fold=fold, label_names=names),
    )
    w.write(np.arange(len(ids)), logits=np.zeros((len(ids), len(names))))
    w.finalize()
    with pytest.raises(EmofeatError, match="trained model's logits"):
        cross_corpus(tmp_path / "tuned.h5", manifest, tmp_path / "d")


def _frozen_store(manifest, path):
    from emofeat.corpus.manifest import read_manifest
    from emofeat.store import StoreLayout, create_store

    m = read_manifest(manifest)
    w = create_store(
        path,
        StoreLayout(
            ids=m.ids,
            labels=m.label_indices,
            split=m.split,
            fold=m.fold,
            label_names=m.label_names,
            embeddings={"last": 3},
            logits=False,
        ),
    )
    w.write(np.arange(len(m)), embeddings={"last": np.ones((len(m), 3))})
    w.finalize()
    return path
