"""Using a trained ensemble: predict that cannot be fooled, infer on new rows, fold folders."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import recordings_csv
from safetensors.torch import load_file

from emofeat.audio import load_audio
from emofeat.corpus.manifest import write_manifest
from emofeat.errors import StoreError
from emofeat.extract.config import ExtractConfig
from emofeat.extract.run import extract
from emofeat.stack.ensemble import predict, stack
from emofeat.store import open_store


@pytest.fixture(scope="module")
def trained(tmp_path_factory, manifest_path, kobert_run, w2v_run):
    """Two out-of-fold stores from the session's runs and a logreg stack over them."""
    root = tmp_path_factory.mktemp("trained")
    stores = [
        extract(manifest_path, root / "kobert.h5", ExtractConfig(run=str(kobert_run))),
        extract(manifest_path, root / "w2v.h5", ExtractConfig(run=str(w2v_run))),
    ]
    stack(stores, "logreg", root / "stack")
    return root, stores


def test_predict_matches_stores_by_identity_in_any_order(trained, manifest_path, tmp_path):
    root, stores = trained
    a = pd.read_csv(predict(root / "stack", stores, tmp_path / "a.csv")).set_index("id")
    b = pd.read_csv(predict(root / "stack", stores[::-1], tmp_path / "b.csv")).set_index("id")
    np.testing.assert_array_equal(a.filter(like="p_").to_numpy(), b.filter(like="p_").to_numpy())
    with pytest.raises(StoreError, match="given twice"):
        predict(root / "stack", [stores[0], stores[0]], tmp_path / "c.csv")
    with pytest.raises(StoreError, match=r"missing: \['w2v'\]"):
        predict(root / "stack", [stores[0]], tmp_path / "c.csv")
    # The same run extracted with other layers is another store, even under a familiar name.
    with open_store(stores[0]) as s:
        run = str(s.run_path)
    foreign = extract(
        manifest_path,
        tmp_path / "w2v.h5",
        ExtractConfig(run=run, layers="0,last"),
    )
    with pytest.raises(StoreError, match=r"missing: \['w2v'\]; not part of the stack: \['w2v'\]"):
        predict(root / "stack", [stores[0], foreign], tmp_path / "c.csv")
    assert not (tmp_path / "c.csv").exists()


def test_predictions_say_where_they_come_from(trained, tmp_path):
    root, stores = trained
    own = pd.read_csv(root / "stack" / "predictions.csv")
    new = pd.read_csv(predict(root / "stack", stores, tmp_path / "p.csv"))
    for frame, train_kind in ((own, "cross-validated"), (new, "in-sample")):
        labelled_train = (frame.split == "train") & frame.label.notna()
        assert set(frame.provenance[labelled_train]) == {train_kind}
        assert set(frame.provenance[frame.split == "test"]) == {"out-of-sample"}


def test_infer_equals_extract_and_predict_by_hand(trained, manifest, tmp_path):
    from emofeat.recipes.infer import infer

    root, _ = trained
    rows = np.flatnonzero(manifest.split == "test")[:5]
    csv = pd.read_csv(recordings_csv(manifest, rows, tmp_path / "new.csv"))
    out = infer(root / "stack", tmp_path / "new.csv", tmp_path / "pred.csv")
    got = pd.read_csv(out).set_index("id")
    # By hand: a manifest of the same rows as test rows, one store per run, predict.
    frame = manifest.frame.iloc[rows].copy()
    frame["id"] = csv["id"].to_numpy()
    frame["audio_path"] = csv["audio_path"].to_numpy()
    frame["label"] = ""
    write_manifest(frame, tmp_path / "by_hand.csv")
    stores = []
    for path in (root / "kobert.h5", root / "w2v.h5"):
        with open_store(path) as s:
            run = str(s.run_path)
        stores.append(
            extract(tmp_path / "by_hand.csv", tmp_path / path.name, ExtractConfig(run=run))
        )
    hand = pd.read_csv(predict(root / "stack", stores, tmp_path / "hand.csv")).set_index("id")
    assert list(got.index) == list(hand.index)
    np.testing.assert_allclose(
        got.filter(like="p_").to_numpy(), hand.filter(like="p_").to_numpy(), atol=1e-6
    )
    assert set(got.provenance) == {"out-of-sample"}
    assert (tmp_path / "pred.csv.stores" / "kobert.h5").is_file()  # kept for reuse


