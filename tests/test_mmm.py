"""MMM: the published architecture, sequence stores, cross-fitted training into a run and a store."""

import json

import h5py
import numpy as np
import pytest
import torch

from emofeat.crossfit import FoldPlan
from emofeat.errors import EmofeatError
from emofeat.extract.config import ExtractConfig
from emofeat.extract.run import extract
from emofeat.fuse import mmm
from emofeat.fuse.config import MMMConfig
from emofeat.fuse.mmm import MMM
from emofeat.fuse.run import fuse
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

    from emofeat.testing.tiny import build_tiny_electra

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
DIMS = {"text_dim": 16, "audio_dim": 24, "text_len": 8, "audio_len": 12}  # seq_stores' shapes


def mmm_alone(text, audio, y, cfg, fit, predict):
    """An MMM trained from scratch on rows ``fit`` of the two stores, and its logits on each
    row set of ``predict``: the independent computation fused stores are checked against."""
    net = mmm.new_model(DIMS, 3, cfg)
    mmm.train(
        net,
        mmm.SequencePairs(text, audio, rows_t=fit, rows_a=fit, y=y[fit]),
        cfg,
        n_classes=3,
        device="cpu",
    )
    return [
        mmm.predict(net, mmm.SequencePairs(text, audio, rows_t=r, rows_a=r, y=y[r]), "cpu")
        for r in predict
    ]


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
        assert s.test_predictions == "mean of 3 fold models"  # derived from the fold groups
        assert s.provenance.checkpoint_sha256  # the fold models' weights
        logits = s.logits()
    # Each held-out fold's logits equal a model refit without that fold, one from scratch here;
    # test rows equal the mean of the fold models.
    with open_store(paths[0]) as text, open_store(paths[1]) as audio:
        plan = FoldPlan.from_store(text)
        test_rows = np.flatnonzero(split == "test")
        test_mean = np.zeros((len(test_rows), 3))
        for k, fit, held in plan.fold_pairs():
            rows = RunFolder(tmp_path / "mmm").fold_rows(k)["train"]
            assert rows == [f"u{i}" for i in fit]  # rows.json: exactly the rows that fitted it
            held_logits, test_logits = mmm_alone(text, audio, y, cfg, fit, [held, test_rows])
            np.testing.assert_allclose(logits[held], held_logits, atol=1e-5)
            test_mean += test_logits / 3
        np.testing.assert_allclose(logits[test_rows], test_mean, atol=1e-5)
    # MMM joins the meta-learners as a base model: the out-of-fold rule lets it through.
    m = stack([tmp_path / "mmm" / "mmm.h5"], "caruana", tmp_path / "st").metrics
    assert m["in_sample_warning"] == ""
    test = split == "test"
    assert m["test"]["models"]["mmm"]["accuracy"] == pytest.approx(
        float((logits[test].argmax(1) == y[test]).mean())
    )
    from emofeat.recipes.infer import extraction_plan

    # infer rebuilds a fused store from its inputs' extraction: these were made by other code
    with pytest.raises(EmofeatError, match="records neither a run nor a model"):
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
        assert s.provenance.out_of_fold is False  # the attribute says what the rows say
    # The meta-learners refuse the fused store as they refuse its input.
    with pytest.raises(EmofeatError, match="in-sample"):
        stack([tmp_path / "mmm" / "mmm.h5"], "logreg", tmp_path / "st")
    # An input that does not say: the fused store does not say either.
    unknown, _, _ = seq_stores(tmp_path / "u", in_sample="unknown")
    with pytest.raises(EmofeatError, match="no per-row out-of-fold evidence"):
        fuse(unknown, tmp_path / "mmm-u", config=cfg)
    fuse(unknown, tmp_path / "mmm-u", config=cfg, allow_in_sample=True)
    with open_store(tmp_path / "mmm-u" / "mmm.h5") as s:
        assert s.in_sample is None and s.provenance.out_of_fold is None


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
    with pytest.raises(EmofeatError, match="--lr must be a finite number > 0"):
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
    assert r.exit_code != 0 and "--meta must be one of" in r.output


