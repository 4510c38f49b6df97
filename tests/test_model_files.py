"""Model folders that are not what they claim: a fold folder whose weights miss or add a tensor,
a head of the wrong shape, a malformed head.json, a weights file that is not safetensors, and a
pretrained folder missing an encoder tensor. Each is refused with a message naming the file,
before a store is created; none is loaded with tensors initialised at random."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from emofeat.errors import EmofeatError, ModelError
from emofeat.extract.config import ExtractConfig
from emofeat.extract.run import extract


def _copy_run(run, tmp_path):
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    return copy


def _edit_weights(path, edit):
    weights = load_file(path)
    edit(weights)
    save_file(weights, path, metadata={"format": "pt"})


def _drop_one(weights):
    del weights[sorted(k for k in weights if "encoder" in k or "layer" in k)[0]]


def _add_one(weights):
    weights["stray.weight"] = np.zeros(3, np.float32)


DAMAGE = {
    "text fold missing a tensor": (
        "kobert_run",
        lambda fold: _edit_weights(fold / "model.safetensors", _drop_one),
        r"model\.safetensors|does not match config\.json: 1 tensor\(s\) the config needs",
    ),
    "text fold with a stray tensor": (
        "kobert_run",
        lambda fold: _edit_weights(fold / "model.safetensors", _add_one),
        r"does not match config\.json: 1 tensor\(s\) the config has no place for",
    ),
    "speech fold missing an encoder tensor": (
        "w2v_run",
        lambda fold: _edit_weights(fold / "model.safetensors", _drop_one),
        r"does not match config\.json: 1 tensor\(s\) the config needs",
    ),
    "speech head of another shape": (
        "w2v_run",
        lambda fold: _edit_weights(
            fold / "head.safetensors",
            lambda w: w.update({k: np.zeros((2, 2), np.float32) for k in list(w)[:1]}),
        ),
        r"head\.safetensors: not the head that head\.json defines",
    ),
    "head.json malformed": (
        "w2v_run",
        lambda fold: (fold / "head.json").write_text(json.dumps({"num_labels": "seven"})),
        r"head\.json: not a head definition emofeat wrote",
    ),
    "weights that are not safetensors": (
        "w2v_run",
        lambda fold: (fold / "head.safetensors").write_bytes(b"not a safetensors file"),
        r"head\.safetensors: not the head that head\.json defines",
    ),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_fold_folder_is_refused_before_a_store_exists(
    case, request, manifest_path, tmp_path
):
    fixture, damage, message = DAMAGE[case]
    run = _copy_run(request.getfixturevalue(fixture), tmp_path)
    damage(run / "fold-0")
    out = tmp_path / "s.h5"
    with pytest.raises(ModelError, match=message):
        extract(manifest_path, out, ExtractConfig(run=str(run)))
    assert not out.exists()


def test_a_pretrained_folder_missing_an_encoder_tensor_is_refused(
    tiny_wav2vec2, manifest_path, tmp_path
):
    model = tmp_path / "w2v"
    shutil.copytree(tiny_wav2vec2, model)
    _edit_weights(model / "model.safetensors", _drop_one)
    with pytest.raises(ModelError, match=r"the config needs are not in it"):
        extract(manifest_path, tmp_path / "s.h5", ExtractConfig(model=str(model)))
    assert not (tmp_path / "s.h5").exists()


def test_a_pretrained_text_folder_without_its_pooler_stores_no_pooler(
    tiny_kobert, manifest_path, tmp_path
):
    """A checkpoint saved without its pooler (as masked-LM checkpoints are): the encoder's
    states are its own, and no pooler output from random weights is stored."""
    from emofeat.store import open_store

    model = tmp_path / "kobert"
    shutil.copytree(tiny_kobert, model)
    _edit_weights(
        model / "model.safetensors",
        lambda w: [w.pop(k) for k in [k for k in w if "pooler" in k]],
    )
    out = tmp_path / "s.h5"
    extract(manifest_path, out, ExtractConfig(model=str(model)))
    with open_store(out) as s:
        assert "pooler" not in s.embedding_names and "last" in s.embedding_names


@pytest.mark.parametrize("fixture", ["kobert_run", "w2v_run"])
def test_a_fold_folder_copied_without_its_record_gives_no_evidence(
    fixture, request, manifest_path, tmp_path
):
    """A fine-tuned fold folder without its rows.json is not a clean pretrained encoder: its
    own files say it was fine-tuned (named classifier labels, a speech head), so which rows it
    learned from is unknown — the store records no evidence, and stack refuses it as such."""
    from emofeat.stack.ensemble import stack
    from emofeat.store import open_store

    folder = tmp_path / "fold"
    shutil.copytree(request.getfixturevalue(fixture) / "fold-0", folder)
    (folder / "rows.json").unlink()
    out = tmp_path / "s.h5"
    extract(manifest_path, out, ExtractConfig(model=str(folder)))
    with open_store(out) as s:
        assert s.in_sample is None and s.provenance.out_of_fold is None
    with pytest.raises(EmofeatError, match=r"refusing to stack: .*evidence"):
        stack([out], "logreg", tmp_path / "stack")


def test_a_reversed_speech_fold_loaded_as_a_frozen_encoder_still_hears_reversed_audio(
    w2v_run, manifest_path, tmp_path
):
    """The fold folder's head.json says it was trained on time-reversed audio: --model of it
    extracts reversed audio unless told otherwise, as its run would."""
    from emofeat.store import open_store

    folder = w2v_run / "fold-0"
    assert json.loads((folder / "head.json").read_text())["reverse"] is True
    stores = {}
    for name, reverse in (("default", None), ("reversed", True), ("forward", False)):
        stores[name] = extract(
            manifest_path,
            tmp_path / f"{name}.h5",
            ExtractConfig(model=str(folder), reverse=reverse),
        )
    with open_store(stores["default"]) as d, open_store(stores["reversed"]) as r:
        assert d.provenance.reverse is True
        np.testing.assert_array_equal(d.embeddings("last"), r.embeddings("last"))
    with open_store(stores["default"]) as d, open_store(stores["forward"]) as f:
        assert not np.allclose(d.embeddings("last"), f.embeddings("last"))