def test_fold_folders_reload_as_documented(kobert_run, w2v_run, manifest):
    from transformers import AutoFeatureExtractor, AutoModel

    from emofeat.encoders.speech import SpeechClassifier
    from emofeat.encoders.text import KoBertTokenizerFixed

    # Text: one call for the tokenizer; the folder carries max_len and the special tokens.
    tok = KoBertTokenizerFixed.from_pretrained(kobert_run / "fold-0")
    assert tok.model_max_length == 64 and tok.cls_token == "[CLS]" and tok.pad_token == "[PAD]"
    assert len(tok("가 " * 200, truncation=True)["input_ids"]) == 64
    # Speech: plain transformers + head.safetensors + the definition in head.json.
    fold = w2v_run / "fold-0"
    head_def = json.loads((fold / "head.json").read_text())
    assert head_def["reverse"] is True and head_def["sample_rate"] == 16000
    assert "tanh" in head_def["architecture"] and "real samples" in head_def["pooling"]
    encoder = AutoModel.from_pretrained(fold).eval()
    fe = AutoFeatureExtractor.from_pretrained(fold)
    head = load_file(fold / "head.safetensors")
    ours = SpeechClassifier.from_pretrained(fold).eval()
    x = load_audio(manifest.audio_path(0), head_def["sample_rate"], reverse=head_def["reverse"])
    inp = fe(x, sampling_rate=head_def["sample_rate"], return_tensors="pt")
    with torch.no_grad():
        pooled = encoder(inp["input_values"]).last_hidden_state.mean(1)
        dense = torch.tanh(pooled @ head["dense.weight"].T + head["dense.bias"])
        by_hand = dense @ head["out_proj.weight"].T + head["out_proj.bias"]
        torch.testing.assert_close(ours(**inp).logits, by_hand, atol=1e-5, rtol=1e-4)


def test_outputs_stay_out_of_other_commands_folders_and_infers_work(
    trained, manifest, manifest_path, kobert_run, w2v_run, tmp_path
):
    """A run or stack folder holds only its own files: compare, probe and extract writing into
    one are refused (stack would then refuse its own folder); infer's --work never replaces a
    manifest infer did not write; infer with no usable row says so instead of crashing."""
    import shutil

    from emofeat.analysis.compare import compare
    from emofeat.analysis.probe import probe_layers
    from emofeat.errors import EmofeatError
    from emofeat.recipes.infer import infer

    root, stores = trained
    stack_dir = tmp_path / "stack"
    shutil.copytree(root / "stack", stack_dir)
    before = sorted(p.name for p in stack_dir.iterdir())
    with pytest.raises(EmofeatError, match=r"inside .*stack, a stack folder emofeat made"):
        compare([root / "stack"], out=stack_dir / "cmp")  # another stack's folder
    with pytest.raises(EmofeatError, match=r"is an input of this command"):
        compare([stack_dir], out=stack_dir / "cmp")
    with pytest.raises(EmofeatError, match=r"inside .*stack, a stack folder emofeat made"):
        probe_layers(stores, stack_dir)
    with pytest.raises(EmofeatError, match=r"inside .*kobert, a run folder emofeat made"):
        extract(manifest_path, kobert_run / "x.h5", ExtractConfig(run=str(w2v_run)))
    assert sorted(p.name for p in stack_dir.iterdir()) == before
    assert not (kobert_run / "x.h5").exists()
    compare([stack_dir], out=tmp_path / "cmp")  # beside it: fine, and again (its own file)
    compare([stack_dir], out=tmp_path / "cmp")

    work = tmp_path / "work"
    write_manifest(manifest.frame, work / "manifest.csv", config={"split": "emo-ensemble"})
    rows = np.flatnonzero(manifest.split == "test")[:2]
    csv = pd.DataFrame(
        {
            "id": ["new0", "new1"],
            "audio_path": [str(manifest.audio_path(r)) for r in rows],
            "text": ["", ""],  # no text: the text model cannot compute either row
        }
    )
    csv.to_csv(tmp_path / "new.csv", index=False)
    with pytest.raises(EmofeatError, match=r"work holds .*manifest\.csv, which `emofeat infer`"):
        infer(root / "stack", tmp_path / "new.csv", tmp_path / "p.csv", work=work)
    with pytest.raises(EmofeatError, match="no row could be computed by every base model"):
        infer(root / "stack", tmp_path / "new.csv", tmp_path / "p.csv", skip_bad=True)
    assert not (tmp_path / "p.csv").exists()


def test_a_store_extracted_with_other_value_deciding_options_is_not_the_stacks(
    trained, manifest_path, tmp_path
):
    """Identity covers every option that decides the stored values, not only the weights,
    layers and pooling: the same run extracted with another token limit or precision is
    another store, and predict refuses it."""
    import h5py

    root, stores = trained
    with open_store(stores[0]) as s:
        run, identity = str(s.run_path), s.identity
        assert "max_len=" in identity and "dtype=" in identity and "run=" not in identity
    shorter = extract(manifest_path, tmp_path / "kobert.h5", ExtractConfig(run=run, max_len=8))
    with pytest.raises(StoreError, match=r"missing: \['kobert'\]; not part of the stack"):
        predict(root / "stack", [shorter, stores[1]], tmp_path / "p.csv")
    # A stack fitted before stores listed their identity keys matches them by the legacy
    # identity (weights, reverse, layers, pooling), as it was fitted.
    legacy = []
    for path in stores:
        copy = tmp_path / "legacy" / path.name
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(path.read_bytes())
        with h5py.File(copy, "r+") as f:
            del f.attrs["identity_keys"]
        legacy.append(copy)
    stack(legacy, "logreg", tmp_path / "old-stack")
    got = pd.read_csv(predict(tmp_path / "old-stack", stores, tmp_path / "q.csv"))
    assert len(got) and set(got.provenance) <= {"in-sample", "out-of-sample"}


