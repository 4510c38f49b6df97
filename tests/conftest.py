"""Shared fixtures: a small synthetic corpus and its manifest, built once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests that compare numbers with plain transformers on the CPU run on the CPU also on a machine
# with a GPU (CUDA kernels differ at ~1e-4); the CUDA paths have their own tests (test_cuda.py).
# Subprocesses (kill and torchrun tests) inherit it.
os.environ.setdefault("EMOFEAT_DEVICE", "cpu")


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    from emofeat.testing.synth import synthesize

    root = tmp_path_factory.mktemp("corpus")
    synthesize(root, seed=1, sessions=5, per_session=16, aihub=30, min_seconds=0.5, max_seconds=1.0)
    return root


@pytest.fixture(scope="session")
def kemdy19(tmp_path_factory):
    """A synthetic KEMDy19 replica (3 sessions): its folder and what synth wrote."""
    from emofeat.testing.synth import synthesize

    root = tmp_path_factory.mktemp("k19")
    report = synthesize(
        root, seed=2, sessions=0, aihub=0, kemdy19=3, per_session=12, min_seconds=0.5,
        max_seconds=0.8,
    )  # fmt: skip
    return root / "KEMDy19", report["kemdy19"]


@pytest.fixture(scope="session")
def manifest_path(corpus_dir):
    from emofeat.corpus.prepare import prepare

    path = corpus_dir / "manifest.csv"
    prepare(path, kemdy20=corpus_dir / "KEMDy20_v1_1", aihub=corpus_dir / "AI_Hub", folds=2, seed=0)
    return path


@pytest.fixture(scope="session")
def manifest(manifest_path):
    from emofeat.corpus.manifest import read_manifest

    return read_manifest(manifest_path)


@pytest.fixture(scope="session")
def tiny_kobert(tmp_path_factory, manifest):
    from emofeat.testing.tiny import build_tiny_kobert

    return build_tiny_kobert(
        tmp_path_factory.mktemp("models") / "kobert", list(manifest.frame["text"]), hidden=32
    )


@pytest.fixture(scope="session")
def tiny_wav2vec2(tmp_path_factory):
    from emofeat.testing.tiny import build_tiny_wav2vec2

    return build_tiny_wav2vec2(
        tmp_path_factory.mktemp("models") / "wav2vec2", hidden=32, conv_dim=16
    )


@pytest.fixture(scope="session")
def kobert_run(tmp_path_factory, manifest, tiny_kobert):
    from emofeat.finetune.config import resolve_config
    from emofeat.finetune.run import finetune

    out = tmp_path_factory.mktemp("runs") / "kobert"
    cfg = resolve_config(
        "kobert-tiny", model="kobert", model_path=str(tiny_kobert), epochs=2, dropout=0.3
    )
    finetune(manifest, out, cfg)
    return out


@pytest.fixture(scope="session")
def w2v_run(tmp_path_factory, manifest, tiny_wav2vec2):
    from emofeat.finetune.config import resolve_config
    from emofeat.finetune.run import finetune

    out = tmp_path_factory.mktemp("runs") / "w2v-rev"
    cfg = resolve_config("wav2vec2-tiny", model=str(tiny_wav2vec2), epochs=2, reverse=True)
    finetune(manifest, out, cfg)
    return out


def swap_audio(frame, row: int, path) -> None:
    """Point row ``row`` of a manifest frame at another audio file, with that file's duration
    (as if the manifest had been prepared with it; emofeat refuses a file whose duration
    differs from the manifest's)."""
    from emofeat.audio import AudioError, duration

    try:
        seconds = duration(path)
    except AudioError:
        seconds = float("nan")
    frame.loc[frame.index[row], "audio_path"] = str(path)
    frame.loc[frame.index[row], "duration"] = seconds


def recordings_csv(manifest, rows, path, *, prefix: str = "new", labels: bool = False):
    """New recordings as `emofeat infer` reads them: the audio and text of the manifest's
    ``rows`` under new ids (``prefix0``, ...), with their labels when asked."""
    import pandas as pd

    rows = list(rows)
    frame = pd.DataFrame(
        {
            "id": [f"{prefix}{i}" for i in range(len(rows))],
            "audio_path": [str(manifest.audio_path(r)) for r in rows],
            "text": manifest.frame["text"].to_numpy()[rows],
        }
    )
    if labels:
        frame["label"] = manifest.frame["label"].to_numpy()[rows]
    frame.to_csv(path, index=False)
    return path
