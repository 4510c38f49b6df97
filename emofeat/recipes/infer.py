"""``emofeat infer``: label new recordings with a trained ensemble in one call.

From a CSV of ``id, audio_path, text`` (paths relative to the CSV), a stack folder and the runs
its stores came from: build a manifest (every row a prediction-only ``test`` row), extract a store
with every base run exactly as the stack's stores were extracted (fold-mean values, as for test
rows), apply the stack's meta-learner and write ``predictions.csv`` with class probabilities.

A store of ``emofeat fuse`` (MMM, a layer-sum head over a frozen encoder's layers) is rebuilt
from its run: its input stores are extracted for the new rows as the run's inputs were, and the
run's fold models are applied to them (:func:`emofeat.fuse.run.apply_fusion`).

The runs are found through the stack's stores (their ``run`` attribute); ``runs={"kobert-p05":
"elsewhere/kobert-p05"}`` overrides one by store name. The new stores are kept in ``work`` (by
default ``<out>.stores/`` beside the predictions), so re-running resumes and other code can reuse
them. Loading the stack's ``model.joblib`` runs code: use only stacks you trust.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emofeat.corpus.generic import read_csv_corpus
from emofeat.corpus.manifest import (
    build_frame,
    read_sidecar,
    relative_audio_paths,
    write_manifest,
)
from emofeat.errors import EmofeatError, StoreMismatchError
from emofeat.extract.config import VALUE_KEYS, ExtractConfig
from emofeat.extract.run import extract
from emofeat.fuse.config import FUSION_MODELS
from emofeat.fuse.run import apply_fusion
from emofeat.outputs import check_output
from emofeat.records import recorded_stores, resolve_paths
from emofeat.runs import RunFolder
from emofeat.stack.ensemble import apply_stack
from emofeat.stack.folder import StackFolder
from emofeat.stack.level1 import load_level1
from emofeat.store import open_store

log = logging.getLogger(__name__)

INFER_SPLIT = "infer"  # the split a manifest of infer's own says it was prepared with


def stack_stores(stack_dir: str | os.PathLike) -> list[Path]:
    """The stores a stack was fitted on, from its ``config.yaml``."""
    return StackFolder(stack_dir).stores()


@dataclass(frozen=True)
class FusedPlan:
    """How a store of ``emofeat fuse`` is rebuilt for new rows: its run's fold models applied
    to its input stores, each extracted as the run's inputs were."""

    run: Path
    inputs: dict[str, ExtractConfig]  # input store name → its extraction, in the run's order


def extraction_plan(
    stack_dir: str | os.PathLike, runs: Mapping[str, str] | None = None
) -> dict[str, ExtractConfig | FusedPlan]:
    """Store name → what reproduces that store for new rows: the extraction (its run, or its
    frozen encoder, and every option that decided its values), or for a fused store (MMM, a
    layer-sum head) its run and its input stores' extractions. Stores are named as the stack
    names them (:func:`~emofeat.stack.level1.store_names`; ``kobert/layer-sum`` becomes
    ``kobert-layer-sum``, a file name)."""
    from emofeat.stack.level1 import store_names

    runs = dict(runs or {})
    paths = stack_stores(stack_dir)
    plan: dict[str, ExtractConfig | FusedPlan] = {}
    for path, name in zip(paths, store_names(paths)):
        name = name.replace("/", "-")
        with open_store(path) as s:
            family, fused_run = s.provenance.family, s.run_path
        if family not in FUSION_MODELS:
            plan[name] = _extraction(path, runs.pop(name, None))
            continue
        run = Path(runs.pop(name, fused_run))
        if not RunFolder(run).exists():
            raise EmofeatError(
                f"store {name} was made by `emofeat fuse` from run {run}, which is not here; "
                f"pass --run {name}=DIR with the run folder"
            )
        inputs = {}
        for recorded in recorded_stores(RunFolder(run).read_config(), run):
            if not recorded.is_file():
                raise EmofeatError(
                    f"store {name}: its run {run} was fused from {recorded}, which is not here; "
                    "the input stores tell how to extract new rows for it"
                )
            inputs[recorded.stem] = _extraction(recorded, None)
        plan[name] = FusedPlan(run, inputs)
    if runs:
        raise EmofeatError(
            f"--run names stores that are not part of the stack: {sorted(runs)}; "
            f"its stores: {sorted(plan)}"
        )
    return plan


def _extraction(path: Path, run: str | None) -> ExtractConfig:
    """The extraction that reproduces the extracted store ``path`` for new rows (``run``: its
    run folder, where it moved)."""
    with open_store(path) as s:
        name, recorded, config = s.name, s.run_path, s.config
        if s.provenance.family in FUSION_MODELS:
            raise EmofeatError(
                f"store {name} was fused from another fused store; `emofeat infer` rebuilds one "
                "level of fusion"
            )
    values = {k: config[k] for k in VALUE_KEYS if k in config}
    # A frozen encoder's folder, as the store recorded it (relative to itself).
    keys = ExtractConfig(**values).path_options()
    values = resolve_paths(values, keys, Path(path).parent)
    run = run or recorded
    if run:
        values.update(run=str(run), model=None, model_path=None)
        if not RunFolder(run).exists():
            raise EmofeatError(
                f"store {name} was extracted from run {run}, which is not here; "
                f"pass --run {name}=DIR with the run folder"
            )
    elif not values.get("model"):
        raise EmofeatError(f"store {name} records neither a run nor a model; re-extract it")
    return ExtractConfig(**values)


