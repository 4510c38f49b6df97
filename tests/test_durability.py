"""A store that says complete is complete, and a store comes from one model: real write faults
(a file-size limit the kernel enforces) and changed weights between a start and its resume."""

import resource
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from emofeat.errors import EmofeatError, StoreError
from emofeat.extract.config import ExtractConfig
from emofeat.extract.run import extract
from emofeat.store import StoreLayout, create_store, open_store
from emofeat.store.recover import extend_to_stored_eof


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "emofeat.cli", *args]


def test_a_write_fault_fails_extraction_and_the_rerun_resumes(
    manifest_path, tiny_wav2vec2, tmp_path
):
    args = ["extract", "--model", str(tiny_wav2vec2), "--layers", "all", "--manifest"]
    args += [str(manifest_path), "--batch-seconds", "2", "--flush-rows", "8", "--workers", "0"]
    clean = tmp_path / "clean.h5"
    subprocess.run(_cli(*args, "--out", str(clean)), check=True, capture_output=True)
    # A limit between an empty store's size and a whole one's: the disk "fills up" mid-run.
    faulty = tmp_path / "faulty.h5"
    with open_store(clean) as s:
        layout = s.layout
    create_store(tmp_path / "empty.h5", layout).close()
    empty, whole = (tmp_path / "empty.h5").stat().st_size, clean.stat().st_size
    limit = empty + (whole - empty) // 2
    r = subprocess.run(
        _cli(*args, "--out", str(faulty)),
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size(limit),
    )
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(faulty) in last and "File too large" in last
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr
    # Under the file-size limit the file could not be padded back to the length HDF5 recorded:
    # readers are told to re-run; a copy padded as the next writer pads it is readable.
    with pytest.raises(StoreError, match="shorter than HDF5 says.*Re-run the command"):
        open_store(faulty)
    copy = tmp_path / "copy.h5"
    shutil.copy(faulty, copy)
    extend_to_stored_eof(copy)
    with open_store(copy) as s, open_store(clean) as c:
        assert not s.complete  # never marked complete
        done = np.flatnonzero(s.done)
        assert 0 < len(done) < len(s)
        for name in c.embedding_names:  # every row marked done holds exactly its values
            np.testing.assert_array_equal(s.embeddings(name, done), c.embeddings(name, done))
    # Without the fault, the same command resumes and finishes equal to a clean run.
    subprocess.run(_cli(*args, "--out", str(faulty)), check=True, capture_output=True)
    with open_store(faulty) as s, open_store(clean) as c:
        assert s.complete and s.done.all()
        for name in c.embedding_names:
            np.testing.assert_allclose(s.embeddings(name), c.embeddings(name), atol=1e-6)


def test_the_writer_refuses_after_a_fault_and_is_never_finalised(tmp_path, monkeypatch):
    """A flush error (what a full disk raises) is one StoreError naming the store; the rows of
    that write are not done, nothing more is written, and complete is never set."""
    n = 20
    layout = StoreLayout(
        ids=[f"u{i}" for i in range(n)],
        labels=[0] * n,
        split=["train"] * n,
        fold=[0] * n,
        label_names=["a"],
        embeddings={"last": 4},
    )
    w = create_store(tmp_path / "s.h5", layout)
    w.write(np.arange(10), logits=np.zeros((10, 1)), embeddings={"last": np.ones((10, 4))})
    real_flush = w._f.flush

    def full_disk():
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(w._f, "flush", full_disk)
    with pytest.raises(StoreError, match=r"s.h5: writing rows failed .*No space left"):
        w.write(np.arange(10, 20), logits=np.zeros((10, 1)), embeddings={"last": np.ones((10, 4))})
    assert w.failed and w.done.sum() == 10
    with pytest.raises(StoreError, match="not writing after an earlier failure"):
        w.skip([15], "later")
    monkeypatch.setattr(w._f, "flush", real_flush)
    with pytest.raises(StoreError, match="not finalised after a failure"):
        w.finalize()
    with open_store(tmp_path / "s.h5") as s:
        assert not s.complete and s.done.sum() == 10


