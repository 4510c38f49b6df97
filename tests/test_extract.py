"""Extraction into stores, checked against independent computations with plain transformers."""

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from emofeat.audio import load_audio
from emofeat.corpus.manifest import read_manifest, write_manifest
from emofeat.encoders.speech import duration_batches
from emofeat.errors import EmofeatError, StoreError
from emofeat.extract.config import ExtractConfig
from emofeat.extract.run import extract
from emofeat.store import StoreLayout, open_store


def independent_speech(folder, manifest, rows, reverse=False, std=False):
    """Per hidden state, the mean over all frames of each clip run alone (no padding); with
    ``std``, (mean, population std by np.std) pairs."""
    from transformers import AutoFeatureExtractor, AutoModel

    model = AutoModel.from_pretrained(folder).eval()
    fe = AutoFeatureExtractor.from_pretrained(folder)
    out = []
    for r in rows:
        x = load_audio(manifest.audio_path(r), reverse=reverse)
        with torch.no_grad():
            hs = model(
                fe(x, sampling_rate=16000, return_tensors="pt")["input_values"],
                output_hidden_states=True,
            ).hidden_states
        frames = [h[0].double().numpy() for h in hs]
        if std:
            out.append([(f.mean(0), np.std(f, axis=0)) for f in frames])
        else:
            out.append([h[0].float().mean(0).numpy() for h in hs])
    return out


@pytest.fixture(scope="module")
def frozen_store(tmp_path_factory, manifest_path, tiny_wav2vec2):
    out = tmp_path_factory.mktemp("stores") / "frozen.h5"
    extract(
        manifest_path,
        out,
        ExtractConfig(model=str(tiny_wav2vec2), layers="all", pooling="mean+std", batch_seconds=6),
    )
    return out


def test_frozen_embeddings_equal_plain_transformers_per_layer(
    frozen_store, manifest, tiny_wav2vec2
):
    rows = [0, 5, len(manifest) - 1]
    ref = independent_speech(tiny_wav2vec2, manifest, rows, std=True)
    with open_store(frozen_store) as s:
        assert s.complete and not s.has_logits
        # A frozen pretrained encoder learned from no row: out_of_fold is not claimed either way.
        assert "out_of_fold" not in s.attrs and not s.in_sample.any()
        assert s.embedding_names == ["last", "layer_00", "layer_01", "layer_02"]
        # "last" is an alias of the last hidden state, also for plain h5py readers.
        np.testing.assert_array_equal(s.embeddings("last"), s.embeddings("layer_02"))
        assert s.layout.aliases == {"last": "layer_02"}
        for name in ("layer_00", "layer_01", "layer_02"):
            layer = int(name[-2:])
            got = s.embeddings(name, rows)
            h = got.shape[1] // 2
            for j in range(len(rows)):
                mean, std = ref[j][layer]
                np.testing.assert_allclose(got[j, :h], mean, atol=2e-5, rtol=1e-4)
                # The std half: the population std over the clip's frames, as np.std.
                np.testing.assert_allclose(got[j, h:], std, atol=1e-4, rtol=1e-3)


def test_batched_equals_one_at_a_time(frozen_store, manifest_path, tiny_wav2vec2, tmp_path):
    one = tmp_path / "one.h5"
    extract(
        manifest_path,
        one,
        ExtractConfig(
            model=str(tiny_wav2vec2), layers="all", pooling="mean+std", batch_seconds=0.01
        ),
    )
    with open_store(frozen_store) as a, open_store(one) as b:
        for name in a.embedding_names:
            np.testing.assert_allclose(a.embeddings(name), b.embeddings(name), atol=2e-5, rtol=1e-4)


def test_out_of_fold_rule_and_reverse(w2v_run, manifest, manifest_path, tmp_path):
    from emofeat.encoders.speech import SpeechClassifier

    out = tmp_path / "oof.h5"
    extract(manifest_path, out, ExtractConfig(run=str(w2v_run)))
    folds = [SpeechClassifier.from_pretrained(w2v_run / f"fold-{k}").eval() for k in range(2)]
    from transformers import AutoFeatureExtractor

    fe = AutoFeatureExtractor.from_pretrained(w2v_run / "fold-0")

    def predict(model, r):
        x = load_audio(
            manifest.audio_path(r), reverse=True
        )  # the run was trained on reversed audio
        with torch.no_grad():
            return (
                model(fe(x, sampling_rate=16000, return_tensors="pt")["input_values"])
                .logits[0]
                .numpy()
            )

    with open_store(out) as s:
        assert s.attrs["reverse"] and s.attrs["out_of_fold"]
        train0 = np.flatnonzero((s.split == "train") & (s.fold == 0))[:3]
        train1 = np.flatnonzero((s.split == "train") & (s.fold == 1))[:3]
        test = np.flatnonzero(s.split == "test")[:3]
        for r in train0:
            np.testing.assert_allclose(s.logits([r])[0], predict(folds[0], r), atol=1e-4)
            assert not np.allclose(s.logits([r])[0], predict(folds[1], r), atol=1e-4)
        for r in train1:
            np.testing.assert_allclose(s.logits([r])[0], predict(folds[1], r), atol=1e-4)
        for r in test:
            np.testing.assert_allclose(
                s.logits([r])[0], (predict(folds[0], r) + predict(folds[1], r)) / 2, atol=1e-4
            )


