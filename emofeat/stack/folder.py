"""The stack folder written by ``emofeat stack`` and read by ``predict``, ``infer``, ``compare``
and the recipes.

``stacks/NAME/`` holds ``model.joblib`` (the fitted pipeline: loading it runs code, so emofeat
loads it only when asked), ``config.yaml`` (the options, with the stores it was fitted on, and
provenance), ``metrics.json`` (CV and test figures), ``predictions.csv``, ``report.md`` and
``confusion.png``. :class:`StackFolder` is the only code that knows these names, as
:class:`emofeat.runs.RunFolder` is for run folders.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from emofeat.atomic import foreign_entries
from emofeat.corpus.labels import LabelSet
from emofeat.errors import EmofeatError
from emofeat.outputs import check_output, register_record_kind
from emofeat.records import FOLDER_RECORD, read_json, read_record, recorded_stores

MODEL = "model.joblib"
CONFIG = FOLDER_RECORD
METRICS = "metrics.json"
PREDICTIONS = "predictions.csv"
REPORT = "report.md"
CONFUSION = "confusion.png"
DIMENSIONAL_MODEL = "dimensional.joblib"  # --target dimensional or both: valence and arousal
DIMENSIONS_FIGURE = "dimensions.png"
CALIBRATION_FIGURE = "calibration.png"  # the reliability diagram of the test rows
STACK_ENTRIES = (
    MODEL,
    CONFIG,
    METRICS,
    REPORT,
    CONFUSION,
    PREDICTIONS,
    DIMENSIONAL_MODEL,
    DIMENSIONS_FIGURE,
    CALIBRATION_FIGURE,
)

register_record_kind("stack", legacy_key="meta", folder=True)  # stacks/NAME/config.yaml


class StackFolder:
    """A fitted stack on disk (see the module docstring for the layout)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        """One of the folder's files by its name (one of :data:`STACK_ENTRIES`)."""
        if name not in STACK_ENTRIES:
            raise ValueError(f"{name!r} is not a file of a stack folder")
        return self.path / name

    def exists(self) -> bool:
        return (self.path / CONFIG).is_file()

    def read_record(self) -> dict[str, Any]:
        """The stack's record (``config``: the options and stores; ``seed``; versions)."""
        return read_record(self.path / CONFIG, what="emofeat stack")

    def stores(self) -> list[Path]:
        """The stores the stack was fitted on, as its record names them."""
        config = self.read_record()["config"]
        if not config.get("stores"):
            raise EmofeatError(f"{self.path / CONFIG}: lists no stores; re-run `emofeat stack`")
        return recorded_stores(config, self.path)

    def label_set(self) -> LabelSet:
        """The classes the stack predicts, in its probability columns' order (as its record
        names them; a stack written before label sets were recorded: its first store's)."""
        names = self.read_record()["config"].get("label_names")
        if not names:
            from emofeat.store import open_store

            with open_store(self.stores()[0]) as s:
                names = s.label_names
        return LabelSet(tuple(map(str, names)))

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    def metrics(self) -> dict[str, Any]:
        """``metrics.json``: the CV and test figures."""
        return read_json(self.metrics_path, dict)

    def load_model(self):
        """The fitted pipeline. Loading a joblib file runs code: call this only on stack
        folders you trust.

        Raises:
            EmofeatError: no model, or not a pipeline written by this emofeat.
        """
        import joblib
        from sklearn.pipeline import Pipeline

        path = self.path / MODEL
        if not path.is_file():
            raise EmofeatError(f"{self.path}: no {MODEL}; not a folder written by `emofeat stack`")
        model = joblib.load(path)
        if not isinstance(model, Pipeline) or "features" not in model.named_steps:
            raise EmofeatError(
                f"{path}: not a stack written by this emofeat; re-run `emofeat stack`"
            )
        return model

    def has_classes(self) -> bool:
        """Whether the stack predicts the classes (``model.joblib``)."""
        return (self.path / MODEL).is_file()

    def load_dimensional_model(self):
        """The fitted valence/arousal meta-learner of a stack of ``--target dimensional`` or
        ``both``, or None. Loading a joblib file runs code: trusted folders only.

        Raises:
            EmofeatError: the file is not a dimensional model written by this emofeat.
        """
        import joblib

        from emofeat.stack.dimensional import DimensionalModel

        path = self.path / DIMENSIONAL_MODEL
        if not path.is_file():
            return None
        model = joblib.load(path)
        if not isinstance(model, DimensionalModel):
            raise EmofeatError(
                f"{path}: not a model written by this emofeat; re-run `emofeat stack`"
            )
        return model

    def check_writable(self, inputs=()) -> None:
        """A stack is written only where nothing else lives: a new or empty folder, or an
        earlier stack (its config.yaml says so), never over one of its input stores."""
        out = self.path
        if out.exists() and not out.is_dir():
            raise EmofeatError(f"{out} is a file; give a folder for the stack")
        if out.is_dir() and any(out.iterdir()):
            check_output(out, kind="stack", inputs=inputs)
        foreign = foreign_entries(out, STACK_ENTRIES) if out.is_dir() else []
        if foreign:
            raise EmofeatError(
                f"{out} holds {', '.join(foreign[:5])}, which emofeat did not write; refusing to "
                "replace it. Choose another --out."
            )
