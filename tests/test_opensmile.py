"""openSMILE as a feature source: the store equals openSMILE called directly on the same
samples; sequences of low-level descriptors; resume and identity; refusals; a layer-sum head
over it."""

import re

import numpy as np
import pytest
import soundfile
import soxr
from click.testing import CliRunner

from emofeat.cli import main
from emofeat.errors import EmofeatError
from emofeat.extract.config import ExtractConfig
from emofeat.extract.run import extract
from emofeat.store import open_store

opensmile = pytest.importorskip("opensmile")


def samples(path):
    """The clip as 16 kHz mono float32, decoded here without emofeat's audio module."""
    x, rate = soundfile.read(path, dtype="float32", always_2d=True)
    x = x.mean(1) if x.shape[1] > 1 else x[:, 0]
    return x if rate == 16000 else soxr.resample(x, rate, 16000, quality="HQ")


@pytest.fixture(scope="module")
def small(manifest, tmp_path_factory):
    """A small manifest of the synthetic corpus: 8 rows of each fold and 8 test rows."""
    from emofeat.corpus.manifest import read_manifest, write_manifest

    path = tmp_path_factory.mktemp("smile") / "m.csv"
    frame = manifest.frame.groupby(["split", "fold"]).head(8).reset_index(drop=True)
    frame["audio_path"] = [
        str(manifest.audio_path(i))
        for i in frame.index.map(lambda j: int(np.flatnonzero(manifest.ids == frame.id[j])[0]))
    ]
    write_manifest(frame, path, labels=manifest.label_set)
    return read_manifest(path)


def test_functionals_and_descriptors_equal_opensmile_on_the_same_samples(small, tmp_path):
    out = tmp_path / "smile.h5"
    extract(small, out, ExtractConfig(model="opensmile:eGeMAPSv02", sequence=True))
    functionals = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.Functionals,
    )
    lld = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.LowLevelDescriptors,
    )
    with open_store(out) as s:
        stored = s.embeddings("last")
        states, lengths = s.sequences("last")
        assert s.layout.embeddings == {"functionals": 88} and not s.has_logits
        assert not s.in_sample.any() and s.provenance.family == "opensmile"
        assert s.config["opensmile_version"] == opensmile.__version__
        assert s.config["feature_names"] == list(functionals.feature_names)
        for r in range(len(small)):
            x = samples(small.audio_path(r))
            direct = functionals.process_signal(x, 16000).to_numpy()[0]
            np.testing.assert_allclose(stored[r], direct, rtol=1e-5, atol=1e-5)
            frames = lld.process_signal(x, 16000).to_numpy()
            n = min(len(frames), 512)
            assert lengths[r] == n
            np.testing.assert_allclose(states[r, :n], frames[:n], rtol=2e-3, atol=2e-3)
    assert (tmp_path / "smile.yaml").is_file()  # the record: --config re-runs it


def test_resume_identity_and_refusals(small, tmp_path):
    out = tmp_path / "s.h5"
    runner = CliRunner()
    args = ["extract", "--model", "opensmile:eGeMAPSv02", "--manifest", str(small.path)]
    first = runner.invoke(main, [*args, "--out", str(out)], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    again = runner.invoke(main, [*args, "--out", str(out)], catch_exceptions=False)
    assert "every row is done already" in again.output
    other = runner.invoke(
        main, ["extract", "--model", "opensmile:GeMAPSv01b", "--manifest", str(small.path),
               "--out", str(out)],
    )  # fmt: skip
    assert other.exit_code != 0 and "overwrite" in other.output
    for flag, value in (("--pooling", "mean+std"), ("--layers", "0,1"), ("--max-len", "8")):
        bad = runner.invoke(main, [*args, "--out", str(tmp_path / "b.h5"), flag, value])
        assert bad.exit_code != 0 and "does not apply" in bad.output.replace("do(es)", "does")
    unknown = runner.invoke(
        main, ["extract", "--model", "opensmile:nope", "--manifest", str(small.path),
               "--out", str(tmp_path / "u.h5")],
    )  # fmt: skip
    assert "no openSMILE feature set 'nope'" in unknown.output
    listed = runner.invoke(main, ["models", "list"]).output
    assert "opensmile (speech)" in listed and "opensmile:eGeMAPSv02" in listed
    # a row without audio: named, or skipped with --skip-bad
    from emofeat.corpus.manifest import write_manifest

    frame = small.frame.copy()
    frame.loc[0, "audio_path"] = ""
    frame.loc[0, "duration"] = float("nan")
    path = tmp_path / "text-row.csv"
    write_manifest(frame, path, labels=small.label_set)
    with pytest.raises(EmofeatError, match=re.escape(f"{frame.id[0]}: no audio")):
        extract(path, tmp_path / "t.h5", ExtractConfig(model="opensmile:eGeMAPSv02"))
    extract(path, tmp_path / "t.h5", ExtractConfig(model="opensmile:eGeMAPSv02", skip_bad=True))
    with open_store(tmp_path / "t.h5") as s:
        assert not s.done[0] and s.done[1:].all()
    # audio that changed since `data prepare` is refused as the speech encoders refuse it
    frame = small.frame.copy()
    frame.loc[1, "duration"] = frame.loc[1, "duration"] + 0.5
    write_manifest(frame, tmp_path / "changed.csv", labels=small.label_set)
    with pytest.raises(EmofeatError, match="changed since `data prepare`"):
        extract(
            tmp_path / "changed.csv", tmp_path / "c.h5", ExtractConfig(model="opensmile:eGeMAPSv02")
        )


def test_a_clip_too_short_for_opensmile_is_named_or_skipped(small, tmp_path):
    """openSMILE gives NaN functionals for a 50-ms clip: without --skip-bad the row is named
    (and the rows computed before it are kept), with it the row is skipped; nothing non-finite
    is stored."""
    from conftest import swap_audio

    from emofeat.corpus.manifest import write_manifest

    short = tmp_path / "short.wav"
    soundfile.write(short, 0.1 * np.random.default_rng(0).normal(size=800), 16000)
    frame = small.frame.copy()
    swap_audio(frame, 5, short)
    path = tmp_path / "short.csv"
    write_manifest(frame, path, labels=small.label_set)
    cfg = ExtractConfig(model="opensmile:eGeMAPSv02")
    with pytest.raises(EmofeatError, match=re.escape(f"row {frame.id[5]!r}") + ".*non-finite"):
        extract(path, tmp_path / "s.h5", cfg)
    with open_store(tmp_path / "s.h5") as s:
        assert s.done[:5].all() and not s.done[5:].any()  # computed before it: kept
    extract(path, tmp_path / "s.h5", cfg.replace(skip_bad=True))
    with open_store(tmp_path / "s.h5") as s:
        assert s.complete and not s.done[5] and s.done[np.arange(len(s)) != 5].all()
        assert "non-finite" in s.skip_reasons()[frame.id[5]]


def test_a_layer_sum_head_over_functionals(small, tmp_path):
    from emofeat.fuse.config import LayerSumConfig
    from emofeat.fuse.run import fuse

    out = tmp_path / "smile.h5"
    extract(small, out, ExtractConfig(model="opensmile:eGeMAPSv02"))
    fuse([out], tmp_path / "run", config=LayerSumConfig(epochs=2), model="layer-sum")
    with open_store(tmp_path / "run" / "layer-sum.h5") as s:
        assert s.has_logits and s.layout.embeddings == {"last": 88}
