"""The KEMDy19 reader, on a synthetic replica in the corpus's format (and, where a copy of the
real sessions is given by EMOFEAT_KEMDY19, on the real files)."""

import csv
import io
import os
from pathlib import Path

import numpy as np
import pytest

from emofeat.corpus.kemdy19 import read_kemdy19
from emofeat.errors import CorpusError


def annotation(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))[2:]


def test_rows_counts_roles_and_errata(kemdy19):
    """Every annotated segment but the multi-label ones (dropped by default) becomes a row; the
    F file's repeated Segment ID is read as the M file's (the one with a wav of its own); a
    segment's speaker annotation is its actor's file, its listener annotation the other's;
    empty bio-signal cells drop nothing; `disgust` is the canonical `disqust`."""
    root, written = kemdy19
    frame, report = read_kemdy19(root)
    assert report["segment_ids_fixed"] == written["errata"] == 1
    assert report["multilabel_rows"] == written["multilabel"] == 3
    assert len(frame) == written["utterances"] - written["multilabel"]
    assert frame["id"].is_unique and set(frame.corpus) == {"kemdy19"}
    files = {g: annotation(root / "annotation" / f"Session01_{g}_res.csv") for g in "FM"}
    fixed = files["M"][3][9]  # the row whose F-file id repeats the next one
    assert files["F"][3][9] != fixed and fixed in set(frame.id)
    listener, _ = read_kemdy19(root, role="listener")
    for seg in frame.id[frame.session == "Sess01"][:6]:
        r = next(i for i, row in enumerate(files["M"]) if row[9] == seg)
        actor = seg.split("_")[-1][0]
        other = "M" if actor == "F" else "F"
        own = frame.set_index("id").loc[seg]
        assert own.valence == pytest.approx(float(files[actor][r][11]))
        assert own.speaker == f"Sess01{actor}"
        if seg in set(listener.id):
            heard = listener.set_index("id").loc[seg]
            assert heard.valence == pytest.approx(float(files[other][r][11]))
    assert "disgust" not in set(frame.label)
    assert frame.text.str.contains(r"\(웃음\)").any()  # UTF-8 transcripts, markers kept (raw)
    dup, rep = read_kemdy19(root, multilabel="duplicate")
    assert rep["multilabel_duplicated"] == 3 and dup.id.str.contains("#").sum() == 6


def test_a_session_without_its_other_file_is_named(kemdy19, tmp_path):
    import shutil

    root, _ = kemdy19
    copy = tmp_path / "K"
    shutil.copytree(root, copy)
    (copy / "annotation" / "Session02_M_res.csv").unlink()
    with pytest.raises(CorpusError, match="Session02 has no M file"):
        read_kemdy19(copy)


def test_a_manifest_of_kemdy19_and_kemdy20_tells_them_apart(kemdy19, corpus_dir, tmp_path):
    """Sessions split and group the folds of each corpus; the corpus column tells them apart;
    valence and arousal are read for both."""
    from emofeat.corpus.prepare import prepare

    root, _ = kemdy19
    m, _ = prepare(tmp_path / "m.csv", kemdy19=root, kemdy20=corpus_dir / "KEMDy20_v1_1", folds=2)
    f = m.frame
    assert {"kemdy19", "kemdy20"} == set(f.corpus)
    k19 = f[f.corpus == "kemdy19"]
    assert set(k19.split) == {"train", "test"} and k19.valence.notna().all()
    for _, part in k19[k19.split == "train"].groupby("session"):
        assert part.fold.nunique() == 1  # a session never spans two folds


@pytest.mark.skipif(
    not os.environ.get("EMOFEAT_KEMDY19"),
    reason="set EMOFEAT_KEMDY19 to a copy of the real KEMDy19 folder (annotation/, wav/)",
)
def test_the_real_sessions_read_with_the_counts_their_annotation_files_imply():
    root = Path(os.environ["EMOFEAT_KEMDY19"])
    frame, report = read_kemdy19(root, skip_missing=True)
    rows = sum(len(annotation(p)) for p in (root / "annotation").glob("Session*_F_res.csv"))
    missing = len(report["skipped_missing"])
    assert len(frame) == rows - report["multilabel_dropped"] - missing
    assert frame.valence.std() == pytest.approx(1.0, abs=0.15)  # corpora.md: SD about 1.0
    assert np.isfinite(frame.arousal).all()
