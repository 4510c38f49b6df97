"""A synthetic corpus in the exact on-disk formats of KEMDy20 v1_1 and AI Hub 5차년도_2차.

The real readers run on it, so the demo and the tests exercise the code that reads real data.

Generative design
-----------------
Every utterance has an emotion ``e`` and a *cue channel*: ``text`` (35 %), ``audio`` (35 %) or
``both`` (30 %). The channel decides where the emotion can be heard:

* Text. A cued transcript joins an everyday context clause with one of several Korean cue phrases
  of ``e`` ("정말 화가 나", "깜짝 놀랐어", ...). An uncued transcript joins a context clause with
  an emotion-free continuation drawn from one pool for all emotions, so it says nothing of ``e``.
  KEMDy20 transcripts also carry the corpus' markers (``b/``, ``n/``, ``c/``, ``l/``, ``o/``, ``/``)
  and are written in cp949.
* Audio. A voiced, speech-like signal built from numpy alone: a glottal harmonic series on an f0
  contour, syllable envelopes at a tempo, vowel-like formant colouring, breath noise. Cued audio
  takes the prosody profile of ``e`` (pitch level and range, tempo, energy, breathiness, jitter,
  contour slope; e.g. angry: raised, loud, fast; sad: low, quiet, slow, breathy; surprise: high and
  rising). Uncued audio draws each prosodic parameter independently from the range spanned by all
  emotions, so it carries no information about ``e``. Speakers vary in base pitch (by sex),
  spectral tilt and recording noise, and each utterance jitters its parameters.

* Valence and arousal. Each utterance has its own (its class's centre plus a within-class spread,
  SD 0.45); cued audio carries the arousal (louder, faster, higher when more aroused), a cued
  transcript ends with a word of the valence (최악이야 ... 좋았어). KEMDy20's raters vote
  integers around them, and the consensus is their mean, as in the real corpus.

Hence a text model can be right on ``text``/``both`` rows (about 65 %) but guesses elsewhere, an
audio model the reverse, and a combination that learns which model to trust per utterance can
approach the ceiling: the two modalities are complementary by construction.

KEMDy20 extras: two header rows, ten annotators' emotion/valence/arousal votes, a few multi-label
consensus rows (``a;b``), a few Segment IDs with a wrong session prefix, 16 kHz mono wavs.
AI Hub extras: a cp949 CSV with further columns, 24-hex-char wav ids, 22.05 kHz stereo wavs (so
decoding, mix-down and resampling are exercised too).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from emofeat.corpus import labels as label_set
from emofeat.corpus.aihub import RELEASE

CHANNELS = ("text", "audio", "both")
CHANNEL_P = (0.35, 0.35, 0.30)
CLASS_P = np.array(
    [0.13, 0.11, 0.11, 0.17, 0.22, 0.14, 0.12]
)  # mild imbalance, neutral most common

# pitch multiplier, pitch range, syllables/s, energy, breathiness, jitter, contour slope
PROSODY = {
    "angry": (1.15, 0.25, 5.6, 1.00, 0.05, 0.020, -0.10),
    "disqust": (0.90, 0.10, 3.4, 0.55, 0.28, 0.010, -0.25),
    "fear": (1.35, 0.14, 6.6, 0.35, 0.40, 0.060, 0.00),
    "happy": (1.25, 0.35, 5.0, 0.75, 0.08, 0.010, 0.12),
    "neutral": (1.00, 0.07, 4.2, 0.50, 0.10, 0.008, -0.05),
    "sad": (0.80, 0.05, 2.8, 0.28, 0.32, 0.020, -0.15),
    "surprise": (1.45, 0.40, 4.4, 0.70, 0.10, 0.015, 0.45),
}
_PROSODY_MIN = np.min(list(PROSODY.values()), axis=0)
_PROSODY_MAX = np.max(list(PROSODY.values()), axis=0)

CUES = {
    "angry": ["정말 화가 나", "짜증 나 죽겠어", "너무 열받아", "어이가 없네 진짜"],
    "disqust": ["너무 역겨워", "정말 징그러워", "속이 메스꺼워", "보기만 해도 싫어"],
    "fear": ["너무 무서워", "겁이 나", "불안해서 잠이 안 와", "소름이 돋았어"],
    "happy": ["정말 행복해", "너무 기뻐", "신난다", "기분이 최고야"],
    "neutral": ["그냥 그래", "별일 없어", "평소랑 같아", "그저 그런 편이야"],
    "sad": ["너무 슬퍼", "눈물이 나", "마음이 아파", "우울해"],
    "surprise": ["깜짝 놀랐어", "세상에 말도 안 돼", "믿을 수가 없어", "어머 진짜야"],
}
CONTEXTS = [
    "어제 친구랑 영화를 봤는데",
    "회사에서 회의가 길어져서",
    "오늘 아침에 버스를 탔는데",
    "주말에 집 정리를 하다가",
    "동생이 전화를 해서",
    "점심에 식당에 갔는데",
    "시험 결과가 나왔는데",
    "엄마가 문자를 보냈는데",
    "길에서 옛날 친구를 만나서",
    "택배가 도착했는데",
]
NEUTRAL_CONTINUATIONS = [
    "그 얘기를 했어",
    "시간이 좀 걸렸어",
    "다음 주에 다시 보기로 했어",
    "자세한 건 나중에 말할게",
    "그래서 집에 왔어",
    "같이 밥을 먹었어",
]
MARKERS = ["b/", "n/", "c/", "l/", "o/", "/"]
VALENCE = {
    "angry": 1.8,
    "disqust": 2.0,
    "fear": 2.0,
    "happy": 4.3,
    "neutral": 3.0,
    "sad": 1.7,
    "surprise": 3.5,
}
AROUSAL = {
    "angry": 4.3,
    "disqust": 3.0,
    "fear": 3.8,
    "happy": 3.8,
    "neutral": 2.5,
    "sad": 2.0,
    "surprise": 4.2,
}
AIHUB_WORD = {v: k for k, v in label_set.AIHUB_MAP.items()}
_VOWELS = np.array([(800, 1200), (400, 2000), (300, 2300), (500, 900), (350, 800)], dtype=float)


@dataclass
class Speaker:
    """Per-speaker voice: base pitch, spectral tilt, noise floor."""

    f0: float
    tilt: float
    noise: float

    @classmethod
    def draw(cls, rng: np.random.Generator, sex: str) -> Speaker:
        base = 115.0 if sex == "M" else 210.0
        return cls(base * rng.uniform(0.85, 1.15), rng.uniform(0.6, 1.2), rng.uniform(0.002, 0.01))


def affect(rng: np.random.Generator, emotion: str) -> tuple[float, float]:
    """An utterance's own valence and arousal (1-5): its class's centre plus a spread within the
    class (SD 0.45, about KEMDy20's)."""
    v = float(np.clip(VALENCE[emotion] + rng.normal(0, 0.45), 1, 5))
    a = float(np.clip(AROUSAL[emotion] + rng.normal(0, 0.45), 1, 5))
    return v, a


# Words whose valence rises from first to last: a cued transcript ends with the one of its
# utterance's valence (the lexical correlate of valence).
VALENCE_WORDS = ["최악이야", "별로야", "그렇네", "괜찮아", "좋았어"]


def prosody(
    rng: np.random.Generator, emotion: str, cued: bool, arousal: float | None = None
) -> np.ndarray:
    """Prosody parameters of one utterance; uncued draws each from the all-emotion range. Cued
    audio also carries the utterance's arousal around its class's (``arousal``): louder, faster
    and higher when more aroused (the acoustic correlates of arousal)."""
    if cued:
        p = np.array(PROSODY[emotion], dtype=float)
        if arousal is not None:
            d = arousal - AROUSAL[emotion]
            p[0] *= 1 + 0.08 * d  # pitch
            p[2] *= 1 + 0.12 * d  # tempo
            p[3] *= 1 + 0.30 * d  # energy
    else:
        p = rng.uniform(_PROSODY_MIN, _PROSODY_MAX)
    jitter = rng.normal(1.0, 0.06, size=p.shape)
    p = p * jitter
    p[6] = p[6] / jitter[6] + rng.normal(0, 0.04)  # slope is additive, not a ratio
    return p


def speech(
    rng: np.random.Generator, speaker: Speaker, *, p: np.ndarray, seconds: float, sr: int
) -> np.ndarray:
    """A speech-like waveform (float32, peak <= 1) with the given prosody."""
    pitch, prange, tempo, energy, breath, jitter, slope = p
    n = int(seconds * sr)
    t = np.arange(n) / sr
    n_syl = max(1, int(round(seconds * tempo)))
    bounds = np.sort(rng.uniform(0, seconds, n_syl - 1))
    edges = np.concatenate([[0.0], bounds, [seconds]])
    syl = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, n_syl - 1)
    pos = (t - edges[syl]) / np.maximum(edges[syl + 1] - edges[syl], 1e-3)
    accents = rng.normal(0, prange, n_syl)
    f0 = speaker.f0 * pitch * (1 + slope * (t / seconds - 0.5) + accents[syl] * np.sin(np.pi * pos))
    f0 *= 1 + jitter * rng.standard_normal(n).cumsum() / np.sqrt(np.arange(1, n + 1)) * 0.5
    f0 = np.clip(f0, 60, 600)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    n_harm = int(3800 // f0.max()) + 1
    k = np.arange(1, n_harm + 1)[:, None]
    vowel = _VOWELS[rng.integers(0, len(_VOWELS), n_syl)][syl]  # (n, 2) formants per sample
    hf = k * f0[None, :]
    amp = (
        np.exp(-((hf - vowel[None, :, 0]) ** 2) / (2 * 150.0**2))
        + 0.6 * np.exp(-((hf - vowel[None, :, 1]) ** 2) / (2 * 250.0**2))
        + 0.1
    ) / k**speaker.tilt
    voiced = (amp * np.sin(k * phase[None, :])).sum(axis=0)
    env = np.sin(np.pi * pos) ** 0.7 * rng.uniform(0.6, 1.0, n_syl)[syl]
    noise = rng.standard_normal(n)
    x = (
        energy
        * env
        * ((1 - breath) * voiced / (np.abs(voiced).max() + 1e-9) + breath * noise * 0.5)
    )
    x += speaker.noise * rng.standard_normal(n)
    return (x / max(1.0, np.abs(x).max() * 1.05)).astype(np.float32)


def transcript(
    rng: np.random.Generator,
    emotion: str,
    *,
    cued: bool,
    markers: bool,
    valence: float | None = None,
) -> str:
    """A Korean transcript; cued ones hold a cue phrase of the emotion and, given the
    utterance's ``valence``, a word of that valence."""
    ctx = CONTEXTS[rng.integers(len(CONTEXTS))]
    if cued:
        cue = CUES[emotion][rng.integers(len(CUES[emotion]))]
        if valence is not None:
            step = int(np.clip(round(valence) - 1, 0, len(VALENCE_WORDS) - 1))
            cue = f"{cue} {VALENCE_WORDS[step]}"
    else:
        cue = NEUTRAL_CONTINUATIONS[rng.integers(len(NEUTRAL_CONTINUATIONS))]
    words = f"{ctx} {cue}{rng.choice(['.', '', '요', '!', '?'])}".split()
    if markers:
        for _ in range(rng.integers(0, 3)):
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(MARKERS)))
    return " ".join(words)


