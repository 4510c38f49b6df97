"""Encoders and cross-fitted fine-tuning on tiny models built like the hub ones."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from emofeat.audio import load_audio
from emofeat.corpus.labels import LABEL_NAMES
from emofeat.encoders import resolve
from emofeat.encoders.speech import (
    SpeechClassifier,
    SpeechCollator,
    load_feature_extractor,
    load_speech_encoder,
)
from emofeat.errors import EmofeatError, ModelError
from emofeat.finetune.config import FinetuneConfig, resolve_config
from emofeat.finetune.run import build_model, finetune


def fold_rows(manifest, k):
    return np.flatnonzero((manifest.split == "train") & (manifest.fold == k))


def test_kobert_run_reloads_with_plain_transformers(kobert_run, manifest):
    from transformers import AutoModelForSequenceClassification

    from emofeat.encoders.text import KoBertTokenizerFixed

    cfg = yaml.safe_load((kobert_run / "config.yaml").read_text())["config"]
    assert cfg["folds"] == 2 and cfg["dropout"] == 0.3 and cfg["modality"] == "text"
    for k in range(2):
        fold = kobert_run / f"fold-{k}"
        model = AutoModelForSequenceClassification.from_pretrained(fold).eval()
        assert model.config.classifier_dropout == 0.3 and model.config.num_labels == 7
        tok = KoBertTokenizerFixed.from_pretrained(fold)
        rows = fold_rows(manifest, k)
        enc = tok(
            list(manifest.frame["text"].iloc[rows]),
            padding=True,
            truncation=True,
            max_length=64,
            return_tensors="pt",
        )
        assert "token_type_ids" in enc
        with torch.no_grad():
            pred = model(**enc).logits.argmax(-1).numpy()
        # The reloaded model reproduces the validation accuracy Trainer measured in memory.
        recorded = json.loads((fold / "metrics.json").read_text())["accuracy"]
        assert np.mean(pred == manifest.label_indices[rows]) == pytest.approx(recorded)


def test_speech_run_reloads_with_plain_transformers(w2v_run, manifest):
    from transformers import AutoFeatureExtractor, AutoModel

    fold = w2v_run / "fold-1"
    rows = fold_rows(manifest, 1)[:6]
    ours = SpeechClassifier.from_pretrained(fold).eval()
    encoder = AutoModel.from_pretrained(fold).eval()  # plain transformers
    head = load_file(fold / "head.safetensors")
    fe = AutoFeatureExtractor.from_pretrained(fold)
    for r in rows:
        x = load_audio(manifest.audio_path(r), reverse=True)
        inp = fe(x, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            pooled = encoder(inp["input_values"]).last_hidden_state.mean(1)
            by_hand = (
                torch.tanh(pooled @ head["dense.weight"].T + head["dense.bias"])
                @ head["out_proj.weight"].T
                + head["out_proj.bias"]
            )
            mine = ours(inp["input_values"], attention_mask=inp["attention_mask"]).logits
        torch.testing.assert_close(mine, by_hand, atol=1e-5, rtol=1e-4)
    all_rows = fold_rows(manifest, 1)
    coll = SpeechCollator(fe, 16000)
    batch = coll([{"input": load_audio(manifest.audio_path(r), reverse=True)} for r in all_rows])
    with torch.no_grad():
        pred = ours(**batch).logits.argmax(-1).numpy()
    recorded = json.loads((fold / "metrics.json").read_text())["accuracy"]
    assert np.mean(pred == manifest.label_indices[all_rows]) == pytest.approx(recorded)


def test_masked_pooling_makes_predictions_independent_of_batching(tiny_wav2vec2):
    torch.manual_seed(0)
    model = SpeechClassifier(load_speech_encoder(tiny_wav2vec2), 7).eval()
    coll = SpeechCollator(load_feature_extractor(tiny_wav2vec2), 16000)
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(n).astype(np.float32) for n in (4000, 16000, 9000)]
    with torch.no_grad():
        batched = model(**coll([{"input": c} for c in clips])).logits
        single = torch.cat([model(**coll([{"input": c}])).logits for c in clips])
        unmasked = model.head(
            model.encoder(
                **{k: v for k, v in coll([{"input": c} for c in clips]).items() if k != "lengths"}
            ).last_hidden_state.mean(1)
        )
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(
        unmasked[0], single[0], atol=1e-3
    )  # the reference's unmasked mean differs


def test_reverse_reverses(manifest):
    x = load_audio(manifest.audio_path(0))
    np.testing.assert_array_equal(load_audio(manifest.audio_path(0), reverse=True), x[::-1])
    stereo22k = next(i for i in range(len(manifest)) if manifest.frame["corpus"].iat[i] == "aihub")
    y = load_audio(manifest.audio_path(stereo22k))
    import soundfile as sf

    info = sf.info(str(manifest.audio_path(stereo22k)))
    assert info.channels == 2 and info.samplerate == 22050
    assert y.ndim == 1 and abs(len(y) - info.frames * 16000 / 22050) <= 2


def test_config_precedence_and_errors(tmp_path):
    (tmp_path / "c.yaml").write_text("lr: 0.5\nepochs: 3\n")
    cfg = resolve_config("kobert-ref", tmp_path / "c.yaml", epochs=9, dropout=None)
    assert (cfg.lr, cfg.epochs, cfg.batch_size, cfg.dropout) == (0.5, 9, 64, 0.5)
    with pytest.raises(EmofeatError, match="unknown option"):
        resolve_config(None, None, learning_rate=1)
    with pytest.raises(EmofeatError, match="--preset must be one of"):
        resolve_config("bert-huge")


def test_fold_count_must_match_the_manifest(manifest, tiny_kobert, tmp_path):
    cfg = resolve_config("kobert-tiny", model="kobert", model_path=str(tiny_kobert), folds=3)
    with pytest.raises(EmofeatError, match="manifest has 2 folds"):
        finetune(manifest, tmp_path / "r", cfg)


def test_hub_models_offline_give_a_clear_message():
    with pytest.raises(ModelError, match=r"monologg/kobert.*--model-path"):
        build_model(resolve("kobert"), FinetuneConfig(), LABEL_NAMES)
    with pytest.raises(ModelError, match="kresnik/wav2vec2-large-xlsr-korean"):
        build_model(resolve("wav2vec2"), FinetuneConfig(), LABEL_NAMES)


def test_other_options_refused_and_bad_rows(kobert_run, manifest, tiny_kobert, tmp_path):
    cfg = resolve_config(
        "kobert-tiny", model="kobert", model_path=str(tiny_kobert), epochs=2, dropout=0.7
    )
    with pytest.raises(EmofeatError, match="dropout"):
        finetune(manifest, kobert_run, cfg)
    frame = manifest.frame.copy()
    frame.loc[frame.index[:2], "text"] = ""
    from emofeat.corpus.manifest import Manifest

    bad = Manifest(frame, manifest.root, manifest.path)
    cfg = resolve_config(
        "kobert-tiny", model="kobert", model_path=str(tiny_kobert), max_steps=1, folds=0
    )
    with pytest.raises(EmofeatError, match=r"(?s)2 unusable.*empty text.*--skip-bad"):
        finetune(bad, tmp_path / "r", cfg)
    cfg.skip_bad = True
    finetune(bad, tmp_path / "r2", cfg)
    skipped = (tmp_path / "r2" / "skipped.csv").read_text()
    assert (
        frame["id"].iat[0] in skipped and (tmp_path / "r2" / "fold-all" / "config.json").is_file()
    )


def test_interrupted_run_keeps_finished_folds_and_resumes(
    manifest, tiny_kobert, tmp_path, monkeypatch, caplog
):
    import emofeat.finetune.run as ft

    cfg = resolve_config("kobert-tiny", model="kobert", model_path=str(tiny_kobert), epochs=2)
    real = ft._trainer_class

    def crashing():
        base = real()

        class Crash(base):
            def _save_checkpoint(self, *a, **k):
                super()._save_checkpoint(*a, **k)
                if self.args.output_dir.endswith("fold-1/checkpoints"):
                    raise KeyboardInterrupt("killed after the first checkpoint of fold 1")

        return Crash

    monkeypatch.setattr(ft, "_trainer_class", crashing)
    with pytest.raises(KeyboardInterrupt):
        finetune(manifest, tmp_path / "run", cfg)
    assert (tmp_path / "run" / "fold-0" / "metrics.json").is_file()
    ckpts = tmp_path / "run" / "fold-1" / "checkpoints"
    (complete,) = ckpts.glob("checkpoint-*")
    # Kills during later checkpoint writes: weights saved, the state file not yet (or cut short).
    step = int(complete.name.split("-")[1])
    for n, state in ((step + 1, None), (step + 2, '{"global_step": ')):
        cut = ckpts / f"checkpoint-{n}"
        shutil.copytree(complete, cut)
        (cut / "trainer_state.json").unlink()
        if state is not None:
            (cut / "trainer_state.json").write_text(state)
    stamp = (tmp_path / "run" / "fold-0" / "metrics.json").stat().st_mtime_ns
    monkeypatch.setattr(ft, "_trainer_class", real)
    caplog.set_level("INFO", logger="emofeat.finetune.run")
    finetune(manifest, tmp_path / "run", cfg)
    assert (tmp_path / "run" / "fold-0" / "metrics.json").stat().st_mtime_ns == stamp
    assert f"fold 1: resuming from {complete}" in caplog.text
    assert "was cut short" in caplog.text
    history = json.loads((tmp_path / "run" / "fold-1" / "log_history.json").read_text())
    # Epoch 1's training log comes from the checkpoint's state: training went on from there.
    assert [h["epoch"] for h in history if "loss" in h] == [1.0, 2.0]
    assert not (tmp_path / "run" / "fold-1" / "checkpoints").exists()


def test_a_resumed_fold_is_identical_to_an_uninterrupted_one(
    manifest, tiny_kobert, tmp_path, monkeypatch
):
    """Killed after its first epoch's checkpoint and resumed, with length buckets on: the
    sampler's order, the optimizer, the schedule and the RNG all continue where they were."""
    from safetensors.torch import load_file as load

    import emofeat.finetune.run as ft

    cfg = resolve_config(
        "kobert-tiny", model="kobert", model_path=str(tiny_kobert), folds=0, epochs=2, seed=5
    )
    assert cfg.batch_order == "length"
    finetune(manifest, tmp_path / "whole", cfg)
    real = ft._trainer_class

    def crashing():
        class Crash(real()):
            def _save_checkpoint(self, *a, **k):
                super()._save_checkpoint(*a, **k)
                raise KeyboardInterrupt("killed after the first checkpoint")

        return Crash

    monkeypatch.setattr(ft, "_trainer_class", crashing)
    with pytest.raises(KeyboardInterrupt):
        finetune(manifest, tmp_path / "resumed", cfg)
    monkeypatch.setattr(ft, "_trainer_class", real)
    finetune(manifest, tmp_path / "resumed", cfg)
    a = load(tmp_path / "whole/fold-all/model.safetensors")
    b = load(tmp_path / "resumed/fold-all/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_batch_order_and_adam_epsilon_reach_the_optimizer_and_the_sampler(
    manifest, tiny_kobert, tmp_path, monkeypatch
):
    """--batch-order file trains in the manifest's order every epoch (the published KoBERT
    notebook), random in a seeded permutation, length in buckets; --adam-epsilon is AdamW's."""
    import emofeat.finetune.run as ft

    real, seen = ft._trainer_class, {}

    def recording():
        class Recording(real()):
            def train(self, *a, **k):
                out = super().train(*a, **k)
                sampler = self._get_train_sampler()
                seen[self.batch_order] = (
                    [list(sampler) for _ in range(2)],
                    self.optimizer.param_groups[0]["eps"],
                )
                return out

        return Recording

    monkeypatch.setattr(ft, "_trainer_class", recording)
    for order in ("file", "random", "length"):
        cfg = resolve_config(
            "kobert-tiny",
            model="kobert",
            model_path=str(tiny_kobert),
            folds=0,
            max_steps=1,
            batch_order=order,
            adam_epsilon=1e-6 if order == "file" else 1e-8,
        )
        finetune(manifest, tmp_path / order, cfg)
    n = len(manifest.frame[manifest.split == "train"])
    (first, again), eps = seen["file"]
    assert first == again == list(range(n)) and eps == 1e-6
    (first, again), eps = seen["random"]
    assert sorted(first) == list(range(n)) and first != list(range(n)) and eps == 1e-8
    (first, again), _ = seen["length"]
    assert sorted(first) == list(range(n)) and first != again  # a new order each epoch


