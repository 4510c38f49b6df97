"""One metrics owner: the stated convention (macro F1 and UAR over the classes present in y_true),
checked against a hand computation, and the same figure wherever emofeat reports it."""

import json

import numpy as np
import pytest

from emofeat.metrics import classification_metrics, fold_summary, logits_metrics


def hand_macro(y, pred):
    """Per-class F1 and recall by counting, averaged over the classes of y."""
    f1s, recalls = [], []
    for c in np.unique(y):
        tp = np.sum((pred == c) & (y == c))
        fp, fn = np.sum((pred == c) & (y != c)), np.sum((pred != c) & (y == c))
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn)
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
        recalls.append(r)
    return np.mean(f1s), np.mean(recalls)


def test_macro_figures_average_the_classes_present_in_y_true():
    # A small fold that holds two of seven classes, one of them mispredicted as a third.
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    pred = np.array([0, 0, 2, 1, 1, 1, 1])
    m = classification_metrics(y, pred)
    f1, uar = hand_macro(y, pred)
    assert m["macro_f1"] == pytest.approx(f1) and m["uar"] == pytest.approx(uar)
    assert m["macro_f1"] > 0.8  # over all seven classes it would be 0.25
    assert m["accuracy"] == pytest.approx(6 / 7)
    rng = np.random.default_rng(0)
    for _ in range(20):
        y, pred = rng.integers(0, 5, 40), rng.integers(0, 6, 40)
        m = classification_metrics(y, pred)
        f1, uar = hand_macro(y, pred)
        assert m["macro_f1"] == pytest.approx(f1) and m["uar"] == pytest.approx(uar)


def test_logits_metrics_loss_is_the_mean_cross_entropy():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1000.0, 0.0]])
    y = np.array([0, 0, 0])
    p = np.exp(logits[:2]) / np.exp(logits[:2]).sum(1, keepdims=True)
    want = -(np.log(p[0, 0]) + np.log(p[1, 0]) + np.log(1.0)) / 3
    assert logits_metrics(y, logits)["loss"] == pytest.approx(want)


def test_fold_summary_is_mean_and_population_std():
    folds = [{"accuracy": 0.5, "kept": "final"}, {"accuracy": 0.7}, {"accuracy": 0.9}]
    s = fold_summary(folds)
    assert set(s) == {"accuracy"}
    assert s["accuracy"]["mean"] == pytest.approx(0.7)
    assert s["accuracy"]["std"] == pytest.approx(np.std([0.5, 0.7, 0.9]))
    assert s["accuracy"]["n"] == 3


def test_a_base_models_fold_figures_in_its_run_equal_its_cv_figures_in_a_stack(
    kobert_run, manifest_path, tmp_path
):
    """Fine-tuning scores each fold model on its held-out fold; the stack report scores the
    store's out-of-fold train rows per fold. Same rows, same models, one metrics module: the
    same figures."""
    from emofeat.extract.config import ExtractConfig
    from emofeat.extract.run import extract
    from emofeat.stack.ensemble import stack

    store = extract(manifest_path, tmp_path / "kb.h5", ExtractConfig(run=str(kobert_run)))
    stack([store], "softvote", tmp_path / "stack")
    cv = json.loads((tmp_path / "stack" / "metrics.json").read_text())["models_cv"]["kb"]
    folds = sorted(kobert_run.glob("fold-[0-9]*"))
    assert len(folds) >= 2
    run = [json.loads((f / "metrics.json").read_text()) for f in folds]
    want = fold_summary(run, ("accuracy", "macro_f1", "uar"))
    for key in ("accuracy", "macro_f1", "uar"):
        assert cv[key]["mean"] == pytest.approx(want[key]["mean"], abs=1e-9), key
        assert cv[key]["std"] == pytest.approx(want[key]["std"], abs=1e-9), key


