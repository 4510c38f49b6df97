"""Fine-tuning throughput: `emofeat finetune` against a bare torch loop over the same batches.

Per case, one model trained for ``--epochs`` on ``--rows`` labelled rows (one model on all train
rows, ``folds 0``), measured two ways on ``--device cpu|cuda``:
  * emofeat finetune - the library call as users make it (Trainer, length-grouped batches,
                       inputs read and collated by its DataLoader); rate from Trainer's own
                       ``train_samples_per_second`` (the training loop, models already loaded);
  * bare loop        - the same classifier, the same batches pre-built and already collated in
                       memory, AdamW with the same learning rate, clipping and schedule: forward,
                       backward, step; nothing else.
Cases: ``wav2vec2`` (a deep, narrow proxy on the CPU: 24 layers of width 16 over an 8-channel
CNN with the large model's layer-norm feature encoder, its depth at little compute, so the
host's work around the model is what is measured; the XLS-R large architecture with
``--size full``) and ``kobert`` (12 layers of width
64 on the CPU; BERT-base with ``--size full``). Targets (issue 25): emofeat >= 0.9 x the bare
loop's samples/s (the median of ``--repeats`` interleaved rounds' ratios), padding <= 10 % of the input
frames. One JSON line per case.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_data
from extract_bench import machine, paired_ratios


def corpus(out: Path, rows: int, seed: int) -> Path:
    """Labelled clips of 1-6 s with transcripts, prepared as one train split."""
    path, _ = bench_data.manifest(
        out, "clip", rows, seed=seed, audio=(1.0, 6.0), text=True, labels=True
    )
    return path


def build(case: str, size: str, out: Path, manifest: Path) -> Path:
    """The case's model folder (random weights, the hub's on-disk format)."""
    folder = out / f"{case}-{size}"
    if (folder / "config.json").is_file():
        return folder
    if case == "kobert":
        from emofeat.corpus.manifest import read_manifest
        from emofeat.testing.tiny import build_tiny_kobert

        hidden, layers = (768, 12) if size == "full" else (64, 12)
        return build_tiny_kobert(
            folder, list(read_manifest(manifest).frame["text"]), hidden=hidden, layers=layers
        )
    from extract_bench import SIZES
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        **SIZES["large" if size == "full" else "deep"], mask_time_prob=0.0, layerdrop=0.0
    )
    Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True).save_pretrained(folder)
    return folder


def options(case: str, folder: Path, args) -> dict:
    model = (
        {"model": "kobert", "model_path": str(folder)}
        if case == "kobert"
        else {"model": str(folder)}
    )
    return dict(
        **model,
        folds=0,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=1e-4,
        warmup_ratio=0.0,
        scheduler="linear",
        dropout=0.1,
        freeze_feature_encoder=False,
        batch_order="length",
        device=args.device,
        max_len=64,
    )


def emofeat_run(manifest: Path, out: Path, opts: dict) -> dict:
    from emofeat.finetune.config import resolve_config
    from emofeat.finetune.run import finetune

    start = time.perf_counter()
    finetune(manifest, out, resolve_config(**opts), overwrite=True)
    wall = time.perf_counter() - start
    history = json.loads((out / "fold-all" / "log_history.json").read_text())
    final = next(h for h in reversed(history) if "train_samples_per_second" in h)
    return {
        "samples_per_s": final["train_samples_per_second"],
        "train_runtime_s": final["train_runtime"],
        "whole_call_s": round(wall, 2),
    }


def padding(order, units: np.ndarray, size: int) -> float:
    """Fraction of the input frames (samples, tokens) that are padding when the DataLoader cuts
    ``order`` into batches of ``size``."""
    batches = [units[order[i : i + size]] for i in range(0, len(order), size)]
    return 1 - units.sum() / sum(b.max() * len(b) for b in batches)


def prebuilt_batches(manifest: Path, opts: dict):
    """The batches emofeat's length-bucketing sampler makes for Trainer (same seed), collated in
    memory, and the fraction of input frames that are padding in them and in the batches
    transformers' LengthGroupedSampler would make of the same rows (same seed)."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from emofeat.corpus.manifest import read_manifest
    from emofeat.crossfit import FoldPlan
    from emofeat.encoders import resolve
    from emofeat.finetune.config import resolve_config
    from emofeat.finetune.run import LengthBucketSampler, UtteranceDataset, build_model

    m = read_manifest(manifest)
    cfg = resolve_config(**opts)
    spec = resolve(cfg.model, cfg.model_path)
    _, encoder, min_len = build_model(spec, cfg, m.label_names)
    rows = FoldPlan.from_manifest(m).train_rows
    checked = encoder.check_rows(m, rows, skip_bad=False, min_length=min_len)
    data = UtteranceDataset(m, checked.good, encoder, min_len=min_len)
    collate = encoder.collator()
    items = [data[j] for j in range(len(data))]
    if spec.modality == "speech":  # input frames: samples, or tokens
        units = np.array([len(it["input"]) for it in items])
    else:
        units = np.array([int(collate([it])["attention_mask"].sum()) for it in items])
    size = cfg.batch_size
    bucket = list(LengthBucketSampler(checked.lengths, size, seed=cfg.seed))
    grouped = list(
        LengthGroupedSampler(size, lengths=list(checked.lengths), generator=_seeded(cfg.seed))
    )
    batches = [
        collate([items[j] for j in bucket[i : i + size]]) for i in range(0, len(bucket), size)
    ]
    pads = {"bucket": padding(bucket, units, size), "length_grouped": padding(grouped, units, size)}
    return batches, pads, cfg


