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

import contextlib
import dataclasses
import logging
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from emofeat import distributed
from emofeat.corpus.labels import LABEL_NAMES
from emofeat.corpus.manifest import Manifest, read_manifest
from emofeat.crossfit import FoldPlan
from emofeat.device import check_precision, peak_memory, pick_device
from emofeat.encoders import families, resolve
from emofeat.encoders.base import (
    Encoder,
    EncoderOutput,
    InputOptions,
    Partial,
    RowCheck,
    inference_context,
    layer_names,
)
from emofeat.encoders.source import local_source
from emofeat.errors import EmofeatError, printable
from emofeat.extract.config import VALUE_KEYS, ExtractConfig
from emofeat.extract.inputs import (
    Batch,
    BatchSource,
    batch_loader,
    default_workers,
    plan_batches,
    stop_workers,
    to_device,
)
from emofeat.outputs import check_output, register_record_kind
from emofeat.records import environment, weights_digests
from emofeat.runs import RunFolder, RunInfo, trained_rows
from emofeat.store import (
    Provenance,
    StoreLayout,
    check_resumable,
    merge_stores,
    open_writer,
    remove_store,
)
from emofeat.store.layout import describe_test_predictions

log = logging.getLogger(__name__)
register_record_kind("store-record", legacy_key="pooling")  # store/NAME.yaml beside store/NAME.h5


@dataclass
class Models:
    """What an extraction runs: the encoder family (with its processor and input options), one
    model per fold (one pretrained encoder for a frozen store), and where they came from."""

    encoder: Encoder
    models: list[torch.nn.Module]
    label_names: list[str]
    model_id: str
    # The weights' sha256 (whole, per folder), hashed in a thread while the models load.
    digests: Future[tuple[str, list[str]]]
    run: RunInfo | None = None
    run_path: str = ""
    # The run's folds the loaded models hold out, in order (-1: the model on all train rows).
    model_folds: list[int] = field(default_factory=list)
    # A single model folder that emofeat fine-tuned, loaded with --model: the ids it trained or
    # chose on (its rows.json). None: a pretrained encoder, which saw no row of the corpus.
    trained_on: set[str] | None = None

    @property
    def out_of_fold(self) -> bool:
        """Whether train rows get predictions from the fold model that did not see them."""
        return self.run is not None and self.run.folds > 0


def load_models(cfg: ExtractConfig) -> Models:
    """The fold models of ``cfg.run`` (with the run's input options), or the pretrained encoder
    ``cfg.model`` for frozen embeddings."""
    if cfg.run:
        run = RunFolder(cfg.run)
        info = run.info()
        folds = run.fold_ids()
        if len(folds) > 1 and cfg.test_rows != "refit":  # a refit model would predict nothing
            folds = [k for k in folds if k >= 0]
        dirs = [str(d) for d in run.finished_fold_dirs(folds)]
        digests = _hash_weights(dirs)
        options = InputOptions(
            max_len=cfg.max_len or info.max_len,
            sample_rate=info.sample_rate,
            reverse=info.reverse if cfg.reverse is None else cfg.reverse,
            max_seconds=cfg.max_seconds,
            text_filter=cfg.text_filter,
            sequence_padding=cfg.sequence_padding,
        )
        # The fold folders hold the tokenizer or feature extractor the run was trained with.
        encoder = families()[info.family].from_folder(dirs[0], options)
        models = [encoder.load_classifier(d) for d in dirs]
        return Models(
            encoder,
            models,
            info.label_names,
            info.source,
            digests,
            run=info,
            run_path=str(cfg.run),
            model_folds=folds,
        )
    if not cfg.model:
        raise EmofeatError("give --model (frozen encoder) or --run (fine-tuned run)")
    spec = resolve(cfg.model, cfg.model_path)
    source = local_source(spec.source)
    digests = _hash_weights([source])
    cls = spec.encoder_class
    processor = cls.load_processor(source)
    options = InputOptions(
        max_len=cfg.max_len or cls.own_limit(processor, source) or 64,
        sample_rate=int(getattr(processor, "sampling_rate", 0) or 16000),
        reverse=bool(cfg.reverse),
        max_seconds=cfg.max_seconds,
        text_filter=cfg.text_filter,
        sequence_padding=cfg.sequence_padding,
    )
    encoder = cls(processor, options)
    return Models(
        encoder,
        [encoder.load_pretrained(source)],
        list(LABEL_NAMES),
        spec.source,
        digests,
        trained_on=trained_rows(source),
    )


