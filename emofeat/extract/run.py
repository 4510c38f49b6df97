"""Batched, resumable extraction of pooled embeddings and logits into a feature store.

With a fine-tuned run (``run=runs/NAME``) each train row's logits and embeddings come from the
fold model that did not see it (out-of-fold); test rows get the mean over the fold models (logits
and embeddings alike). The run's options (reverse, max_len, ...) are applied. Without a run the
pretrained encoder gives frozen embeddings only, no logits.

Speed (see :mod:`emofeat.extract.inputs`): rows are taken in windows of consecutive store rows and,
inside a window, batched by length (speech: by padded duration, so padding stays small); long
clips are cut into ``max_seconds`` windows whose frames are pooled together, and a clip longer
than a batch (``batch_seconds``) is decoded and forwarded a few windows at a time, its pooling
sums carried from part to part: memory follows the options, not the longest clip. DataLoader worker
processes read and encode the next batches (on CUDA; on a CPU the cores compute), inputs reach
the device on a side stream, forward passes run without gradients and under optional
bf16/fp16 autocast (one region, so each weight is cast once), all requested layers are pooled on the device in one pass and reach the host
in one transfer, collected one batch later, and each window is written as one block. On CUDA
out-of-memory a batch is split in two and retried (a single row by its windows). Pooling is masked, so stored values do not
depend on batching.

Resumable: the store records which rows are done; re-running the same command computes only the
rest. Under ``torchrun --nproc_per_node N`` each rank fills a shard and rank 0 merges them.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from emofeat import distributed
from emofeat.atomic import write_text
from emofeat.corpus.manifest import DIMENSIONS, Manifest, read_manifest
from emofeat.device import check_precision, pick_device
from emofeat.encoders.base import Encoder, RowCheck, layer_names
from emofeat.errors import EmofeatError
from emofeat.extract.compute import Work, compute
from emofeat.extract.config import STORE_IDENTITY, VALUE_KEYS, ExtractConfig
from emofeat.extract.models import Models, Routing, load_models, route_rows
from emofeat.extract.opensmile import extract_opensmile, is_opensmile
from emofeat.outputs import check_output, register_record_kind
from emofeat.records import dump_yaml, environment, provenance, record_paths, relative_path
from emofeat.store import (
    Provenance,
    StoreLayout,
    StoreWriter,
    check_resumable,
    merge_stores,
    open_writer,
    remove_store,
)
from emofeat.store.layout import describe_test_predictions
from emofeat.tasks import has_classes, has_dimensions

log = logging.getLogger(__name__)
register_record_kind("store-record", legacy_key="pooling")  # store/NAME.yaml beside store/NAME.h5


# ------------------------------------------------------------------------------------------ main
def extract(manifest: str | Path | Manifest, out: str | Path, cfg: ExtractConfig) -> Path:
    """Extract a store for every row of ``manifest`` into ``out`` (resumable).

    Args:
        manifest: the manifest (a path, or one already read).
        out: the store to write (``.h5``); its record goes beside it (``.yaml``).
        cfg: the extraction options.

    Returns:
        ``out``.

    Raises:
        EmofeatError: an option that does not fit the model, a manifest the run was not made
            from, a row that cannot be computed (without ``skip_bad``), an output that is an
            input or not emofeat's to replace.
    """
    m = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    out = Path(out)
    if is_opensmile(cfg.model):  # a feature extractor, not an encoder: its own path
        if distributed.world_size() > 1:
            raise EmofeatError(
                "openSMILE extraction runs in one process; start it without torchrun"
            )
        _check_outputs(out, m=m, cfg=cfg)
        extract_opensmile(m, out, cfg)
        write_record(out, m, cfg)
        return out
    device = distributed.process_device(pick_device(cfg.device))
    check_precision(cfg.precision, device)
    _check_outputs(out, m=m, cfg=cfg)
    loaded = load_models(cfg, m.label_names)
    applied = _applied_options(cfg, loaded=loaded, device=device)
    for model in loaded.models:
        model.to(device).eval()
    plan = plan_store(m, loaded, applied, out=out)
    rank, world = distributed.rank(), distributed.world_size()
    earlier = _earlier_shards(out, plan, world=world, overwrite=cfg.overwrite)
    target = out if world == 1 else shard_path(out, rank)
    complete = _fill(target, m=m, loaded=loaded, plan=plan, cfg=applied, device=device)
    if world > 1:
        _merge_shards(out, world=world, earlier=earlier)
    elif not complete:
        log.warning("%s: some rows were skipped (see `emofeat store inspect`)", out)
    if rank == 0:
        write_record(out, m, cfg)  # the options as given
    return out


def _check_outputs(out: Path, *, m: Manifest, cfg: ExtractConfig) -> None:
    """The store and its record are never an input, and replace only what emofeat made as such."""
    sources = [
        m.path,
        cfg.run,
        cfg.model_path,
        cfg.model if cfg.model and Path(cfg.model).exists() else None,
    ]
    check_output(out, kind="store", inputs=sources)
    check_output(record_path(out), kind="store-record", inputs=sources, what="its record")
    if distributed.world_size() > 1 and out.exists() and not cfg.overwrite:
        raise EmofeatError(
            f"{out} exists; multi-process extraction writes shards and merges them: pass "
            "--overwrite or remove it"
        )


def _applied_options(cfg: ExtractConfig, *, loaded: Models, device: str) -> ExtractConfig:
    """The options as applied: the device's batch size, the run's reverse and max_len when not
    given, the model's sequence length."""
    encoder = loaded.encoder
    text_only = cfg.changed("text_filter", "sequence_padding")
    if encoder.modality != "text" and text_only:
        raise EmofeatError(
            f"{', '.join(text_only)} apply to text models; {cfg.run or cfg.model} is a speech model"
        )
    batch_seconds = cfg.batch_seconds
    if batch_seconds is None:
        # Measured on 2 CPU cores (wav2vec2-base, clips 1-12 s): batching gains nothing on a CPU
        # and padding costs, so CPU batches stay small; GPUs want large ones.
        batch_seconds = 64.0 if device.startswith("cuda") else 12.0
    return dataclasses.replace(
        cfg,
        batch_seconds=batch_seconds,
        reverse=encoder.options.reverse,
        max_len=encoder.options.max_len,
        sequence_length=(cfg.sequence_length or encoder.sequence_length())
        if cfg.sequence
        else cfg.sequence_length,
    )


