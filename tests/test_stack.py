"""Stacking over hand-made stores: leakage rules, alignment, meta-learners, metrics."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.metrics import accuracy_score, f1_score, precision_score

from emofeat.cli import main
from emofeat.errors import EmofeatError, StoreError
from emofeat.metrics import softmax
from emofeat.stack.ensemble import AUTO_CANDIDATES, predict, stack
from emofeat.stack.meta import Caruana, MixerClassifier, SoftVote
from emofeat.store import StoreLayout, create_store, open_store

N, K = 400, 3


def world(c=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, N)
    split = np.where(np.arange(N) < 300, "train", "test")
    fold = np.where(split == "train", np.arange(N) % K, -1)
    channel = rng.integers(0, 2, N)  # 0: model A sees the label, 1: model B does
    return rng, y, split, fold, channel


def make_store(
    path, y, split, fold, logits, names, order=None, emb=None, oof=True, done=None, seen=None
):
    """A store of the given values; ``oof`` True: out-of-fold evidence for every row, False:
    train rows in-sample, None: no evidence (like a store written by other code). ``seen``:
    rows (of any split) whose evidence says a model trained on them."""
    order = np.arange(len(y)) if order is None else order
    ids = np.array([f"u{i:04d}" for i in range(len(y))])
    in_sample = None if oof is None else (split == "train") & (not oof)
    if seen is not None:
        in_sample = in_sample | seen
    w = create_store(
        path,
        StoreLayout(
            ids=ids[order],
            labels=y[order],
            split=split[order],
            fold=fold[order],
            label_names=names,
            embeddings={"last": emb.shape[1]} if emb is not None else {},
            in_sample=in_sample[order] if in_sample is not None else None,
        ),
        attrs={"out_of_fold": oof} if oof is not None else {},
    )
    rows = np.arange(len(y)) if done is None else np.flatnonzero(done[order])
    w.write(
        rows,
        logits=logits[order][rows],
        embeddings={"last": emb[order][rows]} if emb is not None else None,
    )
    w.finalize()
    return path


def complementary(tmp_path, c=4, seed=0):
    rng, y, split, fold, channel = world(c, seed)
    names = [f"class{i}" for i in range(c)]
    paths = []
    for k, sees in enumerate((0, 1)):
        logits = rng.normal(0, 1, (N, c))
        hit = channel == sees
        logits[hit, y[hit]] += 4.0
        emb = np.hstack(
            [np.eye(c)[y] * hit[:, None] * 2 + rng.normal(0, 0.5, (N, c)), rng.normal(0, 1, (N, 4))]
        )
        paths.append(make_store(tmp_path / f"m{k}.h5", y, split, fold, logits, names, emb=emb))
    return paths, y, split


def test_softvote_reference_weights_equal_hand_computation(tmp_path):
    rng, y, split, fold, _ = world(7)
    names = [str(i) for i in range(7)]
    logits = [rng.normal(0, 2, (N, 7)) for _ in range(5)]
    paths = [
        make_store(tmp_path / f"s{k}.h5", y, split, fold, lg, names) for k, lg in enumerate(logits)
    ]
    res = stack(paths, "softvote", tmp_path / "sv", weights="0.25,0.25,1/6,1/6,1/6")
    w = [0.25, 0.25, 1 / 6, 1 / 6, 1 / 6]
    hand = sum(wk * softmax(lg.astype(np.float32).astype(float)) for wk, lg in zip(w, logits))
    test = split == "test"
    assert res.metrics["test"]["ensemble"]["accuracy"] == pytest.approx(
        np.mean(hand[test].argmax(1) == y[test])
    )
    pred = pd.read_csv(tmp_path / "sv" / "predictions.csv").set_index("id")
    ids = [f"u{i:04d}" for i in np.flatnonzero(test)]
    np.testing.assert_allclose(
        pred.loc[ids, [f"p_{n}" for n in names]].to_numpy(), hand[test], atol=1e-9
    )


def test_caruana_weights_are_a_distribution():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    good = np.eye(3)[y] * 0.6 + 0.4 / 3
    noise = softmax(rng.normal(0, 1, (200, 3)))
    X = np.hstack([noise, good, noise])
    model = Caruana(n_iter=20, classes=[0, 1, 2]).fit(X, y)
    assert (model.weights_ >= 0).all() and model.weights_.sum() == pytest.approx(1.0)
    assert model.weights_[1] == model.weights_.max()
    np.testing.assert_allclose(model.predict_proba(X).sum(1), 1.0)


def test_stacking_beats_the_best_single_model_on_complementary_stores(tmp_path):
    paths, y, split = complementary(tmp_path)
    for meta in ("logreg", "lgbm", "pooled-mixer"):
        m = stack(paths, meta, tmp_path / meta).metrics
        best_single = max(v["accuracy"] for v in m["test"]["models"].values())
        assert m["test"]["ensemble"]["accuracy"] > best_single + 0.1, (meta, m["test"])
        assert m["cv"]["accuracy"]["mean"] > 0.7
    soft = stack(paths, "softvote", tmp_path / "sv").metrics
    assert soft["test"]["ensemble"]["accuracy"] > 0.7


def test_metrics_equal_scikit_learn_on_the_written_predictions(tmp_path):
    paths, y, split = complementary(tmp_path)
    m = json.loads((stack(paths, "lgbm", tmp_path / "l").out / "metrics.json").read_text())
    pred = pd.read_csv(tmp_path / "l" / "predictions.csv")
    test = pred[pred.split == "test"]
    assert m["test"]["ensemble"]["accuracy"] == pytest.approx(
        accuracy_score(test.label, test.predicted)
    )
    assert m["test"]["ensemble"]["weighted_f1"] == pytest.approx(
        f1_score(test.label, test.predicted, average="weighted")
    )
    assert m["test"]["ensemble"]["weighted_precision"] == pytest.approx(
        precision_score(test.label, test.predicted, average="weighted", zero_division=0)
    )
    lo, hi = m["test"]["ensemble"]["accuracy_ci95"]
    assert lo <= m["test"]["ensemble"]["accuracy"] <= hi
    report = (tmp_path / "l" / "report.md").read_text()
    assert "| method | accuracy | weighted precision | weighted F1 |" in report and "m0" in report
    assert (tmp_path / "l" / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_stores_are_aligned_by_id_not_row_order(tmp_path):
    paths, y, split = complementary(tmp_path)
    with open_store(paths[1]) as s:
        logits = s.logits()
        emb = s.embeddings("last")
    rng = np.random.default_rng(1)
    order = rng.permutation(N)
    fold = np.where(split == "train", np.arange(N) % K, -1)
    shuffled = make_store(
        tmp_path / "shuffled.h5",
        y,
        split,
        fold,
        logits,
        [f"class{i}" for i in range(4)],
        order=order,
        emb=emb,
    )
    a = stack([paths[0], paths[1]], "logreg", tmp_path / "a").metrics
    b = stack([paths[0], shuffled], "logreg", tmp_path / "b").metrics
    assert a["test"]["ensemble"] == b["test"]["ensemble"]


def test_mismatched_stores_are_refused(tmp_path):
    paths, y, split = complementary(tmp_path)
    fold = np.where(split == "train", np.arange(N) % K, -1)
    rng = np.random.default_rng(2)
    bad_labels = y.copy()
    bad_labels[5] = (y[5] + 1) % 4
    s1 = make_store(
        tmp_path / "lab.h5",
        bad_labels,
        split,
        fold,
        rng.normal(size=(N, 4)),
        [f"class{i}" for i in range(4)],
    )
    with pytest.raises(StoreError, match="disagree: labels differ at id 'u0005'"):
        stack([paths[0], s1], "logreg", tmp_path / "x")
    s2 = make_store(tmp_path / "names.h5", y, split, fold, rng.normal(size=(N, 4)), list("abcd"))
    with pytest.raises(StoreError, match="label_names"):
        stack([paths[0], s2], "logreg", tmp_path / "x")
    s3 = make_store(
        tmp_path / "fold.h5",
        y,
        split,
        np.where(split == "train", (np.arange(N) + 1) % K, -1),
        rng.normal(size=(N, 4)),
        [f"class{i}" for i in range(4)],
    )
    with pytest.raises(StoreError, match="fold differ at id"):
        stack([paths[0], s3], "logreg", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_out_of_fold_rule_is_enforced(tmp_path):
    paths, y, split = complementary(tmp_path)
    fold = np.where(split == "train", np.arange(N) % K, -1)
    rng = np.random.default_rng(3)
    names = [f"class{i}" for i in range(4)]
    insample = make_store(
        tmp_path / "in.h5", y, split, fold, rng.normal(size=(N, 4)), names, oof=False
    )
    with pytest.raises(
        EmofeatError, match=r"store in: 300 of 300 train rows are in-sample.*--allow-in-sample"
    ):
        stack([paths[0], insample], "lgbm", tmp_path / "x")
    # A store without per-row evidence (written by other code) is of unknown status: refused.
    plain = make_store(
        tmp_path / "plain.h5", y, split, fold, rng.normal(size=(N, 4)), names, oof=None
    )
    with pytest.raises(EmofeatError, match=r"store plain has no per-row out-of-fold evidence"):
        stack([paths[0], plain], "caruana", tmp_path / "x")
    nofold = make_store(
        tmp_path / "nofold.h5", y, split, np.full(N, -1), rng.normal(size=(N, 4)), names
    )
    with pytest.raises(EmofeatError, match="no fold information"):
        stack([nofold], "logreg", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    m = stack([paths[0], insample], "lgbm", tmp_path / "ok", allow_in_sample=True).metrics
    report = (tmp_path / "ok" / "report.md").read_text()
    assert report.startswith("WARNING: in-sample")
    # Figures over in-sample train rows are never printed as cross-validation, and the train
    # rows' predictions are in-sample whatever the meta-learner's CV did.
    assert m["cv_protocol"] == "in-sample" and "Cross-validation over the train folds" not in report
    assert "In-sample figures over the train rows (not cross-validation)" in report
    predictions = pd.read_csv(tmp_path / "ok" / "predictions.csv")
    assert set(predictions.loc[predictions.split == "train", "provenance"]) == {"in-sample"}
    stack([paths[0], plain], "lgbm", tmp_path / "ok2", allow_in_sample=True)
    assert "unknown" in (tmp_path / "ok2" / "report.md").read_text().splitlines()[0]
    # Fixed weights fit nothing on the train rows: the reference protocol needs no permission.
    m = stack([insample, plain], "softvote", tmp_path / "sv", weights="1,1").metrics
    assert m["in_sample_warning"] == "" and m["cv_protocol"] == "in-sample"
    assert not (tmp_path / "sv" / "report.md").read_text().startswith("WARNING")
    assert stack([nofold], "softvote", tmp_path / "sv1").metrics["in_sample_warning"] == ""
    # The store says so itself (out_of_fold false: one model on every train row): refused as the
    # store docs say, even where its per-row evidence was left clean.
    said = make_store(tmp_path / "said.h5", y, split, fold, rng.normal(size=(N, 4)), names)
    with h5py.File(said, "r+") as f:
        f.attrs["out_of_fold"] = False
    with pytest.raises(EmofeatError, match=r"store said says its train rows come from one model"):
        stack([paths[0], said], "logreg", tmp_path / "x")


def test_cv_figures_are_nested_or_labelled(tmp_path):
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV, PredefinedSplit

    from emofeat.stack.meta import META_LEARNERS, MetaContext

    paths, y, split = complementary(tmp_path)
    m = stack(paths, "logreg", tmp_path / "n").metrics
    assert m["cv_protocol"] == "nested"
    # The same nested CV by hand: hyperparameters chosen on the other folds only.
    train = np.flatnonzero(split == "train")
    folds = (np.arange(N) % K)[train]
    from emofeat.stack.level1 import load_level1

    with load_level1(paths) as level1:
        X = level1.features("proba")
    spec = META_LEARNERS["logreg"]
    est = spec.build(MetaContext(classes=list(range(4))))
    acc = []
    for k in range(K):
        rest = train[folds != k]
        search = GridSearchCV(clone(est), spec.grid, cv=PredefinedSplit(folds[folds != k]))
        model = search.fit(X[rest], y[rest]).best_estimator_
        held = train[folds == k]
        acc.append(np.mean(model.predict(X[held]) == y[held]))
    assert m["cv"]["accuracy"]["mean"] == pytest.approx(np.mean(acc))
    assert "Nested" in (tmp_path / "n" / "report.md").read_text()
    # Two folds leave no inner folds to choose on: the figures say they are selection-biased.
    two = np.where(split == "train", np.arange(N) % 2, -1)
    rng = np.random.default_rng(0)
    names = [f"class{i}" for i in range(4)]
    p2 = [
        make_store(
            tmp_path / f"two{k}.h5",
            y,
            split,
            two,
            rng.normal(size=(N, 4)) + 3 * np.eye(4)[y],
            names,
        )
        for k in range(2)
    ]
    m2 = stack(p2, "logreg", tmp_path / "t").metrics
    assert m2["cv_protocol"] == "selection-biased"
    assert "Selection-biased" in (tmp_path / "t" / "report.md").read_text()


def test_rows_not_done_are_dropped_and_counted_and_incomplete_refused(tmp_path):
    rng, y, split, fold, _ = world(3)
    done = np.ones(N, bool)
    done[[1, 2, 350]] = False
    names = ["a", "b", "c"]
    a = make_store(tmp_path / "a.h5", y, split, fold, rng.normal(size=(N, 3)), names)
    b = make_store(tmp_path / "b.h5", y, split, fold, rng.normal(size=(N, 3)), names, done=done)
    with pytest.raises(StoreError, match="not complete"):
        stack([a, b], "logreg", tmp_path / "x")
    m = stack([a, b], "logreg", tmp_path / "x", allow_incomplete=True).metrics
    assert m["dropped_rows"] == 3 and m["train_rows"] == 298 and m["test_rows"] == 99


def test_passthrough_and_predict_command(tmp_path):
    paths, y, split = complementary(tmp_path)
    runner = CliRunner()
    args = [
        "stack",
        "--store",
        str(paths[0]),
        "--store",
        str(paths[1]),
        "--meta",
        "logreg",
        "--passthrough",
        "last",
        "--out",
        str(tmp_path / "p"),
    ]
    r = runner.invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "ensemble (logreg)" in r.output
    out = predict(tmp_path / "p", paths, tmp_path / "new.csv")
    new = pd.read_csv(out).set_index("id")
    old = pd.read_csv(tmp_path / "p" / "predictions.csv").set_index("id")
    test = old[old.split == "test"].index
    np.testing.assert_allclose(
        new.loc[test].filter(like="p_").to_numpy(), old.loc[test].filter(like="p_").to_numpy()
    )
    r = runner.invoke(
        main,
        [
            "stack",
            "--store",
            str(paths[0]),
            "--meta",
            "softvote",
            "--passthrough",
            "last",
            "--out",
            str(tmp_path / "q"),
        ],
    )
    assert r.exit_code == 2 and "--passthrough works with logreg and lgbm" in r.output


def test_estimator_contract():
    import pickle

    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.estimator_checks import check_estimator

    rng = np.random.default_rng(0)
    X = np.hstack([softmax(rng.normal(size=(30, 3))) for _ in range(2)])
    labels = np.array(["ang", "hap", "sad"])[np.arange(30) % 3]
    for est in (SoftVote(weights=[1, 2]), Caruana(n_iter=3)):
        assert clone(est).get_params() == est.get_params()
        with pytest.raises(NotFittedError):
            est.predict(X)
        fitted = est.fit(X, labels)  # any label set, not only 0..C-1
        assert fitted is est and list(est.classes_) == ["ang", "hap", "sad"]
        assert est.n_features_in_ == 6 and set(est.predict(X)) <= set(labels)
        again = pickle.loads(pickle.dumps(est))
        np.testing.assert_array_equal(again.predict_proba(X), est.predict_proba(X))
        with pytest.raises(ValueError, match="6 features"):
            est.predict_proba(X[:, :3])
        with pytest.raises(ValueError, match="NaN"):
            est.predict_proba(np.where(np.eye(30, 6, dtype=bool), np.nan, X))
        with pytest.raises(ValueError, match="Negative"):
            est.predict_proba(X - 1)
    # A class absent from a training split keeps its column when ``classes`` is given.
    sv = SoftVote(classes=[0, 1, 2]).fit(X, np.arange(30) % 2)
    assert sv.predict_proba(X).shape == (30, 3)
    with pytest.raises(ValueError, match="whole number"):
        SoftVote(classes=[0, 1, 2]).fit(np.ones((4, 7)), [0, 1, 2, 0])
    for weights in ([np.nan, 1], [np.inf, 1], [-1, 2], [0, 0]):
        with pytest.raises(ValueError, match="finite, non-negative and not all zero"):
            SoftVote(weights=weights).fit(X, labels)
    # The generic checks feed data that are not blocks of class probabilities; only those
    # checks are expected to fail, every other one must pass.
    for est in (SoftVote(), Caruana(n_iter=3)):
        check_estimator(est, expected_failed_checks=BLOCK_INPUT_CHECKS)
    check_estimator(MixerClassifier(epochs=40, d_model=16))


# Checks whose generic data (e.g. 2 features for 3 classes) cannot be M blocks of C class
# probabilities, the voters' input contract; tested above with well-formed input instead.
BLOCK_INPUT_CHECKS = {
    name: "generic data are not whole blocks of class probabilities"
    for name in (
        "check_estimators_overwrite_params",
        "check_estimators_fit_returns_self",
        "check_readonly_memmap_input",
        "check_n_features_in_after_fitting",
        "check_estimators_dtypes",
        "check_dtype_object",
        "check_pipeline_consistency",
        "check_estimators_nan_inf",
        "check_estimators_pickle",
        "check_classifiers_classes",
        "check_classifiers_train",
    )
}


def test_meta_auto_chooses_by_nested_cv_and_touches_test_once(tmp_path):
    """--meta auto fits every candidate, picks the best nested-CV accuracy over the train folds,
    and reports the same test figures as running the chosen meta-learner by hand."""
    import yaml

    paths, _, _ = complementary(tmp_path)
    m = stack(paths, "auto", tmp_path / "auto").metrics
    by_hand = {meta: stack(paths, meta, tmp_path / meta).metrics for meta in AUTO_CANDIDATES}
    cv = {meta: by_hand[meta]["cv"]["accuracy"]["mean"] for meta in AUTO_CANDIDATES}
    best = max(cv.values())
    chosen = m["auto"]["chosen"]
    assert cv[chosen] == best and m["meta"] == chosen
    assert m["auto"]["candidates"][chosen]["mean"] == pytest.approx(best)
    assert m["test"]["ensemble"] == by_hand[chosen]["test"]["ensemble"]
    report = (tmp_path / "auto" / "report.md").read_text()
    assert f"Chosen: **{chosen}**" in report and "optimistic by the choice" in report
    record = yaml.safe_load((tmp_path / "auto" / "config.yaml").read_text())
    assert record["config"]["meta"] == "auto"  # --config re-runs the choice, not its result
    with pytest.raises(EmofeatError, match="--meta auto chooses by CV"):
        stack(paths, "auto", tmp_path / "w", weights="1,1")


def test_base_models_cv_beside_test_equals_a_hand_computation_and_skips_in_sample(tmp_path):
    """The report shows each base model's CV accuracy (its out-of-fold train rows, per fold) beside
    its test accuracy; a store whose train rows are in-sample gets no CV figure."""
    paths, y, split = complementary(tmp_path)
    rng, *_ = world()
    insample = make_store(
        tmp_path / "fitted.h5",
        y,
        split,
        world()[3],
        rng.normal(0, 1, (N, 4)),
        [f"class{i}" for i in range(4)],
        oof=False,
    )
    out = tmp_path / "s"
    stack([*paths, insample], "softvote", out, allow_in_sample=True)
    metrics = json.loads((out / "metrics.json").read_text())
    fold = world()[3]
    from emofeat.store import open_store

    for path in paths:
        with open_store(path) as s:
            lg = s.logits()
        per_fold = [(lg[fold == k].argmax(1) == y[fold == k]).mean() for k in range(K)]
        got = metrics["models_cv"][path.stem]["accuracy"]
        assert got["mean"] == pytest.approx(np.mean(per_fold)) and got["std"] == pytest.approx(
            np.std(per_fold)
        )
    assert "fitted" not in metrics["models_cv"]
    report = (out / "report.md").read_text()
    assert "| m0 | " in report and "CV accuracy (out-of-fold train rows" in report


def test_meta_auto_on_two_folds_says_which_candidates_cv_was_selection_biased(tmp_path):
    """With 2 folds nested CV is impossible: the choice's wording names the candidates whose
    CV chose their hyperparameters on the same folds, instead of calling it nested."""
    rng, y, split, _, _ = world()
    fold = np.where(split == "train", np.arange(N) % 2, -1)
    names = [f"class{i}" for i in range(4)]
    paths = [
        make_store(tmp_path / f"m{k}.h5", y, split, fold, rng.normal(0, 1, (N, 4)), names)
        for k in range(2)
    ]
    m = stack(paths, "auto", tmp_path / "auto").metrics
    by_hand = {meta: stack(paths, meta, tmp_path / meta).metrics for meta in AUTO_CANDIDATES}
    biased = sorted(n for n, r in by_hand.items() if r["cv_protocol"] == "selection-biased")
    assert biased and "nested CV over" not in m["auto"]["by"]
    assert f"selection-biased for {', '.join(biased)}" in m["auto"]["by"]
    assert "by cross-validation (`--meta auto`)" in (tmp_path / "auto" / "report.md").read_text()


def test_test_rows_a_base_model_trained_on_are_never_scored_as_test(tmp_path):
    """A store whose evidence says a model trained on some test rows (a single model run on a
    manifest that moved its train rows to test, say): those rows leave the test figures, the
    report says how many, and predictions call them in-sample — in the stack and in predict."""
    rng, y, split, fold, _ = world()
    names = [f"class{i}" for i in range(4)]
    seen = np.zeros(N, bool)
    seen[np.flatnonzero(split == "test")[:20]] = True
    logits = [rng.normal(0, 1, (N, 4)) for _ in range(2)]
    paths = [
        make_store(tmp_path / "a.h5", y, split, fold, logits[0], names, seen=seen),
        make_store(tmp_path / "b.h5", y, split, fold, logits[1], names),
    ]
    m = stack(paths, "softvote", tmp_path / "sv").metrics
    test = (split == "test") & ~seen
    assert m["test_rows"] == test.sum() and m["test_rows_in_sample"] == 20
    hand = softmax(logits[0].astype(np.float32)) + softmax(logits[1].astype(np.float32))
    assert m["test"]["ensemble"]["accuracy"] == pytest.approx(
        np.mean(hand[test].argmax(1) == y[test])
    )
    assert "20 labelled test row(s) were left out" in (tmp_path / "sv" / "report.md").read_text()
    for frame in (
        pd.read_csv(tmp_path / "sv" / "predictions.csv"),
        pd.read_csv(predict(tmp_path / "sv", paths, tmp_path / "p.csv")),
    ):
        frame = frame.set_index("id")
        ids = [f"u{i:04d}" for i in np.flatnonzero(seen)]
        assert set(frame.loc[ids, "provenance"]) == {"in-sample"}


def test_the_pooled_mixer_shows_its_progress_in_rows(capsys):
    """The pooled-mixer is fitted many times by the hyperparameter search and nested CV, each
    fit minutes long on a real corpus: each shows a progress bar in rows/s."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 8)), rng.integers(0, 3, 64)
    MixerClassifier(epochs=2, batch_size=16).fit(X, y)
    err = capsys.readouterr().err
    assert "pooled-mixer fit" in err and "/128 " in err and "row/s" in err  # 2 epochs x 64


