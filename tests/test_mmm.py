"""MMM: the published architecture, sequence stores, cross-fitted training into a run and a store."""

import json

import h5py
import numpy as np
import pytest
import torch

from emofeat import mmm
from emofeat.crossfit import FoldPlan
from emofeat.errors import EmofeatError
from emofeat.extract import ExtractConfig, extract
from emofeat.fuse import fuse
from emofeat.mmm import MMM, MMMConfig
from emofeat.runs import RunFolder
from emofeat.stack.ensemble import stack
from emofeat.store import StoreLayout, create_store, open_store


def test_parameter_shapes_follow_the_published_model():
    model = MMM(768, 1024, 128, 512, 7)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["text_proj.weight"] == (256, 768) and shapes["audio_proj.weight"] == (256, 1024)
    assert shapes["token_mlp.0.weight"] == (640, 640) and shapes["token_mlp.2.weight"] == (640, 640)
    assert shapes["channel_mlp.0.weight"] == (256, 256) and shapes["norm3.weight"] == (256,)
    assert shapes["head.1.weight"] == (512, 256) and shapes["head.4.weight"] == (7, 512)
    assert isinstance(model.head[0], torch.nn.Dropout) and model.head[0].p == 0.1
    assert MMM(768, 1024, 128, 512, 7, fusion="concat").head[1].in_features == 512
    assert MMM(768, 1024, 128, 512, 7, fusion="3way").head[1].in_features == 1024
    # The faithful variant normalises the token-mixing output, the other the residual sum.
    torch.manual_seed(0)
    faithful = MMM(16, 24, 8, 12, 3).eval()
    standard = MMM(16, 24, 8, 12, 3, faithful_norm=False).eval()
    standard.load_state_dict(faithful.state_dict())
    t, a = torch.randn(2, 8, 16), torch.randn(2, 12, 24)
    lens = torch.tensor([8, 5]), torch.tensor([12, 7])
    with torch.no_grad():
        assert not torch.allclose(faithful(t, a, *lens), standard(t, a, *lens))