def test_resume_refuses_a_store_started_with_other_weights(
    manifest_path, tiny_wav2vec2, kobert_run, tmp_path
):
    # A local model whose weight files changed after the store was started.
    model = tmp_path / "w2v"
    shutil.copytree(tiny_wav2vec2, model)
    out = tmp_path / "frozen.h5"
    extract(manifest_path, out, ExtractConfig(model=str(model)))
    from emofeat.testing.tiny import build_tiny_wav2vec2

    build_tiny_wav2vec2(model, hidden=32, conv_dim=16, seed=7)  # retrained in place
    with pytest.raises(EmofeatError, match=r"config differs \(weights_sha256"):
        extract(manifest_path, out, ExtractConfig(model=str(model)))
    # A run whose fold model was replaced (retrained with --overwrite, say).
    run = tmp_path / "run"
    shutil.copytree(kobert_run, run)
    store = tmp_path / "kobert.h5"
    extract(manifest_path, store, ExtractConfig(run=str(run)))
    with open_store(store) as s:
        recorded = s.config["weights_sha256"]
    assert len(recorded) == 2 and recorded[0] != recorded[1]  # one per fold model
    weights = sorted((run / "fold-0").glob("*.safetensors"))[0]
    shutil.copy(sorted((run / "fold-1").glob("*.safetensors"))[0], weights)
    with pytest.raises(EmofeatError, match=r"config differs \(weights_sha256"):
        extract(manifest_path, store, ExtractConfig(run=str(run)))


def _limited(args, limit):
    return subprocess.run(
        _cli(*map(str, args)), capture_output=True, text=True, preexec_fn=_limit_file_size(limit)
    )


def test_merge_export_and_stack_fail_whole_on_a_write_fault(tmp_path):
    """The same real fault for the other commands that write: one line naming the file and the
    OS error, exit 2, and no partial output under the output's name."""
    from test_bad_inputs import small_store

    a, b = small_store(tmp_path / "a.h5"), small_store(tmp_path / "b.h5")
    with open_store(a) as s:
        layout = s.layout
    shards = []
    for k, rows in enumerate((np.arange(0, 3), np.arange(3, 6))):
        w = create_store(tmp_path / f"shard{k}.h5", layout)
        w.write(rows, logits=np.eye(6, 3)[rows], embeddings={"last": np.ones((3, 4))})
        w.close()
        shards.append(tmp_path / f"shard{k}.h5")
    cases = [  # (command, its output, a file-size limit below what it writes)
        (["store", "merge", *shards, "-o", tmp_path / "merged.h5"], tmp_path / "merged.h5", 4096),
        (["store", "export", a, "-o", tmp_path / "a.npz"], tmp_path / "a.npz", 512),
        (
            ["stack", "--store", a, "--store", b, "--meta", "softvote", "--out", tmp_path / "st"],
            tmp_path / "st",
            4096,
        ),
    ]
    for args, out, limit in cases:
        r = _limited(args, limit)
        assert r.returncode == 2, (args, r.stderr[-1500:])
        last = r.stderr.strip().splitlines()[-1]  # (library warnings may come before it)
        assert last.startswith("error: ") and "File too large" in last, args
        assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, args
        assert not out.exists(), args  # nothing half-made under the output's name
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not [n for n in leftovers if not n.endswith(".tmp")], leftovers


# ------------------------------------------------------------------- the one atomic write
def _record_syscalls(monkeypatch):
    """Log fsync (of what) and replace calls in order."""
    import os

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(a, b):
        events.append(("replace", str(b)))
        return real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_atomic_writes_reach_the_disk_before_the_rename(tmp_path, monkeypatch):
    from emofeat.atomic import atomic_folder, atomic_path

    events = _record_syscalls(monkeypatch)
    with atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("new")
    kinds = [k for k, _ in events]
    # The data first, then the rename, then the folder that holds the rename.
    assert kinds == ["fsync", "replace", "fsync"]
    assert events[0][1] != str(tmp_path / "a.txt") and events[2][1] == str(tmp_path)
    assert (tmp_path / "a.txt").read_text() == "new"

    events.clear()
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "old").write_text("old")
    with atomic_folder(tmp_path / "f") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x").write_text("x")
    first_replace = next(i for i, (k, _) in enumerate(events) if k == "replace")
    synced = {p for k, p in events[:first_replace] if k == "fsync"}
    assert any(p.endswith("/sub/x") for p in synced)  # every file of the new folder
    assert sorted(p.name for p in (tmp_path / "f").rglob("*")) == ["sub", "x"]


def test_a_failed_atomic_write_leaves_the_old_content_and_no_temporary(tmp_path):
    from emofeat.atomic import atomic_folder, atomic_path

    (tmp_path / "a.txt").write_text("old")
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "keep").write_text("old")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "f") as tmp:
        (tmp / "half").write_text("half")
        raise RuntimeError("killed")
    assert (tmp_path / "a.txt").read_text() == "old"
    assert [p.name for p in (tmp_path / "f").iterdir()] == ["keep"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "f"]
