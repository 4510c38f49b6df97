"""The run folder written by ``emofeat finetune`` and read by ``emofeat extract``.

``runs/NAME/`` holds:

* ``config.yaml`` — the resolved options under ``config`` (with the model's family, modality and
  source, the manifest and its split scheme) and provenance beside them;
* ``fold-k/`` (``fold-all`` for a run without folds) — a ``save_pretrained`` folder per fold
  model, with ``metrics.json`` (its presence marks the fold as finished), ``log_history.json``
  and ``rows.json`` (``{"train": [ids], "select": [ids]}``: the rows that trained the fold model
  and those that chose its checkpoint);
* ``metrics.json`` (per-fold metrics) and ``skipped.csv`` (rows left out with ``--skip-bad``).

:class:`RunFolder` is the only code that knows these names; fine-tuning writes through it and
extraction reads through it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from emofeat import distributed, locks
from emofeat.atomic import atomic_folder, foreign_entries, write_text
from emofeat.crossfit import FoldPlan
from emofeat.encoders.source import HEAD_CONFIG
from emofeat.errors import EmofeatError
from emofeat.metrics import FOLD_KEYS
from emofeat.metrics import fold_summary as summarise
from emofeat.outputs import is_output, register_record_kind
from emofeat.records import FOLDER_RECORD, dump_yaml, provenance, read_json, read_record

log = logging.getLogger(__name__)

CONFIG = FOLDER_RECORD
FOLD_DONE = "metrics.json"
RUN_METRICS = "metrics.json"
LOG_HISTORY = "log_history.json"
SKIPPED = "skipped.csv"
CURVES = "training_curves.png"
ROWS = "rows.json"
LAYER_WEIGHTS = "layer_weights.csv"  # a layer-sum run's learned layer weights, and their figure
LAYER_WEIGHTS_FIGURE = "layer_weights.png"
# What a run folder holds (fold folders being saved, the atomic writer's temporary files).
RUN_ENTRIES = (
    CONFIG,
    RUN_METRICS,
    SKIPPED,
    CURVES,
    "logs",
    "fold-*",
    ".*.tmp",
    ".*.lock",  # writer locks (emofeat.locks): kept when a run is replaced
    "mmm.h5",  # a fusion run's store (emofeat fuse)
    "layer-sum.h5",
    LAYER_WEIGHTS,
    LAYER_WEIGHTS_FIGURE,
)
RUN_LOCK = ".run.lock"
# Options that may differ between the first run of a command and its resumption.
# (stores_relative: where a fusion run's input stores lie beside it, derived from its stores and
# folder; a run recorded before it was is the same run)
RESUMABLE_KEYS = ("device", "stores_relative")


register_record_kind("run", legacy_key="family", folder=True)  # runs/NAME/config.yaml


@dataclass
class FoldModels:
    """What :meth:`RunFolder.train_folds` gives back: per fold id, its held-out metrics and
    its model (None where the caller keeps no model)."""

    metrics: dict[int, dict[str, Any]] = field(default_factory=dict)
    models: dict[int, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunInfo:
    """What a run's ``config.yaml`` says about its models (typed; the full options stay in
    ``options``)."""

    family: str
    modality: str
    source: str
    folds: int
    label_names: list[str]
    reverse: bool = False
    max_len: int = 64
    sample_rate: int = 16000
    manifest: str = ""
    split_scheme: str = ""
    assignment_sha256: str = ""
    refit: bool = False  # also a model refit on all train rows (fold-all) beside the folds
    task: str = "categorical"  # what the heads predict (emofeat.tasks); older runs: classes
    options: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_config(cls, config: dict[str, Any], where: str) -> RunInfo:
        try:
            # Runs made before families were recorded: the modality's default family.
            family = (
                config.get("family") or {"text": "bert", "speech": "wav2vec2"}[config["modality"]]
            )
            return cls(
                family=str(family),
                modality=str(config["modality"]),
                source=str(config["source"]),
                folds=_folds(config["folds"]),
                label_names=list(config["label_names"]),
                reverse=bool(config.get("reverse", False)),
                max_len=int(config.get("max_len", 64)),
                sample_rate=int(config.get("sample_rate", 16000)),
                manifest=str(config.get("manifest", "")),
                split_scheme=str(config.get("split_scheme", "")),
                assignment_sha256=str(config.get("assignment_sha256", "")),
                refit=bool(config.get("refit", False)),
                task=str(config.get("task", "categorical")),
                options=dict(config),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise EmofeatError(
                f"{where}: malformed run config ({type(err).__name__}: {err}); re-run `emofeat finetune`"
            ) from None


def _folds(value: Any) -> int:
    """A run's fold count: 0 (one model) or 2..1000."""
    folds = int(value)
    if folds != value or not (folds == 0 or 2 <= folds <= 1000):
        raise ValueError(f"folds must be 0 or 2..1000, got {value!r}")
    return folds