def test_paired_comparisons_equal_an_independent_computation(tmp_path):
    """The report's 'ensemble vs soft vote': the differences, their paired bootstrap intervals
    and McNemar's exact p, recomputed from predictions.csv and the base stores by independent
    code (sklearn with sample weights on the same resamples; the exact binomial by hand)."""
    import math

    from emofeat.metrics import resample_weights

    paths, y, split = complementary(tmp_path)
    res = stack(paths, "lgbm", tmp_path / "l", seed=3)
    paired = res.metrics["test"]["paired"]
    assert set(paired) == {"m0", "m1", "soft vote (equal weights)"}
    pred = pd.read_csv(tmp_path / "l" / "predictions.csv")
    test = pred[pred.split == "test"]
    names = [f"class{i}" for i in range(4)]
    truth = test.label.map(names.index).to_numpy()
    ours = test.predicted.map(names.index).to_numpy()
    logits = []
    for p in paths:
        with open_store(p) as s:
            rows = [int(np.flatnonzero(s.ids == u)[0]) for u in test.id]
            logits.append(s.logits(np.array(rows)).astype(float))
    vote = np.mean([softmax(lg) for lg in logits], axis=0).argmax(1)
    got = paired["soft vote (equal weights)"]
    b = int(((ours == truth) & (vote != truth)).sum())
    c = int(((ours != truth) & (vote == truth)).sum())
    assert (got["mcnemar"]["b"], got["mcnemar"]["c"]) == (b, c)
    k, n = min(b, c), b + c
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    assert got["mcnemar"]["p"] == pytest.approx(p, rel=1e-9)
    assert got["accuracy"]["difference"] == pytest.approx(
        accuracy_score(truth, ours) - accuracy_score(truth, vote)
    )
    weights = resample_weights(len(truth), seed=3)
    for metric, score in (
        ("accuracy", lambda t, q, w: accuracy_score(t, q, sample_weight=w)),
        (
            "macro_f1",
            lambda t, q, w: f1_score(
                t, q, average="macro", sample_weight=w, labels=np.unique(t[w > 0]), zero_division=0
            ),
        ),
    ):
        diffs = [score(truth, ours, w) - score(truth, vote, w) for w in weights]
        np.testing.assert_allclose(
            got[metric]["ci95"], np.percentile(diffs, [2.5, 97.5]), atol=1e-9
        )
    report = (tmp_path / "l" / "report.md").read_text()
    assert "## Paired comparisons on the same 100 test rows" in report
    assert f"| {b} / {c} |" in report