def test_the_bootstrap_interval_of_accuracy_agrees_with_the_normal_approximation():
    from emofeat.metrics import bootstrap_accuracy

    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 600)
    pred = np.where(rng.random(600) < 0.7, y, (y + 1) % 4)
    acc = (y == pred).mean()
    lo, hi = bootstrap_accuracy(y, pred, n=4000, seed=1)
    half = 1.96 * np.sqrt(acc * (1 - acc) / len(y))  # independent: the Wald interval
    assert lo < acc < hi
    assert abs(lo - (acc - half)) < 0.01 and abs(hi - (acc + half)) < 0.01
    assert bootstrap_accuracy(y, pred, n=4000, seed=1) == (lo, hi)  # reproducible
    assert bootstrap_accuracy(y, y) == (1.0, 1.0)  # every resample agrees


def test_ccc_is_lins_over_all_rows_against_an_independent_computation():
    """Lin (1989): 2 s_xy / (s_x^2 + s_y^2 + (x̄ - ȳ)^2) with 1/n moments, written out by hand
    with the statistics module; a shift or scale away from y lowers CCC but not Pearson's r."""
    import statistics

    from emofeat.metrics import ccc, dimensional_metrics

    rng = np.random.default_rng(1)
    y = rng.uniform(1, 5, 50)
    p = y * 0.6 + 1.5 + rng.normal(0, 0.3, 50)
    mx, my = statistics.fmean(y), statistics.fmean(p)
    sxy = sum((a - mx) * (b - my) for a, b in zip(y, p)) / len(y)
    expected = 2 * sxy / (statistics.pvariance(y) + statistics.pvariance(p) + (mx - my) ** 2)
    assert ccc(y, p) == pytest.approx(expected, rel=1e-12)
    assert ccc(y, y) == pytest.approx(1.0) and ccc(y, y + 1) < 1
    Y = np.column_stack([y, np.where(np.arange(50) < 20, np.nan, y)])  # arousal: 30 rows
    P = np.column_stack([p, y + 1.0])
    m = dimensional_metrics(Y, P, ["valence", "arousal"])
    assert m["valence"]["n"] == 50 and m["arousal"]["n"] == 30
    assert m["arousal"]["pearson"] == pytest.approx(1.0) and m["arousal"]["ccc"] < 0.8
    assert m["arousal"]["rmse"] == pytest.approx(1.0)
    assert m["mean"]["ccc"] == pytest.approx((m["valence"]["ccc"] + m["arousal"]["ccc"]) / 2)
    # Computed once over the rows, not averaged over batches: the two differ.
    halves = (ccc(y[:25], p[:25]) + ccc(y[25:], p[25:])) / 2
    assert abs(halves - ccc(y, p)) > 1e-6


def test_bootstrap_ccc_interval_holds_the_estimate():
    from emofeat.metrics import bootstrap_ccc, ccc

    rng = np.random.default_rng(2)
    y = rng.uniform(1, 5, 80)
    p = y + rng.normal(0, 0.8, 80)
    lo, hi = bootstrap_ccc(y, p, seed=0)
    assert lo < ccc(y, p) < hi and hi - lo < 0.5
    assert bootstrap_ccc(y, p, seed=0) == (lo, hi)


def test_paired_repetitions_edge_cases():
    """One repetition has no test; a constant difference has no t statistic but a Wilcoxon p
    (all signs alike: 2 / 2^n); equal figures are ties with p = 1; unpaired lengths and
    non-finite figures are refused."""
    from emofeat.metrics import paired_repetitions

    one = paired_repetitions([0.8], [0.7])
    assert one["n"] == 1 and np.isnan(one["t_p"]) and np.isnan(one["wilcoxon_p"])
    same = paired_repetitions([0.8, 0.9, 0.7], [0.7, 0.8, 0.6])
    assert np.isnan(same["t_p"]) and same["wilcoxon_p"] == pytest.approx(2 / 2**3)
    assert same["wins"] == 3 and same["mean_difference"] == pytest.approx(0.1)
    tied = paired_repetitions([0.5, 0.6], [0.5, 0.6])
    assert tied["ties"] == 2 and tied["wilcoxon_p"] == 1.0
    with pytest.raises(ValueError, match="pair them"):
        paired_repetitions([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="not finite"):
        paired_repetitions([0.1, float("nan")], [0.1, 0.2])