class _Pairs(torch.utils.data.Dataset):
    """In-memory (text, audio, text_len, audio_len, label) rows, as SequencePairs gives them."""

    def __init__(self, n, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.t, self.a = torch.randn(n, 8, 16, generator=g), torch.randn(n, 12, 24, generator=g)
        self.tl = torch.randint(2, 9, (n,), generator=g)
        self.al = torch.randint(3, 13, (n,), generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g).numpy()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.t[i], self.a[i], int(self.tl[i]), int(self.al[i]), int(self.y[i])


def test_the_published_block_by_hand_one_layernorm_at_both_places():
    from torch.nn import functional as F

    torch.manual_seed(0)
    model = MMM(16, 24, 8, 12, 3).eval()
    assert model.norm2 is model.norm1  # one module, as published
    names = {n for n, _ in model.named_parameters()}
    assert not any(n.startswith("norm2.") for n in names) and "norm3.weight" in names
    d = 256
    p = dict(model.named_parameters())
    t, a = torch.randn(2, 8, 16), torch.randn(2, 12, 24)
    lens = torch.tensor([8, 5]), torch.tensor([12, 7])

    def ln(x, name):
        return F.layer_norm(x, (d,), p[f"{name}.weight"], p[f"{name}.bias"])

    def mlp(x, name):
        h = F.gelu(F.linear(x, p[f"{name}.0.weight"], p[f"{name}.0.bias"]))
        return F.linear(h, p[f"{name}.2.weight"], p[f"{name}.2.bias"])

    with torch.no_grad():
        x = torch.cat(
            [
                F.linear(t, p["text_proj.weight"], p["text_proj.bias"]),
                F.linear(a, p["audio_proj.weight"], p["audio_proj.bias"]),
            ],
            1,
        )
        mixed = mlp(ln(x, "norm1").transpose(1, 2), "token_mlp").transpose(1, 2)
        x = x + mixed
        x = x + mlp(ln(mixed, "norm1"), "channel_mlp")  # the same LayerNorm, on the mixed part
        pooled = ln(x, "norm3").mean(1)
        hidden = F.gelu(F.linear(pooled, p["head.1.weight"], p["head.1.bias"]))
        want = F.linear(hidden, p["head.4.weight"], p["head.4.bias"])
        torch.testing.assert_close(model(t, a, *lens), want, atol=1e-5, rtol=1e-5)
    two = MMM(16, 24, 8, 12, 3, shared_norm=False)
    assert two.norm2 is not two.norm1  # the option: two LayerNorms


def test_simpler_fusions_by_hand_cls_text_and_a_768_wide_three_way_head():
    from torch.nn import functional as F

    torch.manual_seed(0)
    t, a = torch.randn(2, 8, 16), torch.randn(2, 12, 24)
    tl, al = torch.tensor([8, 5]), torch.tensor([12, 7])

    def mean(x, n):
        return torch.stack([x[i, : n[i]].mean(0) for i in range(len(n))])

    concat = MMM(16, 24, 8, 12, 3, fusion="concat").eval()
    three = MMM(16, 24, 8, 12, 3, fusion="3way").eval()
    assert three.head[1].out_features == 768 and concat.head[1].out_features == 512
    with torch.no_grad():
        for model, build in (
            (concat, lambda tt, aa: torch.cat([tt[:, 0], mean(aa, al)], 1)),
            (
                three,
                lambda tt, aa: torch.cat(
                    [m := tt[:, 0], n := mean(aa, al), (n - m).abs(), n * m], 1
                ),
            ),
        ):
            fused = build(model.text_proj(t), model.audio_proj(a))
            h = F.gelu(model.head[1](fused))
            torch.testing.assert_close(model(t, a, tl, al), model.head[4](h), atol=1e-5, rtol=1e-5)
    for fusion, model in (("concat", concat), ("3way", three)):
        means = MMM(16, 24, 8, 12, 3, fusion=fusion, concat_text="mean").eval()
        means.load_state_dict(model.state_dict())
        with torch.no_grad():
            assert not torch.allclose(means(t, a, tl, al), model(t, a, tl, al))


@pytest.mark.parametrize("accumulation", ["published", "standard"])
def test_training_steps_as_published_against_a_hand_written_loop(accumulation):
    """20 rows in batches of 1, accumulation 8: the published loop steps after batches 0, 8 and
    16 and drops the rest; the standard one after 7, 15 and 19. No shuffling by default."""
    steps = [b for b in range(20) if mmm.steps_after(b, 20, 8, accumulation)]
    assert steps == ([0, 8, 16] if accumulation == "published" else [7, 15, 19])
    data = _Pairs(20)
    cfg = MMMConfig(epochs=2, batch_size=1, grad_accum=8, accumulation=accumulation, seed=3)
    dims = dict(text_dim=16, audio_dim=24, text_len=8, audio_len=12)
    got = mmm.new_model(dims, 3, cfg)
    mmm.train(got, data, cfg, n_classes=3, device="cpu")
    want = mmm.new_model(dims, 3, cfg)  # the same initial weights
    torch.manual_seed(cfg.seed)
    opt = torch.optim.AdamW(want.parameters(), lr=cfg.lr)
    want.train()
    for _ in range(cfg.epochs):
        opt.zero_grad()
        for i in range(20):  # in order: no shuffling
            t, a, tl, al, y = data[i]
            logits = want(t[None], a[None], torch.tensor([tl]), torch.tensor([al]))
            (torch.nn.functional.cross_entropy(logits, torch.tensor([y])) / 8).backward()
            if i in steps:
                opt.step()
                opt.zero_grad()
    for (name, x), y in zip(got.state_dict().items(), want.state_dict().values()):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5, msg=name)


