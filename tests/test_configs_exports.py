"""For a paper: saved configs re-run, numbers with their spread, readable outputs, exports."""

import json
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from emofeat.cli import main
from emofeat.errors import EmofeatError, StoreError
from emofeat.store import StoreLayout, create_store, export_store, load_aligned, open_store


def cli(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.output


def test_each_commands_record_re_runs_it(manifest_path, corpus_dir, tiny_kobert, tmp_path):
    # data prepare: the manifest's sidecar re-prepares the same manifest.
    out = tmp_path / "m.csv"
    cli(
        "data",
        "prepare",
        "--kemdy20",
        corpus_dir / "KEMDy20_v1_1",
        "--folds",
        2,
        "--seed",
        3,
        "--out",
        out,
    )
    first = out.read_bytes()
    out.unlink()
    cli("data", "prepare", "--config", tmp_path / "m.yaml")
    assert out.read_bytes() == first
    # finetune: the run's config.yaml resumes the run (nothing retrained, nothing refused).
    run = tmp_path / "run"
    args = ["--model", "kobert", "--model-path", tiny_kobert, "--preset", "kobert-tiny"]
    cli("finetune", *args, "--folds", 0, "--epochs", 1, "--manifest", out, "--out", run)
    stamp = (run / "fold-all" / "metrics.json").stat().st_mtime_ns
    text = cli("finetune", "--config", run / "config.yaml")
    assert "already trained" in text
    assert (run / "fold-all" / "metrics.json").stat().st_mtime_ns == stamp
    # A flag overrides the file: another dropout is another run, refused in the same folder.
    r = CliRunner().invoke(
        main, ["finetune", "--config", str(run / "config.yaml"), "--dropout", "0.4"]
    )
    assert r.exit_code == 2 and "made with other options or inputs (dropout)" in r.output
    # extract: store/x.yaml re-runs the extraction (the store is complete: nothing recomputed).
    store = tmp_path / "s.h5"
    cli("extract", "--run", run, "--manifest", out, "--out", store, "--layers", "all")
    with open_store(store) as s:
        values = s.embeddings("layer_01")
    cli("extract", "--config", tmp_path / "s.yaml")  # resumes: every row is done already
    with open_store(store) as s:
        assert s.complete and s.layout.aliases == {"last": "layer_02"}
        np.testing.assert_array_equal(s.embeddings("layer_01"), values)
    recorded = yaml.safe_load((tmp_path / "s.yaml").read_text())["config"]
    assert recorded["layers"] == "all" and recorded["run"] == str(run)


def test_a_failed_finetune_leaves_nothing_that_blocks_the_corrected_command(
    manifest_path, tiny_kobert, tmp_path
):
    run = tmp_path / "run"
    r = CliRunner().invoke(
        main,
        [
            "finetune",
            "--model",
            "kobert",
            "--model-path",
            str(tmp_path / "missing"),
            "--manifest",
            str(manifest_path),
            "--out",
            str(run),
            "--folds",
            "0",
            "--epochs",
            "1",
        ],
    )
    assert r.exit_code == 2 and not run.exists()
    cli(
        "finetune",
        "--model",
        "kobert",
        "--model-path",
        tiny_kobert,
        "--preset",
        "kobert-tiny",
        "--manifest",
        manifest_path,
        "--out",
        run,
        "--folds",
        0,
        "--epochs",
        1,
    )


def _stores(tmp_path, n=90):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    split = np.where(np.arange(n) < 60, "train", "test")
    fold = np.where(split == "train", np.arange(n) % 3, -1)
    paths = []
    for k in range(2):
        order = rng.permutation(n) if k else np.arange(n)  # the second store in another order
        path = tmp_path / f"m{k}.h5"
        w = create_store(
            path,
            StoreLayout(
                ids=[f"u{i}" for i in order],
                labels=y[order],
                split=split[order],
                fold=fold[order],
                label_names=["a", "b", "c"],
                embeddings={"last": 5},
                in_sample=np.zeros(n, bool),
            ),
        )
        w.write(
            np.arange(n),
            logits=(rng.normal(size=(n, 3)) + 2 * np.eye(3)[y])[order],
            embeddings={"last": (np.arange(n)[:, None] + np.arange(5) / 10)[order]},
        )
        w.finalize()
        paths.append(path)
    return paths, y


def test_stack_record_reruns_and_outputs_are_readable(tmp_path):
    paths, _ = _stores(tmp_path)
    old = os.umask(0o022)
    try:
        cli(
            "stack",
            *sum((["--store", p] for p in paths), []),
            "--meta",
            "softvote",
            "--weights",
            "1/3,2/3",
            "--out",
            tmp_path / "st",
        )
    finally:
        os.umask(old)
    first = json.loads((tmp_path / "st" / "metrics.json").read_text())
    cli("stack", "--config", tmp_path / "st" / "config.yaml")  # --out: the record's folder
    again = json.loads((tmp_path / "st" / "metrics.json").read_text())
    assert again["test"]["ensemble"] == first["test"]["ensemble"]
    assert again["weights"] == pytest.approx({"m0": 1 / 3, "m1": 2 / 3})
    for name in ("metrics.json", "report.md", "model.joblib", "predictions.csv"):
        assert stat.S_IMODE((tmp_path / "st" / name).stat().st_mode) == 0o644, name
    record = yaml.safe_load((tmp_path / "st" / "config.yaml").read_text())
    env = record["environment"]
    assert env["torch"] and env["transformers"] and "git_commit" in env
    assert first["inputs"] == [
        {"store": "m0", "input": "proba", "columns": 3},
        {"store": "m1", "input": "proba", "columns": 3},
    ]
    assert (
        "Inputs: m0: proba (3 columns); m1: proba (3 columns)."
        in (tmp_path / "st" / "report.md").read_text()
    )


def test_verbose_after_the_subcommand(tmp_path):
    r = CliRunner().invoke(main, ["store", "inspect", str(tmp_path / "none.h5"), "-v"])
    assert r.exception is not None and "no such store" in str(r.exception)  # the traceback
    r = CliRunner().invoke(main, ["store", "inspect", str(tmp_path / "none.h5")])
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_run_summary_has_the_spread_over_folds(kobert_run):
    m = json.loads((kobert_run / "metrics.json").read_text())
    acc = [f["accuracy"] for f in m["folds"].values()]
    assert m["summary"]["accuracy"]["mean"] == pytest.approx(np.mean(acc))
    assert m["summary"]["accuracy"]["std"] == pytest.approx(np.std(acc))
    assert "uar" in m["summary"] and (kobert_run / "training_curves.png").stat().st_size > 5000
    assert all(f["kept"] == "final" and f["kept_epoch"] == 2.0 for f in m["folds"].values())


def test_exports_and_aligned_loading(tmp_path):
    paths, y = _stores(tmp_path)
    (x0, x1), labels, ids = load_aligned(paths, embedding="last")
    assert list(ids) == [f"u{i}" for i in range(len(y))]
    np.testing.assert_array_equal(x0, x1)  # aligned by id although stored in another order
    np.testing.assert_array_equal(labels, y)
    (t0, _), _, tids = load_aligned(paths, split="test")
    assert len(t0) == 30 and all(int(u[1:]) >= 60 for u in tids)
    with open_store(paths[1]) as s:
        x, yy, sid = s.to_numpy("last", s.select(split="train"), return_ids=True)
        assert len(x) == len(yy) == len(sid) == 60
        np.testing.assert_array_equal(x[:, 0], [int(u[1:]) for u in sid])
        frame = s.to_pandas("last", array_columns=True)
        assert list(frame.columns[-2:]) == ["logits", "last"] and frame["last"].iloc[0].shape == (
            5,
        )
    export_store(paths[1], tmp_path / "m1.npz")
    data = np.load(tmp_path / "m1.npz")
    order = np.argsort(data["ids"])
    with open_store(paths[1]) as s:
        np.testing.assert_array_equal(data["embeddings/last"], s.embeddings("last"))
        assert list(data["ids"]) == list(s.ids)
    try:
        import pyarrow  # noqa: F401
    except ImportError:  # an optional extra: without it, a message that says how to get it
        with pytest.raises(StoreError, match=r"needs pyarrow: pip install 'emofeat\[parquet\]'"):
            export_store(paths[1], tmp_path / "m1.parquet", format="parquet")
        return
    export_store(paths[1], tmp_path / "m1.parquet", format="parquet")
    back = pd.read_parquet(tmp_path / "m1.parquet")
    assert len(back) == len(order) and back["last"].iloc[0].shape == (5,)


def test_probe_scores_equal_a_hand_made_cv_on_the_same_folds(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import PredefinedSplit, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from emofeat.analysis.probe import best_layer, probe_layers

    rng = np.random.default_rng(0)
    n, d = 150, 6
    y = rng.integers(0, 3, n)
    split = np.where(np.arange(n) < 120, "train", "test")
    fold = np.where(split == "train", np.arange(n) % 3, -1)
    # Layer 2 carries the label best, layer 0 not at all.
    layers = {i: rng.normal(size=(n, d)) + i * 0.8 * np.eye(3, d)[y] for i in range(3)}
    w = create_store(
        tmp_path / "all.h5",
        StoreLayout(
            ids=[f"u{i}" for i in range(n)],
            labels=y,
            split=split,
            fold=fold,
            label_names=["a", "b", "c"],
            embeddings={f"layer_{i:02d}": d for i in layers},
            logits=False,
            aliases={"last": "layer_02"},
        ),
    )
    w.write(np.arange(n), embeddings={f"layer_{i:02d}": x for i, x in layers.items()})
    w.finalize()
    table = probe_layers(tmp_path / "all.h5", tmp_path / "probe", weighted=True)
    train = split == "train"
    for i, x in layers.items():
        hand = cross_val_score(
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)),
            x[train],
            y[train],
            cv=PredefinedSplit(fold[train]),
            scoring="accuracy",
        )
        got = table[(table.name == f"layer_{i:02d}") & (table.metric == "accuracy")].iloc[0]
        assert got["mean"] == pytest.approx(hand.mean()) and got["std"] == pytest.approx(hand.std())
    assert best_layer(table) == "layer_02"
    weights = table[table.metric == "weight"]
    assert weights["mean"].sum() == pytest.approx(1.0) and len(weights) == 3
    assert (tmp_path / "probe" / "probe.png").stat().st_size > 5000
    assert set(pd.read_csv(tmp_path / "probe" / "probe.csv").name) == {
        "layer_00",
        "layer_01",
        "layer_02",
        "weighted",
    }


