"""Audio decoding, mix-down, resampling and reversal (soundfile + soxr; no torchaudio)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from emofeat.errors import EmofeatError


class AudioError(EmofeatError):
    """An audio file is missing or cannot be decoded."""


def load_audio(path: str | Path, sample_rate: int = 16000, reverse: bool = False) -> np.ndarray:
    """Decode ``path`` to float32 mono at ``sample_rate`` (time-reversed with ``reverse``)."""
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"{path}: cannot decode audio ({err})") from None
    x = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if sr != sample_rate:
        x = soxr.resample(x, sr, sample_rate, quality="HQ").astype(np.float32, copy=False)
    if reverse:
        x = x[::-1]
    return np.ascontiguousarray(x, dtype=np.float32)


def duration(path: str | Path) -> float:
    """Duration in seconds from the file header (no decoding)."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"{path}: cannot read audio header ({err})") from None
    return info.frames / info.samplerate