@dataclass
class StoredValues:
    """What each row of the store holds: the pooled layers (name, hidden-state index), the
    width of every embedding, the alias that makes every store answer to "last", and the
    per-frame sequences (name → (length, width))."""

    names: list[tuple[str, int]]
    embeddings: dict[str, int]
    aliases: dict[str, str]
    sequences: dict[str, tuple[int, int]]


def stored_values(cfg: ExtractConfig, *, encoder: Encoder, model: torch.nn.Module) -> StoredValues:
    """The values ``cfg`` asks of ``model`` (``cfg`` as applied: its sequence length is set)."""
    num_hidden = encoder.num_hidden_states(model)
    names = layer_names(cfg.layers, num_hidden)
    stored = dict(names)
    # Every store answers to "last": an alias when the last hidden state has another name.
    aliases = (
        {"last": next(n for n, i in names if i == num_hidden - 1)}
        if "last" not in stored and num_hidden - 1 in stored.values()
        else {}
    )
    hidden = int(model.config.hidden_size)
    width = hidden * (2 if cfg.pooling == "mean+std" else 1)
    return StoredValues(
        names=names,
        embeddings={**{n: width for n, _ in names}, **encoder.extra_embeddings(model)},
        aliases=aliases,
        sequences={"last": (cfg.sequence_length, hidden)} if cfg.sequence else {},
    )


@dataclass
class StorePlan:
    """The store an extraction fills: its layout and root attributes, the values per row, the
    routing of rows to models and the rows' check (lengths, bad rows)."""

    layout: StoreLayout
    attrs: dict[str, Any]
    values: StoredValues
    routing: Routing
    checked: RowCheck
    min_len: int