def _hash_weights(folders: list[str]) -> Future[tuple[str, list[str]]]:
    """:func:`weights_digests` of ``folders`` in a thread (hashlib releases the GIL): ~0.7 s
    per GB of weights (this 2-core AMD EPYC) that would otherwise come on top of loading them."""
    pool = ThreadPoolExecutor(max_workers=1)
    digests = pool.submit(weights_digests, folders)
    pool.shutdown(wait=False)
    return digests


@dataclass
class Routing:
    """Which fold models compute each row, and the row's out-of-fold evidence."""

    groups: list[tuple[list[int], np.ndarray]]  # (fold models, rows): values are their mean
    in_sample: np.ndarray  # per row: a model that produced it trained on it or chose on it
    plan: FoldPlan  # the rule the groups come from


def route_rows(m: Manifest, loaded_models: Models, *, refit: bool = False) -> Routing:
    """Route rows to models by the cross-fitting rule (:class:`emofeat.crossfit.FoldPlan`): a
    held-out train row → the fold model that held it out; every other row → the mean over the
    fold models.

    With a cross-fitted run the manifest's fold assignment is checked against the rows each fold
    model recorded (``rows.json``): a labelled train row whose fold differs from the run's, a
    labelled train row the run never saw, or a test row some fold model trained on is refused,
    with the first differences. The run's records also give each row's ``in_sample`` flag."""
    plan = FoldPlan.from_manifest(m)
    if loaded_models.run is None:  # one model for every row
        everyone = list(range(len(loaded_models.models)))
        groups = [(everyone, np.arange(len(m)))]
        # A pretrained encoder never saw these rows; a folder emofeat fine-tuned says which it
        # trained on, whichever option loaded it.
        used = [loaded_models.trained_on or set()]
        return Routing(groups, plan.in_sample(groups, used), plan)
    run = RunFolder(loaded_models.run_path)
    model_folds = loaded_models.model_folds
    used = [u for k, u in zip(run.fold_ids(), run.fold_usage()) if k in model_folds]
    skipped = run.skipped_ids()
    plan = plan.excluding(i for i, u in enumerate(plan.ids) if u in skipped)
    if loaded_models.out_of_fold:
        count, problems = plan.check_models(model_folds, used)
        if count:
            listing = "\n  ".join(problems)
            raise EmofeatError(
                f"{run.path} was trained with another fold assignment than {m.path or m.root} "
                f"({count} row(s) differ), so some values would not be out-of-fold:\n  {listing}\n"
                f"Extract with the manifest the run was made from ({loaded_models.run.manifest}), or fine-tune "
                "a new run on this manifest."
            )
    if refit and -1 not in model_folds:
        raise EmofeatError(
            f"--test-rows refit: {run.path} has no model refit on all train rows; fine-tune it "
            "with --refit (the fold models are kept), or extract with --test-rows mean"
        )
    groups = plan.model_groups(model_folds, refit=refit)
    return Routing(groups, plan.in_sample(groups, used), plan)


def _check_options(cfg: ExtractConfig, device: str) -> None:
    check_precision(cfg.precision, device)


def _split_on_oom(fn, items: np.ndarray, what: str) -> list[tuple[np.ndarray, Any]]:
    """``[(items, fn(items))]``; on CUDA out-of-memory ``items`` (rows of a batch, or the
    windows of one row) are split in halves and each is retried."""
    try:
        return [(items, fn(items))]
    except torch.cuda.OutOfMemoryError:
        if len(items) == 1:
            raise
        torch.cuda.empty_cache()
        half = len(items) // 2
        log.warning(
            "CUDA out of memory on %d %s; retrying as %d + %d",
            len(items),
            what,
            half,
            len(items) - half,
        )
        return _split_on_oom(fn, items[:half], what) + _split_on_oom(fn, items[half:], what)