def _utterance(rng: np.random.Generator) -> tuple[str, str]:
    emotion = label_set.LABEL_NAMES[rng.choice(label_set.NUM_CLASSES, p=CLASS_P / CLASS_P.sum())]
    return emotion, CHANNELS[rng.choice(3, p=CHANNEL_P)]


def _write_csv_bytes(rows: list[list], encoding: str) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode(encoding)


def synth_kemdy20(
    root: Path,
    rng: np.random.Generator,
    *,
    sessions: int,
    per_session: int,
    seconds: tuple[float, float],
    sr: int,
) -> dict:
    """Write ``root/KEMDy20_v1_1`` and return counts of what was written."""
    base = root / "KEMDy20_v1_1"
    (base / "annotation").mkdir(parents=True, exist_ok=True)
    n_annot = 10
    header1 = ["Numb", "Wav", "", "Segment ID", "Total Evaluation", "", ""]
    header2 = ["", "start", "end", "", "Emotion", "Valence", "Arousal"]
    for a in range(n_annot):
        header1 += [f"Eval{a + 1:02d}{'F' if a % 2 == 0 else 'M'}", "", ""]
        header2 += ["Emotion", "Valence", "Arousal"]
    counts = {
        "utterances": 0,
        "multilabel": 0,
        "wrong_prefix": 0,
        "channels": dict.fromkeys(CHANNELS, 0),
    }
    for s in range(1, sessions + 1):
        wav_dir = base / "wav" / f"Session{s:02d}"
        wav_dir.mkdir(parents=True, exist_ok=True)
        voices = {sex: Speaker.draw(rng, sex) for sex in "FM"}
        users = {"F": f"User{2 * s - 1:03d}F", "M": f"User{2 * s:03d}M"}
        rows, clock = [header1, header2], 0.0
        for i in range(per_session):
            sex = "FM"[i % 2]
            script = 1 + i * 6 // per_session
            seg = f"Sess{s:02d}_script{script:02d}_{users[sex]}_{i + 1:03d}"
            emotion, channel = _utterance(rng)
            counts["channels"][channel] += 1
            valence, arousal = affect(rng, emotion)
            dur = float(rng.uniform(*seconds))
            x = speech(
                rng,
                voices[sex],
                p=prosody(rng, emotion, channel != "text", arousal),
                seconds=dur,
                sr=sr,
            )
            sf.write(wav_dir / f"{seg}.wav", x, sr, subtype="PCM_16")
            text = transcript(rng, emotion, cued=channel != "audio", markers=True, valence=valence)
            (wav_dir / f"{seg}.txt").write_bytes((text + "\n").encode("cp949"))
            consensus = emotion
            votes = []
            second = None
            if rng.random() < 0.05:
                second = label_set.LABEL_NAMES[
                    (label_set.LABEL_NAMES.index(emotion) + 1 + rng.integers(6)) % 7
                ]
                consensus = f"{emotion};{second}"
                counts["multilabel"] += 1
            for _ in range(n_annot):
                if second is not None and rng.random() < 0.45:
                    vote = second
                elif rng.random() < 0.8:
                    vote = emotion
                else:
                    vote = label_set.LABEL_NAMES[rng.integers(7)]
                # Raters hear the utterance's own valence and arousal (another emotion's
                # centre when they vote another emotion), each with an integer vote.
                own = vote == emotion
                val = int(
                    np.clip(round((valence if own else VALENCE[vote]) + rng.normal(0, 0.6)), 1, 5)
                )
                aro = int(
                    np.clip(round((arousal if own else AROUSAL[vote]) + rng.normal(0, 0.6)), 1, 5)
                )
                votes.append((vote, val, aro))
            listed = seg
            if i == 3 and s % 3 == 0:  # a published quirk: a wrong session prefix in the CSV
                listed = f"Sess{(s % sessions) + 1:02d}" + seg[6:]
                counts["wrong_prefix"] += 1
            row = [
                i + 1,
                f"{clock:.4f}",
                f"{clock + dur:.4f}",
                listed,
                consensus,
                f"{np.mean([v[1] for v in votes]):.1f}",
                f"{np.mean([v[2] for v in votes]):.1f}",
            ]
            for vote in votes:
                row += list(vote)
            rows.append(row)
            clock += dur + float(rng.uniform(0.2, 1.0))
            counts["utterances"] += 1
        (base / "annotation" / f"Sess{s:02d}_eval.csv").write_bytes(_write_csv_bytes(rows, "utf-8"))
    return counts


