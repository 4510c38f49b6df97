"""Extraction throughput: `emofeat extract` against the bare forward passes and a naive loop.

Compares, over the same mixed-length clips (1-12 s), on ``--device cpu|cuda``:
  * emofeat extract   - the library call as users make it (models loaded, workers started,
                        store written), fp32 and bf16 (bf16: CUDA, or a CPU with native bf16);
  * bare forward      - the same model's forward passes over the same batches (emofeat's own
                        plan), inputs encoded beforehand and already on the device;
  * naive loop        - one file at a time through the feature extractor and the model, fp32,
                        each result copied back to the host, as people write it.
With ``--repeats N`` the three alternate for N rounds and every rate is of the medians (this
2-core machine drifts by 5-15 % over minutes); ``--whole-process`` adds fresh processes, in
``--process-repeats`` interleaved rounds. Reports audio seconds per second, the ratios, the padding fraction, the host's share
(extract time minus bare forward time), peak memory, the cosine of bf16 to fp32 pooled
embeddings, and the machine (CPU model, card) - and prints a final JSON line.

Sizes: ``base`` (wav2vec2-base, compute-bound on a CPU), ``deep`` (24 layers of width 16 over an
8-channel CNN, with the large model's layer-norm feature encoder and attention mask: its 25
hidden states at little compute, so the host's work around the model is what is measured) and ``large`` (the XLSR large architecture of
kresnik/wav2vec2-large-xlsr-korean, random weights; a GPU's workload).

Targets (issue 11), loops against loops (neither the bare nor the naive loop loads a model or
creates a store; the whole call is reported beside): CPU base - extract fp32 >= 0.9 x bare,
>= 1.0 x naive, padding <= 10 %;
CPU deep - the host's work (whole call minus bare forward) >= 1,500 audio-s/s; CUDA - extract
bf16 >= 0.9 x bare bf16 and >= 10 x the naive fp32 loop, pooled cosine bf16/fp32 >= 0.9999.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import psutil
import soundfile as sf
import torch


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 10 ms)."""

    def __enter__(self):
        self.proc, self.peak, self.stop = psutil.Process(), 0, False
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while not self.stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()

    @property
    def mb(self) -> float:
        return round(self.peak / 1e6, 1)


SIZES = {
    "base": {},  # Wav2Vec2Config's defaults are the base architecture
    # The large model's shape at little compute: its 24 layers and 25 hidden states, and like
    # it a layer-norm feature encoder that takes an attention mask (so clips are batched; a
    # group-norm model is forwarded one length at a time, a path the large model never takes).
    "deep": dict(
        hidden_size=16,
        num_hidden_layers=24,
        num_attention_heads=4,
        intermediate_size=32,
        conv_dim=(8,) * 7,
        num_conv_pos_embedding_groups=4,
        num_conv_pos_embeddings=16,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
    ),
    # The architecture of facebook/wav2vec2-large-xlsr-53 (and its Korean fine-tune).
    "large": dict(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
    ),
}
LAYERS = {"base": "last", "deep": "all", "large": "all"}


