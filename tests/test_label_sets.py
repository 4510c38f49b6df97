"""Label sets are data: a corpus of four classes of its own goes through every command with
four-class heads, stores, figures and reports; label maps rename, merge and drop; stores of
different label sets are never stacked together."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import recordings_csv
from sklearn.metrics import f1_score, recall_score

from emofeat.cli import main
from emofeat.corpus.labels import KEMDY
from emofeat.corpus.manifest import read_manifest
from emofeat.encoders.source import HEAD_CONFIG
from emofeat.errors import EmofeatError, LabelError
from emofeat.store import open_store

CLASSES = ["frustrated", "happy", "neutral", "sad"]


def run(*args: str) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    """A generic CSV corpus of four classes (six sessions), prepared and fine-tuned by the CLI:
    a tiny KoBERT and a tiny wav2vec2, two folds each, extracted and stacked."""
    from emofeat.testing.tiny import build_tiny_kobert, build_tiny_wav2vec2

    root = tmp_path_factory.mktemp("four")
    run("data", "synth", "--out", root / "c", "--sessions", 0, "--aihub", 0, "--csv", 240,
        "--classes", ",".join(CLASSES))  # fmt: skip
    run("data", "prepare", "--csv", root / "c/own/corpus.csv", "--out", root / "m.csv",
        "--folds", 2)  # fmt: skip
    m = read_manifest(root / "m.csv")
    kobert = build_tiny_kobert(root / "kobert", list(m.frame["text"]), hidden=32)
    w2v = build_tiny_wav2vec2(root / "w2v", hidden=32, conv_dim=16)
    run("finetune", "--manifest", root / "m.csv", "--preset", "kobert-tiny", "--model", "kobert",
        "--model-path", kobert, "--out", root / "runs/kobert")  # fmt: skip
    run("finetune", "--manifest", root / "m.csv", "--preset", "wav2vec2-tiny", "--model", w2v,
        "--out", root / "runs/w2v")  # fmt: skip
    for name in ("kobert", "w2v"):
        run("extract", "--manifest", root / "m.csv", "--run", root / "runs" / name,
            "--out", root / f"stores/{name}.h5")  # fmt: skip
    run("stack", "--store", root / "stores/kobert.h5", "--store", root / "stores/w2v.h5",
        "--meta", "lgbm",
        "--out", root / "stack")  # fmt: skip
    return root, m, kobert


def test_a_four_class_corpus_goes_through_every_command(four, tmp_path):
    root, m, _ = four
    assert m.label_names == CLASSES  # the CSV's labels, sorted
    stats = run("data", "stats", root / "m.csv", "--plot", tmp_path / "plots")
    header = stats.splitlines()[0].split()
    assert [c for c in header if c in CLASSES + list(KEMDY.names)] == CLASSES
    counts = pd.read_csv(tmp_path / "plots" / "class_counts.csv")
    assert sorted(set(counts["class"])) == CLASSES
    for name in ("kobert", "w2v"):
        config = (root / "runs" / name / "config.yaml").read_text()
        assert all(c in config for c in CLASSES) and "angry" not in config
        fold = root / "runs" / name / "fold-0"
        head = json.loads((fold / ("config.json" if name == "kobert" else HEAD_CONFIG)).read_text())
        names = head["id2label"].values() if name == "kobert" else head["label_names"]
        assert list(names) == CLASSES  # the head has the corpus's classes, in its order
        with open_store(root / "stores" / f"{name}.h5") as s:
            assert s.label_names == CLASSES and s.logits().shape == (len(m), 4)
            np.testing.assert_array_equal(s.labels, m.label_indices)
    metrics = json.loads((root / "stack" / "metrics.json").read_text())
    pred = pd.read_csv(root / "stack" / "predictions.csv")
    test = pred[pred.split == "test"]
    ensemble = metrics["test"]["ensemble"]
    assert ensemble["macro_f1"] == pytest.approx(
        f1_score(test.label, test.predicted, average="macro", labels=sorted(set(test.label)))
    )
    assert ensemble["uar"] == pytest.approx(
        recall_score(test.label, test.predicted, average="macro", labels=sorted(set(test.label)))
    )
    assert [c for c in pred.columns if c.startswith("p_")] == [f"p_{c}" for c in CLASSES]
    assert np.asarray(metrics["test"]["confusion"]).shape == (4, 4)
    report = (root / "stack" / "report.md").read_text()
    assert "| frustrated |" in report and "angry" not in report
    # New recordings: infer scores them in the stack's four classes.
    recordings_csv(m, np.flatnonzero(m.split == "test")[:4], tmp_path / "new.csv", labels=True)
    run("infer", "--stack", root / "stack", "--csv", tmp_path / "new.csv",
        "--out", tmp_path / "p.csv")  # fmt: skip
    got = pd.read_csv(tmp_path / "p.csv")
    assert [c for c in got.columns if c.startswith("p_")] == [f"p_{c}" for c in CLASSES]
    assert set(got.predicted) <= set(CLASSES)


def test_stores_of_two_label_sets_are_never_stacked(four, tmp_path):
    """The same rows prepared with KEMDy's seven classes (frustrated mapped to angry): its store
    and a four-class store are refused together, naming both label sets; a four-class run is not
    extracted with the seven-class manifest."""
    from emofeat.stack.ensemble import stack

    root, m, kobert = four
    (tmp_path / "map.yaml").write_text("frustrated: angry\n")
    run("data", "prepare", "--csv", root / "c/own/corpus.csv", "--out", tmp_path / "seven.csv",
        "--folds", 2, "--label-map", tmp_path / "map.yaml",
        "--labels", ",".join(KEMDY.names))  # fmt: skip
    seven = read_manifest(tmp_path / "seven.csv")
    assert seven.label_set == KEMDY and list(seven.ids) == list(m.ids)
    assert seven.frame["raw_label"].tolist() == m.frame["label"].tolist()
    run("extract", "--manifest", tmp_path / "seven.csv", "--model", kobert,
        "--out", tmp_path / "frozen.h5")  # fmt: skip
    with pytest.raises(EmofeatError, match=r"label_names differ: \['frustrated'.*\['angry'"):
        stack([root / "stores/kobert.h5", tmp_path / "frozen.h5"], "pooled-mixer", tmp_path / "s")
    assert not (tmp_path / "s").exists()
    with pytest.raises(
        EmofeatError,
        match=r"embeddings. Make it a base model with a cross-fitted head over its layers",
    ):
        stack([tmp_path / "frozen.h5"], "lgbm", tmp_path / "s")  # no logits: says what works
    result = CliRunner().invoke(
        main,
        ["extract", "--manifest", str(tmp_path / "seven.csv"), "--run", str(root / "runs/kobert"),
         "--out", str(tmp_path / "x.h5")],
    )  # fmt: skip
    assert result.exit_code == 2 and "trained on the classes ['frustrated'" in result.output
    assert not (tmp_path / "x.h5").exists()


def test_label_maps_rename_merge_and_drop(four, tmp_path):
    """``--label-map`` (YAML or EmoBox's JSON): renamed and merged labels form the set; a label
    mapped to null leaves its row unlabelled (kept for extraction, out of training and figures),
    counted in the report; the sidecar says how each corpus's labels mapped."""
    from emofeat.corpus.prepare import prepare
    from emofeat.extract.config import ExtractConfig
    from emofeat.extract.run import extract
    from emofeat.stack.ensemble import stack

    root, m, kobert = four
    (tmp_path / "map.json").write_text(
        json.dumps(
            {"Frustrated": "negative", "sad": "negative", "happy": "positive", "neutral": None}
        )  # fmt: skip
    )
    out, report = prepare(
        tmp_path / "m.csv", csv=root / "c/own/corpus.csv", folds=2, label_map=tmp_path / "map.json"
    )
    assert out.label_names == ["negative", "positive"]
    neutral = (m.frame["label"] == "neutral").to_numpy()
    assert report["labels"]["unlabelled_by_map"] == int(neutral.sum()) > 0
    assert (out.label_indices[neutral] == -1).all() and (out.label_indices[~neutral] >= 0).all()
    assert len(out) == len(m)  # unlabelled rows stay: extraction still computes them
    store = extract(tmp_path / "m.csv", tmp_path / "two.h5", ExtractConfig(model=str(kobert)))
    with open_store(store) as s:
        assert s.done.all() and s.label_names == ["negative", "positive"]
    metrics = stack([store], "pooled-mixer", tmp_path / "stack").metrics
    assert metrics["unlabelled_rows"] == int(neutral.sum())
    assert metrics["train_rows"] + metrics["test_rows"] == int((~neutral).sum())
    report = (tmp_path / "stack" / "report.md").read_text()
    assert f"{int(neutral.sum())} row(s) without a label were predicted" in report
    side = (tmp_path / "m.yaml").read_text()
    assert "label_maps" in side and "frustrated: negative" in side and "neutral: null" in side
    # --labels orders the set, and must cover every label rows hold.
    again, _ = prepare(tmp_path / "o.csv", csv=root / "c/own/corpus.csv", folds=2,
                       label_map=tmp_path / "map.json", labels="positive,negative")  # fmt: skip
    assert again.label_names == ["positive", "negative"]
    with pytest.raises(LabelError, match=r"lacks the label\(s\) \['negative'\]"):
        prepare(tmp_path / "p.csv", csv=root / "c/own/corpus.csv", folds=2,
                label_map=tmp_path / "map.json", labels="positive")  # fmt: skip
    (tmp_path / "bad.yaml").write_text("- happy\n- sad\n")
    with pytest.raises(LabelError, match="bad.yaml: a label map is a mapping"):
        prepare(tmp_path / "q.csv", csv=root / "c/own/corpus.csv", label_map=tmp_path / "bad.yaml")
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "q.csv").exists()


