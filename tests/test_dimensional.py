"""Valence and arousal: fine-tuned heads, out-of-fold stores and their figures (CCC)."""

import json
import statistics

import numpy as np
import pytest
from conftest import recordings_csv

from emofeat.extract.config import ExtractConfig
from emofeat.extract.run import extract
from emofeat.finetune.config import resolve_config
from emofeat.finetune.run import finetune
from emofeat.store import open_store


def lin_ccc(x, y) -> float:
    """Lin's CCC written out with the statistics module (1/n moments), independent of emofeat."""
    mx, my = statistics.fmean(x), statistics.fmean(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y)) / len(x)
    return 2 * sxy / (statistics.pvariance(x) + statistics.pvariance(y) + (mx - my) ** 2)


@pytest.fixture(scope="module")
def both_run(tmp_path_factory, manifest, tiny_kobert):
    """A KoBERT run of both tasks (classes, valence and arousal) on the session's manifest."""
    out = tmp_path_factory.mktemp("dims") / "kobert-both"
    cfg = resolve_config(
        "kobert-tiny", model="kobert", model_path=str(tiny_kobert), task="both", epochs=4
    )
    finetune(manifest, out, cfg)
    return out


def test_a_run_of_both_tasks_stores_out_of_fold_logits_and_dimensions(
    both_run, manifest, manifest_path, tmp_path
):
    """Extraction splits the head's outputs into /logits and /dimensions, with the true values
    as /dimension_targets; each fold's CCC in its metrics.json equals Lin's CCC, computed by
    independent code, of the store's out-of-fold predictions of that fold's rows."""
    store = extract(manifest_path, tmp_path / "both.h5", ExtractConfig(run=str(both_run)))
    with open_store(store) as s:
        assert s.has_logits and s.has_dimensions
        assert s.dimension_names == ["valence", "arousal"]
        assert s.logits().shape == (len(manifest), len(manifest.label_names))
        dims, targets = s.dimensions(), s.dimension_targets()
        np.testing.assert_allclose(targets, manifest.dimensions, equal_nan=True)
        assert np.isfinite(dims[s.done]).all()
        assert s.in_sample is not None and not s.in_sample[s.split == "train"].any()
        frame = s.to_pandas()
        assert {"valence", "predicted_valence", "arousal", "predicted_arousal"} <= set(frame)
    aihub = (manifest.frame["corpus"] == "aihub").to_numpy()
    assert np.isnan(manifest.dimensions[aihub]).all() and aihub.any()
    for k in range(manifest.num_folds):
        rows = np.flatnonzero((manifest.fold == k) & ~aihub & (manifest.label_indices >= 0))
        saved = json.loads((both_run / f"fold-{k}" / "metrics.json").read_text())
        assert saved["valence_n"] == len(rows)  # AI Hub rows carry no target: not counted
        for j, name in enumerate(("valence", "arousal")):
            expected = lin_ccc(targets[rows, j].astype(float), dims[rows, j].astype(float))
            assert saved[f"{name}_ccc"] == pytest.approx(expected, abs=2e-5)
        assert "accuracy" in saved


def test_a_dimensional_run_stores_no_logits(manifest, manifest_path, tiny_kobert, tmp_path):
    cfg = resolve_config(
        "kobert-tiny",
        model="kobert",
        model_path=str(tiny_kobert),
        task="dimensional",
        dim_loss="mse",
        folds=0,
        max_steps=2,
    )
    finetune(manifest, tmp_path / "run", cfg)
    store = extract(manifest_path, tmp_path / "d.h5", ExtractConfig(run=str(tmp_path / "run")))
    with open_store(store) as s:
        assert s.has_dimensions and not s.has_logits and s.complete
    from emofeat.errors import EmofeatError

    with pytest.raises(EmofeatError, match="--metric-for-best accuracy with --task dimensional"):
        resolve_config("kobert-tiny", model="kobert", task="dimensional", select="inner")


@pytest.fixture(scope="module")
def dim_stores(tmp_path_factory, both_run, manifest, manifest_path, tiny_kobert):
    """Two out-of-fold stores with dimensions: the run of both tasks and a second one."""
    root = tmp_path_factory.mktemp("dim-stores")
    other = root / "kobert-both-2"
    cfg = resolve_config(
        "kobert-tiny",
        model="kobert",
        model_path=str(tiny_kobert),
        task="both",
        epochs=4,
        dropout=0.5,
        seed=7,
    )
    finetune(manifest, other, cfg)
    return [
        extract(manifest_path, root / "a.h5", ExtractConfig(run=str(both_run))),
        extract(manifest_path, root / "b.h5", ExtractConfig(run=str(other))),
    ]