def test_seeded_runs_are_identical_on_cpu(manifest, tiny_kobert, tmp_path):
    from safetensors.torch import load_file as load

    cfg = resolve_config(
        "kobert-tiny", model="kobert", model_path=str(tiny_kobert), folds=0, max_steps=4, seed=3
    )
    finetune(manifest, tmp_path / "a", cfg)
    finetune(
        manifest,
        tmp_path / "b",
        resolve_config(
            "kobert-tiny", model="kobert", model_path=str(tiny_kobert), folds=0, max_steps=4, seed=3
        ),
    )
    a, b = (
        load(tmp_path / "a/fold-all/model.safetensors"),
        load(tmp_path / "b/fold-all/model.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    start = load(tiny_kobert / "model.safetensors")
    assert not torch.equal(
        a["bert.embeddings.word_embeddings.weight"], start["embeddings.word_embeddings.weight"]
    )


def test_run_records_the_rows_of_each_fold_model(kobert_run, manifest):
    from emofeat.runs import RunFolder

    run = RunFolder(kobert_run)
    info = run.info()
    assert (info.family, info.modality, info.folds) == ("bert", "text", 2)
    ids = manifest.ids
    for k in range(2):
        rows = run.fold_rows(k)
        fold_k = set(ids[(manifest.split == "train") & (manifest.fold == k)])
        other = set(ids[(manifest.split == "train") & (manifest.fold != k)])
        # Fold model k never trained on fold-k rows; it trained on every other train row.
        assert set(rows["train"]) == other and not set(rows["train"]) & fold_k
        # The presets keep the final weights: no row chose anything.
        assert rows["select"] == []
        assert run.fold_metrics(k)["kept"] == "final"


def test_encoder_registry_names_the_families(tmp_path):
    import json

    from emofeat.encoders import families, resolve
    from emofeat.encoders.speech import SpeechEncoder
    from emofeat.encoders.text import TextEncoder

    assert families()["bert"] is TextEncoder and families()["wav2vec2"] is SpeechEncoder
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "electra"}))
    assert resolve(str(tmp_path)).family == "electra"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(ModelError, match=r"'t5' is not handled.*wav2vec2: .*bert: "):
        resolve(str(tmp_path))


