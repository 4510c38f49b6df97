"""Audio decoding, mix-down, resampling and reversal (soundfile + soxr; no torchaudio)."""

from __future__ import annotations

import math
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


# Context decoded on each side of a span that is resampled: soxr's filter then sees what it sees
# in the whole clip (measured: spans equal the whole clip's resampling to ~1e-7 with 400 samples).
SPAN_CONTEXT = 1600


def resampled_length(frames: int, rate: int, sample_rate: int) -> int:
    """Samples soxr gives for ``frames`` samples at ``rate`` resampled to ``sample_rate``
    (round half up of frames x sample_rate / rate; checked against soxr in the tests)."""
    if rate == sample_rate:
        return frames
    return (2 * frames * sample_rate + rate) // (2 * rate)


def _decode(path: str | Path, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, int]:
    """Frames [start, stop) of ``path`` as float32 (frames, channels) and the file's rate, with
    every check of :func:`load_audio` (the whole file when ``stop`` is None)."""
    check_regular(path)
    try:
        with sf.SoundFile(str(path)) as f:
            promised = f.frames
            end = promised if stop is None else min(stop, promised)
            f.seek(start)
            data = f.read(end - start, dtype="float32", always_2d=True)
            sr = f.samplerate
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"{path}: cannot decode audio ({err})") from None
    if promised == 0 or (stop is None and len(data) == 0):
        raise AudioError(f"{path}: empty audio (0 samples)")
    short = wav_shortfall(path)
    if len(data) < end - start or short:
        what = (
            f"{short[0]} data bytes, the file holds {short[1]}"
            if short
            else f"{promised} samples, the file holds {start + len(data)}"
        )
        raise AudioError(f"{path}: truncated: the header promises {what}")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: non-finite samples (NaN or Inf) in the audio")
    return data, sr


def _mono(data: np.ndarray) -> np.ndarray:
    return data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]


def load_audio(path: str | Path, sample_rate: int = 16000, reverse: bool = False) -> np.ndarray:
    """Decode ``path`` to float32 mono at ``sample_rate`` (time-reversed with ``reverse``).

    Bad input is an :class:`AudioError` naming the file: not a regular file, undecodable, empty,
    truncated (fewer samples than the header promises) or holding non-finite samples."""
    data, sr = _decode(path)
    x = _mono(data)
    if sr != sample_rate:
        x = soxr.resample(x, sr, sample_rate, quality="HQ").astype(np.float32, copy=False)
    if reverse:
        x = x[::-1]
    return np.ascontiguousarray(x, dtype=np.float32)


def audio_length(path: str | Path, sample_rate: int = 16000) -> int:
    """Samples :func:`load_audio` gives for ``path`` at ``sample_rate``, from the header alone."""
    return resampled_length(*header(path), sample_rate)


def load_span(
    path: str | Path, start: int, stop: int, *, sample_rate: int = 16000, reverse: bool = False
) -> np.ndarray:
    """Samples [start, stop) of what :func:`load_audio` gives for ``path``, decoding only that
    span (a long clip is read window by window: memory does not grow with its length).

    At the file's own rate the span is exact. Resampled, the span is decoded with
    :data:`SPAN_CONTEXT` samples of context on each side, from a source frame that falls on
    the target grid, so soxr computes the same samples as over the whole clip (to float
    rounding)."""
    frames, rate = header(path)
    n = resampled_length(frames, rate, sample_rate)
    if not 0 <= start < stop <= n:
        raise AudioError(f"{path}: span [{start}, {stop}) outside the clip's {n} samples")
    if reverse:  # the reversed clip's [start, stop) is the clip's [n - stop, n - start)
        start, stop = n - stop, n - start
    if rate == sample_rate:
        x = _mono(_decode(path, start, stop)[0])
    else:
        g = math.gcd(rate, sample_rate)
        src, dst = rate // g, sample_rate // g  # src source frames = dst target samples, exactly
        k0 = max(0, start - SPAN_CONTEXT) // dst
        k1 = -(-(stop + SPAN_CONTEXT) // dst)
        data, _ = _decode(path, k0 * src, k1 * src)
        y = soxr.resample(_mono(data), rate, sample_rate, quality="HQ")
        x = y[start - k0 * dst : stop - k0 * dst]
    if reverse:
        x = x[::-1]
    return np.ascontiguousarray(x, dtype=np.float32)


def header(path: str | Path) -> tuple[int, int]:
    """(frames, sample rate) from the file header (no decoding), with its checks: a regular
    file, a readable header, not 0 samples, not a WAV cut shorter than its header says.
    Truncation elsewhere and non-finite samples are found when the audio is decoded."""
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
    return info.frames, info.samplerate


def duration(path: str | Path) -> float:
    """Duration in seconds from the file header (see :func:`header`)."""
    frames, rate = header(path)
    return frames / rate