@pytest.mark.parametrize(
    "target, dim_meta", [("both", "ridge"), ("dimensional", "caruana"), ("dimensional", "auto")]
)
def test_a_dimensional_stack_is_scored_by_ccc_recomputed_from_its_predictions(
    dim_stores, manifest, tmp_path, target, dim_meta
):
    """The test CCC of the stack and of each base model equals Lin's CCC recomputed from
    predictions.csv and the stores by independent code; AI Hub rows (no valence or arousal) are
    counted in no dimensional figure; the CV figures are per fold, and the report and the figure
    are written."""
    import pandas as pd

    from emofeat.stack.ensemble import stack

    out = tmp_path / "stack"
    result = stack(
        dim_stores, "lgbm" if target == "both" else None, out, target=target, dim_meta=dim_meta
    )
    block = result.metrics["dimensional"]
    pred = pd.read_csv(out / "predictions.csv")
    test = pred[(pred.split == "test") & pred.valence.notna()]
    aihub = set(manifest.ids[(manifest.frame.corpus == "aihub").to_numpy()])
    assert not aihub & set(test.id) and aihub & set(pred.id)  # predicted, never scored
    assert block["test_rows"]["valence"] == len(test)
    for name in ("valence", "arousal"):
        got = block["test"]["ensemble"][name]
        assert got["ccc"] == pytest.approx(lin_ccc(test[name], test[f"predicted_{name}"]), abs=1e-6)
        lo, hi = got["ccc_ci95"]
        assert lo <= got["ccc"] <= hi
        assert set(block["cv"][name]["ccc"]) == {"mean", "std", "n"}
    with open_store(dim_stores[0]) as s:
        rows = [np.flatnonzero(s.ids == u)[0] for u in test.id]
        own = s.dimensions(np.array(rows))[:, 0]
    first = block["test"]["models"]["a"]["valence"]
    assert first["ccc"] == pytest.approx(lin_ccc(list(test.valence), list(own)), abs=1e-5)
    assert first["ccc_ci95"][0] <= first["ccc"] <= first["ccc_ci95"][1]
    if dim_meta == "auto":  # the candidate with the best mean CV CCC, the others listed
        scores = block["auto"]["cv_mean_ccc"]
        assert set(scores) == {"mean", "ridge", "lgbm", "caruana"}
        assert block["meta"] == block["auto"]["chosen"] == max(scores, key=scores.get)
    report = (out / "report.md").read_text()
    assert "## Valence and arousal" in report and (out / "dimensions.png").is_file()
    assert (out / "model.joblib").is_file() == (target == "both")
    if target == "both":
        assert "ensemble" in result.metrics["test"]  # the classes too
    # predict: the stores in another order give the same test predictions, matched by identity.
    from emofeat.stack.ensemble import predict

    again = pd.read_csv(predict(out, dim_stores[::-1], tmp_path / "p.csv")).set_index("id")
    for name in ("valence", "arousal"):
        np.testing.assert_allclose(
            again.loc[test.id, f"predicted_{name}"], test[f"predicted_{name}"], rtol=1e-6
        )
    assert set(again.loc[test.id, "provenance"]) == {"out-of-sample"}
    if target == "dimensional" and dim_meta == "caruana":
        # infer: new recordings get valence and arousal from the runs behind the stores.
        from emofeat.recipes.infer import infer

        pick = [np.flatnonzero(manifest.ids == u)[0] for u in test.id[:3]]
        recordings_csv(manifest, pick, tmp_path / "new.csv")
        got = pd.read_csv(infer(out, tmp_path / "new.csv", tmp_path / "inferred.csv"))
        np.testing.assert_allclose(
            got.predicted_valence, test.predicted_valence[:3].to_numpy(), rtol=1e-4
        )
    from emofeat.analysis.compare import compare

    row = compare([out]).iloc[0]
    assert row["test_valence_ccc"] == pytest.approx(block["test"]["ensemble"]["valence"]["ccc"])
    assert row["test_mean_ccc"] == pytest.approx(block["test"]["ensemble"]["mean"]["ccc"])


def test_an_in_sample_dimensional_store_is_refused(manifest, manifest_path, tiny_kobert, tmp_path):
    """A single model trained on every train row (--folds 0) gives in-sample dimensions: a
    regression meta-learner refuses them as the classes' do; the mean, which fits nothing,
    does not need them out-of-fold."""
    from emofeat.errors import EmofeatError
    from emofeat.stack.ensemble import stack

    cfg = resolve_config(
        "kobert-tiny", model="kobert", model_path=str(tiny_kobert), task="both", folds=0,
        max_steps=2,
    )  # fmt: skip
    finetune(manifest, tmp_path / "run", cfg)
    store = extract(manifest_path, tmp_path / "s.h5", ExtractConfig(run=str(tmp_path / "run")))
    with pytest.raises(EmofeatError, match="refusing to stack"):
        stack([store], None, tmp_path / "ridge", target="dimensional", dim_meta="ridge")
    assert not (tmp_path / "ridge").exists()
    stack([store], None, tmp_path / "mean", target="dimensional", dim_meta="mean")


