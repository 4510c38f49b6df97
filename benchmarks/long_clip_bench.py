"""Peak memory of `emofeat extract` with a 1-hour clip against ordinary clips (issue 22).

Two extractions through the same tiny wav2vec2 (width 64, emofeat's test builder), each in its own
process (`python -m emofeat extract`), measured by the kernel (peak resident set of the child,
``os.wait4``):
  * ordinary - ``--clips`` clips of 1-12 s;
  * hour     - the same clips and one clip of ``--hours`` hours (16 kHz, or ``--long-rate``).
Target: hour <= 1.5 x ordinary with the default options (the clip is decoded and forwarded
``--batch-seconds`` at a time; before, all its windows were one batch: 5.7 GiB against 0.5 GiB).
Prints the figures, the machine and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))
from extract_bench import machine


def write_clips(out: Path, clips: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    wavs = out / "wavs"
    wavs.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(clips):
        t = np.arange(int(rng.uniform(1, 12) * 16000)) / 16000
        x = 0.3 * np.sin(2 * np.pi * 150 * t) + 0.01 * rng.standard_normal(len(t))
        sf.write(wavs / f"c{i:03d}.wav", x.astype(np.float32), 16000, subtype="PCM_16")
        rows.append(f"c{i:03d},wavs/c{i:03d}.wav,,train")
    return rows


def write_long(path: Path, hours: float, rate: int, seed: int) -> None:
    """Written a minute at a time: the benchmark itself stays small."""
    rng = np.random.default_rng(seed)
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as f:
        for minute in range(int(round(hours * 60))):
            t = minute * 60 + np.arange(60 * rate) / rate
            f.write(0.3 * np.sin(2 * np.pi * 150 * t) + 0.01 * rng.standard_normal(len(t)))


def manifest(out: Path, name: str, rows: list[str]) -> Path:
    from emofeat.corpus.prepare import prepare

    (out / f"{name}.csv").write_text("id,audio_path,text,split\n" + "\n".join(rows) + "\n")
    path = out / f"{name}-manifest.csv"
    prepare(path, csv=out / f"{name}.csv", folds=0)
    return path


def peak_extract(manifest_path: Path, model: Path, store: Path, extra: list[str]) -> dict:
    """Run `emofeat extract` in a child process; its peak RSS (GiB) and wall seconds."""
    cmd = [sys.executable, "-m", "emofeat.cli", "extract", "--model", str(model)]
    cmd += ["--manifest", str(manifest_path), "--out", str(store), "--overwrite", *extra]
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    err = child.stderr.read()
    if status != 0:
        raise SystemExit(f"extract failed ({status}):\n{err[-3000:]}")
    return {"peak_gib": round(usage.ru_maxrss / 2**20, 3), "seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench-out/long-clip"))
    ap.add_argument("--clips", type=int, default=100)
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--long-rate", type=int, default=16000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--extract-args",
        default="",
        help="extra `emofeat extract` options, e.g. '--batch-seconds 24'",
    )
    args = ap.parse_args()
    from emofeat.testing.tiny import build_tiny_wav2vec2

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    model = build_tiny_wav2vec2(out / "tiny-wav2vec2-64", hidden=64)
    rows = write_clips(out, args.clips, args.seed)
    long_wav = out / "wavs" / "hour.wav"
    if not long_wav.is_file():
        write_long(long_wav, args.hours, args.long_rate, args.seed)
    ordinary = manifest(out, "ordinary", rows)
    with_hour = manifest(out, "hour", [*rows, "hour,wavs/hour.wav,,train"])
    extra = args.extract_args.split()
    a = peak_extract(ordinary, model, out / "ordinary.h5", extra)
    b = peak_extract(with_hour, model, out / "hour.h5", extra)
    ratio = b["peak_gib"] / a["peak_gib"]
    print(f"machine: {machine('cpu')}")
    print(f"ordinary: {args.clips} clips of 1-12 s: peak {a['peak_gib']} GiB, {a['seconds']} s")
    print(
        f"with a {args.hours:g}-hour clip at {args.long_rate} Hz: peak {b['peak_gib']} GiB, "
        f"{b['seconds']} s; ratio {ratio:.2f} (target <= 1.5)"
    )
    result = {
        "machine": machine("cpu"),
        "ordinary": a,
        "hour": b,
        "ratio": round(ratio, 3),
        "extract_args": extra,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
