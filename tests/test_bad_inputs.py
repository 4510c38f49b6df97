"""Misuse, bad data, crafted files and crashes: one table of cases (the scikit-learn style:
case, what is done, expected error type and message fragment), then the cases that need more
than one call (overwrite, kills)."""

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import swap_audio

from emofeat.audio import AudioError
from emofeat.cli import main
from emofeat.corpus.manifest import read_manifest, write_manifest
from emofeat.errors import CorpusError, EmofeatError, ManifestError, ModelError, StoreError
from emofeat.extract.config import ExtractConfig
from emofeat.extract.run import extract
from emofeat.finetune.config import resolve_config
from emofeat.finetune.run import finetune
from emofeat.options import OptionError
from emofeat.stack.ensemble import stack
from emofeat.store import StoreLayout, create_store, describe, open_store

NAMES = ["a", "b", "c"]


# ------------------------------------------------------------------------------- helpers
def one_bad_wav(manifest, tmp_path, make_wav, row=3):
    """A copy of the manifest whose row ``row`` points to the wav ``make_wav(path)`` writes."""
    frame = manifest.frame.copy()
    frame["audio_path"] = [str(manifest.audio_path(i)) for i in range(len(frame))]
    bad = tmp_path / "bad.wav"
    make_wav(bad)
    swap_audio(frame, row, bad)
    write_manifest(frame, tmp_path / "m.csv")
    return tmp_path / "m.csv", frame["id"].iat[row]


def nan_wav(path):
    x = np.zeros(16000, np.float32)
    x[100] = np.nan
    sf.write(path, x, 16000, subtype="FLOAT")


def truncated_wav(path):
    sf.write(path.with_suffix(".full.wav"), np.zeros(16000, np.float32), 16000)
    path.write_bytes(path.with_suffix(".full.wav").read_bytes()[:60])


def empty_wav(path):
    sf.write(path, np.zeros(0, np.float32), 16000)


def short_wav(path):
    sf.write(path, np.zeros(100, np.float32), 16000)  # 6 ms: less than the 400-sample CNN


def fifo(path):
    os.mkfifo(path)


def small_store(path, **overrides):
    n = 6
    values = dict(
        ids=[f"u{i}" for i in range(n)],
        labels=np.arange(n) % 3,
        split=["train"] * 4 + ["test"] * 2,
        fold=[0, 1, 0, 1, -1, -1],
        label_names=NAMES,
    )
    w = create_store(
        path, StoreLayout(**values, embeddings={"last": 4}, in_sample=np.zeros(n, bool))
    )
    w.write(np.arange(n), logits=np.eye(n, 3), embeddings={"last": np.ones((n, 4))})
    w.finalize()
    with h5py.File(path, "r+") as f:
        for key, value in overrides.items():
            if key == "labels":
                del f["labels"]
                f["labels"] = value
            elif key == "logits":
                f["logits"][0] = value
            else:
                f.attrs[key] = value
    return path


# ------------------------------------------------------------------------------- the table
def audio_case(make_wav):
    def run(ctx):
        m, _ = one_bad_wav(ctx["manifest"], ctx["tmp"], make_wav)
        cfg = ExtractConfig(model=str(ctx["w2v"]))
        return extract(m, ctx["tmp"] / "s.h5", cfg)

    return run


def weights_case(weights):
    def run(ctx):
        rng = np.random.default_rng(0)
        paths = [small_store(ctx["tmp"] / f"{k}.h5", logits=rng.normal(size=3)) for k in range(2)]
        return stack(paths, "softvote", ctx["tmp"] / "sv", weights=weights)

    return run


def store_case(**overrides):
    def run(ctx):
        return open_store(small_store(ctx["tmp"] / "s.h5", **overrides))

    return run


def crafted_store(kind):
    def run(ctx):
        path = small_store(ctx["tmp"] / "s.h5")
        victim = ctx["tmp"] / "victim.txt"
        victim.write_text("do not touch")
        with h5py.File(path, "r+") as f:
            if kind == "external":
                f.create_dataset(
                    "embeddings/extra", shape=(6, 4), dtype="f4", external=[(str(victim), 0, 96)]
                )
            elif kind == "link":
                f["embeddings/linked"] = h5py.ExternalLink(str(victim), "/x")
            else:
                layout = h5py.VirtualLayout(shape=(6,), dtype="f4")
                f.create_virtual_dataset("virtual", layout)
        return open_store(path)

    return run