def make_data(out: Path, clips: int, seed: int, size: str = "base") -> tuple[Path, Path, float]:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from emofeat.corpus.prepare import prepare

    rng = np.random.default_rng(seed)
    wavs = out / "wavs"
    wavs.mkdir(parents=True, exist_ok=True)
    rows, total = ["id,audio_path,text,split"], 0.0
    for i in range(clips):
        d = float(rng.uniform(1, 12))
        t = np.arange(int(d * 16000)) / 16000
        x = 0.3 * np.sin(2 * np.pi * (120 + 40 * np.sin(3 * t)) * t) + 0.01 * rng.standard_normal(
            len(t)
        )
        sf.write(wavs / f"c{i:03d}.wav", x.astype(np.float32), 16000, subtype="PCM_16")
        rows.append(f"c{i:03d},wavs/c{i:03d}.wav,,train")
        total += d
    (out / "clips.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    manifest = out / "manifest.csv"
    prepare(manifest, csv=out / "clips.csv", folds=0)
    model_dir = out / f"wav2vec2-{size}-random"
    if not (model_dir / "config.json").is_file():
        torch.manual_seed(seed)
        Wav2Vec2Model(Wav2Vec2Config(**SIZES[size])).save_pretrained(model_dir)
        # Layer-norm models (large) take an attention mask; group-norm ones (base) do not.
        mask = SIZES[size].get("feat_extract_norm") == "layer"
        Wav2Vec2FeatureExtractor(return_attention_mask=mask, do_normalize=True).save_pretrained(
            model_dir
        )
    return manifest, model_dir, total


def run_extract(
    manifest, model_dir, out, precision, device, layers, batch_seconds=None, workers=None
):
    from emofeat.extract.config import ExtractConfig
    from emofeat.extract.run import extract

    store = out / f"bench-{precision}.h5"
    t = time.perf_counter()
    extract(
        manifest,
        store,
        ExtractConfig(
            model=str(model_dir),
            precision=precision,
            batch_seconds=batch_seconds,
            layers=layers,
            overwrite=True,
            device=device,
            workers=workers,
        ),
    )
    return time.perf_counter() - t, store


def prepared_batches(manifest, model_dir, device, batch_seconds):
    """emofeat's own batches of every row, encoded and on the device (what the bare forward
    passes get), and the padding fraction."""
    from transformers import AutoConfig

    from emofeat.corpus.manifest import read_manifest
    from emofeat.encoders.base import InputOptions
    from emofeat.encoders.speech import SpeechEncoder, equal_length_runs
    from emofeat.extract.compute import window_rows
    from emofeat.extract.config import ExtractConfig
    from emofeat.extract.inputs import plan_batches

    m = read_manifest(manifest)
    enc = SpeechEncoder.from_folder(str(model_dir), InputOptions(max_seconds=20.0))
    min_len = enc.min_input_length(AutoConfig.from_pretrained(model_dir))
    checked = enc.check_rows(m, np.arange(len(m)), skip_bad=False, min_length=min_len)
    window = window_rows(ExtractConfig())
    plan = plan_batches(
        enc,
        [([0], checked.good, checked.lengths)],
        window=window,
        batch_size=0,
        batch_seconds=batch_seconds,
    )
    inputs, real, padded = [], 0, 0
    for p in plan:
        pieces = [x for r in p.rows for x in enc.load_pieces(m, int(r), min_len)]
        batch = enc.encode(pieces)
        real += int(batch["lengths"].sum())
        padded += batch["input_values"].numel()
        # A model without an attention mask would see padding as audio: like emofeat (and as
        # correct values require), forward each run of equal lengths on its own.
        lengths = batch["lengths"].tolist()
        runs = [(0, len(lengths))] if "attention_mask" in batch else equal_length_runs(lengths)
        for a, b in runs:
            inputs.append({k: v[a:b].to(device) for k, v in batch.items() if k != "lengths"})
    return inputs, 1 - real / padded


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def autocast(device, precision):
    if precision == "bf16":
        return torch.autocast(device, dtype=torch.bfloat16)
    return torch.autocast(device, enabled=False)


def run_bare(model, inputs, precision, device):
    synchronize(device)
    t = time.perf_counter()
    # no_grad with one autocast region (not inference_mode, where autocast re-casts the weights
    # on every pass): the best a hand-written loop does.
    with torch.no_grad(), autocast(device, precision):
        for x in inputs:
            model(**x, output_hidden_states=True)
    synchronize(device)
    return time.perf_counter() - t


def run_naive(manifest, model_dir, device):
    from transformers import AutoFeatureExtractor, AutoModel

    from emofeat.corpus.manifest import read_manifest

    m = read_manifest(manifest)
    fe = AutoFeatureExtractor.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).to(device).eval()
    t = time.perf_counter()
    for i in range(len(m)):
        x, sr = sf.read(str(m.audio_path(i)), dtype="float32")
        inputs = {k: v.to(device) for k, v in fe(x, sampling_rate=sr, return_tensors="pt").items()}
        with torch.no_grad():
            model(**inputs).last_hidden_state.mean(1).cpu()
    return time.perf_counter() - t


def whole_process(manifest, model_dir, out, precisions, layers, audio_s, repeats=3) -> dict:
    """Wall seconds of fresh processes: `emofeat extract` per precision and the naive script
    (benchmarks/naive_extract.py), each started, importing, loading its model and writing.

    This 2-core machine drifts by 5-15 % over minutes, more than the margins measured, so the
    processes run ``repeats`` times interleaved (each round in a rotated order, so none always
    runs first) and a ratio is the median of the rounds' ratios; every run's seconds are
    reported."""
    import subprocess
    import sys

    def timed(cmd) -> float:
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        return time.perf_counter() - start

    naive = [
        sys.executable,
        str(Path(__file__).with_name("naive_extract.py")),
        str(manifest),
        str(model_dir),
        str(out / "naive.npy"),
    ]
    commands = {"naive_fp32": naive}
    for precision in precisions:
        commands[precision] = [
            sys.executable,
            "-m",
            "emofeat.cli",
            "extract",
            "--model",
            str(model_dir),
            "--manifest",
            str(manifest),
            "--out",
            str(out / f"process-{precision}.h5"),
            "--layers",
            layers,
            "--precision",
            precision,
            "--device",
            "cpu",
            "--overwrite",
        ]
    names = list(commands)
    runs: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            runs[name].append(round(timed(commands[name]), 2))
    res = {"process_repeats": repeats}
    median = {name: statistics.median(seconds) for name, seconds in runs.items()}
    for name in names:
        res[f"process_{name}_s"] = runs[name]
        res[f"process_{name}_median_s"] = round(median[name], 2)
        if name != "naive_fp32":
            ratio = paired_ratios(runs["naive_fp32"], runs[name])  # seconds: naive / ours
            res[f"process_{name}_over_naive"] = ratio["ratio"]
            res[f"process_{name}_over_naive_per_round"] = ratio["per_round"]
            res[f"process_{name}_over_naive_of_medians"] = ratio["of_medians"]
    res["process_audio_seconds"] = round(audio_s, 1)
    return res