def test_a_corpus_combined_with_kemdy20_joins_its_classes(corpus_dir, tmp_path):
    """KEMDy20 declares its seven classes; a CSV's ``disgust`` joins ``disqust`` and its own
    labels extend the set, which the sidecar records with each corpus's mapping."""
    from emofeat.corpus.prepare import prepare

    kemdy20 = corpus_dir / "KEMDy20_v1_1"
    wav = next(kemdy20.glob("wav/*/*.wav"))
    (tmp_path / "mine.csv").write_text(
        "id,audio_path,text,label,session\n"
        + "".join(
            f"x{i},{wav},안녕,{lab},s{i % 3}\n"
            for i, lab in enumerate(["Disgust", "bored", "happy"] * 4)
        ),  # fmt: skip
        encoding="utf-8",
    )
    m, _ = prepare(tmp_path / "m.csv", kemdy20=kemdy20, csv=tmp_path / "mine.csv", folds=2)
    assert m.label_names == sorted([*KEMDY.names, "bored"])
    mine = m.frame[m.frame.corpus == "mine"]
    assert set(mine.label) == {"disqust", "bored", "happy"}


def _emobox_replica(four, data, folds):
    """An EmoBox corpus folder of the four-class rows, as EmoBox writes them: single-letter
    codes and a label_map.json; audio under downloads/ (paths relative to the checkout);
    ``folds`` leave-sessions-out folds, or 1 (an official train/test split)."""
    import shutil

    root, m, _ = four
    codes = {c: c[0] for c in CLASSES}
    base = data / "own"
    base.mkdir(parents=True)
    (base / "label_map.json").write_text(
        json.dumps({v: k.capitalize() for k, v in codes.items()}, indent=4)
    )
    sessions = sorted(set(m.frame.session))
    held = {s: 1 + i % folds for i, s in enumerate(sessions)}
    lines = {}
    for i, row in m.frame.iterrows():
        wav = data.parent / "downloads" / "own" / f"{row.id}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(m.audio_path(i), wav)
        rec = {"key": row.id, "dataset": "own", "wav": f"downloads/own/{row.id}.wav",
               "type": "raw", "sample_rate": 16000, "num_frame": 1, "task": "category",
               "length": 1.0, "emo": codes[row.label], "channel": 1}  # fmt: skip
        lines[row.id] = (json.dumps(rec), held[row.session], row.split)
    for k in range(1, folds + 1):
        (base / f"fold_{k}").mkdir()
        for part in ("train", "test"):
            if folds > 1:
                keep = [t for t, f, _ in lines.values() if (f == k) == (part == "test")]
            else:
                keep = [t for t, _, s in lines.values() if s == part]
            (base / f"fold_{k}" / f"own_{part}_fold_{k}.jsonl").write_text(
                "".join(t + "\n" for t in keep)
            )
    return held