def test_a_dimensional_probe_scores_each_layer_by_ccc(
    manifest, manifest_path, tiny_wav2vec2, tmp_path
):
    """probe --target dimensional: per layer, a ridge regression of each dimension
    cross-validated over the folds on the train rows that carry both, scored by CCC; a layer's
    figure equals the same regression done by hand, scored by independent code."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from emofeat.analysis.probe import probe_layers
    from emofeat.errors import EmofeatError

    store = extract(
        manifest_path, tmp_path / "all.h5", ExtractConfig(model=str(tiny_wav2vec2), layers="all")
    )
    table = probe_layers(store, tmp_path / "probe", target="dimensional")
    assert set(table.metric) == {"valence_ccc", "arousal_ccc", "mean_ccc"}
    with open_store(store) as s:
        train = np.flatnonzero((s.split == "train") & (s.labels >= 0))
        y = s.dimension_targets(train).astype(float)
        train, y = train[np.isfinite(y).all(1)], y[np.isfinite(y).all(1)]
        X, folds = s.embeddings("layer_01", train).astype(np.float32), s.fold[train]
    per_fold = []
    for k in np.unique(folds):
        fit, held = folds != k, folds == k
        model = make_pipeline(StandardScaler(), Ridge(alpha=10.0)).fit(X[fit], y[fit, 0])
        per_fold.append(lin_ccc(list(y[held, 0]), list(model.predict(X[held]))))
    row = table[(table.name == "layer_01") & (table.metric == "valence_ccc")]
    assert row["mean"].iloc[0] == pytest.approx(np.mean(per_fold), abs=1e-6)
    assert (tmp_path / "probe" / "probe.png").is_file()
    assert "valence_ccc" in (tmp_path / "probe" / "probe.md").read_text()
    with pytest.raises(EmofeatError, match="--weighted learns a weighted sum"):
        probe_layers(store, tmp_path / "p2", target="dimensional", weighted=True)


def test_mmm_of_both_tasks_writes_a_stackable_dimensional_store(manifest_path, tmp_path):
    """fuse --task both: MMM's head predicts the classes and valence/arousal; its store holds
    out-of-fold /logits and /dimensions with its inputs' targets, each fold's CCC equals Lin's
    CCC of the store's predictions of its held-out rows, and it joins a dimensional stack."""
    from emofeat.corpus.manifest import read_manifest
    from emofeat.fuse.config import MMMConfig
    from emofeat.fuse.run import fuse
    from emofeat.stack.ensemble import stack
    from emofeat.testing.tiny import build_tiny_electra, build_tiny_wav2vec2

    m = read_manifest(manifest_path)
    text = build_tiny_electra(tmp_path / "electra", list(m.frame.text), hidden=32)
    audio = build_tiny_wav2vec2(tmp_path / "w2v", hidden=32, conv_dim=16)
    seq = {}
    for kind, model, extra in (("text", text, {"max_len": 16}), ("audio", audio, {})):
        seq[kind] = extract(
            manifest_path,
            tmp_path / f"{kind}.h5",
            ExtractConfig(model=str(model), sequence=True, **extra),
        )
    cfg = MMMConfig(epochs=2, batch_size=16, grad_accum=1, lr=1e-3, task="both")
    fuse([seq["text"], seq["audio"]], tmp_path / "mmm", config=cfg)
    fused = tmp_path / "mmm" / "mmm.h5"
    with open_store(fused) as s:
        assert s.has_logits and s.has_dimensions and s.complete
        dims, targets, folds = s.dimensions(), s.dimension_targets(), s.fold
        train = (s.split == "train") & (s.labels >= 0)
        assert not s.in_sample[train].any()
    saved = json.loads((tmp_path / "mmm" / "fold-0" / "metrics.json").read_text())
    rows = np.flatnonzero(train & (folds == 0) & np.isfinite(targets[:, 0]))
    assert saved["valence_ccc"] == pytest.approx(
        lin_ccc(list(targets[rows, 0]), list(dims[rows, 0])), abs=2e-5
    )
    result = stack([fused], None, tmp_path / "s", target="dimensional", dim_meta="ridge")
    assert "ensemble" in result.metrics["dimensional"]["test"]
    from emofeat.errors import EmofeatError

    with pytest.raises(EmofeatError, match="--class-weights weights the cross-entropy"):
        MMMConfig(task="dimensional", class_weights=True)
