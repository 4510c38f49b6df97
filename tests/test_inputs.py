"""Extraction inputs: the batch plan, worker processes, OOM subsets and window-sized writes."""

import h5py
import numpy as np
import pytest
import torch
import yaml

from emofeat.encoders.base import InputOptions
from emofeat.encoders.speech import SpeechEncoder
from emofeat.encoders.text import TextEncoder
from emofeat.extract.config import ExtractConfig
from emofeat.extract.inputs import plan_batches
from emofeat.extract.run import extract
from emofeat.store import StoreWriter, WriteBehind, open_store


class ByLength:
    """A stand-in encoder whose batches are runs of 3 rows in length order."""

    def batches(self, rows, lengths, batch_size, batch_seconds):
        rows = np.asarray(rows)[np.argsort(lengths, kind="stable")]
        return [rows[i : i + 3] for i in range(0, len(rows), 3)]

    def row_parts(self, length, batch_seconds):
        return None


def test_plan_covers_every_row_once_window_by_window():
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(200, 120, replace=False))
    fold = rng.integers(0, 3, len(rows))
    groups = [([k], rows[fold == k], rng.uniform(1, 12, (fold == k).sum())) for k in range(2)]
    groups.append(([0, 1], rows[fold == 2], rng.uniform(1, 12, (fold == 2).sum())))
    plan = plan_batches(ByLength(), groups, window=25, batch_size=0, batch_seconds=0)
    planned = np.concatenate([p.rows for p in plan])
    assert sorted(planned) == list(rows)  # every pending row once
    for models, group_rows, _ in groups:  # each row computed by its group's models
        for p in plan:
            if np.isin(p.rows, group_rows).any():
                assert np.isin(p.rows, group_rows).all() and p.models == models
    # Windows: 25 consecutive pending rows each; a batch never straddles two.
    ends = [i for i, p in enumerate(plan) if p.ends_window]
    assert len(ends) == int(np.ceil(len(rows) / 25)) and ends[-1] == len(plan) - 1
    start = 0
    for w, end in enumerate(ends):
        inside = np.concatenate([p.rows for p in plan[start : end + 1]])
        assert sorted(inside) == list(rows[25 * w : 25 * (w + 1)])
        start = end + 1


def test_subset_equals_encoding_those_pieces_alone(manifest, tiny_wav2vec2, kobert_run):
    speech = SpeechEncoder.from_folder(str(tiny_wav2vec2), InputOptions())
    text = TextEncoder.from_folder(str(kobert_run / "fold-0"), InputOptions(max_len=64))
    cases = [
        (speech, [speech.load_pieces(manifest, r, 400)[0] for r in range(6)]),
        (text, [manifest.frame["text"].iat[r] for r in range(6)]),
    ]
    for encoder, pieces in cases:
        whole = encoder.encode(pieces)
        lengths = encoder.input_lengths(whole).numpy()
        some = np.argsort(lengths)[:3]  # the shortest: padding must be cut back
        got = encoder.subset(whole, some)
        alone = encoder.encode([pieces[i] for i in some])
        assert got.keys() == alone.keys()
        for k in alone:
            torch.testing.assert_close(got[k], alone[k], rtol=0, atol=0)
        assert got[next(iter(alone))].shape[1] < whole[next(iter(alone))].shape[1]


@pytest.fixture()
def write_calls(monkeypatch):
    """Rows of each write the store writer makes."""
    calls = []
    real = StoreWriter.write

    def spy(self, rows, **kw):
        calls.append(np.sort(np.asarray(rows)))
        return real(self, rows, **kw)

    monkeypatch.setattr(StoreWriter, "write", spy)
    return calls


@pytest.mark.parametrize("kind", ["frozen", "run", "text"])
def test_worker_processes_equal_the_main_process_and_windows_are_written_whole(
    kind,
    manifest,
    manifest_path,
    tiny_wav2vec2,
    w2v_run,
    kobert_run,
    tmp_path,
    write_calls,
    monkeypatch,
):
    """Audio decoded and normalised, or text tokenised, in worker processes gives the values the
    main process gives, for a frozen encoder and for fold models (rows routed by fold)."""
    source = {
        "frozen": {"model": str(tiny_wav2vec2)},
        "run": {"run": str(w2v_run)},
        "text": {"run": str(kobert_run)},
    }[kind]
    window = 7
    options = dict(layers="all", batch_seconds=3, flush_rows=window)
    # No write on a timer (5 s, for slow models): a loaded machine would cut windows in two.
    monkeypatch.setattr(WriteBehind, "SECONDS", float("inf"))
    extract(manifest_path, tmp_path / "main.h5", ExtractConfig(**source, **options, workers=0))
    write_calls.clear()
    extract(manifest_path, tmp_path / "workers.h5", ExtractConfig(**source, **options, workers=2))
    with open_store(tmp_path / "main.h5") as a, open_store(tmp_path / "workers.h5") as b:
        assert a.complete and b.complete
        for name in a.embedding_names:
            np.testing.assert_array_equal(a.embeddings(name), b.embeddings(name))
        if kind != "frozen":
            np.testing.assert_array_equal(a.logits(), b.logits())
            np.testing.assert_array_equal(a.in_sample, b.in_sample)
    with h5py.File(tmp_path / "workers.h5", "r") as f:  # the workers' stage, named for the input
        stages = yaml.safe_load(f.attrs["timings"])["stages"]
    assert ("tokenise" if kind == "text" else "decode") in stages
    # Every write is one whole window of 7 consecutive rows (the last one shorter).
    n = len(manifest)
    windows = [list(range(s, min(s + window, n))) for s in range(0, n, window)]
    assert sorted(c.tolist() for c in write_calls) == windows


