import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from emofeat.corpus.aihub import RELEASE, read_aihub
from emofeat.corpus.generic import read_csv_corpus
from emofeat.errors import CorpusError


def make_aihub(root, rows):
    (root / "annotation").mkdir(parents=True)
    (root / "wav").mkdir()
    for wav_id, _, _ in rows:
        sf.write(root / "wav" / f"{wav_id}.wav", np.zeros(800, dtype=np.float32), 16000)
    frame = pd.DataFrame(rows, columns=["wav_id", "상황", "발화문"])
    frame["나이"] = 30
    (root / "annotation" / f"{RELEASE}.csv").write_bytes(frame.to_csv(index=False).encode("cp949"))
    return root


def test_reads_cp949_csv_and_maps_labels(tmp_path):
    root = make_aihub(
        tmp_path / "A", [("a" * 24, "happiness", "정말 행복해"), ("b" * 24, "disgust", "역겨워")]
    )
    frame, report = read_aihub(root)
    assert list(frame["label"]) == ["happy", "disqust"]
    assert list(frame["text"]) == ["정말 행복해", "역겨워"]
    assert report["utterances"] == 2 and (frame["speaker"] == "").all()


def test_unknown_emotion_and_duplicates_are_named(tmp_path):
    root = make_aihub(tmp_path / "A", [("a" * 24, "happiness", "x"), ("b" * 24, "joy", "y")])
    with pytest.raises(CorpusError, match=r"'joy'.*line\(s\) \[3\]"):
        read_aihub(root)
    root = make_aihub(tmp_path / "B", [("a" * 24, "happiness", "x"), ("a" * 24, "fear", "y")])
    with pytest.raises(CorpusError, match="duplicate wav_id"):
        read_aihub(root)


