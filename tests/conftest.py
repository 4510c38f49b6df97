"""Shared fixtures: a small synthetic corpus and its manifest, built once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    from emofeat.corpus.synth import synthesize

    root = tmp_path_factory.mktemp("corpus")
    synthesize(root, seed=1, sessions=5, per_session=16, aihub=30, min_seconds=0.5, max_seconds=1.0)
    return root


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
