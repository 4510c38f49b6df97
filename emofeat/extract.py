"""Batched, resumable extraction of pooled embeddings and logits into a feature store.

With a fine-tuned run (``run=runs/NAME``) each train row's logits and embeddings come from the
fold model that did not see it (out-of-fold); test rows get the mean over the fold models (logits
and embeddings alike). The run's options (reverse, max_len, ...) are applied. Without a run the
pretrained encoder gives frozen embeddings only, no logits.

Speed: speech batches are formed by total duration over length-sorted clips (little padding),
long clips are cut into ``max_seconds`` windows whose frames are pooled together, the next batch
is decoded in a background thread while the current one computes, forward passes run under
``torch.inference_mode`` and optional bf16/fp16 autocast, and on CUDA out-of-memory a batch is
split in two and retried. One forward pass per batch yields every requested layer and the logits;
pooling is masked, so stored values do not depend on batching.

Resumable: the store records which rows are done; re-running the same command computes only the
rest. Under ``torchrun --nproc_per_node N`` each rank fills a shard and rank 0 merges them.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from emofeat import labels as L
from emofeat.audio import AudioError, duration, load_audio
from emofeat.corpus.manifest import Manifest, read_manifest
from emofeat.encoders import ModelSpec, resolve
from emofeat.errors import EmofeatError
from emofeat.finetune import fold_dirs, load_fold_model, pick_device, read_run_config
from emofeat.store import merge_stores, open_writer

log = logging.getLogger(__name__)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ExtractConfig:
    """Options of one extraction; those in ``VALUE_KEYS`` decide the stored values."""

    model: str | None = None
    model_path: str | None = None
    run: str | None = None
    layers: str = "last"  # last | all | comma-separated hidden-state indices (0 = input embeddings)
    pooling: str = "mean"  # mean | mean+std
    batch_seconds: float | None = (
        None  # speech: padded audio s per batch (None: 64 on GPU, 12 on CPU)
    )
    batch_size: int = 32  # text: utterances per batch
    dtype: str = "float32"
    device: str = "auto"
    precision: str = "fp32"
    max_seconds: float = 20.0  # speech: longer clips are windowed
    max_len: int | None = None  # text: token limit (default: the run's, else 64)
    reverse: bool | None = None  # speech: default the run's
    skip_bad: bool = False
    overwrite: bool = False
    workers: int = 1  # audio-decoding threads


VALUE_KEYS = (
    "model",
    "model_path",
    "run",
    "layers",
    "pooling",
    "dtype",
    "precision",
    "max_seconds",
    "max_len",
    "reverse",
)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX). Elsewhere torch emulates it:
    measured on an AVX2-only AMD EPYC here, a bf16 matmul was ~140x slower than fp32."""
    capability = torch.backends.cpu.get_cpu_capability().upper()
    if "BF16" in capability or "AMX" in capability:
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def layer_names(spec: str, num_hidden: int) -> list[tuple[str, int]]:
    """(dataset name, hidden-state index) pairs; ``num_hidden`` counts hidden states (L + 1)."""
    if spec == "last":
        return [("last", num_hidden - 1)]
    if spec == "all":
        return [(f"layer_{i:02d}", i) for i in range(num_hidden)]
    out = []
    for part in spec.split(","):
        part = part.strip()
        if part == "last":
            out.append(("last", num_hidden - 1))
            continue
        try:
            i = int(part)
        except ValueError:
            raise EmofeatError(
                f"--layers {spec!r}: expected last, all or indices like 0,6,12"
            ) from None
        if not 0 <= i < num_hidden:
            raise EmofeatError(
                f"--layers: index {i} outside 0..{num_hidden - 1} (this model has {num_hidden - 1} layers)"
            )
        out.append((f"layer_{i:02d}", i))
    return out


def sha256_of_weights(folders: list[str]) -> str:
    """sha256 over the weight files of local model folders (in order); '' for hub ids."""
    h = hashlib.sha256()
    found = False
    for folder in folders:
        p = Path(folder)
        if not p.is_dir():
            return ""
        for f in sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin")):
            found = True
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest() if found else ""


# ----------------------------------------------------------------------------------- featurizers
class Featurizer:
    """Runs a model on a batch of rows and returns pooled embeddings per layer and logits."""

    def __init__(
        self,
        models: list,
        processor,
        spec: ModelSpec,
        cfg: ExtractConfig,
        device: str,
        has_head: bool,
        sample_rate: int,
    ):
        self.models, self.processor, self.spec, self.cfg = models, processor, spec, cfg
        self.device, self.has_head, self.sample_rate = device, has_head, sample_rate
        self.autocast = PRECISIONS[cfg.precision]
        for m in models:
            m.to(device).eval()

    def _ctx(self):
        if self.autocast is None:
            return torch.autocast(self.device.split(":")[0], enabled=False)
        return torch.autocast(self.device.split(":")[0], dtype=self.autocast)

    def num_hidden(self) -> int:
        cfg = self.models[0].config
        return cfg.num_hidden_layers + 1


