"""Audio decoding, mix-down, resampling and reversal (soundfile + soxr; no torchaudio)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from emofeat.errors import EmofeatError


class AudioError(EmofeatError):
    """An audio file is missing or cannot be decoded."""


def check_regular(path: str | Path) -> None:
    """Refuse what is not a regular file (a FIFO would block a reader forever, a device never
    ends) before anything opens it."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        raise AudioError(f"{path}: cannot read audio ({err.strerror})") from None
    if not stat.S_ISREG(mode):
        raise AudioError(
            f"{path}: not a regular file (a FIFO, device or folder); give an audio file"
        )


def wav_shortfall(path: str | Path) -> tuple[int, int] | None:
    """For a RIFF/WAVE file whose data chunk is cut short: (bytes the header promises, bytes
    present). None for complete files and other formats. libsndfile silently reads what is
    there, so a truncated download would pass as a short clip."""
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            size = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                if size in (0, 0xFFFFFFFF):  # streamed WAV: the size was never filled in
                    return None
                start = fh.tell()
                fh.seek(0, os.SEEK_END)
                present = fh.tell() - start
                return (size, present) if present < size else None
            fh.seek(size + (size & 1), os.SEEK_CUR)


def load_audio(path: str | Path, sample_rate: int = 16000, reverse: bool = False) -> np.ndarray:
    """Decode ``path`` to float32 mono at ``sample_rate`` (time-reversed with ``reverse``).

    Bad input is an :class:`AudioError` naming the file: not a regular file, undecodable, empty,
    truncated (fewer samples than the header promises) or holding non-finite samples."""
    check_regular(path)
    try:
        with sf.SoundFile(str(path)) as f:
            promised = f.frames
            data = f.read(dtype="float32", always_2d=True)
            sr = f.samplerate
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"{path}: cannot decode audio ({err})") from None
    if len(data) == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    short = wav_shortfall(path)
    if len(data) < promised or short:
        what = (
            f"{short[0]} data bytes, the file holds {short[1]}"
            if short
            else f"{promised} samples, the file holds {len(data)}"
        )
        raise AudioError(f"{path}: truncated: the header promises {what}")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: non-finite samples (NaN or Inf) in the audio")
    x = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if sr != sample_rate:
        x = soxr.resample(x, sr, sample_rate, quality="HQ").astype(np.float32, copy=False)
    if reverse:
        x = x[::-1]
    return np.ascontiguousarray(x, dtype=np.float32)


def duration(path: str | Path) -> float:
    """Duration in seconds from the file header (no decoding); a header of 0 samples is an
    error. Truncation and non-finite samples are found when the audio is decoded."""
    check_regular(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"{path}: cannot read audio header ({err})") from None
    if info.frames <= 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    short = wav_shortfall(path)
    if short:
        raise AudioError(
            f"{path}: truncated: the header promises {short[0]} data bytes, the file holds {short[1]}"
        )
    return info.frames / info.samplerate