def synth_aihub(
    root: Path, rng: np.random.Generator, *, n: int, seconds: tuple[float, float]
) -> dict:
    """Write ``root/AI_Hub`` and return counts of what was written."""
    base = root / "AI_Hub"
    (base / "annotation").mkdir(parents=True, exist_ok=True)
    (base / "wav").mkdir(parents=True, exist_ok=True)
    sr = 22050
    speakers = [(Speaker.draw(rng, sex), sex) for sex in "FMFMFMFMFMFM"]
    header = [
        "wav_id",
        "발화문",
        "상황",
        "1번 감정",
        "1번 감정세기",
        "2번 감정",
        "2번 감정세기",
        "나이",
        "성별",
    ]
    rows, ids = [header], set()
    counts = {"utterances": 0, "channels": dict.fromkeys(CHANNELS, 0)}
    for _ in range(n):
        wav_id = "".join(rng.choice(list("0123456789abcdef"), 24))
        while wav_id in ids:
            wav_id = "".join(rng.choice(list("0123456789abcdef"), 24))
        ids.add(wav_id)
        emotion, channel = _utterance(rng)
        counts["channels"][channel] += 1
        voice, sex = speakers[rng.integers(len(speakers))]
        x = speech(
            rng,
            voice,
            p=prosody(rng, emotion, channel != "text"),
            seconds=float(rng.uniform(*seconds)),
            sr=sr,
        )
        stereo = np.stack(
            [x, 0.9 * x + 0.002 * rng.standard_normal(len(x)).astype(np.float32)], axis=1
        )
        sf.write(base / "wav" / f"{wav_id}.wav", stereo, sr, subtype="PCM_16")
        text = transcript(rng, emotion, cued=channel != "audio", markers=False)
        word = AIHUB_WORD[emotion]
        rows.append(
            [
                wav_id,
                text,
                word,
                word,
                int(rng.integers(1, 4)),
                word,
                int(rng.integers(1, 4)),
                int(rng.integers(20, 60)),
                "여성" if sex == "F" else "남성",
            ]
        )
        counts["utterances"] += 1
    (base / "annotation" / f"{RELEASE}.csv").write_bytes(_write_csv_bytes(rows, "cp949"))
    return counts