def fresh_model(opts: dict):
    """The classifier emofeat would start from (the same seed), for one bare run."""
    from emofeat.encoders import resolve
    from emofeat.finetune.config import resolve_config
    from emofeat.finetune.run import build_model

    cfg = resolve_config(**opts)
    torch.manual_seed(cfg.seed)
    from emofeat.corpus.labels import LABEL_NAMES

    return build_model(resolve(cfg.model, cfg.model_path), cfg, LABEL_NAMES)[0]


def _seeded(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def bare_loop(model, batches, cfg, device: str, epochs: float) -> float:
    """Samples per second of forward, backward, clip, AdamW step over in-memory batches."""
    from transformers import get_scheduler

    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = int(len(batches) * epochs)
    sched = get_scheduler(cfg.scheduler, opt, num_warmup_steps=0, num_training_steps=steps)
    on_device = [{k: v.to(device) for k, v in b.items()} for b in batches]
    samples = 0
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for step in range(steps):
        batch = on_device[step % len(on_device)]
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        samples += len(batch["labels"])
    if device == "cuda":
        torch.cuda.synchronize()
    return samples / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench-out/finetune"))
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", choices=["proxy", "full"], default="proxy")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--cases", nargs="*", default=["wav2vec2", "kobert"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="rounds of bare loop and emofeat, interleaved; the ratio is the median of the rounds'",
    )
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    manifest = corpus(out / "data", args.rows, args.seed)
    for case in args.cases:
        folder = build(case, args.size, out / "models", manifest)
        opts = options(case, folder, args)
        batches, pads, cfg = prebuilt_batches(manifest, opts)
        # This 2-core machine drifts by 5-15 % over minutes, as much as the margin measured:
        # rounds interleave the two (alternating which goes first).
        bare, ours = [], []
        for r in range(args.repeats):
            for which in ("bare", "emofeat") if r % 2 == 0 else ("emofeat", "bare"):
                if which == "bare":
                    model = fresh_model(opts)
                    bare.append(round(bare_loop(model, batches, cfg, args.device, args.epochs), 2))
                    del model
                else:
                    ours.append(emofeat_run(manifest, out / "runs" / case, opts))
        rates = [o["samples_per_s"] for o in ours]
        ratio = paired_ratios(rates, bare)  # samples/s: emofeat over the bare loop
        result = {
            "bench": "finetune",
            "case": case,
            "size": args.size,
            "machine": machine(args.device),
            "rows": args.rows,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "padding_fraction": round(pads["bucket"], 4),
            # The same rows batched by transformers' LengthGroupedSampler, for comparison.
            "padding_fraction_length_grouped": round(pads["length_grouped"], 4),
            "repeats": args.repeats,
            "bare_samples_per_s": bare,
            "emofeat_samples_per_s": rates,
            "ratio": ratio["ratio"],
            "ratio_per_round": ratio["per_round"],
            "ratio_of_medians": ratio["of_medians"],
            "emofeat_whole_call_s": [o["whole_call_s"] for o in ours],
        }
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