def plan_store(m: Manifest, loaded: Models, cfg: ExtractConfig, *, out: Path) -> StorePlan:
    """The store ``cfg`` (as applied) makes of ``m`` with ``loaded``: rows are routed and checked
    before anything is created, so without ``skip_bad`` a bad row (empty text, unreadable or too
    short audio) stops the command with nothing written."""
    encoder, first = loaded.encoder, loaded.models[0]
    values = stored_values(cfg, encoder=encoder, model=first)
    routing = route_rows(m, loaded, refit=cfg.test_rows == "refit")
    min_len = encoder.min_input_length(first.config)
    checked = encoder.check_rows(m, np.arange(len(m)), skip_bad=cfg.skip_bad, min_length=min_len)
    checkpoint_sha256, per_model_sha256 = loaded.digests.result()
    origin = _provenance(
        m, loaded, cfg, values=values, checkpoint_sha256=checkpoint_sha256, out=out
    )
    layout = StoreLayout(
        ids=m.ids,
        labels=m.label_indices,
        split=m.split,
        fold=m.fold,
        label_names=loaded.label_names,
        embeddings=values.embeddings,
        logits=loaded.run is not None and has_classes(loaded.run.task),
        dimensions=loaded.run is not None and has_dimensions(loaded.run.task),
        # The true valence and arousal beside the labels, where the manifest has them.
        targets=m.dimensions if np.isfinite(m.dimensions).any() else None,
        dimension_names=list(DIMENSIONS),
        embedding_dtype=cfg.dtype,
        in_sample=routing.in_sample,
        aliases=values.aliases,
        sequences=values.sequences,
        # The store's identity: the options that decide its values and the weights that
        # computed them (one sha256 per fold model), so a resume never mixes two models.
        config={
            # Local paths relative to the store, so that a project folder can move.
            **record_paths(
                {k: getattr(cfg, k) for k in VALUE_KEYS}, cfg.path_options(), Path(out).parent
            ),
            "weights_sha256": per_model_sha256,
            # What predicted the test rows, in words (stack reports name it).
            "test_predictions": describe_test_predictions(
                len(routing.plan.other_models(routing.groups)),
                refit=cfg.test_rows == "refit",
            ),
            "model_revision": origin.model_revision,
        },
    )
    attrs = {
        **origin.to_attrs(),
        "environment": environment(),  # versions, device, git
        "identity_keys": list(STORE_IDENTITY),  # the options Store.identity is made of
    }
    return StorePlan(layout, attrs, values, routing, checked, min_len)


def _provenance(
    m: Manifest,
    loaded: Models,
    cfg: ExtractConfig,
    *,
    values: StoredValues,
    checkpoint_sha256: str,
    out: Path,
) -> Provenance:
    encoder = loaded.encoder
    return Provenance(
        model_id=loaded.model_id,
        model_revision=getattr(loaded.models[0].config, "_commit_hash", None) or "",
        checkpoint_sha256=checkpoint_sha256,
        family=encoder.family,
        modality=encoder.modality,
        pooling=cfg.pooling,
        layers=[n for n, _ in values.names],
        text_mode=str(m.prepared_config.get("text", "")),
        reverse=encoder.options.reverse,
        precision=cfg.precision,
        split_scheme=m.split_scheme,
        # Relative to the store, so that a project folder can move (Store.run_path resolves it).
        run=relative_path(cfg.run, Path(out).parent) if cfg.run else "",
        # True: cross-fitted fold models; False: one model trained on every train row; not
        # written for a frozen pretrained encoder (it learned from no row of this corpus).
        out_of_fold=(
            loaded.out_of_fold if loaded.run is not None else (False if loaded.trained_on else None)
        ),
        **encoder.input_provenance(),
    )


# ------------------------------------------------------------------------------------- stages
def _fill(
    target: Path,
    *,
    m: Manifest,
    loaded: Models,
    plan: StorePlan,
    cfg: ExtractConfig,
    device: str,
) -> bool:
    """Compute this process's pending rows into ``target`` (created, or resumed); returns
    whether every row of the store is done."""
    writer = open_writer(target, plan.layout, attrs=plan.attrs, overwrite=cfg.overwrite)
    try:
        todo = _pending(writer, m=m, plan=plan)
        if not todo:
            tqdm.write(f"[{target.name}] every row is done already; nothing to compute")
        timings = compute(
            m,
            loaded,
            writer,
            todo,
            names=plan.values.names,
            cfg=cfg,
            device=device,
            min_len=plan.min_len,
        )
        return writer.finalize(**({"timings": timings} if timings else {}))
    finally:
        writer.close()