def synth_kemdy19(
    root: Path, rng: np.random.Generator, *, sessions: int, per_session: int, seconds: tuple
) -> dict:
    """Write ``root/KEMDy19`` in KEMDy19's layout: per session an F and an M annotation file
    (two header rows, 43 columns: number, wav and bio-signal start/end, Segment ID, consensus,
    ten raters), the same segments row by row, each actor's own consensus; UTF-8 transcripts
    under ``wav/SessionNN/SessNN_<dialog>/``; ``disgust`` spelled so; empty bio-signal cells;
    a multi-label consensus; and session 1's erratum (its F file repeats the next row's Segment
    ID where the M file has the right one). Returns counts."""
    base = root / "KEMDy19"
    (base / "annotation").mkdir(parents=True, exist_ok=True)
    head1 = ["Numb", "Wav", "", "ECG", "", "E4-EDA", "", "E4-TEMP", "", "Segment ID"]
    head1 += ["Total Evaluation", "", ""]
    head2 = ["", "start", "end"] * 1 + ["start", "end"] * 3 + ["", "Emotion", "Valence", "Arousal"]
    for a in range(10):
        head1 += [f"Eval{a + 1:02d}{'FM'[a % 2]}", "", ""]
        head2 += ["Emotion", "Valence", "Arousal"]
    counts = {"utterances": 0, "multilabel": 0, "errata": 0}
    for s in range(1, sessions + 1):
        voices = {sex: Speaker.draw(rng, sex) for sex in "FM"}
        tables = {g: [head1, head2] for g in "FM"}
        clock = 0.0
        for i in range(per_session):
            sex = "FM"[i % 2]
            dialog = f"script{1 + i * 3 // per_session:02d}" if i % 3 else f"impro{1 + i % 2:02d}"
            seg = f"Sess{s:02d}_{dialog}_{sex}{i + 1:03d}"
            folder = base / "wav" / f"Session{s:02d}" / f"Sess{s:02d}_{dialog}"
            folder.mkdir(parents=True, exist_ok=True)
            emotion, channel = _utterance(rng)
            valence, arousal = affect(rng, emotion)
            dur = float(rng.uniform(*seconds))
            p = prosody(rng, emotion, channel != "text", arousal)
            sf.write(folder / f"{seg}.wav", speech(rng, voices[sex], p=p, seconds=dur, sr=16000),
                     16000, subtype="PCM_16")  # fmt: skip
            text = transcript(rng, emotion, cued=channel != "audio", markers=True, valence=valence)
            if i % 4 == 1:
                text += " (웃음)"  # overlapping speech in parentheses, as KEMDy19 marks it
            (folder / f"{seg}.txt").write_bytes((text + "\n").encode("utf-8"))
            consensus = "disgust" if emotion == "disqust" else emotion
            if i == 2:
                consensus = f"{consensus};neutral" if emotion != "neutral" else "neutral;happy"
                counts["multilabel"] += 1
            bio = ["" if (i == 5 and s == 1) else f"{rng.normal():.4f}" for _ in range(6)]
            for g in "FM":
                votes = []
                for _ in range(10):
                    vote = emotion if rng.random() < 0.8 else label_set.LABEL_NAMES[rng.integers(7)]
                    vote = "disgust" if vote == "disqust" else vote
                    val = int(np.clip(round(valence + rng.normal(0, 0.6)), 1, 5))
                    aro = int(np.clip(round(arousal + rng.normal(0, 0.6)), 1, 5))
                    votes += [vote, val, aro]
                mean_v = np.mean(votes[1::3])
                mean_a = np.mean(votes[2::3])
                row = [i + 1, f"{clock:.3f}", f"{clock + dur:.3f}", *bio, seg, consensus]
                tables[g].append([*row, f"{mean_v:.1f}", f"{mean_a:.1f}", *votes])
            clock += dur + 0.3
            counts["utterances"] += 1
        if s == 1 and per_session > 4:  # the erratum: the F file repeats the next row's id
            tables["F"][2 + 3][9] = tables["F"][2 + 4][9]
            counts["errata"] += 1
        for g in "FM":
            path = base / "annotation" / f"Session{s:02d}_{g}_res.csv"
            path.write_bytes(_write_csv_bytes(tables[g], "utf-8"))
    return counts