# ------------------------------------------------------------------------------------------ main
def extract(manifest: str | Path | Manifest, out: str | Path, cfg: ExtractConfig) -> Path:
    """Extract a store for every row of ``manifest`` into ``out`` (resumable); returns ``out``."""
    m = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    out = Path(out)
    given = dataclasses.replace(cfg)  # as asked, for the record
    cfg = dataclasses.replace(cfg)
    device = pick_device(cfg.device)
    _check_options(cfg, device)
    # The store and its record are never an input, and replace only what emofeat made as such.
    sources = [
        m.path,
        cfg.run,
        cfg.model_path,
        cfg.model if cfg.model and Path(cfg.model).exists() else None,
    ]
    check_output(out, kind="store", inputs=sources)
    check_output(record_path(out), kind="store-record", inputs=sources, what="its record")
    if cfg.batch_seconds is None:
        # Measured on 2 CPU cores (wav2vec2-base, clips 1-12 s): batching gains nothing on a CPU
        # and padding costs, so CPU batches stay small; GPUs want large ones.
        cfg.batch_seconds = 64.0 if device.startswith("cuda") else 12.0
    loaded_models = load_models(cfg)
    text_only = {
        "text-filter": cfg.text_filter != "none",
        "sequence-padding": cfg.sequence_padding != "valid",
    }
    if loaded_models.encoder.modality != "text" and any(text_only.values()):
        given = ", ".join(f"--{k}" for k, v in text_only.items() if v)
        raise EmofeatError(
            f"{given} apply to text models; {cfg.run or cfg.model} is a speech model"
        )
    encoder, models = loaded_models.encoder, loaded_models.models
    for model in models:
        model.to(device).eval()
    # Record the options as applied (the run's reverse and max_len when not given).
    cfg.reverse, cfg.max_len = encoder.options.reverse, encoder.options.max_len
    num_hidden = encoder.num_hidden_states(models[0])
    names = layer_names(cfg.layers, num_hidden)
    # Every store answers to "last": an alias when the last hidden state has another name.
    stored = dict(names)
    aliases = (
        {"last": next(n for n, i in names if i == num_hidden - 1)}
        if "last" not in stored and num_hidden - 1 in stored.values()
        else {}
    )
    width = int(models[0].config.hidden_size) * (2 if cfg.pooling == "mean+std" else 1)
    emb_dims = {**{n: width for n, _ in names}, **encoder.extra_embeddings(models[0])}
    if cfg.sequence:
        cfg.sequence_length = cfg.sequence_length or encoder.sequence_length()
    sequences = (
        {"last": (cfg.sequence_length, int(models[0].config.hidden_size))} if cfg.sequence else {}
    )
    routing = route_rows(m, loaded_models, refit=cfg.test_rows == "refit")
    # Rows are checked before the store is created: without --skip-bad a bad row (empty text,
    # unreadable or too short audio) stops the command with nothing written.
    min_len = encoder.min_input_length(models[0].config)
    checked = encoder.check_rows(m, np.arange(len(m)), skip_bad=cfg.skip_bad, min_length=min_len)
    checkpoint_sha256, per_model_sha256 = loaded_models.digests.result()
    revision = getattr(models[0].config, "_commit_hash", None) or ""
    provenance = Provenance(
        model_id=loaded_models.model_id,
        model_revision=revision,
        checkpoint_sha256=checkpoint_sha256,
        family=encoder.family,
        modality=encoder.modality,
        pooling=cfg.pooling,
        layers=[n for n, _ in names],
        text_mode=str(m.prepared_config.get("text", "")),
        reverse=encoder.options.reverse,
        precision=cfg.precision,
        split_scheme=m.split_scheme,
        run=str(cfg.run or ""),
        # True: cross-fitted fold models; False: one model trained on every train row; not
        # written for a frozen pretrained encoder (it learned from no row of this corpus).
        out_of_fold=(
            loaded_models.out_of_fold
            if loaded_models.run is not None
            else (False if loaded_models.trained_on else None)
        ),
        **encoder.input_provenance(),
    )
    # versions, device, git commit (YAML)
    attrs = {**provenance.to_attrs(), "environment": environment()}
    rank, world = distributed.rank(), distributed.world_size()
    if world > 1 and out.exists() and not cfg.overwrite:
        raise EmofeatError(
            f"{out} exists; multi-process extraction writes shards and merges them: pass --overwrite or remove it"
        )
    layout = StoreLayout(
        ids=m.ids,
        labels=m.label_indices,
        split=m.split,
        fold=m.fold,
        label_names=loaded_models.label_names,
        embeddings=emb_dims,
        logits=loaded_models.run is not None,
        embedding_dtype=cfg.dtype,
        in_sample=routing.in_sample,
        aliases=aliases,
        sequences=sequences,
        # The store's identity: the options that decide its values and the weights that
        # computed them (one sha256 per fold model), so a resume never mixes two models.
        config={
            **{k: getattr(cfg, k) for k in VALUE_KEYS},
            "weights_sha256": per_model_sha256,
            # What predicted the test rows, in words (stack reports name it).
            "test_predictions": describe_test_predictions(
                len(routing.plan.other_models(routing.groups)),
                refit=cfg.test_rows == "refit",
            ),
            "model_revision": revision,
        },
    )
    earlier: list[Path] = []
    if world > 1 and rank == 0:
        # Shards of higher ranks that an earlier job with more processes left: part of this
        # store (checked like a resumed shard, before anything is computed), or replaced.
        for shard in earlier_shards(out, world):
            if cfg.overwrite:
                remove_store(shard)
            else:
                check_resumable(shard, layout)
                earlier.append(shard)
    target = out if world == 1 else shard_path(out, rank)
    writer = open_writer(target, layout, attrs=attrs, overwrite=cfg.overwrite)
    try:
        pending = np.zeros(len(m), bool)
        pending[writer.pending] = True
        if world > 1:
            pending &= distributed.share(row_work(m, routing, checked))
        for r, (_, reason) in zip(checked.bad_rows, checked.bad):
            if pending[r]:
                writer.skip([r], reason)
                pending[r] = False
        todo = [(mods, rows[pending[rows]]) for mods, rows in routing.groups]
        lengths = np.zeros(len(m))
        lengths[checked.good] = checked.lengths
        todo = [(k, r, lengths[r]) for k, r in todo if len(r)]
        timings = _compute(m, loaded_models, writer, todo, names, cfg, device, min_len)
        complete = writer.finalize(**({"timings": timings} if timings else {}))
    finally:
        writer.close()
    if world > 1:
        distributed.barrier()
        if rank == 0:
            # Rows that a resume with other shares computed twice are taken once.
            shards = [shard_path(out, r) for r in range(world)] + earlier
            merge_stores(shards, out, shared_rows=True)
            for s in shards:
                s.unlink()
        distributed.barrier()
    elif not complete:
        log.warning("%s: some rows were skipped (see `emofeat store inspect`)", out)
    if rank == 0:
        write_record(out, m, given)
    return out


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
    from emofeat.atomic import write_text
    from emofeat.records import dump_yaml, provenance

    config = {"manifest": str(m.path or m.root), "out": str(out)}
    config.update(cfg.record())
    write_text(record_path(out), dump_yaml(provenance(config, output="store-record")))


