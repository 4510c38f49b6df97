"""MMM: the published architecture, sequence stores, cross-fitted training into a store."""

import h5py
import numpy as np
import pytest
import torch

from emofeat.extract import ExtractConfig, extract
from emofeat.stack.ensemble import stack
from emofeat.stack.mmm import MMM, MMMConfig, fit_mmm
from emofeat.store import create_store, open_store


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


def seq_stores(tmp_path, n=180, classes=3, seed=0):
    """A text and an audio sequence store: the label is in the text for half the rows, in the
    audio for the others (complementary, as in the synthetic corpus)."""
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
        w = create_store(
            path,
            [f"u{i}" for i in range(n)],
            y,
            split,
            fold,
            ["a", "b", "c"],
            {},
            False,
            in_sample=np.zeros(n, bool),
            sequences={"last": (length, width)},
        )
        w.write(np.arange(n), sequences={"last": list(x)})
        w.finalize()
        paths.append(path)
    return paths, y, split


def test_mmm_learns_and_its_store_is_out_of_fold(tmp_path):
    paths, y, split = seq_stores(tmp_path)
    cfg = MMMConfig(epochs=40, lr=3e-3, batch_size=16, grad_accum=1, seed=0, device="cpu")
    metrics = fit_mmm(paths, tmp_path / "mmm", cfg)
    assert metrics["test"]["accuracy"] > 0.6 and metrics["cv"]["accuracy"] > 0.6  # chance 1/3
    with open_store(tmp_path / "mmm" / "mmm.h5") as s:
        assert s.complete and s.provenance.out_of_fold and not s.in_sample.any()
        assert np.isfinite(s.logits()).all()
    # MMM joins the meta-learners as a base model: the out-of-fold rule lets it through.
    m = stack([tmp_path / "mmm" / "mmm.h5"], "caruana", tmp_path / "st").metrics
    assert m["in_sample_warning"] == "" and m["test"]["models"]["mmm"]["accuracy"] == pytest.approx(
        metrics["test"]["accuracy"]
    )
    assert "| MMM |" in (tmp_path / "mmm" / "report.md").read_text()
    for fusion in ("concat", "3way"):
        other = fit_mmm(
            paths,
            tmp_path / fusion,
            MMMConfig(
                epochs=40, lr=3e-3, batch_size=16, grad_accum=1, fusion=fusion, seed=0, device="cpu"
            ),
        )
        assert other["cv"]["accuracy"] > 0.5