def test_generic_csv_with_and_without_labels(tmp_path):
    sf.write(tmp_path / "x.wav", np.zeros(800, dtype=np.float32), 16000)
    (tmp_path / "c.csv").write_text(
        "id,audio_path,text,label\nu1,x.wav,안녕, Disgust \nu2,x.wav,네,\n", encoding="utf-8"
    )
    frame, _ = read_csv_corpus(tmp_path / "c.csv")
    assert list(frame["label"]) == ["disgust", ""]  # a generic corpus's labels are its own
    assert frame["audio_path"].iloc[0] == str(tmp_path / "x.wav")
    (tmp_path / "d.csv").write_text("id,audio_path\nu1,x.wav\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="text"):
        read_csv_corpus(tmp_path / "d.csv")
    (tmp_path / "e.csv").write_bytes("id,audio_path,text\nu1,x.wav,안녕\n".encode("cp949"))
    with pytest.raises(CorpusError, match="not UTF-8"):
        read_csv_corpus(tmp_path / "e.csv")


def test_a_text_only_corpus_prepares_and_says_what_needs_audio(
    manifest, tiny_kobert, tiny_wav2vec2, tmp_path
):
    """A generic CSV without audio: manifest, statistics, splits and text extraction work; a
    speech model names the rows that have no audio."""
    from emofeat.corpus.manifest import read_manifest
    from emofeat.corpus.prepare import prepare
    from emofeat.corpus.stats import class_counts
    from emofeat.errors import EmofeatError
    from emofeat.extract.config import ExtractConfig
    from emofeat.extract.run import extract
    from emofeat.store import open_store

    frame = manifest.frame
    lines = ["id,audio_path,text,label,session"]
    lines += [
        f"t{i},,{t},{lab},s{i % 6}" for i, (t, lab) in enumerate(zip(frame.text, frame.label))
    ]
    (tmp_path / "text.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    prepare(tmp_path / "m.csv", csv=tmp_path / "text.csv", split="session-kfold", folds=2)
    m = read_manifest(tmp_path / "m.csv")
    assert (m.frame["audio_path"] == "").all() and set(m.split) == {"train", "test"}
    assert class_counts(m)["total"].sum() == len(m)
    extract(tmp_path / "m.csv", tmp_path / "t.h5", ExtractConfig(model=str(tiny_kobert)))
    with open_store(tmp_path / "t.h5") as s:
        assert s.complete and s.done.all()
    with pytest.raises(EmofeatError, match="no audio \\(a text-only row\\)"):
        extract(tmp_path / "m.csv", tmp_path / "a.h5", ExtractConfig(model=str(tiny_wav2vec2)))
    speech = ["id,audio_path,text,label,session"]
    speech += [
        f"a{i},{manifest.audio_path(i)},,{lab},s{i % 6}" for i, lab in enumerate(frame.label)
    ]
    (tmp_path / "speech.csv").write_text("\n".join(speech) + "\n", encoding="utf-8")
    prepare(tmp_path / "sm.csv", csv=tmp_path / "speech.csv", split="session-kfold", folds=2)
    with pytest.raises(EmofeatError, match="empty text \\(this row has audio only"):
        extract(tmp_path / "sm.csv", tmp_path / "st.h5", ExtractConfig(model=str(tiny_kobert)))
    (tmp_path / "none.csv").write_text("id,audio_path,text\nx,,\n", encoding="utf-8")
    with pytest.raises(EmofeatError, match="has neither audio nor text"):
        prepare(tmp_path / "n.csv", csv=tmp_path / "none.csv", folds=0)


def _csv_corpus(tmp_path, rows, name="lab.csv"):
    sf.write(tmp_path / "x.wav", np.zeros(800, dtype=np.float32), 16000)
    lines = ["id,audio_path,text,label,session"] + [",".join(r) for r in rows]
    (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path / name


def test_a_one_session_corpus_is_a_message_not_a_traceback(tmp_path):
    from emofeat.corpus.prepare import prepare

    rows = [(f"u{i}", "x.wav", "네", "happy" if i % 2 else "sad", "s1") for i in range(12)]
    csv = _csv_corpus(tmp_path, rows)
    with pytest.raises(
        CorpusError, match=r"lab: every row is in one group \(lab/s1\).*split column"
    ):
        prepare(tmp_path / "m.csv", csv=csv, folds=2)
    assert not (tmp_path / "m.csv").exists()


def test_unlabelled_recordings_prepare_as_a_prediction_only_manifest(tmp_path):
    """New recordings without labels: every row a test row without a fold, ready for
    ``extract --run`` and ``predict``; labelled rows that leave no train rows are still refused."""
    from emofeat.corpus.prepare import prepare

    rows = [(f"n{i}", "x.wav", "네", "", "") for i in range(4)]
    m, _ = prepare(tmp_path / "m.csv", csv=_csv_corpus(tmp_path, rows), folds=5)
    assert list(m.split) == ["test"] * 4 and list(m.fold) == [-1] * 4
    (tmp_path / "t.csv").write_text(
        "id,audio_path,text,label,split\nt0,x.wav,네,happy,test\n", encoding="utf-8"
    )
    with pytest.raises(CorpusError, match="leaves no train rows"):
        prepare(tmp_path / "m2.csv", csv=tmp_path / "t.csv", folds=2)


def test_a_csv_named_after_a_corpus_with_a_reader_is_not_that_corpus(tmp_path):
    """The split rules of KEMDy20 and AI Hub key on the corpus name their readers give; a CSV
    called aihub.csv keeps its own group-aware split (AI Hub's utterance shuffle would put a
    session on both sides) under the name aihub-csv."""
    from emofeat.corpus.prepare import prepare

    rows = [(f"u{i}", "x.wav", "네", "happy" if i % 2 else "sad", f"s{i // 4}") for i in range(40)]
    m, _ = prepare(tmp_path / "m.csv", csv=_csv_corpus(tmp_path, rows, name="aihub.csv"), folds=2)
    assert set(m.frame["corpus"]) == {"aihub-csv"}
    sessions = m.frame.groupby("session")["split"].nunique()
    assert (sessions == 1).all()  # no session on both sides of the split