class RunFolder:
    """A fine-tuning run on disk (see the module docstring for the layout)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock: locks.Lock | None = None

    # -- config
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    def exists(self) -> bool:
        return self.config_path.is_file()

    def read_record(self) -> dict[str, Any]:
        """The run's record (``config``: the resolved options; ``seed``; versions)."""
        return read_record(self.config_path, what="emofeat finetune")

    def read_config(self) -> dict[str, Any]:
        """The resolved options the run was made with."""
        return self.read_record()["config"]

    @property
    def metrics_path(self) -> Path:
        """The run-level ``metrics.json`` (written by :meth:`write_summary`)."""
        return self.path / RUN_METRICS

    def summary(self) -> dict[str, Any]:
        """The run-level ``metrics.json``: ``folds`` (each fold's metrics) and ``summary``
        (mean ± std over folds)."""
        return read_json(self.metrics_path, dict)

    def info(self) -> RunInfo:
        return RunInfo.from_config(self.read_config(), str(self.config_path))

    def differing_options(
        self, config: dict[str, Any], defaults: Mapping[str, Any] | None = None
    ) -> list[str]:
        """Options whose value differs from those the run was made with. An option the run's
        record lacks (written before the option existed) stands for its default
        (``defaults``), so a new option never makes an older run "made with other options"."""
        old = {**(defaults or {}), **self.read_config()}
        # Adding a model refit on all train rows (refit off -> on) keeps the fold models as they
        # are (train_folds keeps finished folds): only fold-all is trained.
        added_refit = not old.get("refit") and config.get("refit")
        return sorted(
            k
            for k in config
            if old.get(k) != config[k]
            and k not in RESUMABLE_KEYS
            and not (k == "refit" and added_refit)
        )

    def write_config(self, config: dict[str, Any], seed: int | None) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_text(self.config_path, dump_yaml(provenance(config, seed, output="run")))

    def foreign(self) -> list[str]:
        """Entries of the folder that a run does not hold (files emofeat did not write)."""
        if not self.path.is_dir():
            return [self.path.name] if self.path.exists() else []
        return foreign_entries(self.path, RUN_ENTRIES)

    def check_writable(self, overwrite: bool) -> None:
        """Refuse to write a run into, or (``overwrite``) to delete, a folder that holds anything
        emofeat did not write; with ``overwrite`` the folder must be a run, as its config.yaml
        says (:mod:`emofeat.outputs`), not by the names of its entries."""
        if self.config_path.exists() and not is_output(self.path, "run"):
            raise EmofeatError(
                f"{self.config_path} is not a run's record written by emofeat; refusing to "
                + ("delete " if overwrite else "write a run into ")
                + f"{self.path}. Choose another --out."
            )
        foreign = self.foreign()
        if foreign:
            raise EmofeatError(
                f"{self.path} holds {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}, "
                "which emofeat did not write; refusing to "
                + ("delete it" if overwrite else "write a run there")
                + ". Choose another --out."
            )
        if overwrite and self.path.is_dir() and any(self.path.iterdir()) and not self.exists():
            raise EmofeatError(
                f"{self.path} is not a run folder (no {CONFIG}); refusing to delete it"
            )

    def start(
        self,
        config: dict[str, Any],
        seed: int | None,
        overwrite: bool,
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        """Begin (or resume) writing this run with ``config``: refuse a folder emofeat did not
        write, resume a run made with the same options (an option its record lacks counts as
        its entry in ``defaults``), replace one made with other options only with ``overwrite``
        (which the message suggests), then write the config."""
        self.check_writable(overwrite)
        self.lock(exclusive=overwrite)
        if self.exists() and not overwrite:
            differ = self.differing_options(config, defaults)
            if differ:
                raise EmofeatError(
                    f"{self.path} holds a run made with other options or inputs "
                    f"({', '.join(differ)}); pass --overwrite or use another --out"
                )
        elif overwrite:
            self.clear()
        self.write_config(config, seed)
        self._lock.share()  # the run is in place: fold jobs of it may join

    def lock(self, *, exclusive: bool) -> None:
        """Hold the run's writer lock for as long as this process writes the run: shared by the
        processes that write folds of it, exclusive to replace it (``--overwrite``), so a run is
        never replaced under a process training one of its folds.

        Raises:
            EmofeatError: another process holds the lock so as to exclude this one; the message
                names the processes training folds of the run.
        """
        if self._lock is not None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._lock = locks.acquire(
                self.path / RUN_LOCK, exclusive=exclusive, what=str(self.path)
            )
        except EmofeatError as err:
            training = [
                f"{lock.stem[1:]}{locks.holder(lock)}"  # .fold-0.lock -> fold-0
                for lock in sorted(self.path.glob(self._fold_lock_path("*").name))
                if locks.held(lock)
            ]
            if training:
                raise EmofeatError(
                    f"{self.path} is being written by another emofeat process, training "
                    f"{', '.join(training)}; wait for it to finish (or stop it) before "
                    "replacing the run"
                ) from None
            raise err from None

    def clear(self) -> None:
        """Remove the run (``--overwrite``); only a folder :meth:`check_writable` accepted."""
        self.check_writable(overwrite=True)
        if not self.path.exists():
            return
        for entry in self.path.iterdir():
            if entry.name.endswith(".lock"):
                continue  # the locks stay: a process about to take one must find the same file
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    # -- folds
    @staticmethod
    def fold_name(fold: int) -> str:
        return f"fold-{fold}" if fold >= 0 else "fold-all"

    def fold_dir(self, fold: int) -> Path:
        return self.path / self.fold_name(fold)

    def fold_ids(self, folds: int | None = None, refit: bool | None = None) -> list[int]:
        """The fold indices of a run with ``folds`` folds (-1 alone for a run without folds),
        and -1 after them for a run that also refits a model on all train rows (``refit``)."""
        if folds is None or refit is None:
            info = self.info()
            folds = info.folds if folds is None else folds
            refit = info.refit if refit is None else refit
        if not folds:
            return [-1]
        return list(range(folds)) + ([-1] if refit else [])

    def is_finished(self, fold: int) -> bool:
        return (self.fold_dir(fold) / FOLD_DONE).is_file()

    def fold_metrics(self, fold: int) -> dict[str, Any]:
        return read_json(self.fold_dir(fold) / FOLD_DONE, dict)

    def checkpoints(self, fold: int) -> Path:
        """Trainer's checkpoint folder of an unfinished fold (removed once the fold is saved)."""
        return self.fold_dir(fold) / "checkpoints"

    def last_checkpoint(self, fold: int) -> Path | None:
        """The newest complete checkpoint of an unfinished fold, to resume from.

        Trainer writes a checkpoint's files one by one and its ``trainer_state.json`` last, so a
        checkpoint whose state file is missing or unreadable was cut short by a kill; such
        checkpoints (newer than the one chosen) are removed, with a warning, so that the fold
        resumes from the last complete one instead of failing on every re-run.

        Args:
            fold: The fold.

        Returns:
            The checkpoint folder, or None when there is no complete one.
        """
        folder = self.checkpoints(fold)
        found = sorted(
            (p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
            key=lambda p: int(p.name.split("-")[-1]),
            reverse=True,
        )
        for ckpt in found:
            try:
                json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                log.warning("%s was cut short (no readable trainer_state.json); removing it", ckpt)
                shutil.rmtree(ckpt, ignore_errors=True)
                continue
            return ckpt
        return None

    def save_fold(
        self,
        fold: int,
        save_model: Callable[[Path], None],
        *,
        metrics: dict[str, Any],
        log_history: list[dict],
        train_ids: Sequence[str],
        select_ids: Sequence[str],
    ) -> None:
        """Write a finished fold folder under a temporary name, then rename it into place, so a
        fold folder is either whole (with its done marker) or absent."""
        with atomic_folder(self.fold_dir(fold)) as tmp:
            save_model(tmp)
            (tmp / LOG_HISTORY).write_text(json.dumps(log_history, indent=1))
            (tmp / ROWS).write_text(
                json.dumps(
                    {"train": list(map(str, train_ids)), "select": list(map(str, select_ids))}
                )
            )
            (tmp / FOLD_DONE).write_text(json.dumps(metrics, indent=2))

    def train_folds(
        self,
        plan: FoldPlan,
        folds: Sequence[int],
        train: Callable[[int, str], tuple[dict[str, Any], Any]],
        *,
        load: Callable[[Path], Any] | None = None,
    ) -> FoldModels:
        """The one fold-training driver of every cross-fitted base model (fine-tuning, fusion):
        each fold of ``folds`` in order, a finished fold kept (never retrained), the others
        trained by ``train``.

        Args:
            plan: the fold plan (which rows fit and which are held out, for the log line).
            folds: the fold ids to train (-1: one model on all train rows).
            train: ``train(fold, label)`` trains and saves one fold model (through
                :meth:`save_fold`) and returns its held-out metrics and the model; ``label``
                names the run and fold for its progress bar.
            load: a finished fold's model from its folder, for callers that predict with
                every fold model (None: finished folds give their metrics only).

        Returns:
            Each fold's metrics and (trained, or loaded with ``load``) model.
        """
        say = tqdm.write if distributed.is_main() else (lambda _: None)
        world = distributed.world_size()
        on = f" on {world} processes (DDP)" if world > 1 else ""
        done = FoldModels()
        for n, k in enumerate(folds, 1):
            label = f"[{self.path.name}] fold {n}/{len(folds)} ({self.fold_name(k)})"
            if self.is_finished(k):
                say(f"{label}: already trained, kept")
                done.metrics[k] = self.fold_metrics(k)
                done.models[k] = load(self.fold_dir(k)) if load else None
                continue
            with self._fold_lock(k):
                if self.is_finished(k):  # another process finished it while this one waited
                    say(f"{label}: trained by another process, kept")
                    done.metrics[k] = self.fold_metrics(k)
                    done.models[k] = load(self.fold_dir(k)) if load else None
                    continue
                fit, held = len(plan.fit_rows(k)), len(plan.held_rows(k))
                say(f"{label}: training on {fit} rows{on}, {held} held out")
                done.metrics[k], done.models[k] = train(k, label)
        return done

    def _fold_lock(self, fold: int) -> locks.Lock | contextlib.nullcontext:
        """The exclusive lock of one fold while it trains: a second process asked to train the
        same fold is refused at once, naming the first. Under torchrun the processes of the job
        train each fold together, and the main process alone holds the lock."""
        if not distributed.is_main():
            return contextlib.nullcontext()
        self.path.mkdir(parents=True, exist_ok=True)
        return locks.acquire(
            self._fold_lock_path(self.fold_name(fold)),
            exclusive=True,
            what=str(self.fold_dir(fold)),
        )

    def _fold_lock_path(self, name: str) -> Path:
        """The lock file of fold folder ``name`` (``*``: a glob of every fold's)."""
        return self.path / f".{name}.lock"

    def fold_rows(self, fold: int) -> dict[str, list[str]]:
        """``{"train": ids, "select": ids}`` of a finished fold ({} for runs made before emofeat
        recorded them)."""
        return _rows_record(self.fold_dir(fold)) or {}

    def fold_usage(self) -> list[set[str]]:
        """Per fold model, in fold order: the ids it trained on or that chose its checkpoint
        (its in-sample rows). A run without these records is refused."""
        used = []
        for k in self.fold_ids():
            rows = trained_rows(self.fold_dir(k))
            if rows is None:
                raise EmofeatError(
                    f"{self.fold_dir(k)} has no {ROWS}: the run was made before emofeat recorded "
                    "which rows trained each fold model, so out-of-fold-ness cannot be proven; "
                    "re-run `emofeat finetune` into a new folder"
                )
            used.append(rows)
        return used

    def skipped_ids(self) -> set[str]:
        """Rows left out of training with ``--skip-bad``."""
        path = self.path / SKIPPED
        if not path.is_file():
            return set()
        with path.open(encoding="utf-8", newline="") as fh:
            return {row["id"] for row in csv.DictReader(fh)}

    def finished_fold_dirs(self, folds: Sequence[int] | None = None) -> list[Path]:
        """The folders of fold models ``folds`` (default: all of the run's, in fold order); an
        error naming the unfinished ones."""
        ids = self.fold_ids() if folds is None else list(folds)
        missing = [k for k in ids if not self.is_finished(k)]
        if missing:
            names = ", ".join(self.fold_name(k) for k in missing)
            options = " ".join(f"--fold {k}" for k in missing)
            raise EmofeatError(
                f"{self.path}: fold model(s) {names} not trained yet (another process may still be "
                f"training them); finish the run with its `emofeat finetune` command, or "
                f"train just these with it and {options}"
            )
        return [self.fold_dir(k) for k in ids]

    def write_summary(self, results: dict[int, dict], skipped: list[tuple[str, str]]) -> dict:
        """The run-level ``metrics.json`` (per fold, and the mean ± std over folds of each
        held-out figure), ``training_curves.png`` and, when rows were left out, ``skipped.csv``.
        Returns the summary."""
        summary = fold_summary(results)
        write_text(
            self.metrics_path,
            json.dumps(
                {"folds": {str(k): v for k, v in results.items()}, "summary": summary}, indent=2
            ),
        )
        from emofeat.analysis.plots import plot_training_curves

        histories = {
            self.fold_name(k): json.loads((self.fold_dir(k) / LOG_HISTORY).read_text())
            for k in results
            if (self.fold_dir(k) / LOG_HISTORY).is_file()
        }
        if histories:
            plot_training_curves(histories, self.path / CURVES, self.path.name)
        if skipped:
            buf = io.StringIO()
            csv.writer(buf).writerows([("id", "reason"), *skipped])
            write_text(self.path / SKIPPED, buf.getvalue())
        return summary


def trained_rows(folder: str | os.PathLike) -> set[str] | None:
    """The ids a model folder that emofeat fine-tuned trained or chose on (its ``rows.json``),
    whichever option loads it; None for a folder without that record (a pretrained model)."""
    rows = _rows_record(folder)
    if rows is None:
        return None
    return set(map(str, rows.get("train", []))) | set(map(str, rows.get("select", [])))


def fine_tuned_without_record(folder: str | os.PathLike) -> bool:
    """Whether a model folder without ``rows.json`` says, in its own files, that it was
    fine-tuned for classification — an emofeat fold folder copied without its record, say: a
    speech classifier's ``head.json``, or a config whose classifier labels have names (a
    pretrained checkpoint's are ``LABEL_0``, ``LABEL_1``, ... or absent). Then which rows it
    learned from is unknown, whatever option loads it."""
    folder = Path(folder)
    if (folder / ROWS).is_file():
        return False
    if (folder / HEAD_CONFIG).is_file():
        return True
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    labels = config.get("id2label") or {} if isinstance(config, dict) else {}
    named = [str(v) for v in labels.values()] if isinstance(labels, dict) else []
    return any(not n.startswith("LABEL_") for n in named)


def _rows_record(folder: str | os.PathLike) -> dict[str, list[str]] | None:
    """A model folder's ``rows.json``, read and checked once; None when it has none."""
    path = Path(folder) / ROWS
    if not path.is_file():
        return None
    rows = read_json(path, dict)
    if not all(isinstance(rows.get(k, []), list) for k in ("train", "select")):
        raise EmofeatError(f"{path}: malformed (train and select must be lists of ids)")
    return rows


def fold_summary(results: dict[int, dict]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over folds of each held-out figure (:mod:`emofeat.metrics`)."""
    return summarise(results.values(), FOLD_KEYS)