def nan_store_stack(ctx):
    rng = np.random.default_rng(0)
    good = small_store(ctx["tmp"] / "good.h5", logits=rng.normal(size=3))
    bad = small_store(ctx["tmp"] / "nan.h5", logits=np.array([np.nan, 0, 0]))
    return stack([good, bad], "logreg", ctx["tmp"] / "x", allow_in_sample=True)


def header_only_manifest(ctx):
    path = ctx["tmp"] / "empty.csv"
    path.write_text(",".join(ctx["manifest"].frame.columns[:11]) + "\n")
    return read_manifest(path)


def empty_transcript(ctx):
    frame = ctx["manifest"].frame.copy()
    frame["audio_path"] = [str(ctx["manifest"].audio_path(i)) for i in range(len(frame))]
    frame.loc[frame.index[2], "text"] = "  "
    write_manifest(frame, ctx["tmp"] / "m.csv")
    return extract(ctx["tmp"] / "m.csv", ctx["tmp"] / "t.h5", ExtractConfig(run=str(ctx["kb"])))


def remote_code_folder(ctx):
    from emofeat.encoders.base import InputOptions
    from emofeat.encoders.text import TextEncoder

    folder = ctx["tmp"] / "remote"
    shutil.copytree(ctx["kb"] / "fold-0", folder)
    config = json.loads((folder / "config.json").read_text())
    # A type transformers does not know, so only the folder's own code could build it.
    config.update(model_type="evil-bert", auto_map={"AutoConfig": "evil.EvilConfig"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(f"open({str(ctx['tmp'] / 'ran')!r}, 'w').write('x')\n")
    encoder = TextEncoder.from_folder(str(ctx["kb"] / "fold-0"), InputOptions())
    return encoder.load_classifier(str(folder))


def extract_option(**options):
    def run(ctx):
        out = ctx["tmp"] / "s.h5"
        return extract(ctx["manifest"].path, out, ExtractConfig(model=str(ctx["w2v"]), **options))

    return run


def finetune_option(**options):
    """A finetune command with one bad option: refused before a run folder exists, so the
    corrected command is never blocked."""

    def run(ctx):
        from emofeat.cli import main

        out = ctx["tmp"] / "run"
        try:
            return finetune(
                ctx["manifest"].path,
                out,
                resolve_config("kobert-tiny", model=str(ctx["kb"]), **options),
            )
        finally:
            assert not out.exists()
            flags = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
            args = ["finetune", "--model", "kobert", "--manifest", str(ctx["manifest"].path)]
            r = CliRunner().invoke(main, [*args, "--out", str(out), *flags])
            assert r.exit_code == 2 and not out.exists(), r.output

    return run


def run_and_model(ctx):
    config = ExtractConfig(run=str(ctx["kb"]), model=str(ctx["w2v"]))
    return extract(ctx["manifest"].path, ctx["tmp"] / "s.h5", config)


def weights_with_lgbm(ctx):
    paths = [small_store(ctx["tmp"] / "a.h5"), small_store(ctx["tmp"] / "b.h5")]
    return stack(paths, "lgbm", ctx["tmp"] / "st", weights="1,1")


def plot_max_points_zero(ctx):
    from emofeat.analysis.plots import plot_embedding

    return plot_embedding(small_store(ctx["tmp"] / "plot.h5"), ctx["tmp"] / "p.png", max_points=0)


def plot_tsne_five_rows(ctx):
    from emofeat.analysis.plots import plot_embedding

    path = small_store(ctx["tmp"] / "plot.h5")
    with h5py.File(path, "r+") as f:  # one row not done: five left
        f["done"][5] = False
        f.attrs["complete"] = False
    return plot_embedding(path, ctx["tmp"] / "p.png", method="tsne")


def tiny_option(**options):
    def call(ctx):
        from emofeat.testing.tiny import build_tiny

        return build_tiny("wav2vec2", ctx["tmp"] / "tiny", **options)

    return call


def config_label_names(ctx):
    from emofeat.finetune.config import resolve_config
    from emofeat.finetune.run import finetune

    # The classes come from the manifest alone: a config file cannot give them a second time.
    (ctx["tmp"] / "labels.yaml").write_text("label_names: [a, b, c]\n")
    try:
        cfg = resolve_config(
            "kobert-tiny", config_file=ctx["tmp"] / "labels.yaml", model=str(ctx["w2v"])
        )
        return finetune(ctx["manifest"], ctx["tmp"] / "run", cfg)
    finally:
        assert not (ctx["tmp"] / "run").exists()


def broken_run(what):
    """A copy of a fine-tuned run with one record broken, extracted from."""

    def run(ctx):
        folder = ctx["tmp"] / "run"
        shutil.copytree(ctx["kb"], folder)
        if what == "rows.json":
            (folder / "fold-0" / "rows.json").write_text('{"train": [')
        else:
            text = (folder / "config.yaml").read_text()
            (folder / "config.yaml").write_text(text.replace("folds: 2", f"folds: {10**12}"))
        return extract(ctx["manifest"].path, ctx["tmp"] / "s.h5", ExtractConfig(run=str(folder)))

    return run


def synth_option(**options):
    def run(ctx):
        from emofeat.testing.synth import synthesize

        return synthesize(ctx["tmp"] / "corpus", **options)

    return run


def one_row_corpus(ctx):
    from emofeat.corpus.prepare import prepare

    wav = ctx["manifest"].audio_path(0)
    (ctx["tmp"] / "one.csv").write_text(
        f"id,audio_path,text,label\nx1,{wav},hello,happy\n", encoding="utf-8"
    )
    return prepare(ctx["tmp"] / "m.csv", csv=ctx["tmp"] / "one.csv", folds=2)


def fractional_fold(ctx):
    frame = ctx["manifest"].frame.copy()
    frame["fold"] = frame["fold"].astype(float)
    frame.loc[frame.index[frame["split"] == "train"][0], "fold"] = 0.5
    frame.to_csv(ctx["tmp"] / "m.csv", index=False)
    return read_manifest(ctx["tmp"] / "m.csv")


LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefg", "bcdefgh")
)


def yaml_config(text):
    def run(ctx):
        (ctx["tmp"] / "c.yaml").write_text(text)
        return resolve_config("kobert-tiny", ctx["tmp"] / "c.yaml")

    return run


CASES = [
    # (case, call, expected error, message fragment)
    ("nan-audio", audio_case(nan_wav), AudioError, "non-finite samples"),
    ("truncated-wav", audio_case(truncated_wav), EmofeatError, "truncated: the header promises"),
    ("empty-wav", audio_case(empty_wav), EmofeatError, "empty audio (0 samples)"),
    ("too-short-wav", audio_case(short_wav), EmofeatError, "shorter than the encoder can see"),
    ("fifo-audio", audio_case(fifo), EmofeatError, "not a regular file"),
    ("weights-nan", weights_case("nan,1"), EmofeatError, "must be finite, non-negative"),
    ("weights-inf", weights_case("inf,1"), EmofeatError, "must be finite, non-negative"),
    ("weights-zero", weights_case("0,0"), EmofeatError, "not all zero"),
    ("weights-count", weights_case("0.5,0.25,0.25"), EmofeatError, "3 weights for 2 models"),
    (
        "weights-text",
        weights_case("a,b"),
        EmofeatError,
        "--weights must be finite, non-negative numbers",
    ),
    ("complete-as-string", store_case(complete="False"), StoreError, "must be a boolean"),
    (
        "float-labels",
        store_case(labels=np.array([0.0, 1, 2, 0, 1, np.nan])),
        StoreError,
        "must hold integers",
    ),
    ("external-storage", crafted_store("external"), StoreError, "uses external storage"),
    ("external-link", crafted_store("link"), StoreError, "is a ExternalLink"),
    ("virtual-dataset", crafted_store("virtual"), StoreError, "is a virtual dataset"),
    (
        "nan-in-store",
        nan_store_stack,
        StoreError,
        "store nan: non-finite values in 1 row(s), e.g. id 'u0'",
    ),
    ("header-only-manifest", header_only_manifest, ManifestError, "no rows"),
    ("empty-transcript", empty_transcript, EmofeatError, "empty text"),
    ("remote-code-folder", remote_code_folder, ModelError, "asks to run its own code"),
    ("yaml-malformed", yaml_config("lr: [1, 2\n"), EmofeatError, "not valid YAML"),
    (
        "yaml-wrong-type",
        yaml_config("epochs: many\n"),
        EmofeatError,
        "c.yaml: --epochs must be a finite number > 0 and <= 10000, got 'many'",
    ),
    ("yaml-not-mapping", yaml_config("- 1\n- 2\n"), EmofeatError, "expected a mapping"),
    (
        "report-to-bogus",
        yaml_config("report_to: bogus\n"),
        OptionError,
        "--report-to must be one of",
    ),
    (
        "inner-fraction-most",
        yaml_config("inner_fraction: 0.99\n"),
        OptionError,
        "--inner-fraction must be a finite number > 0 and <= 0.5",
    ),
    ("plot-tsne-five-rows", plot_tsne_five_rows, EmofeatError, "a tsne map needs 6 at least"),
    ("tiny-hidden-7", tiny_option(hidden=7), OptionError, "--hidden must be a multiple of 4"),
    ("tiny-layers-negative", tiny_option(layers=-1), OptionError, "--layers must be an integer"),
    ("config-label-names", config_label_names, OptionError, "unknown option(s) label_names"),
    # 272 bytes of nested aliases expand to ~40 MB of text, one level more to gigabytes.
    ("yaml-aliases", yaml_config(LAUGHS), EmofeatError, "YAML aliases (*name) are not accepted"),
    ("yaml-unknown-option", yaml_config("learning_rate: 1\n"), EmofeatError, "unknown option"),
    ("select-unknown", yaml_config("select: fold\n"), EmofeatError, "--select must be one of"),
    (
        "workers-negative",
        extract_option(workers=-2),
        EmofeatError,
        "--workers must be an integer >= 0",
    ),
    (
        "flush-rows-zero",
        extract_option(flush_rows=0),
        EmofeatError,
        "--flush-rows must be an integer >= 1",
    ),
    (
        "batch-seconds-nan",
        extract_option(batch_seconds=float("nan")),
        EmofeatError,
        "--batch-seconds must be a finite number > 0 and <= 86400, or null, got nan",
    ),
    (
        "max-seconds-negative",
        extract_option(max_seconds=-1),
        EmofeatError,
        "--max-seconds must be a finite number >= 0 and <= 86400, got -1",
    ),
    ("extract-max-len-negative", extract_option(max_len=-5), EmofeatError, "--max-len must be"),
    (
        "sequence-padding-without-sequence",
        extract_option(sequence_padding="max_length"),
        EmofeatError,
        "does nothing without --sequence",
    ),
    ("extract-run-and-model", run_and_model, EmofeatError, "--model/--model-path would be ignored"),
    ("weights-with-lgbm", weights_with_lgbm, EmofeatError, "--meta lgbm learns its own"),
    ("plot-max-points-zero", plot_max_points_zero, EmofeatError, "--max-points must be an integer"),
    ("rows-json-malformed", broken_run("rows.json"), EmofeatError, "rows.json: not valid JSON"),
    ("run-folds-huge", broken_run("folds"), EmofeatError, "folds must be 0 or 2..1000"),
    ("one-row-corpus", one_row_corpus, CorpusError, "a test split needs two at least"),
    ("fold-fractional", fractional_fold, ManifestError, "non-integer fold"),
    ("synth-negative-sessions", synth_option(sessions=-1), OptionError, "--sessions must be"),
    (
        "synth-nothing",
        synth_option(sessions=0, aihub=0),
        OptionError,
        "--sessions, --aihub, --csv and --kemdy19 are all 0: nothing to write",
    ),
    ("synth-seconds-nan", synth_option(max_seconds=float("nan")), OptionError, "--max-seconds"),
    *[
        (f"finetune-{key}-{value}", finetune_option(**{key: value}), EmofeatError, fragment)
        for key, value, fragment in [
            ("epochs", -1, "--epochs must be a finite number > 0 and <= 10000, got -1"),
            ("epochs", float("nan"), "--epochs must be a finite number > 0 and <= 10000, got nan"),
            ("lr", float("nan"), "--lr must be a finite number > 0"),
            ("batch_size", 0, "--batch-size must be an integer >= 1 and <= 65536, got 0"),
            ("grad_accum", 0, "--grad-accum must be an integer >= 1 and <= 65536, got 0"),
            ("max_len", -5, "--max-len must be an integer >= 1 and <= 1000000, got -5"),
            ("dropout", 1.5, "--dropout must be a finite number >= 0 and <= 1"),
            ("warmup_ratio", -0.1, "--warmup-ratio must be"),
        ]
    ],
]


@pytest.mark.parametrize("case, call, error, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error(
    case, call, error, fragment, manifest, tiny_wav2vec2, kobert_run, tmp_path
):
    ctx = {"manifest": manifest, "w2v": tiny_wav2vec2, "kb": kobert_run, "tmp": tmp_path}
    with pytest.raises(error) as info:
        call(ctx)
    assert fragment in str(info.value)
    # Nothing claims to be a complete store, nothing ran from a model folder.
    for store in tmp_path.glob("*.h5"):
        if store.name in ("s.h5", "t.h5"):
            with h5py.File(store, "r") as f:
                assert not f.attrs.get("complete", False) or case in {
                    "complete-as-string",
                    "float-labels",
                    "external-storage",
                    "external-link",
                    "virtual-dataset",
                }
    assert not (tmp_path / "ran").exists()
    assert not list(tmp_path.glob(".*.tmp"))
    if (tmp_path / "victim.txt").exists():
        assert (tmp_path / "victim.txt").read_text() == "do not touch"


# ------------------------------------------------------------------- skipped with --skip-bad
@pytest.mark.parametrize(
    "make_wav, reason",
    [
        (nan_wav, "non-finite"),
        (truncated_wav, "truncated"),
        (empty_wav, "empty audio"),
        (short_wav, "shorter than"),
    ],
)
def test_bad_audio_is_recorded_with_skip_bad(make_wav, reason, manifest, tiny_wav2vec2, tmp_path):
    m, uid = one_bad_wav(manifest, tmp_path, make_wav)
    extract(m, tmp_path / "s.h5", ExtractConfig(model=str(tiny_wav2vec2), skip_bad=True))
    with open_store(tmp_path / "s.h5") as s:
        reasons = s.skip_reasons()
        assert list(reasons) == [uid] and reason in reasons[uid]
        assert s.complete and s.done.sum() == len(s) - 1
        assert np.isfinite(s.embeddings("last", s.select())).all()


def test_nan_audio_never_trains(manifest, tiny_wav2vec2, tmp_path):
    m, uid = one_bad_wav(
        manifest, tmp_path, nan_wav, row=int(np.flatnonzero(manifest.split == "train")[0])
    )
    cfg = resolve_config("wav2vec2-tiny", model=str(tiny_wav2vec2), folds=0, epochs=1)
    with pytest.raises(EmofeatError, match="non-finite samples"):
        finetune(m, tmp_path / "run", cfg)
    assert not (tmp_path / "run" / "fold-all" / "metrics.json").exists()


def test_a_non_finite_loss_stops_training(manifest, tiny_kobert, tmp_path, monkeypatch):
    from transformers import Trainer

    real = Trainer.compute_loss

    def poisoned(self, model, inputs, *args, **kwargs):
        loss = real(self, model, inputs, *args, **kwargs)
        return loss * float("nan") if self.state.global_step >= 1 else loss

    monkeypatch.setattr(Trainer, "compute_loss", poisoned)
    cfg = resolve_config(
        "kobert-tiny", model="kobert", model_path=str(tiny_kobert), folds=0, max_steps=3
    )
    with pytest.raises(EmofeatError, match="non-finite training loss .* at step 2 of fold-all"):
        finetune(manifest, tmp_path / "run", cfg)
    assert not (tmp_path / "run" / "fold-all" / "metrics.json").exists()


def test_a_class_absent_from_a_training_split_keeps_its_column(tmp_path):
    rng = np.random.default_rng(0)
    n = 120
    y = rng.integers(0, 3, n)
    split = np.where(np.arange(n) < 90, "train", "test")
    fold = np.where(split == "train", np.arange(n) % 3, -1)
    y[(split == "train") & (fold == 0) & (y == 2)] = 1  # class 2 never in fold 0 ...
    y[(split == "train") & (fold != 0) & (y == 2)] = 0  # ... nor in folds 1, 2: absent from CV fits
    paths = []
    for k in range(2):
        path = tmp_path / f"s{k}.h5"
        w = create_store(
            path,
            StoreLayout(
                ids=[f"u{i}" for i in range(n)],
                labels=y,
                split=split,
                fold=fold,
                label_names=NAMES,
                in_sample=np.zeros(n, bool),
            ),
        )
        w.write(np.arange(n), logits=rng.normal(size=(n, 3)) + 2 * np.eye(3)[y])
        w.finalize()
        paths.append(path)
    for meta in ("logreg", "lgbm"):
        m = stack(paths, meta, tmp_path / meta).metrics
        pred = pd.read_csv(tmp_path / meta / "predictions.csv")
        assert [c for c in pred.columns if c.startswith("p_")] == ["p_a", "p_b", "p_c"]
        np.testing.assert_allclose(pred.filter(like="p_").sum(axis=1), 1.0)
        assert (pred.loc[pred.split == "train", "p_c"] == 0).all()  # never seen when fitting
        assert len(m["test"]["confusion"]) == 3


# ------------------------------------------------------------------------ overwrite and kills
def test_overwrite_only_replaces_what_emofeat_made(
    manifest, tiny_kobert, tiny_wav2vec2, tmp_path, monkeypatch
):
    thesis = tmp_path / "work"
    (thesis / "chapter").mkdir(parents=True)
    (thesis / "thesis.txt").write_text("years of work")
    cfg = resolve_config(
        "kobert-tiny", model="kobert", model_path=str(tiny_kobert), folds=0, max_steps=1
    )
    for overwrite in (False, True):
        with pytest.raises(EmofeatError, match="thesis.txt.*which emofeat did not write"):
            finetune(manifest, thesis, cfg, overwrite=overwrite)
    assert (thesis / "thesis.txt").read_text() == "years of work" and (thesis / "chapter").is_dir()
    monkeypatch.chdir(thesis)
    with pytest.raises(EmofeatError, match="which emofeat did not write"):
        finetune(manifest, ".", cfg, overwrite=True)
    # A failing command never deletes: the bad model is found before the old run is touched.
    finetune(manifest, tmp_path / "run", cfg)
    bad = resolve_config("kobert-tiny", model=str(tmp_path / "nowhere"), folds=0, max_steps=1)
    with pytest.raises(EmofeatError):
        finetune(manifest, tmp_path / "run", bad, overwrite=True)
    assert (tmp_path / "run" / "fold-all" / "metrics.json").is_file()
    # extract --overwrite: not over a CSV, not over a store another process writes.
    csv = tmp_path / "table.csv"
    csv.write_text("a,b\n1,2\n")
    cfg_x = ExtractConfig(model=str(tiny_wav2vec2), overwrite=True)
    with pytest.raises(EmofeatError, match="table.csv exists and is not a store emofeat made"):
        extract(manifest.path, csv, cfg_x)
    assert csv.read_text() == "a,b\n1,2\n"
    live = small_store(tmp_path / "live.h5")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(StoreError, match="another process is writing"):
            extract(manifest.path, live, cfg_x)
    finally:
        os.close(fd)
    # stack --out over a folder of other files.
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "notes.md").write_text("mine")
    with pytest.raises(EmofeatError, match="results exists and is not a stack emofeat made"):
        stack([small_store(tmp_path / "a.h5")], "softvote", tmp_path / "results")