def infer(
    stack_dir: str | os.PathLike,
    csv: str | os.PathLike,
    out: str | os.PathLike,
    *,
    runs: Mapping[str, str] | None = None,
    work: str | os.PathLike | None = None,
    **options: Any,
) -> Path:
    """Predict every row of ``csv`` with the stack at ``stack_dir``.

    Extracts a store with every base run the stack's stores came from (each with the options its
    store was extracted with), then applies the meta-learner; equal to ``extract --run`` per run
    followed by :func:`~emofeat.stack.ensemble.predict`.

    Args:
        stack_dir: A folder written by ``emofeat stack`` (its model.joblib is loaded: trusted
            folders only, loading it runs code).
        csv: The recordings (id, audio_path, text[, label]).
        out: The predictions CSV (``id, split, label, predicted, provenance, p_<class>...``).
        runs: Store name → run folder, for runs that moved since the stack was fitted.
        work: Where the new stores go (default ``OUT.stores/``); re-running resumes.
        **options: The options of :class:`~emofeat.recipes.config.InferConfig`.

    Returns:
        The predictions CSV.

    Raises:
        OptionError: an option's value is refused.
        EmofeatError: no rows to predict, a base run (or a fused store's input store) that
            cannot be found, unreadable rows (without ``skip_bad``).
    """
    from emofeat.recipes.config import InferConfig

    opts = InferConfig(**options)

    out = Path(out)
    work = Path(work) if work else out.with_name(out.name + ".stores")
    check_output(out, kind="predictions", inputs=[csv, stack_dir, work])
    _check_work(work)
    plan = extraction_plan(stack_dir, runs)
    folder = StackFolder(stack_dir)
    if folder.has_classes():  # a model file that is not a stack's: refused before extracting
        folder.load_model()
    folder.load_dimensional_model()
    frame, _ = read_csv_corpus(csv)
    if not len(frame):
        raise EmofeatError(f"{csv}: no rows to predict")
    frame = build_frame(frame.to_dict("records"))
    frame["split"], frame["fold"] = "test", -1  # prediction-only rows: every fold model's mean
    manifest = work / "manifest.csv"
    # The stack's classes: labels the CSV gives are scored in them (others are refused).
    classes = StackFolder(stack_dir).label_set()
    write_manifest(
        relative_audio_paths(frame, work),
        manifest,
        config={"csv": str(csv), "split": INFER_SPLIT},
        labels=classes,
    )
    paths = []
    for name, how in plan.items():
        if isinstance(how, FusedPlan):  # its inputs, then its run's fold models over them
            inputs = [
                _extract(manifest, work / f"{name}.inputs" / f"{i}.h5", cfg, opts, work)
                for i, cfg in how.inputs.items()
            ]
            paths.append(apply_fusion(how.run, inputs, work / f"{name}.h5", device=opts.device))
            continue
        paths.append(_extract(manifest, work / f"{name}.h5", how, opts, work))
    with load_level1(paths, allow_incomplete=opts.skip_bad, flag="--skip-bad") as level1:
        if not len(level1):
            raise EmofeatError(
                f"{csv}: no row could be computed by every base model (the reasons are in the "
                f"stores of {work}: `emofeat store inspect`); nothing to predict"
            )
        origin = np.full(len(level1), "out-of-sample", dtype=object)
        apply_stack(folder, level1, out, origin=origin)
        if level1.dropped:
            log.warning(
                "%d row(s) could not be computed (see the stores in %s)", level1.dropped, work
            )
    return out


def _extract(manifest: Path, out: Path, cfg: ExtractConfig, opts, work: Path) -> Path:
    """One store of the new rows (resumed when ``--work`` already holds it)."""
    cfg = cfg.replace(device=opts.device, skip_bad=opts.skip_bad)
    try:
        return extract(manifest, out, cfg)
    except StoreMismatchError as err:
        raise EmofeatError(
            f"{out} is a store of other rows or options ({'; '.join(err.problems[:2])}): "
            f"--work {work} holds the stores of another infer call; give another --work, or "
            "delete that folder"
        ) from None


def _check_work(work: Path) -> None:
    """``--work`` holds infer's own manifest and stores: refuse a folder whose manifest is
    another (a training manifest emofeat wrote there is an input of other work, not a cache)."""
    manifest = work / "manifest.csv"
    if manifest.exists() and read_sidecar(manifest).get("split") != INFER_SPLIT:
        raise EmofeatError(
            f"--work {work} holds {manifest}, which `emofeat infer` did not write; refusing to "
            "replace it. Give another --work."
        )
