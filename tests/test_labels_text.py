import pytest

from emofeat.corpus import labels as label_set
from emofeat.corpus.text import decode_transcript, normalize, read_transcript
from emofeat.errors import CorpusError, LabelError


def test_label_set_is_alphabetical_with_kemdy20_spelling():
    assert list(label_set.LABEL_NAMES) == sorted(label_set.LABEL_NAMES)
    assert label_set.KEMDY.index("disqust") == 1
    assert label_set.KEMDY.index("Disgust ") == 1  # alias, case and space ignored
    assert label_set.KEMDY.indices(["sad", "", None]) == [5, -1, -1]


def test_unknown_label_names_the_value():
    with pytest.raises(LabelError, match="'bored'.*angry, disqust"):
        label_set.KEMDY.index("bored")


def test_aihub_map_covers_every_class_once():
    assert sorted(label_set.AIHUB_MAP.values()) == sorted(label_set.LABEL_NAMES)
    assert label_set.aihub_label("Happiness") == "happy"
    with pytest.raises(LabelError, match="joy"):
        label_set.aihub_label("joy")


def test_transcripts_decode_from_cp949_and_utf8(tmp_path):
    text = "c/ 아 진짜 화가 나 n/"
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_bytes(text.encode("cp949"))
    b.write_bytes(("\ufeff" + text + "\n").encode("utf-8"))
    assert read_transcript(a) == text
    assert read_transcript(b) == text


def test_undecodable_transcript_names_the_file(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\xff\xfe\x80")
    with pytest.raises(CorpusError, match="bad.txt"):
        read_transcript(bad)


def test_utf8_is_not_mistaken_for_cp949():
    # These UTF-8 bytes are also valid cp949 (mojibake): trying cp949 first would be wrong.
    text = "그냥 그래"
    assert text.encode("utf-8").decode("cp949") != text
    assert decode_transcript(text.encode("utf-8")) == text


def test_clean_mode_keeps_hangul_and_punctuation_only():
    assert normalize(" b/ 아  진짜?? (웃음) ok l/ ", "clean") == "아 진짜?? 웃음"
    assert normalize(" b/ 아 ", "raw") == "b/ 아"


def test_loading_kobert_prints_no_tokenizer_class_warning(tiny_kobert):
    """KoBERT folders name BertTokenizer; emofeat's fixed subclass is loaded on purpose, so
    transformers' 'not the same type' warning would only be noise at every fine-tune. (A
    fresh process: transformers' log handler keeps the stream it was created with.)"""
    import subprocess
    import sys

    code = (
        "from emofeat.encoders.text import load_tokenizer; "
        f"print(type(load_tokenizer({str(tiny_kobert)!r})).__name__)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "KoBertTokenizerFixed"
    assert "tokenizer class you load from this checkpoint" not in r.stderr