def test_probe_compares_models_on_the_same_rows_and_folds(tmp_path):
    """Two models' stores, the second with four layers and its rows in another order: each
    model's scores equal a hand-made CV on its own layers over the first store's folds; a store
    with another fold assignment is refused."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import PredefinedSplit, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from emofeat.analysis.probe import best_layer, probe_layers

    rng = np.random.default_rng(1)
    n, d = 120, 5
    y = rng.integers(0, 3, n)
    split = np.where(np.arange(n) < 90, "train", "test")
    fold = np.where(split == "train", np.arange(n) % 3, -1)
    ids = np.array([f"u{i}" for i in range(n)])

    def store(path, layers, order, folds=fold):
        w = create_store(
            path,
            StoreLayout(
                ids=list(ids[order]),
                labels=y[order],
                split=split[order],
                fold=folds[order],
                label_names=["a", "b", "c"],
                embeddings={f"layer_{i:02d}": d for i in layers},
                logits=False,
            ),
        )
        w.write(np.arange(n), embeddings={f"layer_{i:02d}": x[order] for i, x in layers.items()})
        w.finalize()
        return path

    small = {i: rng.normal(size=(n, d)) + i * 0.9 * np.eye(3, d)[y] for i in range(2)}
    deep = {i: rng.normal(size=(n, d)) + (i == 2) * 1.5 * np.eye(3, d)[y] for i in range(4)}
    a = store(tmp_path / "small.h5", small, np.arange(n))
    b = store(tmp_path / "deep.h5", deep, rng.permutation(n))
    table = probe_layers([a, b], tmp_path / "probe")
    train = split == "train"
    for model, layers in (("small", small), ("deep", deep)):
        for i, x in layers.items():
            hand = cross_val_score(
                make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)),
                x[train],
                y[train],
                cv=PredefinedSplit(fold[train]),
            )
            got = table[
                (table.model == model)
                & (table.name == f"layer_{i:02d}")
                & (table.metric == "accuracy")
            ].iloc[0]
            assert got["mean"] == pytest.approx(hand.mean())
    assert best_layer(table, model="deep") == "layer_02"
    assert best_layer(table, model="small") == "layer_01"
    md = (tmp_path / "probe" / "probe.md").read_text()
    assert "| layer | small | deep |" in md and "| 3 | - |" in md  # small has no layer 3
    assert (tmp_path / "probe" / "probe.png").stat().st_size > 5000
    other = store(
        tmp_path / "other.h5",
        small,
        np.arange(n),
        folds=np.where(train, (np.arange(n) + 1) % 3, -1),
    )
    with pytest.raises(EmofeatError, match="fold"):
        probe_layers([a, other], tmp_path / "refused")


def test_compare_table_equals_the_stacks_metrics_and_summarises_seeds(tmp_path):
    paths, _ = _stores(tmp_path)
    for seed in (0, 1):
        cli(
            "stack",
            "--store",
            paths[0],
            "--store",
            paths[1],
            "--meta",
            "caruana",
            "--seed",
            seed,
            "--out",
            tmp_path / "stacks" / f"caruana-s{seed}",
        )
    cli(
        "stack",
        "--store",
        paths[0],
        "--store",
        paths[1],
        "--meta",
        "softvote",
        "--out",
        tmp_path / "stacks" / "softvote",
    )
    text = cli("compare", tmp_path / "stacks", "-o", tmp_path / "cmp")
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    singles = table[~table.path.str.contains("seeds")]
    assert len(singles) == 3
    for _, row in singles.iterrows():
        m = json.loads((Path(row.path) / "metrics.json").read_text())
        assert row.test_accuracy == pytest.approx(m["test"]["ensemble"]["accuracy"])
        assert row.cv_accuracy == pytest.approx(m["cv"]["accuracy"]["mean"])
    both = table[table.path == "2 seeds"].iloc[0]
    accs = singles[singles.configuration == both.configuration].test_accuracy
    assert both.test_accuracy == pytest.approx(accs.mean())
    assert both.test_accuracy_seed_std == pytest.approx(accs.std(ddof=0))
    assert f"{accs.mean():.4f} ± {accs.std(ddof=0):.4f}" in text  # the markdown shows the spread
    assert "| path |" in text and (tmp_path / "cmp" / "compare.md").is_file()


def test_each_warning_once_per_command():
    import logging
    import uuid
    import warnings

    from emofeat.finetune.run import quiet_repeats

    note = f"mtime may not be reliable ({uuid.uuid4()})"  # new to Python's once-registry
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    hf = logging.getLogger("transformers")
    hf.addHandler(handler)
    level = hf.level
    hf.setLevel(logging.WARNING)  # other tests may have quietened transformers
    try:
        with quiet_repeats(), warnings.catch_warnings(record=True) as caught:
            for _ in range(3):  # one message per fold, as transformers logs a new head
                logging.getLogger("transformers.modeling_utils").warning("new head: classifier")
                warnings.warn(note, UserWarning, stacklevel=1)
            logging.getLogger("transformers.modeling_utils").warning("another message")
    finally:
        hf.removeHandler(handler)
        hf.setLevel(level)
    assert [r.getMessage() for r in records] == ["new head: classifier", "another message"]
    assert len(caught) == 1


def test_warnings_stay_once_when_a_library_resets_the_registry():
    """Libraries enter warnings.catch_warnings() between two of their warnings (which resets
    Python's once-registry): the repeat is still dropped."""
    import uuid
    import warnings

    from emofeat.finetune.run import quiet_repeats

    note = f"mtime may not be reliable ({uuid.uuid4()})"
    shown = []
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *args, **kwargs: shown.append(str(message))
        with quiet_repeats():
            for _ in range(3):
                with warnings.catch_warnings():  # what a library call in between does
                    pass
                warnings.warn(note, UserWarning, stacklevel=1)
    assert shown.count(note) == 1


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_weights_and_folders_written_whole_honour_the_umask(mask, tmp_path):
    """safetensors writes its files 0600 whatever the umask; every file a folder written whole
    holds (a fold model, MMM's, a stack) gets the modes the umask allows."""
    from safetensors.numpy import save_file

    from emofeat.atomic import atomic_folder

    old = os.umask(mask)
    try:
        with atomic_folder(tmp_path / "fold-0") as tmp:
            save_file({"w": np.zeros(2, np.float32)}, tmp / "model.safetensors")
            (tmp / "sub").mkdir()
            (tmp / "sub" / "head.json").write_text("{}")
    finally:
        os.umask(old)
    modes = {
        p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode)
        for p in [tmp_path / "fold-0", *(tmp_path / "fold-0").rglob("*")]
    }
    files, folders = 0o666 & ~mask, 0o777 & ~mask
    assert modes == {
        "fold-0": folders,
        "fold-0/model.safetensors": files,
        "fold-0/sub": folders,
        "fold-0/sub/head.json": files,
    }


def test_a_fold_models_weights_are_readable_by_the_group_under_umask_022(kobert_run):
    mask = os.umask(0)
    os.umask(mask)
    if mask != 0o022:
        pytest.skip(f"the session's fixtures were written under umask {mask:o}")
    assert stat.S_IMODE((kobert_run / "fold-0" / "model.safetensors").stat().st_mode) == 0o644