def test_inner_selection_never_peeks_at_the_held_out_fold(manifest, tiny_kobert, tmp_path):
    from emofeat.runs import RunFolder

    cfg = resolve_config(
        "kobert-tiny",
        model="kobert",
        model_path=str(tiny_kobert),
        epochs=2,
        select="inner",
        inner_fraction=0.2,
    )
    finetune(manifest, tmp_path / "inner", cfg)
    run = RunFolder(tmp_path / "inner")
    ids, frame = manifest.ids, manifest.frame
    for k in range(2):
        rows = run.fold_rows(k)
        fold_k = set(ids[(manifest.split == "train") & (manifest.fold == k)])
        train, select = set(rows["train"]), set(rows["select"])
        assert select and not (select & fold_k) and not (train & fold_k) and not (train & select)
        assert train | select == set(ids[(manifest.split == "train") & (manifest.fold != k)])
        # Group-aware: no session has rows on both sides of the inner split.
        session = dict(zip(frame["id"], frame["corpus"] + "/" + frame["session"]))
        kemdy = {u for u in select | train if session[u].startswith("kemdy20")}
        assert not {session[u] for u in select & kemdy} & {session[u] for u in train & kemdy}
        metrics = run.fold_metrics(k)
        assert metrics["select"] == "inner" and "checkpoint-" in metrics["kept"]
        assert metrics["heldout_rows"] == len(fold_k)