def _pending(writer: StoreWriter, *, m: Manifest, plan: StorePlan) -> Work:
    """The rows this process still computes, grouped by the fold models that compute them
    (rows that failed the check are recorded as skipped now)."""
    pending = np.zeros(len(m), bool)
    pending[writer.pending] = True
    if distributed.world_size() > 1:
        pending &= distributed.share(row_work(m, plan.routing, plan.checked))
    for r, (_, reason) in zip(plan.checked.bad_rows, plan.checked.bad):
        if pending[r]:
            writer.skip([r], reason)
            pending[r] = False
    lengths = np.zeros(len(m))
    lengths[plan.checked.good] = plan.checked.lengths
    groups = [(models, rows[pending[rows]]) for models, rows in plan.routing.groups]
    return [(models, rows, lengths[rows]) for models, rows in groups if len(rows)]


def _earlier_shards(out: Path, plan: StorePlan, *, world: int, overwrite: bool) -> list[Path]:
    """Shards of higher ranks that an earlier job with more processes left (rank 0 only): part
    of this store (checked like a resumed shard, before anything is computed), or replaced."""
    if world == 1 or distributed.rank() != 0:
        return []
    earlier = []
    for shard in earlier_shards(out, world):
        if overwrite:
            remove_store(shard)
        else:
            check_resumable(shard, plan.layout)
            earlier.append(shard)
    return earlier


def _merge_shards(out: Path, *, world: int, earlier: list[Path]) -> None:
    """Rank 0 merges every shard into ``out`` once all ranks are done; rows that a resume with
    other shares computed twice are taken once."""
    distributed.barrier()
    if distributed.rank() == 0:
        shards = [shard_path(out, r) for r in range(world)] + earlier
        merge_stores(shards, out, shared_rows=True)
        for s in shards:
            s.unlink()
    distributed.barrier()


def shard_path(out: Path, rank: int) -> Path:
    """The shard process ``rank`` of a multi-process extraction fills (``x.rank0.h5``, ...)."""
    return out.with_name(f"{out.stem}.rank{rank}{out.suffix}")


def earlier_shards(out: Path, world: int) -> list[Path]:
    """Shards of ranks ``world`` and above beside ``out``: left by an earlier job with more
    processes."""
    pattern = re.compile(rf"{re.escape(out.stem)}\.rank(\d+){re.escape(out.suffix)}")
    found = [
        (int(hit.group(1)), p)
        for p in (out.parent.iterdir() if out.parent.is_dir() else [])
        if (hit := pattern.fullmatch(p.name))
    ]
    return [p for r, p in sorted(found) if r >= world]


def row_work(m: Manifest, routing: Routing, checked: RowCheck) -> np.ndarray:
    """What each row costs to extract, for sharing rows between processes: its length (audio
    seconds, characters) times the fold models that compute it (a test row of a 5-fold run: 5).
    A row that cannot be read counts as an average one, so that the shares barely move when it
    becomes readable."""
    models = np.zeros(len(m))
    for group, rows in routing.groups:
        models[rows] += len(group)
    length = np.full(len(m), checked.lengths.mean() if len(checked.lengths) else 1.0)
    length[checked.good] = checked.lengths
    return length * models


def record_path(out: str | Path) -> Path:
    """Where the options of the store ``out`` are recorded (``store/x.h5`` → ``store/x.yaml``)."""
    return Path(out).with_suffix(".yaml")


def write_record(out: Path, m: Manifest, cfg: ExtractConfig) -> None:
    """``<store>.yaml``: the options as given (``emofeat extract --config`` re-runs them)."""
    config = {"manifest": str(m.path or m.root), "out": str(out)}
    config.update(cfg.record())
    write_text(record_path(out), dump_yaml(provenance(config, output="store-record")))
