"""Frozen-feature costs: training one layer-sum head fold model, and openSMILE's throughput.

1. The layer-sum head (emofeat.fuse.layersum: standardise, softmax-weighted sum of the layers,
   linear head; AdamW, batches of 64) trained on ``--rows`` rows of ``--layers`` layers of
   ``--width`` values (default: 10,000 x 25 x 2,048, a 24-layer large encoder's 25 hidden states
   pooled mean+std), for ``--epochs`` epochs; the time per epoch, and for the default 50 epochs.
2. openSMILE (eGeMAPSv02 and ComParE_2016 functionals) on ``--clips`` synthetic 3-s clips:
   ``Smile.process_signal`` alone, and ``emofeat extract --model opensmile:eGeMAPSv02`` on a
   synthetic corpus (decoding, resampling and the store included), in audio seconds per second.

Prints figures with the CPU and a final JSON line (also written to OUT/frozen_bench.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class InMemory:
    """What the layer-sum head's training reads of its inputs, held in memory."""

    data: list[np.ndarray]
    labels: np.ndarray
    n_classes: int
    task: str = "categorical"

    @property
    def shapes(self):
        return [(b.shape[1], b.shape[2]) for b in self.data]

    @property
    def n_outputs(self) -> int:
        return self.n_classes

    def blocks(self, rows):
        return [b[rows] for b in self.data]

    def y(self, rows):
        return self.labels[rows]


def head_bench(rows: int, layers: int, width: int, epochs: int) -> dict:
    from emofeat.fuse.config import LayerSumConfig
    from emofeat.fuse.layersum import new_model, train

    rng = np.random.default_rng(0)
    data = rng.standard_normal((rows, layers, width), dtype=np.float32)
    inputs = InMemory([data], rng.integers(0, 7, rows), 7)
    fit = np.arange(rows)
    cfg = LayerSumConfig(epochs=epochs)
    t = time.perf_counter()
    net = new_model(inputs, fit, cfg)
    setup = time.perf_counter() - t
    t = time.perf_counter()
    train(net, inputs, fit, cfg, device="cpu")
    took = time.perf_counter() - t
    per_epoch = took / epochs
    default_epochs = LayerSumConfig().epochs
    return {
        "rows": rows,
        "layers": layers,
        "width": width,
        "input_gib": data.nbytes / 2**30,
        "epochs": epochs,
        "standardise_s": setup,
        "seconds_per_epoch": per_epoch,
        "rows_per_second": rows / per_epoch,
        f"fold_model_s_at_{default_epochs}_epochs": setup + per_epoch * default_epochs,
    }


def opensmile_bench(clips: int, seconds: float) -> dict:
    import opensmile

    from emofeat.corpus.prepare import prepare
    from emofeat.extract.config import ExtractConfig
    from emofeat.extract.run import extract
    from emofeat.testing.synth import synthesize

    rng = np.random.default_rng(0)
    signals = [
        (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32) for _ in range(clips)
    ]
    out = {}
    for name in ("eGeMAPSv02", "ComParE_2016"):
        smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet[name],
            feature_level=opensmile.FeatureLevel.Functionals,
        )
        smile.process_signal(signals[0], 16000)  # the first call loads the configuration
        t = time.perf_counter()
        for x in signals:
            smile.process_signal(x, 16000)
        took = time.perf_counter() - t
        out[f"{name}_process_signal_audio_s_per_s"] = clips * seconds / took
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synthesize(root, seed=0, sessions=4, per_session=20, aihub=0, min_seconds=2, max_seconds=4)
        manifest = root / "m.csv"
        prepare(manifest, kemdy20=root / "KEMDy20_v1_1", folds=2)
        t = time.perf_counter()
        extract(manifest, root / "s.h5", ExtractConfig(model="opensmile:eGeMAPSv02"))
        took = time.perf_counter() - t
        import pandas as pd

        audio = float(pd.read_csv(manifest)["duration"].sum())
        out["emofeat_extract_eGeMAPSv02_audio_s_per_s"] = audio / took
        out["emofeat_extract_audio_s"] = audio
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--layers", type=int, default=25)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--epochs", type=int, default=3, help="epochs timed (the default head: 50)")
    ap.add_argument("--clips", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    cpu = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    print(f"CPU: {cpu}")
    head = head_bench(args.rows, args.layers, args.width, args.epochs)
    print(
        f"layer-sum head, {head['rows']} rows x {head['layers']} layers x {head['width']} "
        f"({head['input_gib']:.2f} GiB float32): {head['seconds_per_epoch']:.2f} s/epoch "
        f"({head['rows_per_second']:.0f} rows/s), standardisation {head['standardise_s']:.2f} s"
    )
    try:
        smile = opensmile_bench(args.clips, args.seconds)
        for key, value in smile.items():
            print(f"openSMILE {key}: {value:.1f}")
    except ImportError:
        smile = {"skipped": "opensmile is not installed (pip install 'emofeat[opensmile]')"}
        print(smile["skipped"])
    result = {"environment": cpu, "layer_sum_head": head, "opensmile": smile}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "frozen_bench.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