KILL_STACK = """
import sys, time
import emofeat.analysis.plots as plots
def slow(*a, **k):
    print("writing", flush=True)
    time.sleep(60)
plots.plot_confusions = slow
from emofeat.stack.ensemble import stack
stack(sys.argv[1:-1], "softvote", sys.argv[-1])
"""


def test_a_killed_stack_leaves_the_previous_folder_whole(tmp_path):
    rng = np.random.default_rng(0)
    paths = [small_store(tmp_path / f"{k}.h5", logits=rng.normal(size=3)) for k in range(2)]
    out = tmp_path / "stack"
    stack(paths, "softvote", out)  # a complete earlier stack
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_STACK, *map(str, paths), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout.readline().strip() == b"writing"  # model.joblib is written by now
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert list(tmp_path.glob(".stack.*.tmp"))  # the killed writer's temporary folder ...
    stack(paths, "caruana", out)
    assert not list(tmp_path.glob(".stack.*.tmp"))  # ... is gone after the next success
    assert json.loads((out / "metrics.json").read_text())["meta"] == "caruana"


def test_a_killed_prepare_never_pairs_a_manifest_with_another_sidecar(
    corpus_dir, tmp_path, monkeypatch
):
    import emofeat.corpus.manifest as mf
    from emofeat.corpus.prepare import prepare

    out = tmp_path / "m.csv"
    prepare(out, kemdy20=corpus_dir / "KEMDy20_v1_1", folds=2, split="emo-ensemble")
    assert read_manifest(out).split_scheme == "emo-ensemble"
    real = mf.write_text

    def die_after_sidecar(path, text):
        real(path, text)
        raise KeyboardInterrupt("killed between the sidecar and the CSV")

    monkeypatch.setattr(mf, "write_text", die_after_sidecar)
    with pytest.raises(KeyboardInterrupt):
        prepare(out, kemdy20=corpus_dir / "KEMDy20_v1_1", folds=2, split="session-kfold")
    monkeypatch.setattr(mf, "write_text", real)
    # The old CSV is intact; the new sidecar does not describe it and is not believed.
    m = read_manifest(out)
    assert m.split_scheme == "" and len(m) > 0
    assert not list(tmp_path.glob(".m.csv.*.tmp"))