def test_an_corpus_becomes_a_manifest_with_its_folds_and_back(four, tmp_path):
    """EmoBox's folds (each row tested once) become the manifest's cross-fitting folds, its
    label map its classes; a one-fold corpus keeps its official test split. Exported in EmoBox's
    format and read back, the rows, labels and folds are the same."""
    from emofeat.corpus.emobox import export_emobox
    from emofeat.corpus.prepare import prepare

    root, m, _ = four
    held = _emobox_replica(four, tmp_path / "emobox" / "data", folds=3)
    with pytest.raises(
        EmofeatError, match="comes with 3 folds of its own protocol; pass --folds 3"
    ):
        prepare(tmp_path / "x.csv", emobox=tmp_path / "emobox/data", corpus="own")
    out = run("data", "prepare", "--emobox", tmp_path / "emobox/data", "--corpus", "own",
              "--folds", 3, "--out", tmp_path / "e.csv")  # fmt: skip
    assert "classes: frustrated, happy, neutral, sad" in out
    e = read_manifest(tmp_path / "e.csv").frame.set_index("id")
    truth = m.frame.set_index("id").loc[e.index]
    assert (e.label == truth.label).all() and (e.split == "train").all()
    assert (e.fold == truth.session.map(held) - 1).all()  # fold K of EmoBox is fold K-1
    assert (e.text == "").all()
    # Back to EmoBox's format, and read again: the same rows, labels and folds.
    folder = export_emobox(read_manifest(tmp_path / "e.csv"), tmp_path / "out")
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["fold_1", "fold_2", "fold_3"]
    again, _ = prepare(tmp_path / "again.csv", emobox=tmp_path / "out",
                       corpus="own", folds=3)  # fmt: skip
    pd.testing.assert_frame_equal(
        again.frame.set_index("id").loc[e.index, ["label", "split", "fold"]],
        e[["label", "split", "fold"]],
    )
    # One fold: EmoBox's test file is the test split; emofeat folds the train rows.
    _emobox_replica(four, tmp_path / "one" / "data", folds=1)
    one, report = prepare(tmp_path / "one.csv", emobox=tmp_path / "one/data",
                          corpus="own", folds=2)  # fmt: skip
    f = one.frame.set_index("id")
    assert (f.split == m.frame.set_index("id").loc[f.index, "split"]).all()
    assert one.num_folds == 2 and report["emobox"]["folds"] == 1
    export_emobox(one, tmp_path / "one-out")
    test_file = tmp_path / "one-out/own/fold_1/own_test_fold_1.jsonl"
    keys = {json.loads(line)["key"] for line in test_file.read_text().splitlines()}
    assert keys == set(f.index[f.split == "test"])


def test_emobox_folders_that_break_its_rules_are_named(four, tmp_path):
    from emofeat.corpus.prepare import prepare

    _emobox_replica(four, tmp_path / "data", folds=2)
    with pytest.raises(EmofeatError, match="no such EmoBox corpus.*its corpora: own"):
        prepare(tmp_path / "x.csv", emobox=tmp_path / "data", corpus="iemocap")
    test = tmp_path / "data/own/fold_2/own_test_fold_2.jsonl"
    first = test.read_text().splitlines()[0]
    (tmp_path / "data/own/fold_1/own_test_fold_1.jsonl").open("a").write(first + "\n")
    with pytest.raises(EmofeatError, match="is tested by fold 1 too"):
        prepare(tmp_path / "x.csv", emobox=tmp_path / "data", corpus="own", folds=2)
    test.write_text("not json\n")
    with pytest.raises(EmofeatError, match="own_test_fold_2.jsonl line 1: not JSON"):
        prepare(tmp_path / "x.csv", emobox=tmp_path / "data", corpus="own", folds=2)
    assert not (tmp_path / "x.csv").exists()