def synth_csv(
    root: Path,
    rng: np.random.Generator,
    *,
    n: int,
    classes: list[str],
    sessions: int,
    seconds: tuple[float, float],
) -> dict:
    """Write ``root/own/corpus.csv`` (the generic CSV format, 16 kHz wavs under ``own/wav``)
    labelled with ``classes``: a class named like one of the seven KEMDy20 emotions sounds and
    reads like it, any other like the next emotion no class took, so that a corpus of any label
    set is as learnable as the KEMDy20 replica. Returns counts."""
    base = root / "own"
    (base / "wav").mkdir(parents=True, exist_ok=True)
    free = iter(n for n in label_set.LABEL_NAMES if n not in classes)
    templates = {name: name if name in PROSODY else next(free) for name in classes}
    p = np.array([CLASS_P[label_set.LABEL_NAMES.index(t)] for t in templates.values()])
    rows = [["id", "audio_path", "text", "label", "session", "speaker"]]
    voices = {(s, sex): Speaker.draw(rng, sex) for s in range(1, sessions + 1) for sex in "FM"}
    counts = {"utterances": 0, "classes": len(classes), "channels": dict.fromkeys(CHANNELS, 0)}
    for i in range(n):
        s, sex = 1 + i % sessions, "FM"[(i // sessions) % 2]
        name = classes[rng.choice(len(classes), p=p / p.sum())]
        emotion, channel = templates[name], CHANNELS[rng.choice(3, p=CHANNEL_P)]
        counts["channels"][channel] += 1
        x = speech(
            rng,
            voices[(s, sex)],
            p=prosody(rng, emotion, channel != "text"),
            seconds=float(rng.uniform(*seconds)),
            sr=16000,
        )
        uid = f"own{s:02d}{sex}_{i:05d}"
        sf.write(base / "wav" / f"{uid}.wav", x, 16000, subtype="PCM_16")
        text = transcript(rng, emotion, cued=channel != "audio", markers=False)
        rows.append([uid, f"wav/{uid}.wav", text, name, f"s{s:02d}", f"s{s:02d}{sex}"])
        counts["utterances"] += 1
    (base / "corpus.csv").write_bytes(_write_csv_bytes(rows, "utf-8"))
    return counts


def synthesize(out: str | Path, **options: Any) -> dict:
    """Write a synthetic corpus under ``out``: KEMDy20 and AI Hub replicas in their own formats,
    and (``csv``) a corpus in the generic CSV format with a label set of its own
    (``classes``); deterministic given the seed.

    Args:
        out: the corpus folder.
        options: the options of :class:`~emofeat.corpus.config.SynthConfig`.

    Returns:
        Counts per corpus (utterances, cue channels, multi-label and wrong-prefix rows).

    Raises:
        OptionError: an option's value is refused.
    """
    from emofeat.corpus.config import SynthConfig

    cfg = SynthConfig(**options)
    seed, sessions, per_session, aihub = cfg.seed, cfg.sessions, cfg.per_session, cfg.aihub
    min_seconds, max_seconds = cfg.min_seconds, cfg.max_seconds
    out = Path(out)
    rng = np.random.default_rng(seed)
    seconds = (min_seconds, max_seconds)
    report = {}
    if sessions:
        report["kemdy20"] = synth_kemdy20(
            out, rng, sessions=sessions, per_session=per_session, seconds=seconds, sr=16000
        )
    if aihub:
        report["aihub"] = synth_aihub(out, rng, n=aihub, seconds=seconds)
    if cfg.csv:
        classes = [c.strip().lower() for c in cfg.classes.split(",")]
        report["csv"] = synth_csv(
            out, rng, n=cfg.csv, classes=classes, sessions=cfg.csv_sessions, seconds=seconds
        )
    if cfg.kemdy19:
        report["kemdy19"] = synth_kemdy19(
            out, rng, sessions=cfg.kemdy19, per_session=per_session, seconds=seconds
        )
    return report
