"""Every encoder family: its tiny model in the hub's on-disk format is found by its config, every
stored layer equals plain transformers one clip or sentence at a time, and it fine-tunes through
the same code (its store's logits equal the fold model run alone)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emofeat.audio import load_audio
from emofeat.encoders import MODELS, families, resolve
from emofeat.errors import ModelError
from emofeat.extract.config import ExtractConfig
from emofeat.extract.run import extract
from emofeat.store import open_store
from emofeat.testing.config import SPEECH_KINDS, TEXT_KINDS
from emofeat.testing.tiny import build_tiny

FAMILY_OF_KIND = {
    "wav2vec2-base": "wav2vec2",
    "hubert": "hubert",
    "wavlm": "wavlm",
    "data2vec-audio": "data2vec-audio",
    "whisper": "whisper",
    "roberta": "roberta",
    "xlm-roberta": "roberta",
    "deberta-v2": "deberta",
}
ROWS = [0, 5, 17, 33, 60]  # clips of different lengths, batched together by extraction


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, manifest_path):
    root = tmp_path_factory.mktemp("families")
    return {
        kind: build_tiny(kind, root / kind, manifest=manifest_path, hidden=32)
        for kind in (*SPEECH_KINDS, *TEXT_KINDS)
    }


def plain_speech_layers(folder, kind: str, x: np.ndarray) -> list[np.ndarray]:
    """Per hidden state, the mean over the frames of one clip run alone through plain
    transformers (no batch, no padding; Whisper: its 30-s log-mel, frames that hold audio)."""
    from transformers import AutoFeatureExtractor, AutoModel

    fe = AutoFeatureExtractor.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        if kind == "whisper":
            feats = fe(x, sampling_rate=16000, return_tensors="pt")["input_features"]
            hs = model.encoder(feats, output_hidden_states=True).hidden_states
            mel = -(-len(x) // 160)
            frames = (mel - 1) // 2 + 1
            return [h[0, :frames].mean(0).numpy() for h in hs]
        values = fe(x, sampling_rate=16000, return_tensors="pt")["input_values"]
        hs = model(values, output_hidden_states=True).hidden_states
    return [h[0].mean(0).numpy() for h in hs]


@pytest.mark.parametrize("kind", SPEECH_KINDS)
def test_speech_family_stores_equal_plain_transformers_clip_by_clip(
    kind, tiny, manifest, manifest_path, tmp_path
):
    folder = tiny[kind]
    spec = resolve(str(folder))
    assert spec.family == FAMILY_OF_KIND[kind] and spec.modality == "speech"
    out = tmp_path / "s.h5"
    extract(manifest_path, out, ExtractConfig(model=str(folder), layers="all"))
    with open_store(out) as s:
        names = [n for n in s.embedding_names if n.startswith("layer_")]
        assert len(names) == 3 and s.complete  # 2 layers + the input embeddings
        np.testing.assert_array_equal(s.embeddings("last"), s.embeddings(names[-1]))
        for r in ROWS:
            plain = plain_speech_layers(folder, kind, load_audio(manifest.audio_path(r)))
            for name, want in zip(names, plain):
                np.testing.assert_allclose(
                    s.embeddings(name, [r])[0], want, atol=1e-4, rtol=1e-3, err_msg=f"{name} {r}"
                )


def test_whisper_windows_are_at_most_30_seconds(tiny):
    from emofeat.encoders.base import InputOptions
    from emofeat.encoders.speech import WhisperSpeechEncoder

    enc = WhisperSpeechEncoder.from_folder(str(tiny["whisper"]), InputOptions(max_seconds=60))
    assert enc.options.max_seconds == 30 and enc.input_provenance()["max_len"] == 30
    # Each piece costs 30 s of compute: a 12-s budget takes one piece per batch.
    batches = enc.batches(
        np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]), batch_size=8, batch_seconds=12
    )
    assert [len(b) for b in batches] == [1, 1, 1, 1]
    assert enc.row_parts(70.0, batch_seconds=64) == [(0, 2), (2, 3)]


def plain_text_layers(folder, text: str) -> list[np.ndarray]:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        hs = model(**tok(text, return_tensors="pt"), output_hidden_states=True).hidden_states
    return [h[0].mean(0).numpy() for h in hs]


@pytest.mark.parametrize("kind", TEXT_KINDS)
def test_text_family_stores_equal_plain_transformers_sentence_by_sentence(
    kind, tiny, manifest, manifest_path, tmp_path
):
    folder = tiny[kind]
    spec = resolve(str(folder))
    assert spec.family == FAMILY_OF_KIND[kind] and spec.modality == "text"
    out = tmp_path / "t.h5"
    extract(manifest_path, out, ExtractConfig(model=str(folder), layers="all"))
    with open_store(out) as s:
        assert s.provenance.max_len == 128  # the model's own limit, not KoBERT's 64
        names = [n for n in s.embedding_names if n.startswith("layer_")]
        np.testing.assert_array_equal(s.embeddings("last"), s.embeddings(names[-1]))
        for r in ROWS:
            plain = plain_text_layers(folder, manifest.frame["text"].iat[r])
            for name, want in zip(names, plain):
                np.testing.assert_allclose(s.embeddings(name, [r])[0], want, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("kind", [*SPEECH_KINDS, *TEXT_KINDS])
def test_families_fine_tune_through_the_same_code(kind, tiny, manifest, tmp_path):
    """One epoch per fold: the run's store holds each train row's logits from the fold model that
    did not see it, equal to that fold model reloaded and run on the row alone."""
    from emofeat.encoders import resolve as resolve_model
    from emofeat.finetune.config import resolve_config
    from emofeat.finetune.run import finetune

    preset = "wav2vec2-tiny" if kind in SPEECH_KINDS else "kobert-tiny"
    run = tmp_path / "run"
    finetune(manifest, run, resolve_config(preset, model=str(tiny[kind]), epochs=1))
    out = tmp_path / "run.h5"
    extract(manifest.path, out, ExtractConfig(run=str(run)))
    spec = resolve_model(str(tiny[kind]))
    with open_store(out) as s:
        assert s.has_logits and s.provenance.out_of_fold
        train = s.select(split="train")
        r = int(train[0])
        fold = int(s.fold[r])
        encoder = spec.encoder_class.from_folder(str(run / f"fold-{fold}"), _options(s, kind))
        model = encoder.load_classifier(str(run / f"fold-{fold}"))
        pieces = encoder.load_pieces(manifest, r, encoder.min_input_length(model.config))
        again = encoder.load_classifier(str(run / f"fold-{fold}"))  # weights read, not drawn
        with torch.no_grad():
            inputs = encoder.collator()([{"input": p} for p in pieces])
            got = model(**inputs).logits[0].numpy()
            np.testing.assert_array_equal(again(**inputs).logits[0].numpy(), got)
        np.testing.assert_allclose(s.logits([r])[0], got, atol=1e-4, rtol=1e-3)


def _options(store, kind):
    from emofeat.encoders.base import InputOptions

    if kind in SPEECH_KINDS:
        return InputOptions(max_seconds=None)
    return InputOptions(max_len=int(store.provenance.max_len))


def test_an_unsupported_model_type_is_refused_with_the_list(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "t5"}')
    with pytest.raises(ModelError, match=r"'t5' is not handled.*whisper.*roberta"):
        resolve(str(tmp_path))


def test_every_short_name_names_a_registered_family():
    assert {family for family, _ in MODELS.values()} <= set(families())


def test_models_list_shows_every_family_and_short_name():
    from click.testing import CliRunner

    from emofeat.cli import main

    result = CliRunner().invoke(main, ["models", "list"])
    assert result.exit_code == 0, result.output
    for family in families():
        assert f"{family} (" in result.output
    for short, (_, hub) in MODELS.items():
        assert f"{short} ({hub})" in result.output


def test_a_short_name_with_a_folder_of_another_family_is_refused(tiny):
    spec = resolve("hubert", model_path=tiny["hubert"])
    assert spec.family == "hubert" and spec.source == str(tiny["hubert"])
    with pytest.raises(ModelError, match=r"--model whisper is a whisper model.*holds a hubert"):
        resolve("whisper", model_path=tiny["hubert"])


def test_whisper_trains_on_the_first_30_seconds_of_a_longer_clip(tiny, manifest, tmp_path):
    """A clip longer than Whisper's span gives its first window to training (it used to fail
    unpacking several windows)."""
    import soundfile as sf
    from conftest import swap_audio

    from emofeat.corpus.manifest import read_manifest, write_manifest
    from emofeat.encoders.base import InputOptions
    from emofeat.encoders.speech import WhisperSpeechEncoder
    from emofeat.finetune.run import UtteranceDataset

    x = (0.1 * np.random.default_rng(0).standard_normal(40 * 16000)).astype(np.float32)
    sf.write(tmp_path / "long.wav", x, 16000, subtype="FLOAT")
    frame = manifest.frame.copy()
    frame["audio_path"] = [str(manifest.audio_path(i)) for i in range(len(frame))]
    swap_audio(frame, 0, tmp_path / "long.wav")
    write_manifest(frame, tmp_path / "m.csv")
    enc = WhisperSpeechEncoder.from_folder(str(tiny["whisper"]), InputOptions())
    item = UtteranceDataset(read_manifest(tmp_path / "m.csv"), np.array([0]), enc)[0]
    np.testing.assert_array_equal(item["input"], x[: 30 * 16000])
    batch = enc.collator()([item])
    assert batch["input_features"].shape[-1] == 3000


@pytest.mark.parametrize("kind, leaks", [("data2vec-audio", True), ("wavlm", False)])
def test_which_masked_families_let_padding_change_a_clip(kind, leaks, tiny):
    """The evidence behind ``padding_leaks``: with its attention mask, WavLM gives a padded clip
    the values of the clip alone; data2vec-audio does not (its stacked positional convolutions
    see the padded frames), so emofeat forwards its clips without padding."""
    from transformers import AutoModel

    from emofeat.encoders import resolve

    model = AutoModel.from_pretrained(tiny[kind]).eval()
    x = torch.randn(1, 12000, generator=torch.Generator().manual_seed(0))
    padded = torch.cat([x, torch.zeros(1, 4000)], 1)
    mask = torch.cat([torch.ones(1, 12000), torch.zeros(1, 4000)], 1).long()
    with torch.no_grad():
        alone = model(x, output_hidden_states=True).hidden_states
        batch = model(padded, attention_mask=mask, output_hidden_states=True).hidden_states
    n = alone[0].shape[1]
    worst = max(float((a[0] - b[0, :n]).abs().max()) for a, b in zip(alone, batch))
    assert (worst > 0.05) == leaks and (worst < 1e-4 or leaks)
    assert resolve(str(tiny[kind])).encoder_class.padding_leaks == leaks