def test_temperatures_are_fitted_on_train_rows_and_never_move_with_test_labels(tmp_path):
    """--calibrate temperature: one temperature per system, fitted on the out-of-fold train
    rows; permuting the test labels in a copy of the stores moves none of them. The calibrated
    ensemble's test ECE equals a hand computation from predictions.csv (15 equal-width bins)."""
    rng, y, split, fold, channel = world(4, 1)
    names = [f"class{i}" for i in range(4)]
    logits = []
    for sees in (0, 1):
        lg = rng.normal(0, 1, (N, 4))
        hit = channel == sees
        lg[hit, y[hit]] += 6.0  # over-confident where right: a temperature has work to do
        logits.append(lg)
    shuffled = y.copy()
    test = split == "test"
    shuffled[test] = rng.permutation(y[test])
    temperatures = []
    for tag, labels in (("a", y), ("b", shuffled)):
        (tmp_path / tag).mkdir()
        paths = [
            make_store(tmp_path / tag / f"m{k}.h5", labels, split, fold, lg, names)
            for k, lg in enumerate(logits)
        ]
        res = stack(paths, "logreg", tmp_path / f"s{tag}", calibrate="temperature")
        block = res.metrics["calibration"]["systems"]
        temperatures.append({k: v["temperature"] for k, v in block.items()})
    assert temperatures[0] == temperatures[1] and set(temperatures[0]) == {"ensemble", "m0", "m1"}
    assert temperatures[0]["m0"] > 1 and temperatures[0]["m1"] > 1  # over-confident: softened
    pred = pd.read_csv(tmp_path / "sa" / "predictions.csv")
    rows = pred[pred.split == "test"]
    p = rows[[f"p_{n}" for n in names]].to_numpy()
    truth = rows.label.map(names.index).to_numpy()
    conf, right = p.max(1), p.argmax(1) == truth
    bins = np.minimum((conf * 15).astype(int), 14)
    ece = sum(
        (bins == b).mean() * abs(right[bins == b].mean() - conf[bins == b].mean())
        for b in range(15)
        if (bins == b).any()
    )
    stack_metrics = json.loads((tmp_path / "sa" / "metrics.json").read_text())
    got = stack_metrics["calibration"]["systems"]["ensemble"]
    assert got["test_scaled"]["ece"] == pytest.approx(ece, abs=1e-9)
    assert stack_metrics["calibration"]["bins"] == 15
    assert (tmp_path / "sa" / "calibration.png").is_file()
    assert "## Calibration (test)" in (tmp_path / "sa" / "report.md").read_text()