def test_sequence_stores_round_trip_through_plain_h5py(manifest, manifest_path, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    from emofeat.encoders.tiny import build_tiny_electra

    folder = build_tiny_electra(tmp_path / "electra", list(manifest.frame["text"]), hidden=32)
    out = tmp_path / "text-seq.h5"
    extract(manifest_path, out, ExtractConfig(model=str(folder), sequence=True, max_len=24))
    model, tok = AutoModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    with h5py.File(out, "r") as f:
        states, lengths = f["sequences/last"], f["sequences/last_length"][:]
        assert states.shape == (len(manifest), 24, 32) and states.dtype == np.float16
        assert states.chunks == (1, 24, 32)  # one row, one read
        for r in (0, 7):
            enc = tok(
                manifest.frame["text"].iat[r], truncation=True, max_length=24, return_tensors="pt"
            )
            with torch.no_grad():
                ref = model(**enc).last_hidden_state[0].numpy()
            assert lengths[r] == len(ref)
            np.testing.assert_allclose(states[r, : lengths[r]], ref, atol=2e-3, rtol=2e-3)
            assert not states[r, lengths[r] :].any()  # zero padding after the valid positions


def seq_stores(tmp_path, n=180, classes=3, seed=0, in_sample=None):
    """A text and an audio sequence store: the label is in the text for half the rows, in the
    audio for the others (complementary, as in the synthetic corpus). ``in_sample``: the text
    store's per-row evidence (default: out-of-fold everywhere; "unknown": not recorded)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    split = np.where(np.arange(n) < 140, "train", "test")
    fold = np.where(split == "train", np.arange(n) % 3, -1)
    channel = rng.integers(0, 2, n)
    paths = []
    for k, (length, width) in enumerate(((8, 16), (12, 24))):
        x = rng.normal(0, 1, (n, length, width)).astype(np.float32)
        cue = np.eye(classes, width)[y] * 3 * (channel == k)[:, None]
        x[:, :4] += cue[:, None, :]
        path = tmp_path / f"{'text' if k == 0 else 'audio'}.h5"
        evidence = np.zeros(n, bool)
        if k == 0 and in_sample is not None:
            evidence = None if isinstance(in_sample, str) else in_sample
        w = create_store(
            path,
            StoreLayout(
                ids=[f"u{i}" for i in range(n)],
                labels=y,
                split=split,
                fold=fold,
                label_names=["a", "b", "c"],
                embeddings={},
                logits=False,
                in_sample=evidence,
                sequences={"last": (length, width)},
            ),
        )
        w.write(np.arange(n), sequences={"last": list(x)})
        w.finalize()
        paths.append(path)
    return paths, y, split


FAST = {"epochs": 40, "lr": 3e-3, "batch_size": 16, "grad_accum": 1, "seed": 0, "device": "cpu"}


def test_mmm_is_a_cross_fitted_base_model_with_a_run_and_a_store(tmp_path):
    paths, y, split = seq_stores(tmp_path)
    cfg = MMMConfig(**FAST)
    results = fuse(paths, tmp_path / "mmm", config=cfg)
    run = RunFolder(tmp_path / "mmm")
    # A run folder like a fine-tuned model's: config, fold models with rows.json, metrics.
    assert sorted(results) == [0, 1, 2] and run.info().family == "mmm"
    summary = json.loads((tmp_path / "mmm" / "metrics.json").read_text())
    assert set(summary) == {"folds", "summary"} and summary["summary"]["accuracy"]["n"] == 3
    assert summary["summary"]["accuracy"]["mean"] > 0.6  # chance 1/3
    assert (tmp_path / "mmm" / "training_curves.png").is_file()
    with open_store(tmp_path / "mmm" / "mmm.h5") as s:
        assert s.complete and s.provenance.out_of_fold and not s.in_sample.any()
        assert s.provenance.checkpoint_sha256  # the fold models' weights
        logits = s.logits()
    # Each held-out fold's logits equal a model refit without that fold, one from scratch here;
    # test rows equal the mean of the fold models.
    with open_store(paths[0]) as text, open_store(paths[1]) as audio:
        plan = FoldPlan.from_store(text)
        dims = {"text_dim": 16, "audio_dim": 24, "text_len": 8, "audio_len": 12}
        test_rows = np.flatnonzero(split == "test")
        test_mean = np.zeros((len(test_rows), 3))
        for k, fit, held in plan.fold_pairs():
            rows = RunFolder(tmp_path / "mmm").fold_rows(k)["train"]
            assert rows == [f"u{i}" for i in fit]  # rows.json: exactly the rows that fitted it
            net = mmm.new_model(dims, 3, cfg)
            mmm.train(
                net,
                mmm.SequencePairs(text, audio, rows_t=fit, rows_a=fit, y=y[fit]),
                cfg,
                n_classes=3,
                device="cpu",
            )
            held_logits = mmm.predict(
                net, mmm.SequencePairs(text, audio, rows_t=held, rows_a=held, y=y[held]), "cpu"
            )
            np.testing.assert_allclose(logits[held], held_logits, atol=1e-5)
            test_mean += (
                mmm.predict(
                    net,
                    mmm.SequencePairs(
                        text, audio, rows_t=test_rows, rows_a=test_rows, y=y[test_rows]
                    ),
                    "cpu",
                )
                / 3
            )
        np.testing.assert_allclose(logits[test_rows], test_mean, atol=1e-5)
    # MMM joins the meta-learners as a base model: the out-of-fold rule lets it through.
    m = stack([tmp_path / "mmm" / "mmm.h5"], "caruana", tmp_path / "st").metrics
    assert m["in_sample_warning"] == ""
    test = split == "test"
    assert m["test"]["models"]["mmm"]["accuracy"] == pytest.approx(
        float((logits[test].argmax(1) == y[test]).mean())
    )
    from emofeat.inference import extraction_plan

    with pytest.raises(EmofeatError, match="store mmm was made by `emofeat fuse`"):
        extraction_plan(tmp_path / "st")
    for fusion in ("concat", "3way"):
        other = fuse(paths, tmp_path / fusion, config=MMMConfig(**{**FAST, "fusion": fusion}))
        assert np.mean([r["accuracy"] for r in other.values()]) > 0.5


def test_a_fused_store_inherits_in_sample_inputs(tmp_path):
    """In-sample in means in-sample out: an input whose train rows came from a model trained on
    them (a --folds 0 run) is refused, and with --allow-in-sample recorded, never laundered."""
    n = 180
    leaked = np.zeros(n, bool)
    leaked[:140] = True  # every train row in-sample, as a --folds 0 run's store says
    paths, _, _ = seq_stores(tmp_path, in_sample=leaked)
    cfg = MMMConfig(**{**FAST, "epochs": 2})
    with pytest.raises(EmofeatError, match=r"store text: 140 of 140 train rows are in-sample"):
        fuse(paths, tmp_path / "mmm", config=cfg)
    assert not (tmp_path / "mmm").exists()  # refused before anything was written
    fuse(paths, tmp_path / "mmm", config=cfg, allow_in_sample=True)
    with open_store(tmp_path / "mmm" / "mmm.h5") as s:
        np.testing.assert_array_equal(s.in_sample, leaked)
    # The meta-learners refuse the fused store as they refuse its input.
    with pytest.raises(EmofeatError, match="in-sample"):
        stack([tmp_path / "mmm" / "mmm.h5"], "logreg", tmp_path / "st")
    # An input that does not say: the fused store does not say either.
    unknown, _, _ = seq_stores(tmp_path / "u", in_sample="unknown")
    with pytest.raises(EmofeatError, match="no per-row out-of-fold evidence"):
        fuse(unknown, tmp_path / "mmm-u", config=cfg)
    fuse(unknown, tmp_path / "mmm-u", config=cfg, allow_in_sample=True)
    with open_store(tmp_path / "mmm-u" / "mmm.h5") as s:
        assert s.in_sample is None


def test_fuse_resumes_finished_folds_and_refuses_other_options(tmp_path, capsys):
    paths, _, _ = seq_stores(tmp_path)
    cfg = MMMConfig(**{**FAST, "epochs": 3})
    fuse(paths, tmp_path / "mmm", config=cfg)
    with open_store(tmp_path / "mmm" / "mmm.h5") as s:
        first = s.logits()
    capsys.readouterr()
    fuse(paths, tmp_path / "mmm", config=cfg)  # every fold kept, the store rebuilt equal
    assert capsys.readouterr().out.count("already trained, kept") == 3
    with open_store(tmp_path / "mmm" / "mmm.h5") as s:
        np.testing.assert_allclose(s.logits(), first, atol=1e-6)
    with pytest.raises(EmofeatError, match=r"other options or inputs \(epochs\)"):
        fuse(paths, tmp_path / "mmm", config=MMMConfig(**{**FAST, "epochs": 4}))
    with pytest.raises(EmofeatError, match="--epochs must be an integer >= 1"):
        fuse(paths, tmp_path / "x", config=MMMConfig(**{**FAST, "epochs": 0}))
    with pytest.raises(EmofeatError, match="--lr must be a positive finite number"):
        fuse(paths, tmp_path / "x", config=MMMConfig(**{**FAST, "lr": float("nan")}))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.txt").write_text("mine")
    with pytest.raises(EmofeatError, match="thesis.txt"):
        fuse(paths, tmp_path / "notes", config=cfg, overwrite=True)
    assert (tmp_path / "notes" / "thesis.txt").read_text() == "mine"


def test_fuse_command_line(tmp_path):
    from click.testing import CliRunner

    from emofeat.cli import main

    paths, _, _ = seq_stores(tmp_path)
    args = ["fuse", "--model", "mmm", "--store", str(paths[0]), "--store", str(paths[1])]
    args += ["--epochs", "2", "--lr", "3e-3", "--batch-size", "16", "--grad-accum", "1"]
    r = CliRunner().invoke(main, [*args, "--device", "cpu", "--out", str(tmp_path / "mmm")])
    assert r.exit_code == 0, r.output
    assert "held-out folds: accuracy" in r.output and (tmp_path / "mmm" / "mmm.h5").is_file()
    # The run's record re-runs (resumes) it.
    r = CliRunner().invoke(main, ["fuse", "--config", str(tmp_path / "mmm" / "config.yaml")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["stack", "--meta", "mmm", "--store", str(paths[0])])
    assert r.exit_code != 0 and "'mmm' is not one of" in r.output
