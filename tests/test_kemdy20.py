"""KEMDy20 reader on small hand-made trees with the corpus' quirks."""

import csv
import io

import numpy as np
import pytest
import soundfile as sf

from emofeat.corpus.kemdy20 import fix_segment_id, read_kemdy20, speaker_of
from emofeat.errors import CorpusError

H1 = [
    "Numb",
    "Wav",
    "",
    "Segment ID",
    "Total Evaluation",
    "",
    "",
    "Eval01F",
    "",
    "",
    "Eval02M",
    "",
    "",
    "Eval03F",
    "",
    "",
]
H2 = ["", "start", "end", "", "Emotion", "Valence", "Arousal"] + [
    "Emotion",
    "Valence",
    "Arousal",
] * 3


def make_tree(root, rows_by_session, texts=None, encoding="cp949", skip_files=()):
    """rows_by_session: {session: [(listed_id, consensus, votes)]}; files named by the fixed id."""
    (root / "annotation").mkdir(parents=True)
    for s, rows in rows_by_session.items():
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(H1)
        w.writerow(H2)
        for i, (listed, consensus, votes) in enumerate(rows):
            row = [i + 1, 0.0, 1.0, listed, consensus, 3.5, 2.5]
            for v in votes:
                row += [v, 3, 3]
            w.writerow(row)
            fixed = f"Sess{s:02d}" + listed[6:]
            wav_dir = root / "wav" / f"Session{s:02d}"
            wav_dir.mkdir(parents=True, exist_ok=True)
            if fixed + ".wav" not in skip_files:
                sf.write(
                    wav_dir / f"{fixed}.wav",
                    np.zeros(1600, dtype=np.float32),
                    16000,
                )
            if fixed + ".txt" not in skip_files:
                text = (texts or {}).get(fixed, "c/ 안녕하세요 n/")
                (wav_dir / f"{fixed}.txt").write_bytes(text.encode(encoding))
        (root / "annotation" / f"Sess{s:02d}_eval.csv").write_text(buf.getvalue(), encoding="utf-8")
    return root


ROWS = {
    1: [
        ("Sess01_script01_User001F_001", "happy", ["happy", "happy", "neutral"]),
        ("Sess01_script01_User002M_002", "neutral;happy", ["neutral", "happy", "happy"]),
        ("Sess02_script01_User001F_003", "disqust", ["disgust", "disqust", "sad"]),  # wrong prefix
    ],
    2: [("Sess02_script02_User003F_001", "sad", ["sad", "sad", "sad"])],
}


def test_reads_two_header_rows_and_fixes_prefix(tmp_path):
    root = make_tree(tmp_path / "K", ROWS)
    frame, report = read_kemdy20(root)
    assert list(frame["id"]) == [
        "Sess01_script01_User001F_001",
        "Sess01_script01_User001F_003",
        "Sess02_script02_User003F_001",
    ]
    assert report["multilabel_dropped"] == 1 and report["segment_ids_fixed"] == 1
    assert list(frame["label"]) == ["happy", "disqust", "sad"]
    assert list(frame["speaker"]) == ["User001F", "User001F", "User003F"]
    assert list(frame["session"]) == ["Sess01", "Sess01", "Sess02"]
    assert frame["valence"].tolist() == [3.5] * 3
    assert frame["text"].iloc[0] == "c/ 안녕하세요 n/"


def test_multilabel_first_and_soft(tmp_path):
    root = make_tree(tmp_path / "K", ROWS)
    first, _ = read_kemdy20(root, multilabel="first")
    assert first.set_index("id").loc["Sess01_script01_User002M_002", "label"] == "neutral"
    soft, _ = read_kemdy20(root, multilabel="soft")
    row = soft.set_index("id").loc["Sess01_script01_User002M_002"]
    # Votes neutral, happy, happy: the majority wins over the consensus order.
    assert row["label"] == "happy"
    assert row["soft_happy"] == pytest.approx(2 / 3) and row["soft_neutral"] == pytest.approx(1 / 3)
    sums = soft[[c for c in soft.columns if c.startswith("soft_")]].sum(axis=1)
    np.testing.assert_allclose(sums, 1.0)