def test_compare_pairs_stacks_on_the_same_rows_and_refuses_others(tmp_path):
    """compare --paired: two stacks of one manifest are compared row for row (their McNemar
    counts recomputed from their predictions.csv); stacks of other rows are refused by name."""
    from emofeat.analysis.compare import compare, paired_stacks
    from emofeat.stack.folder import StackFolder

    paths, y, split = complementary(tmp_path)
    stack(paths, "lgbm", tmp_path / "runs" / "lgbm")
    stack(paths, "softvote", tmp_path / "runs" / "sv")
    compare([tmp_path / "runs"], tmp_path / "cmp", paired=True)
    pairs = pd.read_csv(tmp_path / "cmp" / "paired.csv")
    assert len(pairs) == 1 and pairs.rows[0] == 100
    a = pd.read_csv(pairs.a[0] + "/predictions.csv").set_index("id")
    b = pd.read_csv(pairs.b[0] + "/predictions.csv").set_index("id")
    test = a[a.split == "test"].index
    right_a = a.loc[test, "predicted"] == a.loc[test, "label"]
    right_b = b.loc[test, "predicted"] == b.loc[test, "label"]
    assert pairs.mcnemar_b[0] == int((right_a & ~right_b).sum())
    assert pairs.mcnemar_c[0] == int((~right_a & right_b).sum())
    assert (
        "## Paired comparisons on the same test rows"
        in (tmp_path / "cmp" / "compare.md").read_text()
    )
    # Another split of the same utterances: 150 test rows, not the same 100.
    rng, y2, _, _, _ = world(4, 1)
    split2 = np.where(np.arange(N) < 250, "train", "test")
    fold2 = np.where(split2 == "train", np.arange(N) % K, -1)
    names = [f"class{i}" for i in range(4)]
    store = make_store(tmp_path / "o.h5", y2, split2, fold2, rng.normal(0, 1, (N, 4)), names)
    other = stack([store], "lgbm", tmp_path / "other").out
    with pytest.raises(EmofeatError, match="different test rows"):
        paired_stacks([StackFolder(tmp_path / "runs" / "lgbm"), StackFolder(other)])