def test_infer_into_a_work_folder_of_another_csv_says_so(trained, manifest, tmp_path):
    from emofeat.errors import EmofeatError
    from emofeat.recipes.infer import infer

    root, _ = trained
    rows = np.flatnonzero(manifest.split == "test")[:4]
    for name, take in (("a", rows[:2]), ("b", rows[2:])):
        recordings_csv(manifest, take, tmp_path / f"{name}.csv", prefix=name)
    work = tmp_path / "work"
    infer(root / "stack", tmp_path / "a.csv", tmp_path / "a-pred.csv", work=work)
    with pytest.raises(EmofeatError, match=r"holds the stores of another infer call") as info:
        infer(root / "stack", tmp_path / "b.csv", tmp_path / "b-pred.csv", work=work)
    assert "--overwrite" not in str(info.value)


def infer_before_and_after_a_move(manifest, project, tmp_path, monkeypatch) -> pd.DataFrame:
    """Infer three test recordings with the stack in ``project`` (the working directory), then
    move the project and work from another directory; returns the predictions before."""
    import os

    from emofeat.recipes.infer import infer

    recordings_csv(manifest, np.flatnonzero(manifest.split == "test")[:3], tmp_path / "new.csv")
    before = pd.read_csv(infer(Path("stack"), tmp_path / "new.csv", tmp_path / "a.csv"))
    os.rename(project, tmp_path / "moved")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return before


def test_a_project_folder_that_moves_keeps_working(
    manifest, manifest_path, kobert_run, w2v_run, tmp_path, monkeypatch
):
    """Stores record their run relative to themselves and stacks their stores relative to the
    stack too: a project folder moved elsewhere, used from another directory, still infers."""
    import shutil

    from emofeat.recipes.infer import infer

    project = tmp_path / "project"
    for name, run in (("kobert", kobert_run), ("w2v", w2v_run)):
        shutil.copytree(run, project / "runs" / name)
    monkeypatch.chdir(project)  # commands run from the project folder, with relative paths
    stores = [
        extract(manifest_path, Path("stores") / f"{n}.h5", ExtractConfig(run=f"runs/{n}"))
        for n in ("kobert", "w2v")
    ]
    stack(stores, "logreg", Path("stack"))
    before = infer_before_and_after_a_move(manifest, project, tmp_path, monkeypatch)
    with open_store(tmp_path / "moved" / "stores" / "kobert.h5") as s:
        assert s.run_path.resolve() == (tmp_path / "moved" / "runs" / "kobert").resolve()
    after = pd.read_csv(
        infer(tmp_path / "moved" / "stack", tmp_path / "new.csv", tmp_path / "b.csv")
    )
    np.testing.assert_allclose(
        after.filter(like="p_").to_numpy(), before.filter(like="p_").to_numpy(), atol=1e-6
    )


def test_a_moved_project_with_frozen_encoder_stores_keeps_working(
    manifest, manifest_path, tiny_kobert, tiny_wav2vec2, tmp_path, monkeypatch
):
    """A frozen-encoder store records its --model folder relative to itself, like a run: a
    stack over frozen stores infers after the project folder moved (the model folders with it)."""
    import os
    import shutil

    from emofeat.recipes.infer import infer

    project = tmp_path / "project"
    shutil.copytree(tiny_kobert, project / "models" / "kobert")
    shutil.copytree(tiny_wav2vec2, project / "models" / "w2v")
    monkeypatch.chdir(project)
    stores = [
        extract(manifest_path, Path("stores") / f"{n}.h5", ExtractConfig(model=f"models/{n}"))
        for n in ("kobert", "w2v")
    ]
    with open_store(stores[0]) as s:
        assert s.config["model"] == os.path.join("..", "models", "kobert")
    stack(stores, "pooled-mixer", Path("stack"))
    before = infer_before_and_after_a_move(manifest, project, tmp_path, monkeypatch)
    after = pd.read_csv(
        infer(tmp_path / "moved" / "stack", tmp_path / "new.csv", tmp_path / "b.csv")
    )
    np.testing.assert_allclose(
        after.filter(like="p_").to_numpy(), before.filter(like="p_").to_numpy(), atol=1e-6
    )
