"""The layer-sum head (``fuse --model layer-sum``): each fold's held-out logits equal a head
trained by independent code on that fold's rows; layer weights sum to 1; its store stacks;
resume, one model, several stores, dimensions, refusals."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from emofeat.cli import main
from emofeat.errors import EmofeatError
from emofeat.fuse.config import LayerSumConfig
from emofeat.fuse.run import fuse
from emofeat.store import StoreLayout, create_store, open_store

N, D, C = 150, 6, 3


def layer_store(path, *, seed=0, n_layers=3, width=D, in_sample=None, dims=False, order=None):
    """Layer i carries the label with strength i (layer 0 none); rows 0..119 train (3 folds);
    ``order``: the file holds the rows in that order."""
    rng = np.random.default_rng(seed)
    y = np.random.default_rng(0).integers(0, C, N)
    split = np.where(np.arange(N) < 120, "train", "test")
    fold = np.where(split == "train", np.arange(N) % 3, -1)
    layers = {
        f"layer_{i:02d}": (rng.normal(size=(N, width)) + i * 0.8 * np.eye(C, width)[y]).astype(
            np.float32
        )
        for i in range(n_layers)
    }
    targets = None
    if dims:
        targets = np.column_stack([3 + (y - 1) * 0.8, 3 - (y - 1) * 0.5]).astype(np.float32)
        targets += np.random.default_rng(1).normal(0, 0.2, targets.shape).astype(np.float32)
    o = np.arange(N) if order is None else order
    w = create_store(
        path,
        StoreLayout(
            ids=np.array([f"u{i:03d}" for i in range(N)])[o],
            labels=y[o],
            split=split[o],
            fold=fold[o],
            label_names=["a", "b", "c"],
            embeddings={name: width for name in layers},
            logits=False,
            in_sample=(np.zeros(N, bool) if in_sample is None else in_sample)[o],
            targets=targets[o] if targets is not None else None,
            dimension_names=["valence", "arousal"] if dims else [],
        ),
        attrs={"modality": "speech"},
    )
    w.write(np.arange(N), embeddings={name: x[o] for name, x in layers.items()})
    w.finalize()
    return path, y, fold, layers


def independent_head(layers, y, fit, held, cfg: LayerSumConfig):
    """The layer-sum head by hand: standardise with the fit rows, zero layer weights, a Linear
    seeded by cfg.seed, AdamW over epochs of seeded permutations, then the held rows' logits."""
    x = np.stack(list(layers.values()), axis=1)  # (N, L, D)
    mean, scale = x[fit].mean(0), x[fit].std(0) + 1e-6
    z = torch.from_numpy((x - mean) / scale).float()
    torch.manual_seed(cfg.seed)
    w = torch.nn.Parameter(torch.zeros(x.shape[1]))
    linear = torch.nn.Linear(x.shape[2], C)
    opt = torch.optim.AdamW([w, *linear.parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay)
    target = torch.from_numpy(y)
    for epoch in range(1, cfg.epochs + 1):
        order = np.random.default_rng(cfg.seed + epoch).permutation(len(fit))
        for start in range(0, len(fit), cfg.batch_size):
            rows = fit[order[start : start + cfg.batch_size]]
            mixed = (torch.softmax(w, 0)[None, :, None] * z[rows]).sum(1)
            loss = torch.nn.functional.cross_entropy(linear(mixed), target[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return linear((torch.softmax(w, 0)[None, :, None] * z[held]).sum(1)).numpy()


def test_held_out_logits_equal_an_independent_head_and_the_store_stacks(tmp_path):
    from emofeat.stack.ensemble import stack

    path, y, fold, layers = layer_store(tmp_path / "all.h5")
    cfg = LayerSumConfig(epochs=12, batch_size=16, lr=1e-2, seed=3)
    metrics = fuse([path], tmp_path / "run", config=cfg, model="layer-sum")
    assert sorted(metrics) == [0, 1, 2]
    with open_store(tmp_path / "run" / "layer-sum.h5") as s:
        logits = s.logits()
        assert s.provenance.out_of_fold and not s.in_sample[fold >= 0].any()
        assert s.layout.embeddings == {"last": D}
    train, test = np.flatnonzero(fold >= 0), np.flatnonzero(fold < 0)
    test_mean = np.zeros((len(test), C))
    for k in range(3):
        fit, held = train[fold[train] != k], np.flatnonzero(fold == k)
        expected = independent_head(layers, y, fit, np.concatenate([held, test]), cfg)
        np.testing.assert_allclose(logits[held], expected[: len(held)], atol=1e-4)
        test_mean += expected[len(held) :] / 3
    # test rows: the mean of the three fold models (the cross-fitting rule)
    np.testing.assert_allclose(logits[test], test_mean, atol=1e-4)
    weights = pd.read_csv(tmp_path / "run" / "layer_weights.csv")
    sums = weights.groupby("fold").weight.sum()
    assert list(sums.index) == [0, 1, 2] and np.allclose(sums, 1.0)
    # the layer that carries the label is weighted above the one that carries none
    mean = weights.groupby("layer").weight.mean()
    assert mean["layer_02"] > mean["layer_00"]
    assert (tmp_path / "run" / "layer_weights.png").stat().st_size > 5000
    result = stack([tmp_path / "run" / "layer-sum.h5"], "logreg", tmp_path / "stack")
    assert result.metrics["test"]["ensemble"]["accuracy"] > 1 / C
    from emofeat.recipes.infer import extraction_plan

    # infer rebuilds a fused store from its inputs' extraction: this one was made by other code
    with pytest.raises(EmofeatError, match="records neither a run nor a model"):
        extraction_plan(tmp_path / "stack")


def test_resume_overwrite_one_model_and_the_cli(tmp_path):
    path, *_ = layer_store(tmp_path / "all.h5")
    run = tmp_path / "run"
    args = ["fuse", "--model", "layer-sum", "--store", str(path), "--out", str(run)]
    first = CliRunner().invoke(main, [*args, "--epochs", "3"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    before = open_store(run / "layer-sum.h5").logits()
    again = CliRunner().invoke(main, [*args, "--epochs", "3"], catch_exceptions=False)
    assert "already trained, kept" in again.output
    np.testing.assert_array_equal(open_store(run / "layer-sum.h5").logits(), before)
    # a run recorded before its stores' relative paths were resumes too
    import yaml

    record = yaml.safe_load((run / "config.yaml").read_text())
    del record["config"]["stores_relative"]
    (run / "config.yaml").write_text(yaml.safe_dump(record))
    older = CliRunner().invoke(main, [*args, "--epochs", "3"], catch_exceptions=False)
    assert older.exit_code == 0 and older.output.count("already trained, kept") == 3
    other = CliRunner().invoke(main, [*args, "--epochs", "4"])
    assert other.exit_code != 0 and "epochs" in other.output
    mmm_only = CliRunner().invoke(main, [*args, "--fusion", "concat"])
    assert mmm_only.exit_code == 2 and "--fusion: not an option of --model layer-sum" in (
        mmm_only.output
    )
    single = tmp_path / "single"
    one = CliRunner().invoke(
        main,
        [
            "fuse",
            "--model",
            "layer-sum",
            "--store",
            str(path),
            "--out",
            str(single),
            "--folds",
            "0",
        ],
    )
    assert one.exit_code == 0, one.output
    with open_store(single / "layer-sum.h5") as s:
        assert s.in_sample[s.split == "train"].all() and not s.provenance.out_of_fold


def test_several_stores_side_by_side_and_dimensions(tmp_path):
    """Two stores: one weighted sum each (their weights each sum to 1), one head over both;
    with --task both the store holds valence and arousal too."""
    a, y, fold, _ = layer_store(tmp_path / "a.h5", seed=0, dims=True)
    b, *_ = layer_store(tmp_path / "b.h5", seed=1, n_layers=4, width=5, dims=True)
    cfg = LayerSumConfig(epochs=5, task="both", head="mlp", hidden=8)
    metrics = fuse([a, b], tmp_path / "run", config=cfg, model="layer-sum")
    assert "mean_ccc" in metrics[0]
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())["summary"]
    per_fold = [metrics[k]["mean_ccc"] for k in range(3)]  # the run's summary holds CCC too
    assert summary["mean_ccc"]["mean"] == pytest.approx(np.mean(per_fold))
    weights = pd.read_csv(tmp_path / "run" / "layer_weights.csv")
    sums = weights.groupby(["fold", "store"]).weight.sum()
    assert len(sums) == 6 and np.allclose(sums, 1.0)
    with open_store(tmp_path / "run" / "layer-sum.h5") as s:
        assert s.layout.embeddings == {"last": D + 5} and s.has_dimensions
        assert np.isfinite(s.dimensions()).all()


def test_a_second_store_with_its_rows_in_another_order_gives_the_same_head(tmp_path):
    """Stores are aligned by id: the second store's rows shuffled in its file change nothing."""
    a, *_ = layer_store(tmp_path / "a.h5", seed=0)
    b, *_ = layer_store(tmp_path / "b.h5", seed=1)
    shuffled = np.random.default_rng(3).permutation(N)
    c, *_ = layer_store(tmp_path / "c" / "b.h5", seed=1, order=shuffled)
    cfg = LayerSumConfig(epochs=3)
    fuse([a, b], tmp_path / "r1", config=cfg, model="layer-sum")
    fuse([a, c], tmp_path / "r2", config=cfg, model="layer-sum")
    with (
        open_store(tmp_path / "r1" / "layer-sum.h5") as s1,
        open_store(tmp_path / "r2" / "layer-sum.h5") as s2,
    ):
        np.testing.assert_allclose(s1.logits(), s2.logits(), atol=1e-5)


def test_refusals(tmp_path):
    inside = np.zeros(N, bool)
    inside[:120] = True  # train rows in-sample: not a base model's input
    path, *_ = layer_store(tmp_path / "in.h5", in_sample=inside)
    with pytest.raises(EmofeatError, match="refusing to fuse"):
        fuse([path], tmp_path / "r1", config=LayerSumConfig(epochs=1), model="layer-sum")
    w = create_store(
        tmp_path / "flat.h5",
        StoreLayout(
            ids=[f"u{i}" for i in range(N)],
            labels=np.zeros(N, int),
            split=np.array(["train"] * N),
            fold=np.arange(N) % 3,
            label_names=["a", "b", "c"],
            embeddings={"mean": 3, "std": 3},
            logits=False,
            in_sample=np.zeros(N, bool),
        ),
    )
    w.write(np.arange(N), embeddings={"mean": np.ones((N, 3)), "std": np.ones((N, 3))})
    w.finalize()
    with pytest.raises(EmofeatError, match="no layer_NN embeddings"):
        fuse([tmp_path / "flat.h5"], tmp_path / "r2", config=LayerSumConfig(), model="layer-sum")
    with pytest.raises(EmofeatError, match="takes LayerSumConfig"):
        from emofeat.fuse.config import MMMConfig

        fuse([path], tmp_path / "r3", config=MMMConfig(), model="layer-sum")


def test_a_non_finite_stored_value_is_named_not_trained_on(tmp_path):
    """A store another program edited (NaN in one layer of one row) is refused by name, before
    anything is written."""
    import h5py

    path, *_ = layer_store(tmp_path / "all.h5")
    with h5py.File(path, "a") as f:
        f["embeddings/layer_01"][7, 2] = np.nan
    with pytest.raises(EmofeatError, match=r"all\.h5.*(non-finite|NaN)"):
        fuse([path], tmp_path / "run", config=LayerSumConfig(epochs=1), model="layer-sum")
    assert not (tmp_path / "run").exists()  # refused before the run folder is written