def test_stores_of_the_same_classes_in_another_order_are_refused_saying_so(tmp_path):
    """Logits are read by index: a store whose label_names hold the same classes in another
    order is refused (never silently mixed), and the message says how to mend it."""
    rng, y, split, fold, _ = world(3)
    names = ["a", "b", "c"]
    first = make_store(tmp_path / "x.h5", y, split, fold, rng.normal(0, 1, (N, 3)), names)
    other = make_store(tmp_path / "y.h5", y, split, fold, rng.normal(0, 1, (N, 3)), names[::-1])
    with pytest.raises(StoreError, match="same classes in another order.*--labels"):
        stack([first, other], "logreg", tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_repeated_comparison_pairs_systems_by_repetition(tmp_path):
    """compare --repeated: three repetitions (stores of other seeds), each holding the same
    stacks; every figure's mean ± std equals one computed from each repetition's metrics.json,
    the paired t-test and the Wilcoxon p equal an independent computation (the t statistic by
    hand, Wilcoxon's exact p by enumerating every sign of the differences); a repetition that
    lacks a stack is refused by name."""
    import itertools

    from scipy.stats import t as student

    from emofeat.analysis.compare import compare, repeated_comparison

    roots = [tmp_path / f"rep{r}" for r in range(3)]
    for r, root in enumerate(roots):
        paths, _, _ = complementary(root, seed=r)
        stack(paths, "lgbm", root / "runs" / "stack-lgbm")
        stack(paths, "softvote", root / "runs" / "stack-softvote")
    runs = [root / "runs" for root in roots]
    compare(runs, tmp_path / "cmp", repeated=True)
    summary = pd.read_csv(tmp_path / "cmp" / "repeated.csv")
    pairs = pd.read_csv(tmp_path / "cmp" / "repeated-pairs.csv")

    def figure(root, system, metric):
        metrics = json.loads((root / "stack-lgbm" / "metrics.json").read_text())
        if system.startswith("stack-"):
            metrics = json.loads((root / system / "metrics.json").read_text())
            return metrics["test"]["ensemble"][metric]
        return metrics["test"]["models"][system][metric]

    systems = {"stack-lgbm", "stack-softvote", "m0", "m1"}
    assert set(summary.system) == systems
    for system in systems:
        values = np.array([figure(root, system, "uar") for root in runs])
        row = summary[(summary.system == system) & (summary.metric == "uar")].iloc[0]
        assert row["mean"] == pytest.approx(values.mean())
        assert row["std"] == pytest.approx(values.std(ddof=1))
    # ensembles against base models and each other; base models are not paired with each other
    assert {(a, b) for a, b in zip(pairs.a, pairs.b)} == {
        ("stack-lgbm", "m0"),
        ("stack-lgbm", "m1"),
        ("stack-lgbm", "stack-softvote"),
        ("stack-softvote", "m0"),
        ("stack-softvote", "m1"),
    }
    row = pairs[(pairs.a == "stack-lgbm") & (pairs.b == "m0") & (pairs.metric == "accuracy")]
    row = row.iloc[0]
    d = np.array([figure(r, "stack-lgbm", "accuracy") - figure(r, "m0", "accuracy") for r in runs])
    t = d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))
    assert row.t == pytest.approx(t)
    assert row.t_p == pytest.approx(2 * student.sf(abs(t), len(d) - 1))
    ranks = pd.Series(np.abs(d)).rank().to_numpy()
    observed = ranks[d > 0].sum()
    sums = [
        sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product((0, 1), repeat=3)
    ]
    extreme = min(observed, ranks.sum() - observed)
    p = min(1.0, 2 * np.mean([s <= extreme for s in sums]))
    assert row.wilcoxon_p == pytest.approx(p)
    assert row.wins == int((d > 0).sum()) and row.losses == int((d < 0).sum())
    assert "Paired across the 3 repetitions" in (tmp_path / "cmp" / "compare.md").read_text()
    import shutil

    shutil.rmtree(runs[2] / "stack-softvote")
    with pytest.raises(EmofeatError, match="stack-softvote"):
        repeated_comparison(runs)
    with pytest.raises(EmofeatError, match="two or more"):
        repeated_comparison(runs[:1])