class _Progress:
    """A tqdm bar in utterances with an audio-seconds-per-second rate."""

    def __init__(self, total: int, name: str):
        self.bar = tqdm(total=total, unit="utt", desc=f"extract {name}", dynamic_ncols=True)
        self.audio_s, self.t0 = 0.0, time.perf_counter()
        self.over_limit = 0

    def update(self, n: int, audio_s: float = 0.0) -> None:
        self.bar.update(n)
        if audio_s:
            self.audio_s += audio_s
            self.bar.set_postfix(
                audio_s_per_s=f"{self.audio_s / (time.perf_counter() - self.t0):.1f}"
            )


def _compute(
    m: Manifest,
    loaded_models: Models,
    writer,
    todo: list[tuple[list[int], np.ndarray, np.ndarray]],
    names: list[tuple[str, int]],
    cfg: ExtractConfig,
    device: str,
    min_len: int,
) -> dict[str, Any] | None:
    """Compute the pending rows (groups of fold models, their rows and the rows' lengths);
    returns where the time went (None when nothing was pending).

    Input workers read and encode the next batches while the current one computes; a batch's
    results are collected one batch later (on CUDA the host launches the next batch instead of
    waiting for the device), and each window of rows is written as one block."""
    if not todo:
        return None
    encoder = loaded_models.encoder
    layers = [i for _, i in names]
    autocast = check_precision(cfg.precision, device)
    sequence_layer = (
        encoder.num_hidden_states(loaded_models.models[0]) - 1 if cfg.sequence else None
    )
    plan = plan_batches(
        encoder,
        todo,
        window=window_rows(cfg),
        batch_size=cfg.batch_size,
        batch_seconds=cfg.batch_seconds,
    )
    progress = _Progress(sum(len(p.rows) for p in plan), writer.path.name)
    clock = Timings()
    behind = WriteBehind(writer)
    workers = default_workers(device) if cfg.workers is None else cfg.workers
    source = BatchSource(m, encoder, plan, min_len=min_len)
    inputs_iter = iter(
        batch_loader(source, workers=workers, device=device, close_fds=writer.inherited_fds())
    )
    batches = to_device(inputs_iter, device)
    in_flight: list[tuple[list[HostCopy], Batch]] = []  # the previous batch, once computed
    carry: list[Partial] | None = None  # the parts so far of a row computed in parts
    dropped: set[int] = set()  # rows in parts that failed to read (skipped)

    def collect() -> None:
        """Write the results of the batch in flight (waiting for their transfer)."""
        if in_flight:
            copies, batch = in_flight.pop()
            for copy in copies:
                with clock("device to host"):
                    got = copy.wait()
                with clock("write"):
                    _keep(behind, copy.rows, *got, cfg.skip_bad, m.ids)
            if batch.ends_window:
                with clock("write"):
                    behind.flush()
            progress.update(batch.finished + len(batch.failed), batch.units)
            progress.over_limit += batch.over_limit

    def partials(batch: Batch, sub: np.ndarray) -> list[Partial]:
        """One partial per fold model of the rows ``sub`` (positions in the batch). Out of
        device memory, a batch is split by rows, and a single row by its windows (pooling sums
        are exact over any split, so stored values do not depend on it)."""
        position = np.full(len(batch.rows), -1)
        position[sub] = np.arange(len(sub))

        def of_pieces(pieces: np.ndarray) -> list[Partial]:
            whole = len(pieces) == len(batch.owner)
            inputs = batch.inputs if whole else encoder.subset(batch.inputs, pieces)
            return [
                encoder.forward_part(
                    loaded_models.models[k],
                    inputs,
                    position[batch.owner[pieces]],
                    n_rows=len(sub),
                    layers=layers,
                    device=device,
                    autocast=autocast,
                    sequence_layer=sequence_layer,
                    sequence_cap=cfg.sequence_length,
                    clock=clock,
                )
                for k in batch.models
            ]

        pieces = np.flatnonzero(np.isin(batch.owner, sub))
        if len(sub) > 1:
            return of_pieces(pieces)
        done = _split_on_oom(of_pieces, pieces, "windows of one row")
        return [sum(parts[1:], parts[0]) for parts in zip(*(got for _, got in done))]

    def finished(batch: Batch, parts: list[Partial]) -> EncoderOutput:
        """The rows' outputs: each fold model's pooled values, then their mean."""
        return EncoderOutput.mean(
            [
                encoder.finish(
                    loaded_models.models[k], p, layers=layers, device=device, autocast=autocast
                )
                for k, p in zip(batch.models, parts)
            ]
        )

    loop_start = time.perf_counter()
    try:
        with inference_context(device, autocast):
            while True:
                start = time.perf_counter()
                batch = next(batches, None)
                if batch is None:
                    break
                waited = time.perf_counter() - start
                clock.add(encoder.input_stage, batch.input_seconds)
                # Without workers the main process decodes: count that once, as decoding.
                clock.add("waiting for input", waited - (0 if workers else batch.input_seconds))
                for r, err in batch.failed:  # a row that passed the checks but cannot be read
                    if not cfg.skip_bad:
                        raise type(err)(  # the same kind of error, naming the row
                            f"row {printable(m.ids[r])!r}: {err}; fix it, or pass --skip-bad "
                            "to record and skip such rows"
                        ) from err
                    behind.skip([r], str(err))
                    if batch.part is not None:  # its other parts are dropped with it
                        dropped.add(r)
                        carry = None
                if batch.part is not None and len(batch.rows) and int(batch.rows[0]) in dropped:
                    batch.rows = batch.rows[:0]
                copies = []
                if len(batch.rows):
                    done = _split_on_oom(
                        partial(partials, batch), np.arange(len(batch.rows)), "rows"
                    )
                    if batch.part is not None:  # a part of one long row: add it to the others
                        got = done[0][1]
                        carry = got if carry is None else [a + b for a, b in zip(carry, got)]
                        done = [(done[0][0], carry)] if batch.last_part else []
                        if batch.last_part:
                            carry = None
                    copies = [
                        HostCopy(
                            batch.rows[sub],
                            finished(batch, parts),
                            names=names,
                            pooling=cfg.pooling,
                        )
                        for sub, parts in done
                    ]
                collect()  # the previous batch, while the device computes this one
                in_flight.append((copies, batch))
            collect()
    except BaseException:
        # Rows computed before the failure are kept, not recomputed (unless they are the failure).
        with contextlib.suppress(Exception):
            collect()
        raise
    finally:
        stop_workers(inputs_iter)  # now, not when a traceback lets go of the loader
        progress.bar.close()
        with clock("write"):
            behind.flush()
    loop = time.perf_counter() - loop_start
    rate = f"{progress.audio_s / loop:.1f} audio-s/s, " if progress.audio_s else ""
    limited = (
        f"; {progress.over_limit} row(s) {encoder.limit_effect}" if progress.over_limit else ""
    )
    tqdm.write(
        f"[{writer.path.name}] {progress.bar.n} rows in {loop:.1f} s ({rate}"
        f"{progress.bar.n / loop:.1f} utt/s){limited}; {clock.summary(workers, encoder.input_stage)}; {peak_memory(device)}"
    )
    return {
        "seconds": round(loop, 3),
        "rows": int(progress.bar.n),
        "audio_seconds": round(progress.audio_s, 3),
        "stages": {k: round(v, 3) for k, v in clock.seconds.items()},
        "workers": workers,
        "device": device,
        "peak_memory": peak_memory(device),
        # Rows of this session whose input exceeded the limit (truncated text, windowed audio).
        "over_limit": {"rows": int(progress.over_limit), "effect": encoder.limit_effect},
    }