def test_print_config_shows_the_reference_values():
    from click.testing import CliRunner

    from emofeat.cli import main

    args = ["finetune", "--model", "wav2vec2", "--manifest", "m.csv", "--out", "r"]
    r = CliRunner().invoke(main, [*args, "--preset", "wav2vec2-ref", "--print-config"])
    assert r.exit_code == 0, r.output
    cfg = yaml.safe_load(r.output)
    assert (cfg["lr"], cfg["weight_decay"], cfg["warmup_ratio"], cfg["scheduler"]) == (
        2e-4,
        0.0,
        0.0,
        "linear",
    )
    assert cfg["batch_size"] * cfg["grad_accum"] == 4 and cfg["dropout"] is None
    assert cfg["fp16"] and cfg["gradient_checkpointing"] and cfg["select"] == "none"
    rev = yaml.safe_load(
        CliRunner().invoke(main, [*args, "--preset", "wav2vec2-ref-rev", "--print-config"]).output
    )
    assert rev["batch_size"] * rev["grad_accum"] == 16 and rev["reverse"] is True
    kob = yaml.safe_load(
        CliRunner()
        .invoke(main, [*args, "--preset", "kobert-ref", "--dropout", "0.3", "--print-config"])
        .output
    )
    assert (kob["epochs"], kob["lr"], kob["dropout"], kob["select"]) == (7, 2e-5, 0.3, "none")
    assert not (Path("r").exists())  # nothing written