def _mean_std(
    s: torch.Tensor, sq: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation from sums, sums of squares and counts."""
    mean = s / c[:, None]
    return mean, (sq / c[:, None] - mean * mean).clamp(min=0).sqrt()


def _pool(
    hidden: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masked sums, sums of squares and frame counts, in float32."""
    h = hidden.float()
    m = mask.to(h.dtype).unsqueeze(-1)
    return (h * m).sum(1), (h * h * m).sum(1), m.sum(1).squeeze(-1)


class SpeechFeaturizer(Featurizer):
    """wav2vec2-family models: windows, masked pooling, head on the pooled last layer."""

    def load(self, path: Path, reverse: bool) -> list[np.ndarray]:
        x = load_audio(path, self.sample_rate, reverse)
        win = int(self.cfg.max_seconds * self.sample_rate)
        if len(x) <= win:
            pieces = [x]
        else:
            pieces = [x[i : i + win] for i in range(0, len(x), win)]
            if (
                len(pieces) > 1 and len(pieces[-1]) < win // 4
            ):  # fold a short tail into its neighbour
                pieces[-2] = np.concatenate([pieces[-2], pieces.pop()])
        return [
            np.pad(p, (0, self.min_len - len(p))) if len(p) < self.min_len else p for p in pieces
        ]

    @property
    def min_len(self) -> int:
        from emofeat.encoders.speech import min_samples

        if not hasattr(self, "_min_len"):
            self._min_len = min_samples(self._encoder(self.models[0]))
        return self._min_len

    def _encoder(self, model):
        return model.encoder if self.has_head else model

    def forward(
        self, model, pieces: list[np.ndarray], owner: np.ndarray, n_rows: int, layers: list[int]
    ):
        fe = self.processor
        enc = fe(
            pieces,
            sampling_rate=self.sample_rate,
            padding=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        values = enc["input_values"].to(self.device)
        lengths = torch.tensor([len(p) for p in pieces])
        use_mask = bool(getattr(fe, "return_attention_mask", True))
        attn = enc["attention_mask"].to(self.device) if use_mask else None
        encoder = self._encoder(model)
        with self._ctx():
            out = encoder(values, attention_mask=attn, output_hidden_states=True)
        hs = out.hidden_states
        t = hs[-1].shape[1]
        frames = encoder._get_feat_extract_output_lengths(lengths).to(self.device)
        mask = torch.arange(t, device=self.device)[None, :] < frames[:, None]
        own = torch.as_tensor(owner, device=self.device)
        pooled = {}
        for i in sorted(set(layers) | ({len(hs) - 1} if self.has_head else set())):
            s, sq, c = _pool(hs[i], mask)
            S = torch.zeros(n_rows, s.shape[1], device=self.device).index_add_(0, own, s)
            SQ = torch.zeros_like(S).index_add_(0, own, sq)
            C = torch.zeros(n_rows, device=self.device).index_add_(0, own, c)
            pooled[i] = _mean_std(S, SQ, C)
        logits = None
        if self.has_head:
            with self._ctx():
                logits = model.head(pooled[len(hs) - 1][0].to(hs[-1].dtype)).float()
        return pooled, logits


class TextFeaturizer(Featurizer):
    """BERT-like models: masked mean over tokens per layer, the pooler output, classifier logits."""

    def forward(self, model, texts: list[str], layers: list[int]):
        enc = self.processor(
            texts,
            truncation=True,
            max_length=self.cfg.max_len,
            padding=True,
            return_tensors="pt",
            return_token_type_ids=True,
        )
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with self._ctx():
            out = model(**enc, output_hidden_states=True)
        hs = out.hidden_states
        mask = enc["attention_mask"].bool()
        pooled = {}
        for i in set(layers):
            pooled[i] = _mean_std(*_pool(hs[i], mask))
        base = model.base_model
        pooler = getattr(base, "pooler", None)
        pooler_out = None
        if pooler is not None:
            with self._ctx():
                pooler_out = pooler(hs[-1]).float()
        logits = out.logits.float() if self.has_head else None
        return pooled, logits, pooler_out


# -------------------------------------------------------------------------------------- batching
def duration_batches(
    rows: np.ndarray, durations: np.ndarray, budget_s: float, max_s: float, max_ratio: float = 1.1
) -> list[np.ndarray]:
    """Rows sorted by duration, cut into batches whose padded duration stays within ``budget_s``
    and whose longest piece is at most ``max_ratio`` times the shortest (so padding stays under
    ~10 % of frames). A batch's padded cost is (pieces) x (longest piece); clips longer than
    ``max_s`` count as several windows."""
    order = np.argsort(durations, kind="stable")
    batches, cur, longest, shortest, pieces = [], [], 0.0, 0.0, 0
    for j in order:
        d = float(durations[j])
        n_pieces = int(np.ceil(d / max_s)) if d > max_s else 1
        piece = min(d, max_s)
        if cur and (
            max(longest, piece) * (pieces + n_pieces) > budget_s or piece > shortest * max_ratio
        ):
            batches.append(rows[np.array(cur)])
            cur, pieces = [], 0
        if not cur:
            shortest, longest = piece, piece
        cur.append(j)
        longest, pieces = max(longest, piece), pieces + n_pieces
    if cur:
        batches.append(rows[np.array(cur)])
    return batches


def _split_on_oom(fn, batch: np.ndarray):
    """Run ``fn(batch)``; on CUDA out-of-memory split the batch in halves and retry each."""
    try:
        return [(batch, fn(batch))]
    except torch.cuda.OutOfMemoryError:
        if len(batch) == 1:
            raise
        torch.cuda.empty_cache()
        half = len(batch) // 2
        log.warning(
            "CUDA out of memory on a batch of %d; retrying as %d + %d",
            len(batch),
            half,
            len(batch) - half,
        )
        return _split_on_oom(fn, batch[:half]) + _split_on_oom(fn, batch[half:])


# ------------------------------------------------------------------------------------------ main
def extract(manifest: str | Path | Manifest, out: str | Path, cfg: ExtractConfig) -> Path:
    """Extract a store for every row of ``manifest`` into ``out`` (resumable); returns ``out``."""
    m = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    out = Path(out)
    cfg = dataclasses.replace(cfg)
    if cfg.precision not in PRECISIONS:
        raise EmofeatError(f"--precision must be one of {list(PRECISIONS)}")
    device = pick_device(cfg.device)
    if cfg.batch_seconds is None:
        # Measured on 2 CPU cores (wav2vec2-base, clips 1-12 s): batching gains nothing on a CPU
        # and padding costs, so CPU batches stay small; GPUs want large ones.
        cfg.batch_seconds = 64.0 if device == "cuda" else 12.0
    if device == "cpu" and cfg.precision == "fp16":
        raise EmofeatError(
            "--precision fp16 needs a GPU; on CPU use bf16 (fast on CPUs with AVX512-BF16/AMX) or fp32"
        )
    if cfg.pooling not in ("mean", "mean+std"):
        raise EmofeatError(f"--pooling must be mean or mean+std, got {cfg.pooling!r}")

    run_cfg: dict[str, Any] = {}
    if cfg.run:
        run_cfg = read_run_config(cfg.run)
        # The fold folders hold the tokenizer or feature extractor; the spec only says what it is.
        spec = ModelSpec(run_cfg["model"], run_cfg["modality"], run_cfg["source"], False)
        dirs = fold_dirs(cfg.run)
        loaded = [load_fold_model(d, spec.modality) for d in dirs]
        models, processor = [x[0] for x in loaded], loaded[0][1]
        label_names = list(run_cfg.get("label_names") or L.LABEL_NAMES)
        weight_sources = [str(d) for d in dirs]
        cfg.reverse = bool(run_cfg.get("reverse", False)) if cfg.reverse is None else cfg.reverse
        cfg.max_len = cfg.max_len or int(run_cfg.get("max_len", 64))
        sample_rate = int(run_cfg.get("sample_rate", 16000))
    else:
        if not cfg.model:
            raise EmofeatError("give --model (frozen encoder) or --run (fine-tuned run)")
        spec = resolve(cfg.model, cfg.model_path)
        dirs = []
        if spec.modality == "text":
            from transformers import AutoModel

            from emofeat.encoders import local_source
            from emofeat.encoders.text import load_tokenizer

            models = [AutoModel.from_pretrained(local_source(spec.source))]
            processor = load_tokenizer(spec)
        else:
            from emofeat.encoders.speech import load_feature_extractor, load_speech_encoder

            models, processor = (
                [load_speech_encoder(spec.source)],
                load_feature_extractor(spec.source),
            )
        label_names = list(L.LABEL_NAMES)
        weight_sources = [spec.source]
        cfg.reverse = bool(cfg.reverse)
        cfg.max_len = cfg.max_len or 64
        sample_rate = int(getattr(processor, "sampling_rate", 16000) or 16000)

    has_head = bool(cfg.run)
    feat_cls = TextFeaturizer if spec.modality == "text" else SpeechFeaturizer
    feat = feat_cls(models, processor, spec, cfg, device, has_head, sample_rate)
    names = layer_names(cfg.layers, feat.num_hidden())
    hidden = models[0].config.hidden_size
    width = hidden * (2 if cfg.pooling == "mean+std" else 1)
    emb_dims = {n: width for n, _ in names}
    if spec.modality == "text" and getattr(models[0].base_model, "pooler", None) is not None:
        emb_dims["pooler"] = hidden

    # Which model(s) predict which rows: out-of-fold for train rows, mean of the folds for the rest.
    n_models = len(models)
    oof = bool(cfg.run) and run_cfg.get("folds", 0) > 0
    fold = m.fold
    groups: list[tuple[list[int], np.ndarray]] = []
    if oof:
        for k in range(n_models):
            groups.append(([k], np.flatnonzero((m.split == "train") & (fold == k))))
        groups.append(
            (
                list(range(n_models)),
                np.flatnonzero((m.split != "train") | (fold < 0) | (fold >= n_models)),
            )
        )
    else:
        groups.append((list(range(n_models)), np.arange(len(m))))

    value_config = {k: getattr(cfg, k) for k in VALUE_KEYS}
    attrs = {
        "model_id": spec.source if not cfg.run else run_cfg.get("source", ""),
        "model_revision": getattr(models[0].config, "_commit_hash", None) or "",
        "checkpoint_sha256": sha256_of_weights(weight_sources),
        "modality": spec.modality,
        "pooling": cfg.pooling,
        "layers": [n for n, _ in names],
        "sample_rate": sample_rate if spec.modality == "speech" else 0,
        "max_len": cfg.max_len if spec.modality == "text" else cfg.max_seconds,
        "text_mode": m.prepared_config.get("text", ""),
        "reverse": bool(cfg.reverse),
        "precision": cfg.precision,
        "split_scheme": m.split_scheme,
        "run": str(cfg.run or ""),
        "out_of_fold": oof,
        "config": value_config,
    }
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    target = out if world == 1 else out.with_name(f"{out.stem}.rank{rank}{out.suffix}")
    if world > 1 and out.exists() and not cfg.overwrite:
        raise EmofeatError(
            f"{out} exists; multi-process extraction writes shards and merges them: pass --overwrite or remove it"
        )
    writer = open_writer(
        target,
        m.ids,
        m.label_indices,
        m.split,
        fold,
        label_names,
        emb_dims,
        has_head,
        cfg.dtype,
        attrs,
        overwrite=cfg.overwrite,
    )
    try:
        pending = np.zeros(len(m), bool)
        pending[writer.pending] = True
        if world > 1:
            mine = np.zeros(len(m), bool)
            mine[rank::world] = True
            pending &= mine
        _run(m, feat, writer, groups, pending, names, cfg, spec.modality)
        complete = writer.finalize()
    finally:
        writer.close()
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        dist.barrier()
        if rank == 0:
            shards = [out.with_name(f"{out.stem}.rank{r}{out.suffix}") for r in range(world)]
            merge_stores(shards, out)
            for s in shards:
                s.unlink()
        dist.barrier()
    elif not complete:
        log.warning("%s: some rows were skipped (see `emofeat store inspect`)", out)
    return out


class _Progress:
    """A tqdm bar in utterances with an audio-seconds-per-second rate."""

    def __init__(self, total: int, name: str):
        self.bar = tqdm(total=total, unit="utt", desc=f"extract {name}", dynamic_ncols=True)
        self.audio_s, self.t0 = 0.0, time.perf_counter()

    def update(self, n: int, audio_s: float = 0.0) -> None:
        self.bar.update(n)
        if audio_s:
            self.audio_s += audio_s
            self.bar.set_postfix(
                audio_s_per_s=f"{self.audio_s / (time.perf_counter() - self.t0):.1f}"
            )


def _run(
    m: Manifest,
    feat: Featurizer,
    writer,
    groups,
    pending: np.ndarray,
    names,
    cfg: ExtractConfig,
    modality: str,
) -> None:
    """Compute the pending rows, group by group (a group: rows and the fold models they need)."""
    todo = [(mods, rows[pending[rows]]) for mods, rows in groups]
    todo = [(mods, rows) for mods, rows in todo if len(rows)]
    if not todo:
        return
    progress = _Progress(sum(len(r) for _, r in todo), writer.path.name)
    pool = ThreadPoolExecutor(max_workers=max(1, cfg.workers))
    run_group = _speech_group if modality == "speech" else _text_group
    try:
        for mods, rows in todo:
            run_group(m, feat, writer, mods, rows, names, cfg, progress, pool)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        progress.bar.close()


def _speech_group(m, feat, writer, mods, rows, names, cfg, progress, pool) -> None:
    layer_idx = [i for _, i in names]
    durations = np.zeros(len(rows))
    ok = np.ones(len(rows), bool)
    for j, r in enumerate(rows):
        try:
            durations[j] = duration(m.audio_path(r))
        except AudioError as err:
            if not cfg.skip_bad:
                raise
            writer.skip([r], str(err))
            ok[j] = False
            progress.update(1)
    batches = duration_batches(rows[ok], durations[ok], cfg.batch_seconds, cfg.max_seconds)

    def load(batch):
        """Decoded windows per row, or the error text of a row that cannot be decoded."""
        out = []
        for r in batch:
            try:
                out.append(feat.load(m.audio_path(r), bool(cfg.reverse)))
            except AudioError as err:
                if not cfg.skip_bad:
                    raise
                out.append(str(err))
        return out

    def compute(sub, waves):
        pieces, owner = [], []
        for j, r in enumerate(sub):
            for p in waves[int(r)]:
                pieces.append(p)
                owner.append(j)
        outs = [
            feat.forward(feat.models[k], pieces, np.array(owner), len(sub), layer_idx) for k in mods
        ]
        return _combine(outs, None)

    future = pool.submit(load, batches[0]) if batches else None
    for b, batch in enumerate(batches):
        loaded = future.result()
        if b + 1 < len(batches):  # decode the next batch while this one computes
            future = pool.submit(load, batches[b + 1])
        waves = {}
        for r, x in zip(batch, loaded):
            if isinstance(x, str):
                writer.skip([r], x)
            else:
                waves[int(r)] = x
        if waves:
            with torch.inference_mode():
                for sub, (pooled, logits, _) in _split_on_oom(
                    functools.partial(compute, waves=waves), np.array(list(waves))
                ):
                    _write(writer, sub, pooled, logits, None, names, cfg)
        progress.update(
            len(batch), sum(len(p) for x in waves.values() for p in x) / feat.sample_rate
        )


def _text_group(m, feat, writer, mods, rows, names, cfg, progress, pool) -> None:
    layer_idx = [i for _, i in names]
    texts = m.frame["text"].to_numpy(dtype=object)
    empty = [r for r in rows if not str(texts[r]).strip()]
    if empty and not cfg.skip_bad:
        raise EmofeatError(
            f"{len(empty)} empty transcript(s), e.g. id {m.ids[empty[0]]!r}; pass --skip-bad to record and skip them"
        )
    for r in empty:
        writer.skip([r], "empty text")
    progress.update(len(empty))
    rows = np.array([r for r in rows if str(texts[r]).strip()], dtype=int)
    rows = rows[np.argsort([len(texts[r]) for r in rows], kind="stable")]

    def compute(sub):
        outs = [feat.forward(feat.models[k], [texts[r] for r in sub], layer_idx) for k in mods]
        return _combine([(p, lg) for p, lg, _ in outs], [po for _, _, po in outs])

    for start in range(0, len(rows), cfg.batch_size):
        batch = rows[start : start + cfg.batch_size]
        with torch.inference_mode():
            for sub, (pooled, logits, pooler) in _split_on_oom(compute, batch):
                _write(writer, sub, pooled, logits, pooler, names, cfg)
        progress.update(len(batch))


def _combine(outs, poolers):
    """Average the pooled values and logits of several models (one per fold) on the same rows."""
    n = len(outs)
    pooled = {
        i: (sum(o[0][i][0] for o in outs) / n, sum(o[0][i][1] for o in outs) / n)
        for i in outs[0][0]
    }
    logits = sum(o[1] for o in outs) / n if outs[0][1] is not None else None
    pooler = sum(poolers) / n if poolers and poolers[0] is not None else None
    return pooled, logits, pooler


def _write(writer, rows, pooled, logits, pooler, names, cfg: ExtractConfig) -> None:
    emb = {}
    for name, i in names:
        mean, std = pooled[i]
        v = torch.cat([mean, std], dim=1) if cfg.pooling == "mean+std" else mean
        emb[name] = v.cpu().numpy()
    if pooler is not None:
        emb["pooler"] = pooler.cpu().numpy()
    writer.write(rows, logits=logits.cpu().numpy() if logits is not None else None, embeddings=emb)
