"""Long clips: decoded and forwarded a few windows at a time, with the same stored values as a
clip seen in one pass, memory bounded by the options, and the out-of-memory back-off able to split
one row's windows."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from conftest import swap_audio

from emofeat.audio import AudioError, audio_length, load_audio, load_span, resampled_length
from emofeat.corpus.manifest import read_manifest, write_manifest
from emofeat.errors import EmofeatError
from emofeat.extract.config import ExtractConfig
from emofeat.extract.run import extract
from emofeat.store import open_store

SR = 16000


def noise(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = np.sin(2 * np.pi * (200 + 30 * t) * t)[:, None]
    return (0.1 * tone + 0.05 * rng.standard_normal((len(t), channels))).astype(np.float32)


@pytest.fixture(scope="module")
def long_manifest(manifest, tmp_path_factory):
    """The test corpus with two long clips: 20 s at 16 kHz, 12 s of stereo at 44.1 kHz."""
    root = tmp_path_factory.mktemp("long")
    frame = manifest.frame.copy()
    frame["audio_path"] = [str(manifest.audio_path(i)) for i in range(len(frame))]
    sf.write(root / "long16k.wav", noise(20, SR), SR, subtype="FLOAT")
    sf.write(root / "long44k.wav", noise(12, 44100, channels=2, seed=1), 44100, subtype="FLOAT")
    swap_audio(frame, 3, root / "long16k.wav")
    swap_audio(frame, 40, root / "long44k.wav")
    path = root / "manifest.csv"
    write_manifest(frame, path)
    return path, [3, 40], root


def test_resampled_length_is_what_soxr_gives():
    rng = np.random.default_rng(0)
    for i in range(300):
        n = int(rng.integers(1, 50_000))
        rate = [44100, 48000, 22050, 8000, 11025, 32000][i % 6]
        got = len(soxr.resample(np.zeros(n, np.float32), rate, SR, quality="HQ"))
        assert resampled_length(n, rate, SR) == got


@pytest.mark.parametrize("rate,channels", [(16000, 1), (44100, 2), (8000, 1)])
@pytest.mark.parametrize("reverse", [False, True])
def test_a_span_equals_the_same_samples_of_the_whole_clip(tmp_path, rate, channels, reverse):
    path = tmp_path / "a.wav"
    sf.write(path, noise(5, rate, channels), rate, subtype="FLOAT")
    whole = load_audio(path, SR, reverse)
    n = audio_length(path, SR)
    assert n == len(whole)
    for start, stop in [(0, 16000), (16000, 50_000), (50_000, n), (0, n), (123, 4567)]:
        span = load_span(path, start, stop, sample_rate=SR, reverse=reverse)
        exact = 0 if rate == SR else 1e-6  # resampled: soxr's float rounding only
        np.testing.assert_allclose(span, whole[start:stop], rtol=0, atol=exact)
    with pytest.raises(AudioError, match="outside the clip"):
        load_span(path, 0, n + 1, sample_rate=SR)


def test_a_span_holding_nan_is_refused_by_name(tmp_path):
    x = noise(3, SR)
    x[40_000] = np.nan
    sf.write(tmp_path / "nan.wav", x, SR, subtype="FLOAT")
    load_span(tmp_path / "nan.wav", 0, 16_000, sample_rate=SR)  # the clean part reads
    with pytest.raises(AudioError, match=r"nan\.wav: non-finite"):
        load_span(tmp_path / "nan.wav", 32_000, 48_000, sample_rate=SR)


def stores_equal(a_path, b_path, *, logits: bool, sequences: bool) -> None:
    with open_store(a_path) as a, open_store(b_path) as b:
        assert a.complete and b.complete
        for name in a.embedding_names:
            np.testing.assert_allclose(a.embeddings(name), b.embeddings(name), atol=2e-5, rtol=1e-4)
        if logits:
            np.testing.assert_allclose(a.logits(), b.logits(), atol=2e-5, rtol=1e-4)
        if sequences:  # stored as float16
            (sa, la), (sb, lb) = a.sequences("last"), b.sequences("last")
            np.testing.assert_array_equal(la, lb)
            np.testing.assert_allclose(sa.astype(np.float32), sb, atol=1e-3, rtol=2e-3)


def test_long_clips_are_read_and_forwarded_in_parts_with_the_values_of_one_pass(
    long_manifest, w2v_run, tmp_path, monkeypatch
):
    """A run's store (reversed audio, the head's logits, all layers, sequences longer than a part)
    is the same whether a long clip is one batch or parts of two 1-s windows; in parts no forward
    pass sees more audio than --batch-seconds allows and the long files are never decoded whole."""
    from emofeat.encoders import speech

    path, long_rows, root = long_manifest
    common = dict(
        run=str(w2v_run),
        layers="all",
        pooling="mean+std",
        max_seconds=1.0,
        sequence=True,
        sequence_length=200,  # 4 s of frames: spans two parts
    )
    whole = tmp_path / "whole.h5"
    extract(path, whole, ExtractConfig(**common, batch_seconds=100.0))

    seen, spans = [], []
    real_part, real_span = speech.SpeechEncoder.forward_part, speech.load_span

    def record_part(self, model, inputs, owner, **kw):
        seen.append(inputs["input_values"].numel())
        return real_part(self, model, inputs, owner, **kw)

    def record_span(path, start, stop, **kw):
        spans.append(stop - start)
        return real_span(path, start, stop, **kw)

    def no_whole_long_clip(path, *args):
        assert "long" not in str(path), f"{path} decoded whole"
        return load_audio(path, *args)

    monkeypatch.setattr(speech.SpeechEncoder, "forward_part", record_part)
    monkeypatch.setattr(speech, "load_span", record_span)
    monkeypatch.setattr(speech, "load_audio", no_whole_long_clip)
    parts = tmp_path / "parts.h5"
    extract(path, parts, ExtractConfig(**common, batch_seconds=2.5))
    stores_equal(whole, parts, logits=True, sequences=True)
    # Two windows of at most 1.25 s (a folded tail) per pass, per fold model.
    assert max(seen) <= 2.5 * SR and len(spans) >= (20 + 12) // 2
    assert max(spans) <= 2.5 * SR
    with open_store(parts) as s:
        assert s.provenance.out_of_fold
        np.testing.assert_array_equal(s.sequences("last", long_rows)[1], [200, 200])


def test_out_of_memory_splits_one_rows_windows(long_manifest, tiny_wav2vec2, tmp_path, monkeypatch):
    """A single long row that does not fit is forwarded window by window (simulated CUDA OOM
    for more than one window), with the values of one pass."""
    from emofeat.encoders import speech

    path, _, _ = long_manifest
    cfg = dict(model=str(tiny_wav2vec2), layers="all", pooling="mean+std", max_seconds=1.0)
    whole = tmp_path / "whole.h5"
    extract(path, whole, ExtractConfig(**cfg, batch_seconds=100.0))
    real, passes = speech.SpeechEncoder.forward_part, []

    def small_memory(self, model, inputs, owner, **kw):
        if len(owner) > 10:  # pieces (windows) in one pass
            raise torch.cuda.OutOfMemoryError("simulated")
        passes.append((len(owner), len(set(np.asarray(owner).tolist()))))
        return real(self, model, inputs, owner, **kw)

    monkeypatch.setattr(speech.SpeechEncoder, "forward_part", small_memory)
    split = tmp_path / "split.h5"
    extract(path, split, ExtractConfig(**cfg, batch_seconds=100.0))
    stores_equal(whole, split, logits=False, sequences=False)
    # The 20-window and 12-window rows went through in passes of a part of their windows.
    assert sum(1 for pieces, rows in passes if rows == 1 and pieces > 1) >= 4


def test_a_long_row_that_fails_midway_is_named_skipped_or_resumed(
    long_manifest, tiny_wav2vec2, tmp_path, monkeypatch
):
    """NaN in the middle of a long clip: the error names the row; with --skip-bad the row is
    skipped (none of its parts written) and the rest complete. A failure between two parts of a
    row leaves the row pending, and the re-run computes it whole."""
    from emofeat.encoders import speech

    path, long_rows, root = long_manifest
    cfg = dict(model=str(tiny_wav2vec2), max_seconds=1.0, batch_seconds=2.5)
    clean = tmp_path / "clean.h5"
    extract(path, clean, ExtractConfig(**cfg))

    x = noise(20, SR)
    x[15 * SR] = np.nan  # in the eighth part of ten
    sf.write(root / "long16k-nan.wav", x, SR, subtype="FLOAT")
    frame = read_manifest(path).frame.copy()
    swap_audio(frame, long_rows[0], root / "long16k-nan.wav")
    bad = tmp_path / "nan-manifest.csv"
    write_manifest(frame, bad)
    with pytest.raises(EmofeatError, match="long16k-nan.wav: non-finite"):
        extract(bad, tmp_path / "bad.h5", ExtractConfig(**cfg))
    skipped = tmp_path / "skipped.h5"
    extract(bad, skipped, ExtractConfig(**cfg, skip_bad=True))
    with open_store(skipped) as s, open_store(clean) as c:
        assert s.complete and list(np.flatnonzero(s.skipped)) == [long_rows[0]]
        done = s.select(done=True)
        assert long_rows[0] not in done
        np.testing.assert_allclose(
            s.embeddings("last", done), c.embeddings("last", done), atol=2e-5
        )

    real, calls = speech.SpeechEncoder.forward_part, []

    def dies_in_the_middle(self, model, inputs, owner, **kw):
        calls.append(inputs["input_values"].shape[1])
        if len(calls) > 1 and inputs["input_values"].shape[1] >= SR:  # a long row's 2nd part
            raise RuntimeError("killed")
        return real(self, model, inputs, owner, **kw)

    monkeypatch.setattr(speech.SpeechEncoder, "forward_part", dies_in_the_middle)
    out = tmp_path / "resumed.h5"
    with pytest.raises(RuntimeError, match="killed"):
        extract(path, out, ExtractConfig(**cfg, workers=0, flush_rows=1))
    with open_store(out) as s:
        assert not set(long_rows) & set(s.select(done=True).tolist()) and not s.complete
    monkeypatch.setattr(speech.SpeechEncoder, "forward_part", real)
    extract(path, out, ExtractConfig(**cfg))
    stores_equal(clean, out, logits=False, sequences=False)


def test_max_seconds_zero_feeds_whole_clips_as_the_reference_did(
    long_manifest, tiny_wav2vec2, tmp_path
):
    """--max-seconds 0: no windows, a clip is one piece (the reference's protocol); its pooled
    layers equal plain transformers on the whole clip."""
    from transformers import AutoFeatureExtractor, AutoModel

    path, long_rows, _ = long_manifest
    out = tmp_path / "whole.h5"
    extract(path, out, ExtractConfig(model=str(tiny_wav2vec2), layers="all", max_seconds=0))
    fe = AutoFeatureExtractor.from_pretrained(tiny_wav2vec2)
    model = AutoModel.from_pretrained(tiny_wav2vec2).eval()
    frame = read_manifest(path)
    with open_store(out) as s:
        assert s.provenance.max_len == 0
        for r in long_rows:
            x = load_audio(frame.audio_path(r), SR)
            with torch.no_grad():
                hs = model(
                    fe(x, sampling_rate=SR, return_tensors="pt")["input_values"],
                    output_hidden_states=True,
                ).hidden_states
            for i, h in enumerate(hs):
                np.testing.assert_allclose(
                    s.embeddings(f"layer_{i:02d}", [r])[0],
                    h[0].mean(0).numpy(),
                    atol=1e-4,
                    rtol=1e-3,
                )