def test_speech_head_dropout_defaults_to_the_checkpoints_final_dropout(tiny_wav2vec2):
    from emofeat.encoders.base import InputOptions
    from emofeat.encoders.speech import SpeechEncoder

    final = json.loads((tiny_wav2vec2 / "config.json").read_text())["final_dropout"]
    enc = SpeechEncoder.from_folder(str(tiny_wav2vec2), InputOptions())
    model = enc.new_classifier(str(tiny_wav2vec2), ["a", "b"], None)
    assert model.head.dropout.p == pytest.approx(final) and model.head_config["dropout"] == final


def test_folds_as_concurrent_processes_equal_a_sequential_run(
    kobert_run, manifest_path, tiny_kobert, tmp_path
):
    """Two processes train the two folds of one run at once (--fold 0, --fold 1, as one per GPU
    or a SLURM array would); the run equals the sequential one fold model for fold model."""
    import subprocess
    import sys

    from safetensors.numpy import load_file

    from emofeat.runs import RunFolder

    out = tmp_path / "parallel"
    args = [sys.executable, "-m", "emofeat.cli", "finetune", "--preset", "kobert-tiny"]
    args += ["--model", "kobert", "--model-path", str(tiny_kobert), "--epochs", "2"]
    args += ["--dropout", "0.3", "--manifest", str(manifest_path), "--out", str(out)]
    procs = [
        subprocess.Popen(
            [*args, "--fold", str(k)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for k in (0, 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]
    run, sequential = RunFolder(out), RunFolder(kobert_run)
    assert [run.is_finished(k) for k in (0, 1)] == [True, True]
    for k in (0, 1):
        mine = load_file(str(run.fold_dir(k) / "model.safetensors"))
        theirs = load_file(str(sequential.fold_dir(k) / "model.safetensors"))
        assert mine.keys() == theirs.keys()
        for key in mine:
            np.testing.assert_allclose(mine[key], theirs[key], atol=1e-5, err_msg=key)
        assert run.fold_rows(k) == sequential.fold_rows(k)
    summary = json.loads((out / "metrics.json").read_text())
    assert sorted(summary["folds"]) == ["0", "1"]  # the summary covers both processes' folds
    # A fold the run does not have, and --fold with --overwrite, are refused.
    from emofeat.errors import EmofeatError
    from emofeat.finetune.config import resolve_config
    from emofeat.finetune.run import finetune

    cfg = resolve_config(
        "kobert-tiny", model="kobert", model_path=str(tiny_kobert), epochs=2, dropout=0.3
    )
    with pytest.raises(EmofeatError, match=r"--fold \[5\]: the run has folds \[0, 1\]"):
        finetune(manifest_path, out, cfg, only_folds=[5])
    with pytest.raises(EmofeatError, match="not with --overwrite"):
        finetune(manifest_path, out, cfg, only_folds=[0], overwrite=True)
    assert run.is_finished(0) and run.is_finished(1)  # refused before anything was deleted


def test_extract_names_the_folds_a_run_still_lacks(kobert_run, manifest_path, tmp_path):
    """A run whose fold 1 is still training (another process, a SLURM task): extraction names
    the missing fold and the --fold that trains it, and writes no store."""
    import shutil

    from emofeat.errors import EmofeatError
    from emofeat.extract.config import ExtractConfig
    from emofeat.extract.run import extract
    from emofeat.runs import FOLD_DONE

    run = tmp_path / "run"
    shutil.copytree(kobert_run, run)
    (run / "fold-1" / FOLD_DONE).unlink()  # what a fold being trained looks like
    store = tmp_path / "s.h5"
    with pytest.raises(EmofeatError, match=r"fold model\(s\) fold-1 not trained yet.*--fold 1$"):
        extract(manifest_path, store, ExtractConfig(run=str(run)))
    assert not store.exists() and not list(tmp_path.glob("s.h5*"))


def test_a_session_spanning_two_folds_is_said(manifest, tiny_kobert, tmp_path, caplog):
    """The README promises a warning when a session's rows fall in several folds (a fold model
    would see the speaker of rows it predicts); it comes before any model is loaded."""
    from emofeat.corpus.manifest import read_manifest, write_manifest
    from emofeat.errors import EmofeatError
    from emofeat.finetune.config import resolve_config
    from emofeat.finetune.run import finetune

    frame = manifest.frame.copy()
    train = frame.index[(frame["split"] == "train") & (frame["corpus"] == "kemdy20")]
    row = train[0]
    frame.loc[row, "fold"] = 1 - frame.loc[row, "fold"]  # one utterance moved to the other fold
    write_manifest(frame, tmp_path / "m.csv")
    session = f"kemdy20/{frame.loc[row, 'session']}"
    cfg = resolve_config("kobert-tiny", model="kobert", model_path=str(tiny_kobert))
    caplog.set_level("WARNING", logger="emofeat.finetune.run")
    with pytest.raises(EmofeatError, match="--fold"):  # a fold it lacks: stops before training
        finetune(read_manifest(tmp_path / "m.csv"), tmp_path / "run", cfg, only_folds=[9])
    assert not (tmp_path / "run").exists()
    assert "span several folds" in caplog.text and session in caplog.text


def test_ddp_inside_a_fold_under_torchrun_equals_one_process_with_the_global_batch(
    manifest_path, tiny_kobert, tmp_path
):
    """Two CPU processes (gloo) train each fold together: one optimizer step of 2 x 16 rows
    gives the weights of one process stepping on 32 (dropout off), the main process alone
    writes the run, and each fold records that two processes trained it."""
    import json
    import shutil
    import subprocess
    import sys

    from safetensors.torch import load_file

    from emofeat.finetune.config import resolve_config
    from emofeat.finetune.run import finetune

    model = tmp_path / "kobert"
    shutil.copytree(tiny_kobert, model)
    config = json.loads((model / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (model / "config.json").write_text(json.dumps(config))
    opts = dict(model="kobert", model_path=str(model), max_steps=1, warmup_ratio=0.0, dropout=0.0)
    (tmp_path / "opts.yaml").write_text(yaml.safe_dump({**opts, "preset": "kobert-tiny"}))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    cmd = [
        *torchrun,
        "2",
        "-m",
        "--",
        "emofeat.cli",
        "finetune",
        "--config",
        str(tmp_path / "opts.yaml"),
    ]
    cmd += ["--manifest", str(manifest_path), "--out", str(tmp_path / "ddp"), "--batch-size", "16"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("run written to") == 1  # the main process reports
    finetune(
        manifest_path,
        tmp_path / "single",
        resolve_config("kobert-tiny", **opts, batch_size=32),
    )
    start = load_file(model / "model.safetensors")
    recorded = yaml.safe_load((tmp_path / "ddp" / "config.yaml").read_text())["config"]
    assert recorded["lr"] == 2e-3  # the preset named in the YAML applies (it was ignored)
    for fold in (0, 1):
        metrics = json.loads((tmp_path / "ddp" / f"fold-{fold}" / "metrics.json").read_text())
        assert metrics["world_size"] == 2 and metrics["optimizer_steps"] == 1
        a = load_file(tmp_path / "ddp" / f"fold-{fold}" / "model.safetensors")
        b = load_file(tmp_path / "single" / f"fold-{fold}" / "model.safetensors")
        for name in a:
            torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5)
        moved = (
            a["bert.embeddings.word_embeddings.weight"] - start["embeddings.word_embeddings.weight"]
        )
        assert moved.abs().max() > 1e-5  # the step did change the encoder


def test_training_inputs_read_in_worker_processes_give_the_same_model(
    manifest, tiny_wav2vec2, tmp_path, monkeypatch
):
    """On a GPU, DataLoader workers decode the audio for training; the batches, and so the
    weights, are those of reading in the training process (forced here on the CPU)."""
    from emofeat.finetune import run as finetune_module
    from emofeat.finetune.config import resolve_config
    from emofeat.finetune.run import finetune

    cfg = dict(model=str(tiny_wav2vec2), max_steps=3, folds=0)
    finetune(manifest, tmp_path / "main", resolve_config("wav2vec2-tiny", **cfg))
    seen = []

    def two_workers(device):
        seen.append(device)
        return 2

    monkeypatch.setattr(finetune_module, "default_workers", two_workers)
    finetune(manifest, tmp_path / "workers", resolve_config("wav2vec2-tiny", **cfg))
    assert seen == ["cpu"]
    a = load_file(tmp_path / "main" / "fold-all" / "model.safetensors")
    b = load_file(tmp_path / "workers" / "fold-all" / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["text", "speech"])
def test_fast_presets_differ_from_the_reference_as_documented_and_attention_reaches_the_model(
    kind, tiny_kobert, tiny_wav2vec2
):
    from emofeat.finetune.config import resolve_config
    from emofeat.finetune.run import build_model
    from emofeat.recipes.presets import PRESETS

    ref, fast = (
        ("kobert-ref", "kobert-fast") if kind == "text" else ("wav2vec2-ref", "wav2vec2-fast")
    )
    a, b = PRESETS[ref], PRESETS[fast]
    assert b["bf16"] and b["attention"] == "sdpa" and not b["gradient_checkpointing"]
    effective = lambda p: p["batch_size"] * p.get("grad_accum", 1)  # noqa: E731
    assert effective(b) == 2 * effective(a) and b["lr"] == pytest.approx(a["lr"] * 2**0.5)
    folder = str(tiny_kobert if kind == "text" else tiny_wav2vec2)
    model_name = "kobert" if kind == "text" else folder
    spec = resolve(model_name, folder if kind == "text" else None)
    logits = {}
    for attention in ("sdpa", "eager"):
        cfg = resolve_config(fast, model=model_name, attention=attention, dropout=0.0)
        torch.manual_seed(0)
        model, encoder, _ = build_model(spec, cfg, LABEL_NAMES)
        assert model.config._attn_implementation == attention
        model.eval()
        x = {"input": "오늘 기분이 좋아요" if kind == "text" else np.zeros(16000, np.float32)}
        with torch.no_grad():
            logits[attention] = model(**encoder.collator()([x])).logits
    torch.testing.assert_close(logits["sdpa"], logits["eager"], atol=1e-5, rtol=1e-4)
    with pytest.raises(EmofeatError, match="--attention must be one of"):
        resolve_config(fast, model=model_name, attention="flash")


def test_length_buckets_cover_every_row_once_vary_by_epoch_and_keep_padding_small():
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from emofeat.finetune.run import LengthBucketSampler

    rng = np.random.default_rng(0)
    lengths = rng.uniform(1, 6, 203)

    def padding(order):  # as the DataLoader batches the yielded rows
        batches = [lengths[order[i : i + 8]] for i in range(0, len(order), 8)]
        return 1 - lengths.sum() / sum(b.max() * len(b) for b in batches)

    sampler = LengthBucketSampler(lengths, 8, seed=0)
    epochs = [list(sampler) for _ in range(2)]
    # An epoch's order depends on (seed, epoch) alone: a sampler set to epoch 1 (as Trainer
    # does when it resumes a run there) yields what the second pass of the first one did.
    resumed = LengthBucketSampler(lengths, 8, seed=0)
    resumed.set_epoch(1)
    assert list(resumed) == epochs[1]
    resumed.set_epoch(0)
    assert list(resumed) == epochs[0]
    hf = LengthGroupedSampler(8, lengths=list(lengths), generator=torch.Generator().manual_seed(0))
    for order in epochs:
        assert sorted(order) == list(range(203)) and len(sampler) == 203
        assert padding(order) < 0.06 < padding(list(hf))
    assert padding(list(rng.permutation(203))) > 0.3  # unsorted batches
    first = {frozenset(epochs[0][i : i + 8]) for i in range(0, 200, 8)}
    second = {frozenset(epochs[1][i : i + 8]) for i in range(0, 200, 8)}
    assert epochs[0] != epochs[1] and first != second  # other batches every epoch


def test_train_fraction_trains_the_reference_reverse_model_on_a_random_90_percent(
    manifest, tiny_kobert, tmp_path
):
    from sklearn.model_selection import train_test_split

    from emofeat.crossfit import FoldPlan
    from emofeat.finetune.config import resolve_config
    from emofeat.finetune.run import finetune
    from emofeat.recipes.pipeline import ensemble_plan

    opts = dict(model="kobert", model_path=str(tiny_kobert), max_steps=1, folds=0, seed=42)
    finetune(manifest, tmp_path / "run", resolve_config("kobert-tiny", **opts, train_fraction=0.9))
    rows = json.loads((tmp_path / "run" / "fold-all" / "rows.json").read_text())["train"]
    every = FoldPlan.from_manifest(manifest).train_rows
    want = train_test_split(every, train_size=0.9, random_state=42)[0]
    assert sorted(rows) == sorted(manifest.ids[want]) and len(rows) == round(0.9 * len(every))
    with pytest.raises(EmofeatError, match="--train-fraction below 1 trains one model"):
        resolve_config("kobert-tiny", model="kobert", folds=2, train_fraction=0.9)
    with pytest.raises(EmofeatError, match="--train-fraction must be a finite number > 0 and <= 1"):
        resolve_config("kobert-tiny", model="kobert", train_fraction=1.5)
    steps = ensemble_plan(
        manifest.path, tmp_path / "ref", kobert="K", wav2vec2="W", protocol="reference"
    )
    runs = {s.options["out"].name: s.options for s in steps if s.name == "finetune"}
    assert (
        runs["wav2vec2-rev"]["train_fraction"] == 0.9 and "train_fraction" not in runs["kobert-p05"]
    )
    assert all(o["seed"] == 42 and o["folds"] == 0 for o in runs.values())
    # The wav2vec2 batches in random order, the KoBERT ones in file order, as published.
    assert {n: o["batch_order"] for n, o in runs.items()} == {
        "wav2vec2-fwd": "random",
        "wav2vec2-rev": "random",
        **{f"kobert-p0{p}": "file" for p in (3, 5, 7)},
    }


def test_refit_added_to_a_finished_run_trains_fold_all_alone(
    manifest, kobert_run, tiny_kobert, tmp_path
):
    """What `extract --test-rows refit` advises for a run without a refit model: `finetune
    --refit` on the same run adds fold-all and keeps the fold models as they are; other
    changed options are still refused."""
    import shutil

    from emofeat.runs import RunFolder

    run = tmp_path / "run"
    shutil.copytree(kobert_run, run)
    stamps = {k: (run / f"fold-{k}" / "model.safetensors").stat().st_mtime_ns for k in (0, 1)}
    base = dict(model="kobert", model_path=str(tiny_kobert), epochs=2, dropout=0.3)
    with pytest.raises(EmofeatError, match=r"other options or inputs \(.*dropout"):
        finetune(
            manifest, run, resolve_config("kobert-tiny", **{**base, "dropout": 0.5}, refit=True)
        )
    finetune(manifest, run, resolve_config("kobert-tiny", **base, refit=True))
    assert RunFolder(run).is_finished(-1) and RunFolder(run).info().refit
    assert all(
        (run / f"fold-{k}" / "model.safetensors").stat().st_mtime_ns == stamps[k] for k in (0, 1)
    )


def test_a_run_recorded_before_an_option_existed_resumes(manifest, kobert_run, tmp_path):
    """A run whose record lacks options added since (it was written before they existed)
    stands for their defaults: re-running the same command resumes it, nothing is retrained;
    an option given another value is still refused by name."""
    import emofeat.finetune.run as ft
    from emofeat.records import dump_yaml, read_record

    run = tmp_path / "old"
    shutil.copytree(kobert_run, run)
    record = read_record(run / "config.yaml", what="emofeat finetune")
    for key in ("task", "dim_loss", "dim_weight", "adam_epsilon", "batch_order"):
        record["config"].pop(key)
    (run / "config.yaml").write_text(dump_yaml(record))
    options = {
        k: v
        for k, v in record["config"].items()
        if k in ("model", "model_path", "epochs", "dropout")
    }
    cfg = resolve_config("kobert-tiny", **options)

    def trained_again(*args, **kwargs):
        raise AssertionError("a finished fold was trained again")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ft, "train_fold", trained_again)  # resumed: nothing is trained
        finetune(manifest, run, cfg)
    with pytest.raises(EmofeatError, match=r"made with other options or inputs \(task\)"):
        finetune(manifest, run, cfg.replace(task="both"))