def test_compare_pairs_stores_with_stacks_on_the_same_test_rows(tmp_path):
    """compare --paired with stores (a run's out-of-fold store): a store against a stack of it
    gives the stack report's own paired figures; the store's row holds its test and held-out
    accuracy, recomputed here from its logits; a frozen encoder's store is refused."""
    from emofeat.analysis.compare import compare

    paths, y, split = complementary(tmp_path)
    result = stack(paths, "lgbm", tmp_path / "runs" / "lgbm")
    table = compare([tmp_path / "runs", paths[0], paths[1]], tmp_path / "cmp", paired=True)
    pairs = pd.read_csv(tmp_path / "cmp" / "paired.csv")
    row = pairs[(pairs.a == str(tmp_path / "runs" / "lgbm")) & (pairs.b == str(paths[0]))]
    own = result.metrics["test"]["paired"]["m0"]
    assert row.accuracy.iloc[0] == pytest.approx(own["accuracy"]["difference"])
    assert (row.mcnemar_b.iloc[0], row.mcnemar_c.iloc[0]) == (
        own["mcnemar"]["b"],
        own["mcnemar"]["c"],
    )
    with h5py.File(paths[0]) as f:
        pred = f["logits"][:].argmax(1)
    store = table[table.path == str(paths[0])].iloc[0]
    test, train = split == "test", split == "train"
    assert store.test_accuracy == pytest.approx((pred[test] == y[test]).mean())
    assert store.heldout_accuracy == pytest.approx((pred[train] == y[train]).mean())
    frozen = make_store(
        tmp_path / "frozen.h5", y, split, np.where(train, np.arange(N) % K, -1),
        np.zeros((N, 4)), [f"class{i}" for i in range(4)],
    )  # fmt: skip
    with h5py.File(frozen, "a") as f:
        del f["logits"]
    with pytest.raises(EmofeatError, match="no predictions to compare"):
        compare([paths[0], frozen], paired=True)