def test_cli_prints_messages_not_tracebacks(tmp_path, monkeypatch):
    runner = CliRunner()
    r = runner.invoke(
        main,
        [
            "stack",
            "--store",
            str(tmp_path / "none.h5"),
            "--meta",
            "logreg",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert r.exit_code == 2 and "no such store" in r.output and "Traceback" not in r.output
    import emofeat.stack.ensemble as ens

    def full(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "x" / "model.joblib"))

    monkeypatch.setattr(ens, "stack", full)
    small_store(tmp_path / "a.h5")
    r = runner.invoke(
        main,
        [
            "stack",
            "--store",
            str(tmp_path / "a.h5"),
            "--meta",
            "softvote",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert r.exit_code == 2 and "No space left on device" in r.output and "re-run" in r.output
    r = runner.invoke(
        main,
        [
            "-v",
            "stack",
            "--store",
            str(tmp_path / "a.h5"),
            "--meta",
            "softvote",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert isinstance(r.exception, OSError)  # -v: the traceback is there for the curious


def test_inspect_escapes_control_characters(tmp_path):
    path = small_store(tmp_path / "s.h5", model_id="evil\x1b[2J\x1b[31mred")
    text = describe(path)
    assert "\x1b" not in text and "\\x1b[2J" in text
    r = CliRunner().invoke(main, ["store", "inspect", str(path)])
    assert "\x1b" not in r.output


def test_a_max_len_above_the_models_positions_is_refused_before_anything_is_written(
    manifest, manifest_path, tiny_kobert, kobert_run, tmp_path
):
    """It would fail in the first forward pass, after the run folder or store existed, and the
    corrected command would then be refused as made with other options."""
    from transformers import AutoConfig

    from emofeat.extract.config import ExtractConfig
    from emofeat.extract.run import extract
    from emofeat.finetune.config import resolve_config
    from emofeat.finetune.run import finetune

    positions = AutoConfig.from_pretrained(tiny_kobert).max_position_embeddings
    too_long = positions + 1
    message = rf"--max-len must be at most {positions}, the positions of .*, got {too_long}"
    cfg = resolve_config("kobert-tiny", model="kobert", model_path=str(tiny_kobert))
    with pytest.raises(OptionError, match=message):
        finetune(manifest, tmp_path / "run", cfg.replace(max_len=too_long))
    assert not (tmp_path / "run").exists()
    for source in ({"model": str(tiny_kobert)}, {"run": str(kobert_run)}):
        with pytest.raises(OptionError, match=message):
            extract(manifest_path, tmp_path / "s.h5", ExtractConfig(**source, max_len=too_long))
        assert not (tmp_path / "s.h5").exists()
    finetune(manifest, tmp_path / "run", cfg.replace(max_len=positions, max_steps=1, folds=0))