def cosines(a_path, b_path):
    """Smallest and mean cosine between the pooled rows of two stores, over every layer."""
    from emofeat.store import open_store

    lows, means = [], []
    with open_store(a_path) as a, open_store(b_path) as b:
        for name in a.embedding_names:
            x, y = a.embeddings(name).astype(np.float64), b.embeddings(name).astype(np.float64)
            c = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
            lows.append(c.min())
            means.append(c.mean())
    return float(min(lows)), float(np.mean(means))


def loop_timings(store) -> dict:
    """What ``extract`` recorded of its compute loop (the store's ``timings`` attribute)."""
    import h5py
    import yaml

    with h5py.File(store, "r") as f:
        return yaml.safe_load(f.attrs["timings"])


def paired_ratios(top: list[float], bottom: list[float]) -> dict:
    """``top / bottom`` of each round's pair of runs; their median is the figure (a round's runs
    are adjacent in time, so a drift of the machine cancels), the ratio of the medians beside
    it."""
    per_round = [a / b for a, b in zip(top, bottom)]
    return {
        "ratio": round(statistics.median(per_round), 3),
        "per_round": [round(x, 3) for x in per_round],
        "of_medians": round(statistics.median(top) / statistics.median(bottom), 3),
    }


def machine(device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores, {torch.backends.cpu.get_cpu_capability()}"
    if device == "cuda":
        text += f"; {torch.cuda.get_device_name()}"
    return f"{text}; torch {torch.__version__}"


def matmul_ms(dtype: torch.dtype, reps: int = 5) -> float:
    """Time of one 512x768 @ 768x768 matmul: shows whether this CPU computes bf16 natively."""
    a, w = torch.randn(512, 768, dtype=dtype), torch.randn(768, 768, dtype=dtype)
    a @ w
    t = time.perf_counter()
    for _ in range(reps):
        a @ w
    return round((time.perf_counter() - t) / reps * 1000, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument(
        "--batch-seconds", type=float, help="default: emofeat's (12 on CPU, 64 on CUDA)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", choices=list(SIZES), default="base")
    ap.add_argument(
        "--force-bf16", action="store_true", help="measure bf16 even where the CPU emulates it"
    )
    ap.add_argument("--fp32-only", action="store_true", help="skip bf16")
    ap.add_argument("--workers", type=int, help="extract's input workers (default: emofeat's)")
    ap.add_argument(
        "--whole-process",
        action="store_true",
        help="also time `emofeat extract` and benchmarks/naive_extract.py as fresh processes "
        "(imports, model loading and the store included)",
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="rounds of extraction, bare and naive loops, alternating; rates are of the medians",
    )
    ap.add_argument(
        "--process-repeats",
        type=int,
        default=3,
        help="rounds of the whole-process runs, interleaved; a ratio is the median of the rounds'",
    )
    args = ap.parse_args()
    device = args.device
    batch_seconds = args.batch_seconds or (64.0 if device == "cuda" else 12.0)
    out = Path(args.out) / f"extract-{args.size}"
    out.mkdir(parents=True, exist_ok=True)
    from transformers import AutoModel

    from emofeat.device import cpu_has_native_bf16

    manifest, model_dir, audio_s = make_data(out, args.clips, args.seed, args.size)
    layers = LAYERS[args.size]
    model = AutoModel.from_pretrained(model_dir).to(device).eval()
    inputs, padding = prepared_batches(manifest, model_dir, device, batch_seconds)
    run_bare(model, inputs[:2], "fp32", device)  # warm-up (CUDA context, kernels)
    native_bf16 = device == "cuda" or cpu_has_native_bf16()
    bf16 = (native_bf16 or args.force_bf16) and not args.fp32_only
    precisions = ("fp32", "bf16") if bf16 else ("fp32",)
    res: dict = {
        "bench": "extract",
        "machine": machine(device),
        "device": device,
        "native_bf16": native_bf16,
        "audio_seconds": round(audio_s, 1),
        "clips": args.clips,
        "size": args.size,
        "layers": layers,
        "batch_seconds": batch_seconds,
        "workers": args.workers,
        "padding_fraction": round(padding, 4),
    }
    if device == "cpu":
        res["matmul_fp32_ms"] = matmul_ms(torch.float32)
        res["matmul_bf16_ms"] = matmul_ms(torch.bfloat16)
    # In rounds (--repeats): extraction, the bare loop and the naive loop alternate, so that a
    # drift of this machine's speed does not land on one of them; rates are of the medians.
    stores: dict[str, Path] = {}
    seconds: dict[str, list[float]] = {}
    mems: dict[str, float] = {}

    def timed(name: str, fn):
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with PeakRSS() as mem:
            got = fn()
        mems[name] = max(mems.get(name, 0.0), mem.mb)
        return got

    for r in range(args.repeats):
        cases = [(p, kind) for p in precisions for kind in ("extract", "bare")]
        cases.append(("fp32", "naive"))
        for precision, kind in cases if r % 2 == 0 else cases[::-1]:
            name = f"{kind}_{precision}"
            if kind == "extract":
                t, stores[precision] = timed(
                    name,
                    partial(
                        run_extract,
                        manifest,
                        model_dir,
                        out,
                        precision,
                        device,
                        layers,
                        args.batch_seconds,
                        args.workers,
                    ),
                )
                # The compute loop alone (models loaded, store created), as the store says.
                seconds.setdefault(f"{name}_loop", []).append(
                    loop_timings(stores[precision])["seconds"]
                )
            elif kind == "bare":
                t = timed(name, partial(run_bare, model, inputs, precision, device))
            else:
                t = timed(name, partial(run_naive, manifest, model_dir, device))
            seconds.setdefault(name, []).append(t)
    med = {name: statistics.median(ts) for name, ts in seconds.items()}
    res["repeats"] = args.repeats
    for name, ts in seconds.items():
        res[f"{name}_audio_s_per_s"] = round(audio_s / med[name], 2)
        if args.repeats > 1:
            res[f"{name}_per_round"] = [round(audio_s / t, 2) for t in ts]
    for name, mb in mems.items():
        res[f"{name}_peak_rss_mb"] = mb
    for precision in precisions:
        loop = loop_timings(stores[precision])  # the last round's stages
        res[f"extract_{precision}_stages"] = loop["stages"]
        res[f"extract_{precision}_peak_memory"] = loop["peak_memory"]
        # The host's work around the model: the library call minus the bare forward passes.
        # None where the call was no slower than the bare passes: the host's share is below
        # what this machine's noise lets one measure (1 / a tiny difference is no figure).
        host = med[f"extract_{precision}"] - med[f"bare_{precision}"]
        res[f"host_{precision}_audio_s_per_s"] = round(audio_s / host, 1) if host > 0 else None
        for kind in ("", "_loop"):
            res[f"extract{kind}_over_bare_{precision}"] = round(
                res[f"extract_{precision}{kind}_audio_s_per_s"]
                / res[f"bare_{precision}_audio_s_per_s"],
                3,
            )
            res[f"extract{kind}_{precision}_over_naive_fp32"] = round(
                res[f"extract_{precision}{kind}_audio_s_per_s"] / res["naive_fp32_audio_s_per_s"],
                3,
            )
    del inputs, model
    if args.whole_process:
        res.update(
            whole_process(
                manifest, model_dir, out, precisions, layers, audio_s, args.process_repeats
            )
        )
    if "bf16" in stores:
        res["cosine_bf16_fp32_min"], res["cosine_bf16_fp32_mean"] = (
            round(c, 6) for c in cosines(stores["fp32"], stores["bf16"])
        )
    elif not args.fp32_only:
        res["bf16"] = (
            "skipped: no native bf16 on this CPU (torch emulates it, ~100x slower); --force-bf16 measures it anyway"
        )
    if device == "cuda":  # loops against loops: neither the bare nor the naive loop loads models
        targets = (
            "bf16" in stores  # the GPU targets are bf16's
            and res["extract_loop_over_bare_bf16"] >= 0.9
            and res["extract_loop_bf16_over_naive_fp32"] >= 10
            and res["cosine_bf16_fp32_min"] >= 0.9999
        )
    elif args.size == "deep":  # the host's work around the model
        host = res["host_fp32_audio_s_per_s"]
        targets = (host is None or host >= 1500) and padding <= 0.10
    else:
        targets = (
            res["extract_loop_over_bare_fp32"] >= 0.9
            and res["extract_loop_fp32_over_naive_fp32"] >= 1.0
            and padding <= 0.10
        )
        if args.whole_process:  # issue 25: whole processes, fp32 >= 1.0x, bf16 >= 1.6x naive
            targets = targets and res["process_fp32_over_naive"] >= 1.0
            if "process_bf16_over_naive" in res:
                targets = targets and res["process_bf16_over_naive"] >= 1.6
    res["targets_met"] = targets
    for k, v in res.items():
        print(f"{k:34} {v}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
