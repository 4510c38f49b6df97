import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from emofeat.cli import main
from emofeat.corpus.manifest import read_manifest, write_manifest
from emofeat.corpus.prepare import prepare
from emofeat.errors import CorpusError, ManifestError


def test_emo_ensemble_split_equals_reference_computation(manifest, corpus_dir):
    # Independent: the reference split the sorted list of annotation *files*.
    files = sorted(p.name for p in (corpus_dir / "KEMDy20_v1_1" / "annotation").glob("*.csv"))
    _, test_files = train_test_split(files, test_size=0.2, random_state=42)
    expected = {f.split("_")[0] for f in test_files}
    f = manifest.frame
    kem = f[f.corpus == "kemdy20"]
    assert set(kem.loc[kem.split == "test", "session"]) == expected
    assert not set(kem.loc[kem.split == "train", "session"]) & expected

    # AI Hub: the CSV rows shuffled with DataFrame.sample(frac=1, random_state=42), first 80 % train.
    raw = pd.read_csv(corpus_dir / "AI_Hub" / "annotation" / "5차년도_2차.csv", encoding="cp949")
    shuffled = raw.sample(frac=1, random_state=42)
    n_train = int(0.8 * len(raw))
    ai = f[f.corpus == "aihub"].set_index("id")
    assert set(ai.index[ai.split == "train"]) == set(shuffled["wav_id"][:n_train])


def test_folds_never_split_a_session_and_cover_train(manifest):
    f = manifest.frame
    train = f[f.split == "train"]
    assert (train.fold >= 0).all() and (f.loc[f.split == "test", "fold"] == -1).all()
    kem = train[train.corpus == "kemdy20"]
    assert (kem.groupby("session").fold.nunique() == 1).all()
    assert sorted(train.fold.unique()) == [0, 1]
    # each corpus contributes to each fold
    assert (train.groupby("corpus").fold.nunique() == 2).all()


def test_session_kfold_keeps_test_and_groups(corpus_dir, tmp_path):
    m, _ = prepare(
        tmp_path / "m.csv", kemdy20=corpus_dir / "KEMDy20_v1_1", split="session-kfold", folds=2
    )
    f = m.frame
    assert (f.groupby("session").fold.nunique() == 1).all()
    assert (
        set(f.loc[f.split == "test", "session"]) == {"Sess02"}
        or len(set(f.loc[f.split == "test", "session"])) == 1
    )


def test_too_many_folds_is_a_clear_error(corpus_dir, tmp_path):
    with pytest.raises(CorpusError, match="at least 9 groups"):
        prepare(tmp_path / "m.csv", kemdy20=corpus_dir / "KEMDy20_v1_1", folds=9)
    assert not (tmp_path / "m.csv").exists()


def test_manifest_round_trip(manifest, tmp_path):
    out = tmp_path / "copy.csv"
    frame = manifest.frame.copy()
    frame["audio_path"] = [str(manifest.audio_path(i)) for i in range(len(frame))]
    write_manifest(frame, out)
    again = read_manifest(out)
    pd.testing.assert_frame_equal(again.frame, frame)
    assert again.audio_path(0).is_file()
    np.testing.assert_array_equal(again.label_indices, manifest.label_indices)
    assert (out.with_suffix(".yaml")).is_file()


def test_a_manifest_holds_one_label_set(manifest, tmp_path):
    """The sidecar records the label set; a label outside it is refused on writing. A manifest
    without a record finds its set in its rows: KEMDy's seven when every label is one of them
    (``disgust`` the alias of ``disqust``), else the sorted labels it holds."""
    from emofeat.corpus.labels import KEMDY, LabelSet

    frame = manifest.frame.copy()
    frame.loc[0, "label"] = "bored"
    with pytest.raises(ManifestError, match="'bored'.*angry, disqust, fear"):
        write_manifest(frame, tmp_path / "bad.csv", labels=KEMDY)
    assert not (tmp_path / "bad.csv").exists()
    four = LabelSet(("sad", "happy", "angry", "neutral"))  # a stated order, kept
    small = manifest.frame[manifest.frame.label.isin(four.names)]
    write_manifest(small, tmp_path / "four.csv", labels=four)
    m = read_manifest(tmp_path / "four.csv")
    assert m.label_names == ["sad", "happy", "angry", "neutral"]
    assert [m.label_names[i] for i in m.label_indices] == list(small.label)
    plain = manifest.frame.assign(label=["Disgust"] + list(manifest.frame.label[1:]))
    plain.to_csv(tmp_path / "plain.csv", index=False)  # no sidecar: found in the rows
    assert read_manifest(tmp_path / "plain.csv").label_set == KEMDY
    frame.to_csv(tmp_path / "eight.csv", index=False)
    assert read_manifest(tmp_path / "eight.csv").label_names == sorted([*KEMDY.names, "bored"])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f.assign(id=["x"] * len(f)), "duplicate id"),
        (lambda f: f.assign(split=["dev"] * len(f)), "split must be train or test"),
        (lambda f: f.assign(fold=[0] * len(f)), "test rows must have fold -1"),
        (lambda f: f.drop(columns=["text"]), "missing column"),
    ],
)
def test_invalid_manifests_are_refused_and_not_written(manifest, tmp_path, mutate, message):
    out = tmp_path / "bad.csv"
    with pytest.raises(ManifestError, match=message):
        write_manifest(mutate(manifest.frame), out)
    assert list(tmp_path.iterdir()) == []
    mutate(manifest.frame).to_csv(out, index=False)
    with pytest.raises(ManifestError, match=message):
        read_manifest(out)