def test_shuffled_epochs_differ_and_the_published_loader_keeps_the_order():
    data = _Pairs(12)
    order = lambda shuffle, seed: [  # noqa: E731
        int(v) for *_, y in mmm._batches(data, 4, shuffle, seed) for v in y
    ]
    assert order(False, 1) == order(False, 2) == data.y.tolist()
    assert order(True, 1) != order(True, 2)
    with pytest.raises(EmofeatError, match="--accumulation must be one of"):
        MMMConfig(accumulation="sometimes").check()


def test_mmm_text_store_as_published_hangul_only_padded_with_the_pad_tokens_states(
    manifest, manifest_path, tiny_kobert, tiny_wav2vec2, tmp_path
):
    """Hangul-only text, every row padded to --max-len: the stored sequence holds all positions
    (the pad token's states included), equal to plain transformers on the padded input; the
    pooled embedding still averages the real tokens only."""
    from transformers import AutoModel

    from emofeat.encoders.text import load_tokenizer, text_filter

    assert text_filter("c/ 안녕, 하세요!! (웃음) ok", "hangul") == "안녕, 하세요!! 웃음"
    out = tmp_path / "t.h5"
    cfg = ExtractConfig(
        model=str(tiny_kobert),
        sequence=True,
        max_len=24,
        text_filter="hangul",
        sequence_padding="max_length",
    )
    extract(manifest_path, out, cfg)
    tok = load_tokenizer(str(tiny_kobert))
    model = AutoModel.from_pretrained(tiny_kobert).eval()
    with open_store(out) as s:
        states, lengths = s.sequences("last", [0, 9])
        assert (lengths == 24).all()
        for j, r in enumerate([0, 9]):
            text = text_filter(manifest.frame["text"].iat[r], "hangul")
            enc = tok(
                text, truncation=True, max_length=24, padding="max_length", return_tensors="pt"
            )
            with torch.no_grad():
                hidden = model(**enc).last_hidden_state[0]
            np.testing.assert_allclose(
                states[j].astype(np.float32), hidden.numpy(), atol=2e-3, rtol=2e-3
            )
            real = enc["attention_mask"][0].bool()
            np.testing.assert_allclose(
                s.embeddings("last", [r])[0], hidden[real].mean(0).numpy(), atol=1e-4
            )
    with pytest.raises(EmofeatError, match="apply to text models"):
        extract(
            manifest_path,
            tmp_path / "a.h5",
            ExtractConfig(model=str(tiny_wav2vec2), text_filter="hangul"),
        )


def test_mmm_as_published_one_model_on_all_train_rows(tmp_path):
    """`fuse --folds 0`: MMM's own protocol, one model on every train row; its store's test rows
    equal that model refit from scratch, its train rows are recorded in-sample (so no stack
    takes it as out-of-fold), and the run says so."""
    paths, y, split = seq_stores(tmp_path)
    cfg = MMMConfig(**FAST)
    results = fuse(paths, tmp_path / "one", config=cfg, folds=0)
    assert list(results) == [-1] and (tmp_path / "one" / "fold-all" / "model.safetensors").is_file()
    with open_store(tmp_path / "one" / "mmm.h5") as s:
        assert not s.provenance.out_of_fold and s.in_sample[split == "train"].all()
        assert not s.in_sample[split == "test"].any()
        assert s.test_predictions == "one model"
        logits = s.logits()
    train, test = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    with open_store(paths[0]) as text, open_store(paths[1]) as audio:
        (want,) = mmm_alone(text, audio, y, cfg, train, [test])
    np.testing.assert_allclose(logits[test], want, atol=1e-5)
    with pytest.raises(EmofeatError, match="in-sample"):
        stack([paths[0], tmp_path / "one" / "mmm.h5"], "logreg", tmp_path / "stack")
    with pytest.raises(EmofeatError, match="--folds must be 0"):
        fuse(paths, tmp_path / "two", config=cfg, folds=5)
    # The reference protocol's table takes MMM's row from its store (no stack holds it).
    from emofeat.recipes.pipeline import comparison

    (tmp_path / "ref" / "runs").mkdir(parents=True)
    (tmp_path / "one").rename(tmp_path / "ref" / "runs" / "mmm")
    table, rows = comparison(tmp_path / "ref")
    accuracy = (logits[test].argmax(1) == y[test]).mean()
    assert dict(rows)["mmm"]["accuracy"] == pytest.approx(accuracy) and "| mmm |" in table


def test_fuse_refuses_the_audio_store_given_first(tmp_path):
    """The stores say what they hold (their modality attribute): MMM's inputs in the wrong
    order are refused before anything is trained, not fused text-as-audio."""
    import h5py

    from emofeat.errors import StoreError

    paths, _, _ = seq_stores(tmp_path)
    for path, modality in zip(paths, ("text", "speech")):
        with h5py.File(path, "r+") as f:
            f.attrs["modality"] = modality
    with pytest.raises(
        StoreError, match=r"got audio \(speech\) then text \(text\); give them the other way"
    ):
        fuse(paths[::-1], tmp_path / "mmm", config=MMMConfig(**FAST))
    assert not (tmp_path / "mmm").exists()
