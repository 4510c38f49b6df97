"""Valence and arousal: fine-tuned heads, out-of-fold stores and their figures (CCC)."""

import json
import statistics

import numpy as np
import pytest

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


@pytest.mark.parametrize("target, dim_meta", [("both", "ridge"), ("dimensional", "caruana")])
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
    first = block["test"]["models"]["a"]["valence"]["ccc"]
    assert first == pytest.approx(lin_ccc(list(test.valence), list(own)), abs=1e-5)
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