def test_cli_data_commands(corpus_dir, tmp_path):
    from click.testing import CliRunner

    runner = CliRunner()
    out = tmp_path / "m.csv"
    result = runner.invoke(
        main,
        [
            "data",
            "prepare",
            "--kemdy20",
            str(corpus_dir / "KEMDy20_v1_1"),
            "--folds",
            "2",
            "--text",
            "clean",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "train" in result.output and out.is_file()
    result = runner.invoke(main, ["data", "stats", str(out), "--plot", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "plots" / "class_distribution_all.png").stat().st_size > 1000
    result = runner.invoke(main, ["data", "stats", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2 and "nope.csv" in result.output


def test_soft_labels_round_trip_through_the_manifest(corpus_dir, manifest, tmp_path):
    out = tmp_path / "soft.csv"
    prepare(
        out,
        kemdy20=corpus_dir / "KEMDy20_v1_1",
        aihub=corpus_dir / "AI_Hub",
        folds=2,
        multilabel="soft",
    )
    m = read_manifest(out)
    soft = m.soft_labels()
    assert soft.shape == (len(m), 7)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)
    aihub = (m.frame["corpus"] == "aihub").to_numpy()
    # AI Hub rows carry no votes: the one-hot of their label.
    np.testing.assert_array_equal(soft[aihub].argmax(1), m.label_indices[aihub])
    assert set(np.unique(soft[aihub])) == {0.0, 1.0}
    # KEMDy20 rows: the label is the majority of the votes.
    kemdy = ~aihub
    np.testing.assert_array_equal(soft[kemdy].argmax(1), m.label_indices[kemdy])
    assert manifest.soft_labels() is None  # prepared with the default policy (drop)


def test_durations_come_from_the_headers_and_catch_audio_changed_since_prepare(
    manifest, tiny_wav2vec2, tmp_path
):
    """`data prepare` records each file's duration from its header; extraction refuses a file
    whose duration differs (audio replaced after prepare, the wrong manifest), naming it; a
    manifest without the column works; `data stats` sums the hours."""
    import soundfile as sf
    from click.testing import CliRunner

    from emofeat.errors import EmofeatError
    from emofeat.extract.config import ExtractConfig
    from emofeat.extract.run import extract

    seconds = manifest.durations
    assert seconds is not None and np.isfinite(seconds).all()
    assert manifest.durations is seconds  # parsed once, not per row checked
    for r in (0, 7, 40):
        info = sf.info(str(manifest.audio_path(r)))
        assert seconds[r] == pytest.approx(info.frames / info.samplerate, abs=1e-6)
    frame = manifest.frame.copy()
    frame["audio_path"] = [str(manifest.audio_path(i)) for i in range(len(frame))]
    frame.loc[frame.index[5], "audio_path"] = str(manifest.audio_path(6))  # another clip
    write_manifest(frame, tmp_path / "stale.csv")
    with pytest.raises(EmofeatError, match=r"audio changed since `data prepare`"):
        extract(tmp_path / "stale.csv", tmp_path / "s.h5", ExtractConfig(model=str(tiny_wav2vec2)))
    write_manifest(frame.drop(columns="duration"), tmp_path / "plain.csv")
    assert read_manifest(tmp_path / "plain.csv").durations is None
    extract(tmp_path / "plain.csv", tmp_path / "p.h5", ExtractConfig(model=str(tiny_wav2vec2)))
    out = CliRunner().invoke(main, ["data", "stats", str(manifest.path)])
    assert out.exit_code == 0 and "hours" in out.output
    from emofeat.corpus.stats import audio_hours

    hours = audio_hours(manifest)["hours"]
    assert hours.sum() == pytest.approx(seconds.sum() / 3600, abs=1e-2)
    assert str(hours.iloc[0]) in out.output