def test_a_row_unreadable_in_a_worker_stops_with_its_name_or_is_skipped(
    manifest, tiny_wav2vec2, tmp_path, monkeypatch
):
    """A file that passes the header check but fails to decode (in a worker process) gives the
    reader's own error, not a worker traceback; with --skip-bad its row is recorded."""
    from emofeat.audio import AudioError
    from emofeat.corpus.manifest import write_manifest

    frame = manifest.frame.copy()
    frame["audio_path"] = [str(manifest.audio_path(i)) for i in range(len(frame))]
    wav = manifest.audio_path(4)
    damaged = tmp_path / "damaged.wav"
    data = wav.read_bytes()
    damaged.write_bytes(data[:44] + b"\x00" * (len(data) - 44))  # valid header, NaN-free zeros
    frame.loc[frame.index[4], "audio_path"] = str(damaged)
    write_manifest(frame, tmp_path / "m.csv")

    import emofeat.encoders.speech as speech

    real = speech.load_audio

    def fails_on_damaged(path, *args, **kw):
        if str(path).endswith("damaged.wav"):
            raise AudioError(f"{path}: could not decode the audio data")
        return real(path, *args, **kw)

    monkeypatch.setattr(speech, "load_audio", fails_on_damaged)  # forked workers inherit it
    cfg = dict(model=str(tiny_wav2vec2), workers=2)
    with pytest.raises(AudioError, match="damaged.wav: could not decode"):
        extract(tmp_path / "m.csv", tmp_path / "s.h5", ExtractConfig(**cfg))
    # The workers stopped with the error, not later (the traceback still holds the frames).
    import psutil

    def alive(process):
        try:
            return process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    assert not [c for c in psutil.Process().children() if alive(c)]
    extract(tmp_path / "m.csv", tmp_path / "s.h5", ExtractConfig(**cfg, skip_bad=True))
    with open_store(tmp_path / "s.h5") as s:
        reasons = s.skip_reasons()
        assert (
            list(reasons) == [frame["id"].iat[4]]
            and "could not decode" in reasons[frame["id"].iat[4]]
        )
        assert s.done.sum() == len(frame) - 1


def test_the_store_records_where_the_time_went(manifest, manifest_path, tiny_wav2vec2, tmp_path):
    import soundfile as sf

    out = tmp_path / "t.h5"
    cfg = ExtractConfig(model=str(tiny_wav2vec2), workers=1)
    extract(manifest_path, out, cfg)
    with h5py.File(out, "r") as f:
        timings = yaml.safe_load(f.attrs["timings"])
    audio = sum(sf.info(str(manifest.audio_path(i))).duration for i in range(len(manifest)))
    assert timings["rows"] == len(manifest) and timings["workers"] == 1
    assert timings["audio_seconds"] == pytest.approx(audio, rel=1e-3)
    stages = timings["stages"]
    assert {"decode", "waiting for input", "forward", "pool", "write"} <= set(stages)
    assert 0 < stages["forward"] < timings["seconds"]
    extract(manifest_path, out, cfg)  # nothing left to do: the store and its record stay
    with h5py.File(out, "r") as f:
        assert yaml.safe_load(f.attrs["timings"]) == timings and f.attrs["complete"]


@pytest.mark.parametrize("failure", ["non-finite values", "an error in the forward pass"])
def test_rows_computed_before_a_failure_are_kept(
    failure, manifest, manifest_path, tiny_wav2vec2, tmp_path, monkeypatch
):
    """The fourth batch fails; the three before it (the last one still in flight, the others
    waiting in the write buffer) are written, not recomputed, and a re-run does the rest."""
    from emofeat.encoders.base import Encoder
    from emofeat.errors import EmofeatError

    cfg = dict(model=str(tiny_wav2vec2), batch_seconds=2, workers=0)
    clean = tmp_path / "clean.h5"
    extract(manifest_path, clean, ExtractConfig(**cfg))
    real, rows_before = Encoder.forward_part, []

    def fails_fourth(self, model, inputs, owner, *, n_rows, **kw):
        if len(rows_before) == 3 and failure != "non-finite values":
            raise RuntimeError("boom")
        feats = real(self, model, inputs, owner, n_rows=n_rows, **kw)
        rows_before.append(n_rows)
        if len(rows_before) == 4:
            feats.sums = feats.sums * float("nan")
        return feats

    monkeypatch.setattr(Encoder, "forward_part", fails_fourth)
    out = tmp_path / "s.h5"
    error = (
        (EmofeatError, "non-finite embeddings")
        if "non-finite" in failure
        else (RuntimeError, "boom")
    )
    with pytest.raises(error[0], match=error[1]):
        extract(manifest_path, out, ExtractConfig(**cfg))
    with open_store(out) as s, open_store(clean) as c:
        done = s.select(done=True)
        assert len(done) == sum(rows_before[:3]) and not s.complete
        np.testing.assert_array_equal(s.embeddings("last", done), c.embeddings("last", done))
    monkeypatch.setattr(Encoder, "forward_part", real)
    extract(manifest_path, out, ExtractConfig(**cfg))  # the rest, on resume
    with open_store(out) as s, open_store(clean) as c:
        assert s.complete
        np.testing.assert_allclose(s.embeddings("last"), c.embeddings("last"), atol=2e-5)


def test_default_workers_leave_a_cpu_to_the_model_and_feed_a_gpu(monkeypatch):
    from emofeat.extract.inputs import default_workers

    assert default_workers("cpu") == 0  # the model's threads use every core
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert default_workers("cuda") == 8 and default_workers("cuda:1") == 8
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert default_workers("cuda") == 1