def window_rows(cfg: ExtractConfig) -> int:
    """Rows per write window (``--flush-rows``; default 2048, 256 with sequences, whose rows
    take ~1 MB each). Larger windows give fuller same-length batches and larger writes."""
    if cfg.flush_rows is not None:
        return cfg.flush_rows
    return 256 if cfg.sequence else 2048


class Timings:
    """Seconds spent per stage of extraction. Decoding runs in the input workers, beside the
    rest; on CUDA "forward" and "pool" count the host's time to launch them (the device runs
    behind), and waiting for the device shows in "device to host"."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def summary(self, workers: int, input_stage: str) -> str:
        """One line; ``input_stage`` (decode, tokenise) is said to run where the workers are."""
        where = f"in {workers} worker process(es)" if workers else "in the main process"
        return "time: " + ", ".join(
            f"{stage} {sec:.1f} s" + (f" ({where})" if stage == input_stage else "")
            for stage, sec in self.seconds.items()
        )


class HostCopy:
    """The encoder outputs of some rows on their way to host memory: every pooled layer, the extras and
    the logits in one transfer (the sequences in a second), started without waiting for the
    device (CUDA) and collected by :meth:`wait`."""

    def __init__(self, rows: np.ndarray, feats: EncoderOutput, *, names, pooling: str):
        self.rows = rows
        parts = {}
        for name, i in names:
            mean, std = feats.pooled[i]
            parts[name] = torch.cat([mean, std], dim=1) if pooling == "mean+std" else mean
        parts.update(feats.extra)
        if feats.logits is not None:
            parts["/logits"] = feats.logits
        self.names, self.widths = list(parts), [v.shape[1] for v in parts.values()]
        tensors = [torch.cat([v.float() for v in parts.values()], dim=1)]
        self.lengths = None
        if feats.sequences is not None:
            self.lengths = [len(x) for x in feats.sequences]
            tensors.append(torch.cat(feats.sequences))
        self.event = None
        if tensors[0].is_cuda:
            pinned = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
            for host, t in zip(pinned, tensors):
                host.copy_(t, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
            tensors = pinned
        self.tensors = tensors

    def wait(self) -> tuple[dict[str, np.ndarray], np.ndarray | None, list[np.ndarray] | None]:
        """(embeddings by name, logits, per-row sequences) as host arrays."""
        if self.event is not None:
            self.event.synchronize()
        # Pinned buffers go back to torch's cache at once; the store buffer keeps plain copies.
        host = [t.numpy().copy() if self.event is not None else t.numpy() for t in self.tensors]
        bounds = np.cumsum([0, *self.widths])
        values = {k: host[0][:, a:b] for k, a, b in zip(self.names, bounds[:-1], bounds[1:])}
        logits = values.pop("/logits", None)
        sequences = None
        if self.lengths is not None:
            sequences = np.split(host[1], np.cumsum(self.lengths)[:-1])
        return values, logits, sequences


def _keep(writer, rows, emb, logits, sequences, skip_bad: bool, ids) -> None:
    """Buffer computed rows; rows whose values are not finite are never marked done: an error
    naming them, or with ``skip_bad`` skipped with that reason."""
    finite = np.ones(len(rows), bool)
    for values in [*emb.values(), *([logits] if logits is not None else [])]:
        finite &= np.isfinite(values).all(axis=1)
    if sequences is not None:
        finite &= np.array([np.isfinite(x).all() for x in sequences])
    if not finite.all():
        bad = np.asarray(rows)[~finite]
        if not skip_bad:
            raise EmofeatError(
                f"non-finite embeddings or logits for {len(bad)} row(s), e.g. id {ids[bad[0]]!r}; "
                "check those inputs, or pass --skip-bad to record and skip them"
            )
        writer.skip(bad, "non-finite embeddings or logits")
    keep = np.flatnonzero(finite)
    writer.add(
        np.asarray(rows)[keep],
        logits=logits[keep] if logits is not None else None,
        embeddings={k: v[keep] for k, v in emb.items()},
        sequences={"last": [sequences[j] for j in keep]} if sequences is not None else None,
    )


class WriteBehind:
    """Buffers computed rows and writes them in few large writes: the rows of a window (see
    :mod:`emofeat.extract.inputs`) are one contiguous block of the store. Rows are marked done only when
    flushed, so a kill loses at most the buffer (recomputed on resume), never correctness.
    Flushes when asked (end of a window), after ``seconds`` (slow models: a kill loses little
    compute), and at the end."""

    def __init__(self, writer, seconds: float = 5.0):
        self.writer, self.seconds = writer, seconds
        self.parts: list[tuple[np.ndarray, Any, dict, dict | None]] = []
        self.last = time.perf_counter()

    def add(self, rows, *, logits=None, embeddings=None, sequences=None) -> None:
        self.parts.append((np.asarray(rows), logits, embeddings or {}, sequences))
        if time.perf_counter() - self.last >= self.seconds:
            self.flush()

    def skip(self, rows, reason: str) -> None:
        self.writer.skip(rows, reason)

    @property
    def path(self):
        return self.writer.path

    def flush(self) -> None:
        if self.writer.failed:  # the failure is being reported; these rows are recomputed
            self.parts = []
            return
        if self.parts:
            rows = np.concatenate([p[0] for p in self.parts])
            logits = (
                np.concatenate([p[1] for p in self.parts]) if self.parts[0][1] is not None else None
            )
            emb = {k: np.concatenate([p[2][k] for p in self.parts]) for k in self.parts[0][2]}
            seqs = None
            if self.parts[0][3] is not None:
                seqs = {k: [x for p in self.parts for x in p[3][k]] for k in self.parts[0][3]}
            self.writer.write(rows, logits=logits, embeddings=emb, sequences=seqs)
        self.parts, self.last = [], time.perf_counter()
