"""Two processes on one output: a second writer is refused at once, naming the first.

The other process is a real one that takes the locks a fine-tuning job holds (the run's, shared;
its fold's, exclusive) and says so on stdout before the test goes on: a handshake, no sleeps.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from emofeat.errors import EmofeatError
from emofeat.finetune.config import resolve_config
from emofeat.finetune.run import finetune
from emofeat.runs import RunFolder


def hold_fold(run, fold_name):
    """A process holding what a job training ``fold_name`` of ``run`` holds, until killed."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from emofeat import locks
        run = locks.acquire({str(run / ".run.lock")!r}, exclusive=False, what="run")
        fold = locks.acquire({str(run / f".{fold_name}.lock")!r}, exclusive=True, what="fold")
        print("held", flush=True)
        sys.stdin.read()  # until the test closes stdin or kills it
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def _cfg(tiny_kobert, **extra):
    return resolve_config(
        "kobert-tiny", model="kobert", model_path=str(tiny_kobert), max_steps=1, **extra
    )


def test_a_second_job_on_the_same_fold_is_refused_naming_the_first(manifest, tiny_kobert, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = hold_fold(run, "fold-0")
    try:
        with pytest.raises(
            EmofeatError,
            match=rf"fold-0 is being written by another emofeat process \(process {holder.pid}\)",
        ):
            finetune(manifest, run, _cfg(tiny_kobert), only_folds=[0])
        assert not (run / "fold-0").exists()
    finally:
        holder.kill()
        holder.wait()
    # The holder's end (a kill included) drops its locks: the same command now trains the fold.
    finetune(manifest, run, _cfg(tiny_kobert), only_folds=[0])
    assert RunFolder(run).is_finished(0)


def test_overwrite_is_refused_while_a_fold_of_the_run_trains(
    manifest, kobert_run, tiny_kobert, tmp_path
):
    run = tmp_path / "run"
    shutil.copytree(kobert_run, run)
    cfg = resolve_config(
        "kobert-tiny", model="kobert", model_path=str(tiny_kobert), epochs=2, dropout=0.3
    )
    holder = hold_fold(run, "fold-1")
    try:
        with pytest.raises(EmofeatError, match=rf"training fold-1 \(process {holder.pid}\)"):
            finetune(manifest, run, cfg.replace(max_steps=1), overwrite=True)
        # Nothing of the run was touched.
        assert RunFolder(run).is_finished(0) and RunFolder(run).is_finished(1)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    finetune(manifest, run, cfg.replace(max_steps=1), overwrite=True)
    assert RunFolder(run).is_finished(0)
    assert (run / ".run.lock").exists()  # the lock file survives the replacement


def test_jobs_on_different_folds_share_the_run():
    """Shared run locks do not exclude each other; an exclusive one excludes them."""
    import tempfile
    from pathlib import Path

    from emofeat import locks

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ".run.lock"
        a = locks.acquire(path, exclusive=False, what="run")
        b = locks.acquire(path, exclusive=False, what="run")  # same process, another descriptor
        with pytest.raises(EmofeatError, match="run is being written"):
            locks.acquire(path, exclusive=True, what="run")
        a.release()
        b.release()
        c = locks.acquire(path, exclusive=True, what="run")
        assert path.read_text() == str(os.getpid())
        c.release()