def test_text_extraction_from_a_kobert_run(kobert_run, manifest, manifest_path, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from emofeat.encoders.text import KoBertTokenizerFixed

    out = tmp_path / "kobert.h5"
    extract(manifest_path, out, ExtractConfig(run=str(kobert_run), layers="0,last", batch_size=7))
    model = AutoModelForSequenceClassification.from_pretrained(kobert_run / "fold-1").eval()
    tok = KoBertTokenizerFixed.from_pretrained(kobert_run / "fold-1")
    with open_store(out) as s:
        assert (
            set(s.embedding_names) == {"layer_00", "last", "pooler"}
            and s.attrs["modality"] == "text"
        )
        rows = np.flatnonzero((s.split == "train") & (s.fold == 1))[:4]
        for r in rows:
            enc = tok(
                manifest.frame["text"].iat[r], truncation=True, max_length=64, return_tensors="pt"
            )
            with torch.no_grad():
                o = model(**enc, output_hidden_states=True)
            np.testing.assert_allclose(s.logits([r])[0], o.logits[0].numpy(), atol=1e-5)
            np.testing.assert_allclose(
                s.embeddings("last", [r])[0], o.hidden_states[-1][0].mean(0).numpy(), atol=1e-5
            )


def test_stores_name_the_sha256_of_the_weights_that_made_them(
    frozen_store, tiny_wav2vec2, kobert_run, manifest_path, tmp_path
):
    """checkpoint_sha256 and the per-model weights_sha256 of the store's identity, against
    hashlib over the weight files: one frozen model, and a run's two fold models (whole: their
    bytes in fold order)."""
    import hashlib

    def sha(*files):
        h = hashlib.sha256()
        for f in files:
            h.update(Path(f).read_bytes())
        return h.hexdigest()

    def weights(folder):
        files = sorted(Path(folder).glob("*.safetensors"))
        assert files
        return files

    own = sha(*weights(tiny_wav2vec2))
    with open_store(frozen_store) as s:
        assert s.provenance.checkpoint_sha256 == own
        assert s.config["weights_sha256"] == [own]
    out = tmp_path / "kobert.h5"
    extract(manifest_path, out, ExtractConfig(run=str(kobert_run), layers="last"))
    folds = [weights(kobert_run / f"fold-{k}") for k in (0, 1)]
    with open_store(out) as s:
        assert s.provenance.checkpoint_sha256 == sha(*folds[0], *folds[1])
        assert s.config["weights_sha256"] == [sha(*f) for f in folds]
        assert len(set(s.config["weights_sha256"])) == 2


def test_long_clips_are_windowed_and_pooled_over_all_frames(
    manifest_path, manifest, tiny_wav2vec2, tmp_path
):
    out = tmp_path / "win.h5"
    extract(manifest_path, out, ExtractConfig(model=str(tiny_wav2vec2), max_seconds=0.3))
    from transformers import AutoFeatureExtractor, AutoModel

    model = AutoModel.from_pretrained(tiny_wav2vec2).eval()
    fe = AutoFeatureExtractor.from_pretrained(tiny_wav2vec2)
    r = 3
    x = load_audio(manifest.audio_path(r))
    win = int(0.3 * 16000)
    pieces = [x[i : i + win] for i in range(0, len(x), win)]
    if len(pieces[-1]) < win // 4:  # the tail joins the window before it
        tail = pieces.pop()  # (popped first: the right side of `pieces[-2] = ...` runs first)
        pieces[-1] = np.concatenate([pieces[-1], tail])
    total, frames = 0, 0
    for p in pieces:
        with torch.no_grad():
            h = model(
                fe(p, sampling_rate=16000, return_tensors="pt")["input_values"]
            ).last_hidden_state[0]
        total, frames = total + h.sum(0).numpy(), frames + h.shape[0]
    with open_store(out) as s:
        np.testing.assert_allclose(
            s.embeddings("last", [r])[0], total / frames, atol=2e-5, rtol=1e-4
        )


def test_bf16_equals_plain_transformers_under_bf16_autocast(
    frozen_store, manifest, manifest_path, tiny_wav2vec2, tmp_path
):
    """bf16 extraction is compared with the same model run clip by clip under bf16 autocast by
    plain transformers. How close bf16 is to fp32 depends on the CPU's bf16 kernels (native
    AVX512-BF16/AMX or emulated) and, for a tiny random model, is no property of emofeat: it is
    measured on the plain model and emofeat must not be further from fp32 than that."""
    out = tmp_path / "bf16.h5"
    extract(
        manifest_path,
        out,
        ExtractConfig(model=str(tiny_wav2vec2), layers="all", pooling="mean+std", precision="bf16"),
    )
    rows = [0, 5, 17, len(manifest) - 1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain_bf16 = independent_speech(tiny_wav2vec2, manifest, rows)
    plain_fp32 = independent_speech(tiny_wav2vec2, manifest, rows)

    def cos(x, y):
        return (x * y).sum(-1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(y, axis=-1)

    with open_store(frozen_store) as a, open_store(out) as b:
        assert b.attrs["precision"] == "bf16"
        for layer in range(3):
            ours = b.embeddings(f"layer_{layer:02d}", rows)[:, : ours_width(b)]
            fp32 = a.embeddings(f"layer_{layer:02d}", rows)[:, : ours_width(a)]
            ref = np.stack([plain_bf16[j][layer] for j in range(len(rows))])
            ref32 = np.stack([plain_fp32[j][layer] for j in range(len(rows))])
            assert cos(ours, ref).min() > 0.9999
            assert cos(ours, fp32).min() >= cos(ref, ref32).min() - 0.01
    with pytest.raises(EmofeatError, match="fp16 needs a GPU"):
        extract(
            manifest_path,
            tmp_path / "x.h5",
            ExtractConfig(model=str(tiny_wav2vec2), precision="fp16", device="cpu"),
        )


def ours_width(store):
    """The mean half of a mean+std embedding."""
    return store.embeddings("layer_00", [0]).shape[1] // 2


def test_cuda_oom_splits_the_batch(
    frozen_store, manifest_path, tiny_wav2vec2, tmp_path, monkeypatch
):
    from emofeat.encoders.speech import SpeechEncoder

    real = SpeechEncoder.forward_part
    calls = []

    def flaky(self, model, pieces, owner, *, n_rows, **kw):
        calls.append(n_rows)
        if n_rows > 2:
            raise torch.cuda.OutOfMemoryError("simulated")
        return real(self, model, pieces, owner, n_rows=n_rows, **kw)

    monkeypatch.setattr(SpeechEncoder, "forward_part", flaky)
    out = tmp_path / "oom.h5"
    extract(
        manifest_path,
        out,
        ExtractConfig(model=str(tiny_wav2vec2), layers="all", pooling="mean+std", batch_seconds=6),
    )
    assert max(calls) > 2 and any(c <= 2 for c in calls)
    with open_store(frozen_store) as a, open_store(out) as b:
        assert b.complete
        np.testing.assert_allclose(
            a.embeddings("layer_01"), b.embeddings("layer_01"), atol=2e-5, rtol=1e-4
        )


def test_corrupt_wav_stops_with_its_name_or_is_skipped(manifest, tiny_wav2vec2, tmp_path):
    frame = manifest.frame.copy()
    frame["audio_path"] = [str(manifest.audio_path(i)) for i in range(len(frame))]
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage")
    frame.loc[frame.index[7], "audio_path"] = str(bad)
    write_manifest(frame, tmp_path / "m.csv")
    with pytest.raises(EmofeatError, match="broken.wav"):
        extract(tmp_path / "m.csv", tmp_path / "s.h5", ExtractConfig(model=str(tiny_wav2vec2)))
    extract(
        tmp_path / "m.csv",
        tmp_path / "s.h5",
        ExtractConfig(model=str(tiny_wav2vec2), skip_bad=True),
    )
    with open_store(tmp_path / "s.h5") as s:
        reasons = s.skip_reasons()
        assert list(reasons) == [frame["id"].iat[7]] and "broken.wav" in reasons[frame["id"].iat[7]]
        assert s.done.sum() == len(frame) - 1 and s.complete


def test_duration_batches_bound_budget_and_padding():
    rng = np.random.default_rng(0)
    d = rng.uniform(1, 12, 200)
    batches = duration_batches(np.arange(200), d, budget_s=30.0, max_s=20.0)
    assert sorted(np.concatenate(batches)) == list(range(200))
    for b in batches:
        assert len(b) == 1 or d[b].max() * len(b) <= 30.0
        assert d[b].max() <= 1.1 * d[b].min()
    padded = sum(d[b].max() * len(b) for b in batches)
    assert 1 - d.sum() / padded < 0.1
    long = duration_batches(np.arange(3), np.array([50.0, 1.0, 1.05]), budget_s=40.0, max_s=20.0)
    assert [list(b) for b in long] == [[1, 2], [0]]  # 50 s = 3 windows of 20 s: 60 s alone


def extract_args(model, manifest, out, *extra):
    """`emofeat extract` arguments of the frozen store fixture (all layers, mean+std)."""
    return [
        "extract",
        "--model",
        model,
        "--manifest",
        manifest,
        "--out",
        out,
        "--layers",
        "all",
        "--pooling",
        "mean+std",
        *extra,
    ]


def _cli(*args):
    return [sys.executable, "-m", "emofeat.cli", *map(str, args)]


def test_resume_after_sigkill_equals_uninterrupted(
    frozen_store, manifest_path, tiny_wav2vec2, tmp_path
):
    out = tmp_path / "killed.h5"
    # With input workers: forked, they outlive the killed writer for a moment and must not hold
    # its lock then (the re-run would find "another process is writing this store").
    args = extract_args(
        tiny_wav2vec2,
        manifest_path,
        out,
        "--batch-seconds",
        "0.01",
        "--flush-rows",
        "1",
        "--workers",
        "2",
    )
    for _attempt in range(3):  # a loaded machine can let the writer finish before the kill
        log = open(tmp_path / "stderr.txt", "w")  # noqa: SIM115 - read when the writer exits early
        proc = subprocess.Popen(_cli(*args), stdout=subprocess.DEVNULL, stderr=log)
        done = 0
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if out.exists():
                try:
                    with open_store(out) as s:
                        done = int(s.done.sum())
                except Exception:
                    done = 0
                if done >= 5:
                    break
            time.sleep(0.02)
        early = proc.poll()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()
        assert early in (None, 0), (tmp_path / "stderr.txt").read_text()[-3000:]
        with open_store(out) as s:
            if s.done.sum() < len(s):
                break
        out.unlink()
    with open_store(out) as s:
        assert 0 < s.done.sum() < len(s), "the writer should have been killed mid-run"
    subprocess.run(_cli(*args), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open_store(frozen_store) as a, open_store(out) as b:
        assert b.complete
        for name in a.embedding_names:
            np.testing.assert_allclose(a.embeddings(name), b.embeddings(name), atol=2e-5, rtol=1e-4)


def test_two_processes_equal_one(frozen_store, manifest_path, tiny_wav2vec2, tmp_path):
    out = tmp_path / "ddp.h5"
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "--",  # the documented form: without it torchrun reads emofeat's --run as its --run-path
        "emofeat.cli",
    ]
    args = extract_args(tiny_wav2vec2, manifest_path, out, "--device", "cpu")
    r = subprocess.run(torchrun + list(map(str, args)), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("store complete:") == 1  # said by the main process alone
    assert not list(tmp_path.glob("ddp.rank*"))
    with open_store(frozen_store) as a, open_store(out) as b:
        assert b.complete and list(a.ids) == list(b.ids)
        for name in a.embedding_names:
            np.testing.assert_allclose(a.embeddings(name), b.embeddings(name), atol=2e-5, rtol=1e-4)


def test_process_shares_are_contiguous_cover_every_row_once_and_balance_the_work():
    from emofeat.distributed import share

    rng = np.random.default_rng(0)
    for _ in range(200):
        n, world = int(rng.integers(1, 40)), int(rng.integers(1, 6))
        work = rng.uniform(0, 10, n) * rng.integers(1, 6, n)  # seconds x fold models
        masks = [share(work, processes=world, process=r) for r in range(world)]
        owner = np.argmax(masks, axis=0)
        assert (np.sum(masks, axis=0) == 1).all()  # every row in exactly one share
        assert (np.diff(owner) >= 0).all()  # contiguous, in rank order
        for mask in masks:
            assert abs(work[mask].sum() - work.sum() / world) <= work.max() + 1e-9
    # Test rows predicted by five fold models at the end: a cut by count would give the last
    # process 5x the work of the first.
    work = np.r_[np.ones(80), np.full(20, 5.0)]
    first = share(work, processes=2, process=0)
    assert work[first].sum() == work[~first].sum() == 90
    # Without work, a cut by count.
    for r, rows in enumerate(np.array_split(np.arange(7), 3)):
        assert list(np.flatnonzero(share(np.zeros(7), processes=3, process=r))) == list(rows)


def test_each_process_of_a_job_computes_on_the_gpu_of_its_local_rank(monkeypatch):
    import torch

    from emofeat import distributed

    chosen = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "6")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert distributed.process_device("cuda") == "cuda:2" and chosen == ["cuda:2"]
    assert distributed.process_device("cpu") == "cpu"
    assert distributed.process_device("cuda:3") == "cuda:3"  # a device the user named stays
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.process_device("cuda") == "cuda"  # one process: the current device


def test_a_job_resumed_with_fewer_processes_takes_every_shard(
    frozen_store, manifest_path, tiny_wav2vec2, tmp_path, monkeypatch
):
    """Processes of a job run one after another here (the barrier does nothing). A job of three
    processes stops before rank 0 ran; resumed with two, the shares move: rows computed twice
    are taken once, the third process's shard is merged too, and no shard is left. A third
    shard made with other options is replaced with --overwrite and refused without it."""
    from emofeat import distributed

    monkeypatch.setattr(distributed, "barrier", lambda: None)
    out = tmp_path / "job.h5"
    cfg = dict(model=str(tiny_wav2vec2), layers="all", pooling="mean+std", batch_seconds=6)

    def run(world, ranks, **options):
        monkeypatch.setattr(distributed, "world_size", lambda: world)
        for r in ranks:
            monkeypatch.setattr(distributed, "rank", lambda r=r: r)
            extract(manifest_path, out, ExtractConfig(**cfg, **options))

    def check():
        assert not list(tmp_path.glob("job.rank*"))
        with open_store(frozen_store) as a, open_store(out) as b:
            assert b.complete and list(a.ids) == list(b.ids)
            for name in a.embedding_names:
                np.testing.assert_allclose(
                    a.embeddings(name), b.embeddings(name), atol=2e-5, rtol=1e-4
                )

    run(3, [2, 1])
    assert not out.exists() and (tmp_path / "job.rank2.h5").exists()
    run(2, [1, 0])
    check()
    # With --overwrite the shards of an earlier job (here made with other options, which the
    # merge would refuse) are replaced, the third one removed unread.
    out.unlink()
    cfg["pooling"] = "mean"
    run(3, [2, 1])
    cfg["pooling"] = "mean+std"
    run(2, [1, 0], overwrite=True)
    check()
    # Without --overwrite such a shard is refused, naming it, before anything is computed.
    out.unlink()
    cfg["pooling"] = "mean"
    run(3, [2])
    cfg["pooling"] = "mean+std"
    with pytest.raises(StoreError, match=r"job\.rank2\.h5 exists and was made for something else"):
        run(2, [0])
    assert not (tmp_path / "job.rank0.h5").exists() and not out.exists()


def test_refuses_a_store_made_for_other_options(
    frozen_store, manifest_path, tiny_wav2vec2, tmp_path
):
    copy = tmp_path / "f.h5"
    shutil.copy(frozen_store, copy)
    with pytest.raises(EmofeatError, match="config differs"):
        extract(
            manifest_path,
            copy,
            ExtractConfig(
                model=str(tiny_wav2vec2), layers="all", pooling="mean+std", max_seconds=3
            ),
        )
    assert read_manifest(manifest_path)  # nothing else touched


def test_autocast_casts_each_weight_once_per_extraction_loop():
    """Extraction's loop (inference_context) keeps one autocast region: a further forward pass
    casts only its input, its weights are reused; under inference_mode autocast would cast the
    weights again on every pass (why the loop uses no_grad)."""
    from emofeat.encoders.base import autocast_context, inference_context

    layer = torch.nn.Linear(8, 8)
    x = torch.randn(2, 8)

    def casts(context, passes: int) -> int:
        """aten::_to_copy calls of ``passes`` forward passes, each in its own autocast region
        (as Encoder.forward_part enters one), all inside ``context``."""
        with torch.profiler.profile() as prof, context():
            for _ in range(passes):
                with autocast_context("cpu", torch.bfloat16):
                    y = layer(x)
                assert y.dtype == torch.bfloat16
        return sum(e.count for e in prof.key_averages() if e.key == "aten::_to_copy")

    def loop():
        return inference_context("cpu", torch.bfloat16)

    first = casts(loop, 1)
    assert first >= 3  # input, weight, bias
    assert casts(loop, 3) - first == 2  # each further pass: its input only
    assert casts(torch.inference_mode, 3) - casts(torch.inference_mode, 1) == 2 * first
    with loop():  # between passes (pooling sums) the loop computes in float32
        assert (x @ layer.weight).dtype == torch.float32 and not torch.is_grad_enabled()
    with inference_context("cpu", None):  # fp32: no autocast, no gradients
        assert layer(x).dtype == torch.float32 and not torch.is_grad_enabled()


def test_bf16_on_a_cpu_without_native_bf16_warns(
    manifest_path, tiny_wav2vec2, tmp_path, monkeypatch, caplog
):
    import emofeat.device as dev

    # A model folder that does not exist: the precision is checked before any model is loaded.
    cfg = ExtractConfig(model=str(tmp_path / "no-model"), precision="bf16", device="cpu")
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: False)
    caplog.set_level("WARNING", logger="emofeat.device")
    with pytest.raises(EmofeatError, match="no-model"):
        extract(manifest_path, tmp_path / "w.h5", cfg)
    assert "without native bf16" in caplog.text
    caplog.clear()
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: True)
    with pytest.raises(EmofeatError, match="no-model"):
        extract(manifest_path, tmp_path / "w.h5", cfg)
    assert "native bf16" not in caplog.text
    assert not (tmp_path / "w.h5").exists()


def test_a_manifest_with_another_fold_assignment_is_refused(
    kobert_run, manifest, corpus_dir, tmp_path
):
    from emofeat.corpus.prepare import prepare

    other = tmp_path / "reseeded.csv"
    prepare(
        other, kemdy20=corpus_dir / "KEMDy20_v1_1", aihub=corpus_dir / "AI_Hub", folds=2, seed=1
    )
    m2 = read_manifest(other)
    moved = [
        u
        for u, f2 in zip(m2.ids, m2.fold)
        if f2 >= 0 and f2 != manifest.fold[list(manifest.ids).index(u)]
    ]
    assert moved  # the other seed moves rows between folds
    out = tmp_path / "s.h5"
    with pytest.raises(
        EmofeatError, match=r"(?s)another fold assignment.*manifest fold \d, run fold \d"
    ):
        extract(other, out, ExtractConfig(run=str(kobert_run)))
    assert not out.exists()
    # A train row turned into a test row: fold models trained on it, so its test values leak.
    frame = manifest.frame.copy()
    frame["audio_path"] = [str(manifest.audio_path(i)) for i in range(len(frame))]
    i = int(np.flatnonzero(manifest.split == "train")[0])
    frame.loc[frame.index[i], ["split", "fold"]] = ["test", -1]
    write_manifest(frame, tmp_path / "leak.csv")
    with pytest.raises(
        EmofeatError,
        match=rf"{frame['id'].iat[i]}: test row in the manifest, but fold models trained on it",
    ):
        extract(tmp_path / "leak.csv", out, ExtractConfig(run=str(kobert_run)))
    assert not out.exists()


def test_stores_record_per_row_evidence(kobert_run, manifest, manifest_path, tiny_kobert, tmp_path):
    from emofeat.finetune.config import resolve_config
    from emofeat.finetune.run import finetune

    out = tmp_path / "oof.h5"
    extract(manifest_path, out, ExtractConfig(run=str(kobert_run)))
    with open_store(out) as s:
        assert s.in_sample is not None and not s.in_sample.any() and s.provenance.out_of_fold
    cfg = resolve_config(
        "kobert-tiny", model="kobert", model_path=str(tiny_kobert), folds=0, max_steps=1
    )
    finetune(manifest, tmp_path / "all", cfg)
    extract(manifest_path, tmp_path / "all.h5", ExtractConfig(run=str(tmp_path / "all")))
    with open_store(tmp_path / "all.h5") as s:
        labelled_train = (s.split == "train") & (s.labels >= 0)
        np.testing.assert_array_equal(s.in_sample, labelled_train)
        assert s.provenance.out_of_fold is False


def test_encoders_return_unpooled_sequences(manifest, tiny_wav2vec2, kobert_run):
    """The encoder interface's sequence output (for sequence models such as MMM) equals plain
    transformers: per row, a layer's states at the valid frames or tokens only."""
    from transformers import AutoModel

    from emofeat.encoders.base import InputOptions
    from emofeat.encoders.speech import SpeechEncoder
    from emofeat.encoders.text import TextEncoder

    enc = SpeechEncoder.from_folder(str(tiny_wav2vec2), InputOptions(max_seconds=0.3))
    model = enc.load_pretrained(str(tiny_wav2vec2))
    rows = [0, 3]
    pieces = [enc.load_pieces(manifest, r, 400) for r in rows]
    flat = [p for ps in pieces for p in ps]
    owner = np.repeat(np.arange(len(rows)), [len(ps) for ps in pieces])
    assert len(flat) > len(rows)  # windows: a row's frames come from several pieces
    with torch.inference_mode():
        got = enc.forward(
            model,
            enc.encode(flat),
            owner,
            n_rows=len(rows),
            layers=[2],
            device="cpu",
            autocast=None,
            sequence_layer=2,
        )
        plain = AutoModel.from_pretrained(tiny_wav2vec2).eval()
        for j, ps in enumerate(pieces):
            ref = torch.cat(
                [
                    plain(
                        enc.collator().encode([p])["input_values"], output_hidden_states=True
                    ).hidden_states[2][0]
                    for p in ps
                ]
            )
            torch.testing.assert_close(got.sequences[j], ref, atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(got.pooled[2][0][j], ref.mean(0), atol=2e-5, rtol=1e-4)
    tenc = TextEncoder.from_folder(str(kobert_run / "fold-0"), InputOptions(max_len=64))
    tmodel = tenc.load_classifier(str(kobert_run / "fold-0"))
    texts = [manifest.frame["text"].iat[r] for r in (1, 2)]
    with torch.inference_mode():
        got = tenc.forward(
            tmodel,
            tenc.encode(texts),
            np.arange(2),
            n_rows=2,
            layers=[1],
            device="cpu",
            autocast=None,
            sequence_layer=1,
        )
        for j, t in enumerate(texts):
            enc_t = tenc.collator().encode([t])
            ref = tmodel(**enc_t, output_hidden_states=True).hidden_states[1][0]
            assert got.sequences[j].shape == ref.shape  # every token, no padding
            torch.testing.assert_close(got.sequences[j], ref, atol=1e-5, rtol=1e-4)


def test_an_all_layer_store_answers_to_last_with_plain_h5py(frozen_store, tmp_path):
    import h5py

    from emofeat.store import merge_stores

    with h5py.File(frozen_store, "r") as f:
        done = f["done"][:]
        np.testing.assert_array_equal(
            f["embeddings/last"][:][done], f["embeddings/layer_02"][:][done]
        )
    merged = merge_stores([frozen_store], tmp_path / "merged.h5")  # aliases survive a merge
    with open_store(merged) as s:
        assert s.layout.aliases == {"last": "layer_02"}


def test_write_behind_writes_few_large_blocks_and_keeps_done_rows_exact(tmp_path):
    from emofeat.store import create_store
    from emofeat.store.buffer import WriteBehind

    n = 40
    writer = create_store(
        tmp_path / "w.h5",
        StoreLayout(
            ids=[f"u{i}" for i in range(n)],
            labels=np.zeros(n, int),
            split=["test"] * n,
            fold=np.full(n, -1),
            label_names=["a", "b"],
            embeddings={"last": 3},
        ),
    )
    calls = []
    real = writer.write
    writer.write = lambda rows, **kw: (calls.append(len(rows)), real(rows, **kw))[1]
    buffered = WriteBehind(writer, seconds=1e9)  # flushes only at window ends
    order = np.random.default_rng(0).permutation(n)
    for b, batch in enumerate(np.array_split(order, 10)):  # 10 batches of 4 rows, out of order
        buffered.add(
            batch,
            logits=np.c_[batch, -batch].astype(float),
            embeddings={"last": np.repeat(batch[:, None], 3, 1).astype(float)},
        )
        assert writer.done.sum() == sum(calls)  # only flushed rows are done
        if b in (3, 7):
            buffered.flush()  # a window ends
    buffered.flush()
    assert calls == [16, 16, 8]
    buffered.seconds = 0  # slow compute: every batch is written at once
    writer.done[:] = False
    for batch in np.array_split(order, 10):
        buffered.add(batch, embeddings={"last": np.repeat(batch[:, None], 3, 1).astype(float)})
    assert calls[3:] == [4] * 10
    writer.finalize()
    with open_store(tmp_path / "w.h5") as s:
        np.testing.assert_array_equal(s.logits()[:, 0], np.arange(n))
        np.testing.assert_array_equal(s.embeddings("last")[:, 2], np.arange(n))


def test_a_fine_tuned_folder_loaded_as_a_frozen_encoder_brings_its_evidence(
    kobert_run, manifest_path, tmp_path
):
    """extract --model RUN/fold-0 is the model that trained on fold 1's rows: those rows are
    in-sample whatever flag loaded it, and stacking refuses them."""
    import json

    from emofeat.stack.ensemble import stack

    out = tmp_path / "fold0.h5"
    extract(manifest_path, out, ExtractConfig(model=str(kobert_run / "fold-0")))
    rows = json.loads((kobert_run / "fold-0" / "rows.json").read_text())
    with open_store(out) as s:
        expected = np.isin(s.ids, rows["train"] + rows["select"])
        assert expected.any()
        np.testing.assert_array_equal(s.in_sample, expected)
        assert s.provenance.out_of_fold is False
    with pytest.raises(EmofeatError, match="train rows are in-sample"):
        stack([out], "logreg", tmp_path / "st", features="logits")


def test_select_inner_runs_end_to_end(manifest, manifest_path, tiny_kobert, tmp_path):
    """finetune --select inner -> extract --run -> stack: the rows that chose a checkpoint are
    counted as used by that fold model, so the run is not mistaken for another assignment."""
    from emofeat.finetune.config import resolve_config
    from emofeat.finetune.run import finetune
    from emofeat.runs import RunFolder
    from emofeat.stack.ensemble import stack

    cfg = resolve_config(
        "kobert-tiny", model="kobert", model_path=str(tiny_kobert), epochs=2, select="inner"
    )
    finetune(manifest, tmp_path / "inner", cfg)
    run = RunFolder(tmp_path / "inner")
    assert all(run.fold_rows(k)["select"] for k in run.fold_ids())  # an inner split chose
    store = tmp_path / "inner.h5"
    extract(manifest_path, store, ExtractConfig(run=str(tmp_path / "inner")))
    with open_store(store) as s:
        assert s.complete and not s.in_sample.any() and s.provenance.out_of_fold
    m = stack([store], "logreg", tmp_path / "st").metrics
    assert m["in_sample_warning"] == "" and m["cv_protocol"] != "in-sample"


def test_input_limits_default_to_the_model_and_every_cut_is_counted(
    manifest, manifest_path, tiny_kobert, tiny_wav2vec2, tmp_path
):
    """A frozen text model's token limit defaults to its own (not the reference's 64), and
    extraction counts the rows it truncated or windowed, checked against the tokenizer and the
    clip durations directly."""
    import yaml

    from emofeat.encoders.text import load_tokenizer

    tok = load_tokenizer(str(tiny_kobert))
    out = tmp_path / "default.h5"
    extract(manifest_path, out, ExtractConfig(model=str(tiny_kobert)))
    from transformers import AutoConfig

    positions = AutoConfig.from_pretrained(tiny_kobert).max_position_embeddings
    with open_store(out) as s:  # the tokenizer sets no limit: the position embeddings do
        assert s.provenance.max_len == positions != 64
    out = tmp_path / "short.h5"
    extract(manifest_path, out, ExtractConfig(model=str(tiny_kobert), max_len=8))
    lengths = [len(tok(t, add_special_tokens=True)["input_ids"]) for t in manifest.frame["text"]]
    with open_store(out) as s:
        over = yaml.safe_load(s.attrs["timings"])["over_limit"]
    assert over["rows"] == sum(n > 8 for n in lengths) > 0 and "truncated" in over["effect"]
    from emofeat.audio import duration

    out = tmp_path / "windows.h5"
    extract(manifest_path, out, ExtractConfig(model=str(tiny_wav2vec2), max_seconds=0.6))
    seconds = [duration(manifest.audio_path(r)) for r in range(len(manifest))]
    with open_store(out) as s:
        over = yaml.safe_load(s.attrs["timings"])["over_limit"]
    assert over["rows"] == sum(d > 0.6 for d in seconds) > 0 and "windows" in over["effect"]


def test_windows_fold_a_short_tail_into_its_neighbour():
    from emofeat.encoders.speech import windows

    x = np.arange(11, dtype=np.float32)
    (only,) = windows(x, 10, 1)  # two windows, the second a short tail: folded (was IndexError)
    np.testing.assert_array_equal(only, x)
    parts = windows(np.arange(25, dtype=np.float32), 10, 1)
    assert [len(p) for p in parts] == [10, 10, 5]  # a tail of at least a quarter window stays
    parts = windows(np.arange(21, dtype=np.float32), 10, 12)
    assert [len(p) for p in parts] == [12, 12]  # 10 and 11 samples, padded to the minimum


def test_refit_test_rows_come_from_one_model_on_all_train_rows_and_reports_say_which(
    manifest, manifest_path, tiny_kobert, tmp_path
):
    """`finetune --refit` adds fold-all beside the fold models; `extract --test-rows refit`
    takes test rows from it (equal to it run alone), train rows still out-of-fold; the stack
    report and compare name what predicted each base model's test rows."""
    from click.testing import CliRunner
    from transformers import AutoModelForSequenceClassification

    from emofeat.analysis.compare import compare
    from emofeat.cli import main
    from emofeat.encoders.text import load_tokenizer
    from emofeat.finetune.config import resolve_config
    from emofeat.finetune.run import finetune
    from emofeat.stack.ensemble import stack

    run = tmp_path / "run"
    cfg = resolve_config(
        "kobert-tiny", model="kobert", model_path=str(tiny_kobert), epochs=1, refit=True
    )
    finetune(manifest, run, cfg)
    assert (run / "fold-all" / "model.safetensors").is_file() and (run / "fold-1").is_dir()
    stores = {}
    for rows in ("mean", "refit"):
        stores[rows] = tmp_path / f"{rows}.h5"
        args = ["extract", "--run", str(run), "--manifest", str(manifest_path)]
        args += ["--out", str(stores[rows])] + (["--test-rows", rows] if rows == "refit" else [])
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
    tok = load_tokenizer(str(run / "fold-all"))

    def alone(folder, r):
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        enc = tok(
            manifest.frame["text"].iat[r], truncation=True, max_length=64, return_tensors="pt"
        )
        with torch.no_grad():
            return model(**enc).logits[0].numpy()

    with open_store(stores["mean"]) as a, open_store(stores["refit"]) as b:
        test, train = b.select(split="test"), b.select(split="train")
        np.testing.assert_allclose(b.logits(train), a.logits(train), atol=1e-6)  # out-of-fold
        r = int(test[0])
        np.testing.assert_allclose(b.logits([r])[0], alone(run / "fold-all", r), atol=1e-4)
        folds = np.mean([alone(run / f"fold-{k}", r) for k in (0, 1)], axis=0)
        np.testing.assert_allclose(a.logits([r])[0], folds, atol=1e-4)
        assert not b.in_sample[test].any() and not b.in_sample[train].any()
        assert b.test_predictions == "one model refit on all train rows"
        assert a.test_predictions == "mean of 2 fold models"
        # The refit model is loaded only where it predicts: its weights are in b's identity only.
        assert len(a.config["weights_sha256"]) == 2 and len(b.config["weights_sha256"]) == 3
    out = tmp_path / "stack"
    stack([stores["mean"], stores["refit"]], "softvote", out)
    report = (out / "report.md").read_text()
    assert "one model refit on all train rows (refit)" in report
    assert "mean of 2 fold models (mean)" in report
    table = compare([out])
    assert "mean of 2 fold models" in table["base_test_rows"].iloc[0]
    plain = tmp_path / "plain"
    finetune(
        manifest,
        plain,
        resolve_config("kobert-tiny", model="kobert", model_path=str(tiny_kobert), epochs=1),
    )
    with pytest.raises(EmofeatError, match="no model refit on all train rows"):
        extract(manifest_path, tmp_path / "x.h5", ExtractConfig(run=str(plain), test_rows="refit"))
    # While fold-all is still training, the fold models' mean extracts and refit names it.
    from emofeat.runs import FOLD_DONE

    (run / "fold-all" / FOLD_DONE).unlink()
    extract(manifest_path, tmp_path / "again.h5", ExtractConfig(run=str(run)))
    with pytest.raises(EmofeatError, match=r"fold-all not trained yet.*--fold -1$"):
        extract(manifest_path, tmp_path / "r.h5", ExtractConfig(run=str(run), test_rows="refit"))


def test_states_beyond_float16_are_refused_in_a_float16_store(manifest_path, tiny_kobert, tmp_path):
    """A model whose states exceed float16's 65,504 (its last LayerNorm scaled up): a float16
    store is refused with the fix named and no row marked done; float32 holds them."""
    from safetensors.numpy import load_file, save_file

    model = tmp_path / "loud"
    shutil.copytree(tiny_kobert, model)
    weights = load_file(model / "model.safetensors")
    prefix = "bert." if any(k.startswith("bert.") for k in weights) else ""
    layers = [k for k in weights if k.startswith(f"{prefix}encoder.layer.")]
    last = max(int(k[len(prefix) :].split(".")[2]) for k in layers)
    key = f"{prefix}encoder.layer.{last}.output.LayerNorm.weight"
    weights[key] = weights[key] * 1e6
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "half.h5"
    with pytest.raises(StoreError, match=r"exceed float16's range .*--dtype float32"):
        extract(manifest_path, out, ExtractConfig(model=str(model), dtype="float16"))
    if out.exists():
        with open_store(out) as s:
            assert not s.done.any() and not s.complete
    full = tmp_path / "full.h5"
    extract(manifest_path, full, ExtractConfig(model=str(model), dtype="float32"))
    with open_store(full) as s:
        assert s.complete and np.abs(s.embeddings("last")).max() > 65504


def test_a_single_model_run_is_checked_against_the_manifest_too(manifest, tiny_kobert, tmp_path):
    """A --folds 0 run (the reference protocol's kind) trained on every train row: extracted
    with a manifest that relabels some of them as test rows, it is refused before a store
    exists, as a cross-fitted run is; the manifest it was made from is accepted."""
    from emofeat.corpus.manifest import write_manifest
    from emofeat.finetune.config import resolve_config
    from emofeat.finetune.run import finetune

    run = tmp_path / "single"
    cfg = resolve_config(
        "kobert-tiny", model="kobert", model_path=str(tiny_kobert), folds=0, max_steps=1
    )
    finetune(manifest, run, cfg)
    frame = manifest.frame.copy()
    frame["audio_path"] = [str(manifest.audio_path(i)) for i in range(len(frame))]
    moved = np.flatnonzero(frame["split"].to_numpy() == "train")[:5]
    frame.loc[frame.index[moved], "split"] = "test"
    frame.loc[frame.index[moved], "fold"] = -1
    write_manifest(frame, tmp_path / "relabelled.csv")
    out = tmp_path / "s.h5"
    with pytest.raises(EmofeatError, match=r"(?s)\(5 row\(s\) differ\).*test row in the manifest"):
        extract(tmp_path / "relabelled.csv", out, ExtractConfig(run=str(run)))
    assert not out.exists()
    extract(manifest.path, out, ExtractConfig(run=str(run)))
    with open_store(out) as s:
        assert s.in_sample[s.split == "train"].all() and not s.in_sample[s.split == "test"].any()


def test_rerunning_a_finished_extraction_says_nothing_was_computed(
    frozen_store, manifest_path, tiny_wav2vec2, tmp_path
):
    import shutil

    out = tmp_path / "again.h5"
    shutil.copy(frozen_store, out)
    r = subprocess.run(
        _cli(*extract_args(tiny_wav2vec2, manifest_path, out)), capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "every row is done already; nothing to compute" in r.stdout + r.stderr
    assert f"store complete: {out}" in r.stdout
    with open_store(out) as s:
        assert s.complete
