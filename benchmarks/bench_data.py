"""Synthetic inputs the benchmarks share: clips of a tone with noise, Korean transcripts, and a
generic-CSV manifest of them (one train split, no folds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

WORDS = [
    "오늘",
    "정말",
    "기분이",
    "좋아요",
    "너무",
    "화가",
    "나네요",
    "슬퍼서",
    "눈물이",
    "나요",
    "그냥",
    "그래요",
    "놀랐어요",
]
LABELS = ("angry", "happy", "neutral", "sad")


def write_clip(path: Path, seconds: float, rng: np.random.Generator, pitch: float = 150.0) -> None:
    """A 16 kHz PCM clip: a gliding tone with a little noise."""
    t = np.arange(int(seconds * 16000)) / 16000
    x = 0.3 * np.sin(2 * np.pi * (pitch + 30 * t) * t) + 0.01 * rng.standard_normal(len(t))
    sf.write(path, x.astype(np.float32), 16000, subtype="PCM_16")


def transcript(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, int(rng.integers(4, 30))))


def manifest(
    out: Path,
    name: str,
    rows: int,
    *,
    seed: int = 0,
    audio: tuple[float, float] | None = (1.0, 8.0),
    text: bool = False,
    labels: bool = False,
) -> tuple[Path, float]:
    """``out/NAME-manifest.csv`` of ``rows`` rows (clips of ``audio`` seconds, transcripts,
    labels as asked) and the seconds of audio it holds."""
    from emofeat.corpus.prepare import prepare

    rng = np.random.default_rng(seed)
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    lines, seconds = ["id,audio_path,text,label,split"], 0.0
    for i in range(rows):
        path = ""
        if audio is not None:
            d = float(rng.uniform(*audio))
            path = f"wavs/{name}{i:04d}.wav"
            write_clip(out / path, d, rng, pitch=120 + 50 * (i % 4))
            seconds += d
        words = transcript(rng) if text else ""
        label = LABELS[i % len(LABELS)] if labels else ""
        lines.append(f"{name}{i:04d},{path},{words},{label},train")
    (out / f"{name}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    prepare(out / f"{name}-manifest.csv", csv=out / f"{name}.csv", folds=0)
    return out / f"{name}-manifest.csv", seconds