def test_multilabel_duplicate_gives_one_row_per_label_kept_in_one_fold(tmp_path):
    """MMM's data code duplicates a multi-label utterance once per consensus label."""
    from emofeat.corpus.prepare import prepare

    root = make_tree(tmp_path / "K", ROWS)
    frame, report = read_kemdy20(root, multilabel="duplicate")
    seg = "Sess01_script01_User002M_002"
    copies = frame[frame["id"].str.startswith(seg)]
    assert list(copies["id"]) == [f"{seg}#neutral", f"{seg}#happy"]
    assert list(copies["label"]) == ["neutral", "happy"]
    assert copies["audio_path"].nunique() == 1 and copies["text"].nunique() == 1
    assert report["multilabel_duplicated"] == 1 and report["multilabel_dropped"] == 0
    assert len(frame) == 5 and frame["id"].is_unique
    more = {
        s: [(f"Sess{s:02d}_script01_User00{s}F_00{i}", "sad;angry", ["sad"] * 3) for i in range(4)]
        for s in range(3, 7)
    }
    root = make_tree(tmp_path / "K2", {**ROWS, **more})
    m, _ = prepare(
        tmp_path / "m.csv", kemdy20=root, split="session-kfold", folds=2, multilabel="duplicate"
    )
    pairs = m.frame[m.frame["id"].str.contains("#")].assign(
        seg=lambda f: f["id"].str.split("#").str[0]
    )
    assert pairs.groupby("seg")["fold"].nunique().eq(1).all()  # copies never straddle folds
    assert pairs.groupby("seg")["split"].nunique().eq(1).all()


def test_utf8_transcripts_and_clean_mode(tmp_path):
    fid = "Sess01_script01_User001F_001"
    root = make_tree(
        tmp_path / "K", {1: ROWS[1][:1]}, texts={fid: "b/ 그냥 그래 (웃음)"}, encoding="utf-8"
    )
    frame, _ = read_kemdy20(root, text_mode="clean")
    assert frame["text"].iloc[0] == "그냥 그래 웃음"


def test_missing_files_counted_or_skipped(tmp_path):
    root = make_tree(
        tmp_path / "K",
        ROWS,
        skip_files=("Sess01_script01_User001F_001.wav", "Sess02_script02_User003F_001.txt"),
    )
    with pytest.raises(CorpusError, match=r"2 utterance\(s\) lack their files") as err:
        read_kemdy20(root)
    assert "Sess01_script01_User001F_001" in str(err.value) and "--skip-missing" in str(err.value)
    frame, report = read_kemdy20(root, skip_missing=True)
    assert list(frame["id"]) == ["Sess01_script01_User001F_003"]
    assert sorted(report["skipped_missing"]) == [
        "Sess01_script01_User001F_001",
        "Sess02_script02_User003F_001",
    ]


def test_unknown_label_names_file_and_value(tmp_path):
    root = make_tree(
        tmp_path / "K", {1: [("Sess01_script01_User001F_001", "bored", ["bored"] * 3)]}
    )
    with pytest.raises(CorpusError, match=r"Sess01_eval.csv row 3.*'bored'"):
        read_kemdy20(root)


def test_not_a_kemdy20_folder(tmp_path):
    with pytest.raises(CorpusError, match="annotation"):
        read_kemdy20(tmp_path)


def test_segment_id_helpers():
    assert fix_segment_id("Sess07_script03_User013M_021", 8) == "Sess08_script03_User013M_021"
    assert speaker_of("Sess08_script03_User013M_021") == "User013M"
    with pytest.raises(CorpusError, match="malformed"):
        fix_segment_id("nonsense", 1)
