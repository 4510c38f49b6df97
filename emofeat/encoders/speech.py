"""Speech encoders (wav2vec2/XLS-R, HuBERT, WavLM, data2vec-audio, Whisper's encoder) with the
reference classification head.

Families differ in what they take: wav2vec2-style models a normalised waveform, with an attention
mask where their feature encoder is layer-normed (large/XLS-R, data2vec-audio, WavLM) and without
one where it is group-normed (wav2vec2-base, HuBERT-base: padding would change their outputs, so
those are forwarded in runs of equal-length pieces: a clip's values never depend on what it is
batched with); Whisper's encoder takes an 80/128-bin log-mel of exactly 30 s (pieces are windows of
at most 30 s, each padded to 30 s by its feature extractor, pooled over the frames that hold
audio).

Head: masked mean over time of the last hidden state → Dropout → Linear(H, H) → tanh → Dropout →
Linear(H, C). The reference averaged padded frames too, so its predictions depended on what a clip
was batched with; here padding is excluded, so they do not.

On disk (``save_pretrained``): the encoder as a plain transformers folder (``config.json``,
``model.safetensors``; reload with ``AutoModel.from_pretrained``), the feature extractor
(``preprocessor_config.json``) and the head in ``head.safetensors`` + ``head.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from emofeat.audio import (
    AudioError,
    audio_length,
    header,
    load_audio,
    load_span,
    resampled_length,
)
from emofeat.encoders.base import Encoder, masked_mean, register_family, training_targets
from emofeat.encoders.source import HEAD_CONFIG, check_weights, loading, local_source
from emofeat.errors import ModelError

HEAD_WEIGHTS = "head.safetensors"


class SpeechHead(nn.Module):
    """Dropout → dense → tanh → dropout → linear, on a pooled vector."""

    def __init__(self, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden, hidden)
        self.out_proj = nn.Linear(hidden, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        x = self.dropout(pooled)
        x = torch.tanh(self.dense(x))
        return self.out_proj(self.dropout(x))


class SpeechClassifier(nn.Module):
    """A wav2vec2-family encoder with the reference head; used by Trainer and by extraction."""

    def __init__(
        self,
        encoder,
        num_labels: int,
        *,
        dropout: float = 0.1,
        label_names: list[str] | None = None,
    ):
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config  # Trainer reads model.config
        self.main_input_name = encoder.main_input_name  # input_values; Whisper: input_features
        self.head = SpeechHead(encoder.config.hidden_size, num_labels, dropout)
        self.head_config = {
            "num_labels": num_labels,
            "dropout": dropout,
            "label_names": list(label_names or []),
        }

    # -- Trainer hooks
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        self.encoder.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs=gradient_checkpointing_kwargs
        )

    def freeze_feature_encoder(self) -> None:
        """Freeze the CNN feature encoder (the reference fine-tunes the transformer only;
        Whisper: its two input convolutions)."""
        if hasattr(self.encoder, "freeze_feature_encoder"):
            self.encoder.freeze_feature_encoder()
            return
        for conv in (self.encoder.conv1, self.encoder.conv2):
            conv.requires_grad_(False)

    @property
    def base_model(self):
        """The wav2vec2-family encoder under the head (as transformers' classifiers name it)."""
        return self.encoder

    def forward(
        self,
        input_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        input_features: torch.Tensor | None = None,
        **_,
    ) -> SequenceClassifierOutput:
        """``attention_mask`` goes to the encoder; ``lengths`` (samples) only masks the pooling,
        for group-norm models that must not see a mask (wav2vec2-base) and for Whisper, whose
        log-mel ``input_features`` always span 30 s."""
        inputs = input_features if input_features is not None else input_values
        out = self.encoder(
            inputs, attention_mask=attention_mask, output_hidden_states=output_hidden_states
        )
        hidden = out.last_hidden_state
        if lengths is None and attention_mask is not None:
            lengths = attention_mask.sum(-1)
        mask = frame_mask(self.encoder, lengths, hidden)
        logits = self.head(masked_mean(hidden, mask))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=out.hidden_states if output_hidden_states else None,
        )

    # -- persistence
    def save_pretrained(self, directory: str | os.PathLike, **kwargs) -> None:
        directory = Path(directory)
        self.encoder.save_pretrained(directory, **kwargs)
        save_file(
            {k: v.contiguous() for k, v in self.head.state_dict().items()}, directory / HEAD_WEIGHTS
        )
        (directory / HEAD_CONFIG).write_text(json.dumps(self.head_config, indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> SpeechClassifier:
        """Reload a fine-tuned speech classifier folder."""
        directory = Path(directory)
        if not (directory / HEAD_CONFIG).is_file():
            raise ModelError(
                f"{directory}: no {HEAD_CONFIG}; not a fine-tuned emofeat speech model"
            )
        try:
            cfg = json.loads((directory / HEAD_CONFIG).read_text(encoding="utf-8"))
            num_labels, dropout = int(cfg["num_labels"]), float(cfg["dropout"])
            label_names = [str(n) for n in cfg["label_names"]]
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as err:
            raise ModelError(
                f"{directory / HEAD_CONFIG}: not a head definition emofeat wrote ({type(err).__name__}: "
                f"{err}); it needs num_labels, dropout and label_names"
            ) from None
        model = cls(
            load_speech_encoder(directory, exact=True),
            num_labels,
            dropout=dropout,
            label_names=label_names,
        )
        try:
            model.head.load_state_dict(load_file(directory / HEAD_WEIGHTS))
        except Exception as err:  # not safetensors, missing or extra tensors, other shapes
            raise ModelError(
                f"{directory / HEAD_WEIGHTS}: not the head that {HEAD_CONFIG} defines "
                f"({' '.join(str(err).split())[:300]})"
            ) from None
        return model


def output_frames(encoder, samples: torch.Tensor) -> torch.Tensor:
    """Output frames an encoder computes from ``samples`` real samples: the CNN's receptive
    arithmetic for wav2vec2-style models; for Whisper the log-mel frames that hold audio (hop
    160), halved by its stride-2 convolution, at most 1500 (30 s)."""
    if is_whisper(encoder.config):
        mel = (samples + WHISPER_HOP - 1) // WHISPER_HOP
        return encoder._get_feat_extract_output_lengths(mel).clamp(max=WHISPER_FRAMES)
    return encoder._get_feat_extract_output_lengths(samples)


def frame_mask(encoder, lengths: torch.Tensor | None, hidden: torch.Tensor) -> torch.Tensor:
    """(B, T) mask of the output frames computed from real samples (``lengths``), not padding."""
    b, t = hidden.shape[:2]
    if lengths is None:
        return torch.ones(b, t, dtype=torch.bool, device=hidden.device)
    frames = output_frames(encoder, lengths).to(hidden.device)
    return torch.arange(t, device=hidden.device)[None, :] < frames[:, None]


WHISPER_HOP = 160  # samples per log-mel frame at 16 kHz
WHISPER_SECONDS = 30.0  # the encoder's fixed input span
WHISPER_FRAMES = 1500  # its output frames for 30 s


def is_whisper(config) -> bool:
    return getattr(config, "model_type", "") == "whisper"


def load_speech_encoder(
    source: str | os.PathLike, *, attention: str | None = None, exact: bool = False
):
    """The bare encoder of a speech checkpoint: ``AutoModel`` for wav2vec2-style models (CTC and
    pre-training heads are dropped); for Whisper the encoder of the encoder-decoder (a hub
    checkpoint), or the encoder alone as emofeat saves it with a fine-tuned head. ``exact``: a
    folder emofeat saved, whose weights must match its config tensor for tensor (a pretrained
    checkpoint may hold other heads' tensors, which are dropped)."""
    from transformers import AutoConfig, AutoModel

    source = local_source(source)
    impl = {"attn_implementation": attention, "output_loading_info": True}
    if not attention:
        del impl["attn_implementation"]
    with loading(source):
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
        if not is_whisper(config):
            model, info = AutoModel.from_pretrained(source, trust_remote_code=False, **impl)
        else:
            from transformers.models.whisper.modeling_whisper import WhisperEncoder

            if "WhisperEncoder" in (config.architectures or []):
                model, info = WhisperEncoder.from_pretrained(source, **impl)
            else:
                model, info = AutoModel.from_pretrained(source, trust_remote_code=False, **impl)
                model = model.get_encoder()
    check_weights(source, info, exact=exact)
    return model


def load_feature_extractor(source: str | os.PathLike):
    """The checkpoint's feature extractor (``preprocessor_config.json``)."""
    from transformers import AutoFeatureExtractor

    source = local_source(source)
    with loading(source):
        return AutoFeatureExtractor.from_pretrained(source, trust_remote_code=False)


def equal_length_runs(lengths: Sequence[int]) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of consecutive pieces of equal length: what a model that
    would see padding as audio is forwarded in."""
    starts = [0] + [i for i in range(1, len(lengths)) if lengths[i] != lengths[i - 1]]
    return list(zip(starts, [*starts[1:], len(lengths)]))


def min_samples(config) -> int:
    """Fewest samples that give a wav2vec2-family model of this config one output frame (the
    receptive field of its CNN: 400 samples, 25 ms at 16 kHz, for the real models)."""
    need = 1
    for kernel, stride in reversed(list(zip(config.conv_kernel, config.conv_stride))):
        need = (need - 1) * stride + kernel
    return int(need)


class SpeechCollator:
    """Normalise and pad waveforms with the model's feature extractor."""

    def __init__(self, feature_extractor, sample_rate: int):
        self.fe = feature_extractor
        self.sample_rate = sample_rate
        # Group-norm wav2vec2 models (base) are trained without an attention mask.
        self.use_mask = bool(getattr(feature_extractor, "return_attention_mask", True))
        self.log_mel = hasattr(feature_extractor, "nb_max_frames")  # Whisper's

    def encode(self, waves: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Normalised, padded ``input_values``, sample ``lengths`` and (for layer-norm models)
        the ``attention_mask``; for Whisper the 30-s log-mel ``input_features`` and ``lengths``."""
        lengths = torch.tensor([len(w) for w in waves])
        if self.log_mel:
            enc = self.fe(waves, sampling_rate=self.sample_rate, return_tensors="pt")
            return {"input_features": enc["input_features"], "lengths": lengths}
        enc = self.fe(
            waves,
            sampling_rate=self.sample_rate,
            padding=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        batch = {"input_values": enc["input_values"], "lengths": lengths}
        if self.use_mask:
            batch["attention_mask"] = enc["attention_mask"]
        return batch

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.encode([it["input"] for it in items])
        if "labels" in items[0]:
            batch["labels"] = training_targets([it["labels"] for it in items])
        return batch


def duration_batches(
    rows: np.ndarray,
    durations: np.ndarray,
    *,
    budget_s: float,
    max_s: float,
    max_ratio: float = 1.1,
    piece_cost: float | None = None,
) -> list[np.ndarray]:
    """Rows sorted by duration, cut into batches whose padded duration stays within ``budget_s``
    and whose longest piece is at most ``max_ratio`` times the shortest (so padding stays under
    ~10 % of frames). A batch's padded cost is (pieces) x (longest piece); clips longer than
    ``max_s`` count as several windows. With ``piece_cost`` every piece costs that much whatever
    its length (Whisper pads each to 30 s), and lengths are not matched."""
    order = np.argsort(durations, kind="stable")
    batches, cur, longest, shortest, pieces = [], [], 0.0, 0.0, 0
    for j in order:
        d = float(durations[j])
        n_pieces = int(np.ceil(d / max_s)) if d > max_s else 1
        piece = piece_cost or min(d, max_s)
        if cur and (
            max(longest, piece) * (pieces + n_pieces) > budget_s
            or (piece_cost is None and piece > shortest * max_ratio)
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


def window_bounds(n: int, win: int | None) -> list[tuple[int, int]]:
    """(start, stop) of the windows of ``win`` samples that cut a waveform of ``n`` samples, a
    tail shorter than a quarter window folded into its neighbour (one window: ``win`` None)."""
    if win is None or n <= win:
        return [(0, n)]
    bounds = [(i, min(i + win, n)) for i in range(0, n, win)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < win // 4:
        tail = bounds.pop()  # (popped first: a 2-window clip used to raise IndexError here)
        bounds[-1] = (bounds[-1][0], tail[1])
    return bounds


def windows(x: np.ndarray, win: int | None, min_len: int) -> list[np.ndarray]:
    """A waveform cut into windows of ``win`` samples (see :func:`window_bounds`), each padded
    with silence to at least ``min_len`` samples."""
    return [_pad(x[a:b], min_len) for a, b in window_bounds(len(x), win)]


def _pad(piece: np.ndarray, min_len: int) -> np.ndarray:
    return np.pad(piece, (0, min_len - len(piece))) if len(piece) < min_len else piece


def audio_row(manifest, row: int, sample_rate: int, min_length: int = 1) -> float | str:
    """A speech row's seconds at ``sample_rate`` (exact samples, so that windows are cut the
    same way everywhere), or why it cannot be used: no audio, an unreadable file, shorter than
    ``min_length`` samples, or audio that changed since ``data prepare``. Every speech source
    (the encoders, openSMILE) checks its rows with it."""
    if not str(manifest.frame["audio_path"].iat[row]).strip():
        return "no audio (a text-only row); extract it with a text model"
    path = manifest.audio_path(row)
    try:
        frames, rate = header(path)  # one read of the header, with its checks
    except AudioError as err:
        return str(err)
    seconds = resampled_length(frames, rate, sample_rate) / sample_rate
    if seconds * sample_rate < min_length:
        return (
            f"{path}: {seconds * 1000:.1f} ms is shorter than the encoder can see "
            f"({min_length} samples at {sample_rate} Hz)"
        )
    prepared = manifest.durations[row] if manifest.durations is not None else np.nan
    if np.isfinite(prepared) and abs(prepared - frames / rate) > 1e-3:
        return (
            f"{path}: the audio changed since `data prepare` (the manifest says "
            f"{prepared:.3f} s, the file holds {frames / rate:.3f} s); prepare the manifest again"
        )
    return seconds


@register_family
class SpeechEncoder(Encoder):
    """wav2vec2 and XLS-R (and their relatives): a normalised waveform, with an attention mask
    for layer-norm feature encoders (large, XLS-R) and none for group-norm ones (base), which are
    forwarded in runs of equal length; windows for long clips, masked pooling of every requested
    layer over all frames of a clip, the reference head on the pooled last layer."""

    family = "wav2vec2"
    modality = "speech"
    model_types = ("wav2vec2", "wav2vec2-conformer", "unispeech", "unispeech-sat", "sew", "sew-d")
    # What ``emofeat models list`` says a folder needs, and which short names load it.
    needs = "config.json, model.safetensors, preprocessor_config.json"

    @classmethod
    def load_processor(cls, source: str):
        return load_feature_extractor(source)

    def new_classifier(self, source, label_names, dropout, attention=None):
        encoder = load_speech_encoder(source, attention=attention)
        if dropout is None:
            # The reference's head used the checkpoint's ``final_dropout`` (twice).
            dropout = float(getattr(encoder.config, "final_dropout", 0.1))
        return SpeechClassifier(
            encoder, len(label_names), dropout=dropout, label_names=list(label_names)
        )

    def load_classifier(self, folder):
        return SpeechClassifier.from_pretrained(folder).eval()

    def save(self, model, folder):
        """The classifier, the feature extractor, and in ``head.json`` the head's full
        definition, so that plain transformers + safetensors reproduce the logits (README)."""
        model.head_config.update(
            architecture="logits = out_proj(dropout(tanh(dense(dropout(pooled)))))",
            pooling="mean over time of the encoder's last_hidden_state, over the frames of real "
            "samples only (encoder._get_feat_extract_output_lengths(samples))",
            reverse=self.options.reverse,
            sample_rate=self.options.sample_rate,
            input="mono waveform at sample_rate, time-reversed if reverse, then this folder's "
            "feature extractor",
        )
        super().save(model, folder)

    def load_pretrained(self, source):
        return load_speech_encoder(source).eval()

    def min_input_length(self, config) -> int:
        return min_samples(config)

    def sequence_length(self) -> int:
        return 512  # frames, ~10 s at 20 ms: MMM's audio sequence

    def input_provenance(self):
        return {"sample_rate": self.options.sample_rate, "max_len": self.options.max_seconds or 0}

    # -- rows
    def check_row(self, manifest, row, min_length=1):
        return audio_row(manifest, row, self.options.sample_rate, min_length)

    def _window(self) -> int | None:
        opts = self.options
        return int(opts.max_seconds * opts.sample_rate) if opts.max_seconds else None

    def load_pieces(self, manifest, row, min_length=1, part=None):
        opts = self.options
        path = manifest.audio_path(row)
        if part is None:
            return windows(
                load_audio(path, opts.sample_rate, opts.reverse), self._window(), min_length
            )
        # Only this part's windows are decoded: a 1-hour clip never sits in memory whole.
        bounds = window_bounds(audio_length(path, opts.sample_rate), self._window())
        first, stop = part
        start, end = bounds[first][0], bounds[stop - 1][1]
        x = load_span(path, start, end, sample_rate=opts.sample_rate, reverse=opts.reverse)
        return [_pad(x[a - start : b - start], min_length) for a, b in bounds[first:stop]]

    # Seconds of compute each piece costs whatever its length (None: its own length).
    piece_cost: ClassVar[float | None] = None

    def batches(self, rows, lengths, *, batch_size, batch_seconds):
        max_s = self.options.max_seconds or float("inf")
        return duration_batches(
            np.asarray(rows),
            lengths,
            budget_s=batch_seconds,
            max_s=max_s,
            piece_cost=self.piece_cost,
        )

    def row_parts(self, length, *, batch_seconds):
        win = self._window()
        if win is None:
            return None  # one piece whatever its length: --max-seconds bounds memory
        n_windows = len(window_bounds(round(length * self.options.sample_rate), win))
        cost = self.piece_cost or self.options.max_seconds
        if n_windows * cost <= batch_seconds or n_windows == 1:
            return None
        per_part = max(1, int(batch_seconds // cost))
        return [(i, min(i + per_part, n_windows)) for i in range(0, n_windows, per_part)]

    limit_effect = "cut into --max-seconds windows"

    def over_limit(self, pieces):
        limit = self.options.max_seconds
        return bool(limit) and sum(len(p) for p in pieces) > int(limit * self.options.sample_rate)

    def piece_units(self, pieces):
        return sum(len(p) for p in pieces) / self.options.sample_rate

    def collator(self):
        return SpeechCollator(self.processor, self.options.sample_rate)

    def input_lengths(self, inputs):
        return inputs["lengths"]

    # -- forward
    def run(self, model, inputs):
        return self.bare(model)(
            inputs["input_values"],
            attention_mask=inputs.get("attention_mask"),
            output_hidden_states=True,
        )

    # Whether padding changes a clip's outputs even with the attention mask (data2vec-audio: its
    # stacked positional convolutions see the padded frames after their first layer).
    padding_leaks: ClassVar[bool] = False

    def forward_part(self, model, inputs, owner, **kw):
        """Models without an attention mask (group-norm feature encoders) would see padding as
        audio, and so would those whose padding leaks: their pieces go through in runs of equal
        length, each without padding."""
        lengths = inputs["lengths"].tolist()
        width = inputs["input_values"].shape[1]
        masked = "attention_mask" in inputs and not self.padding_leaks
        if masked or all(n == width for n in lengths):
            return super().forward_part(model, inputs, owner, **kw)
        owner = np.asarray(owner)
        parts = [
            super(SpeechEncoder, self).forward_part(
                model, self.subset(inputs, np.arange(a, b)), owner[a:b], **kw
            )
            for a, b in equal_length_runs(lengths)
        ]
        return sum(parts[1:], parts[0])

    def valid_positions(self, model, inputs, hidden):
        return frame_mask(self.bare(model), inputs["lengths"], hidden)

    def head_layers(self, model):
        return {self.num_hidden_states(model) - 1} if hasattr(model, "head") else set()

    def head_outputs(self, model, pooled):
        if not hasattr(model, "head"):
            return None, {}
        mean = pooled[self.num_hidden_states(model) - 1][0]
        return model.head(mean.to(model.head.dense.weight.dtype)).float(), {}


@register_family
class HubertEncoder(SpeechEncoder):
    """HuBERT (base: group-norm feature encoder, no attention mask; large: layer norm)."""

    family = "hubert"
    model_types = ("hubert",)


@register_family
class WavLMEncoder(SpeechEncoder):
    """WavLM (base/base-plus/large)."""

    family = "wavlm"
    model_types = ("wavlm",)


@register_family
class Data2VecAudioEncoder(SpeechEncoder):
    """data2vec-audio (layer-norm feature encoder, attention mask; padding still reaches valid
    frames through its positional convolutions, so clips are forwarded without padding)."""

    family = "data2vec-audio"
    model_types = ("data2vec-audio",)
    padding_leaks = True


@register_family
class WhisperSpeechEncoder(SpeechEncoder):
    """Whisper's encoder: a log-mel of exactly 30 s per piece (windows of at most 30 s, each
    padded to 30 s by the feature extractor), pooled over the frames that hold audio; the
    decoder is not loaded into the store's computation."""

    family = "whisper"
    model_types = ("whisper",)
    needs = "config.json, model.safetensors, preprocessor_config.json (WhisperFeatureExtractor)"
    piece_cost = WHISPER_SECONDS

    def __init__(self, processor, options):
        # Whisper sees at most 30 s; longer windows could not be computed.
        window = min(options.max_seconds or WHISPER_SECONDS, WHISPER_SECONDS)
        super().__init__(processor, dataclasses.replace(options, max_seconds=window))

    def min_input_length(self, config) -> int:
        return 1

    def run(self, model, inputs):
        return self.bare(model)(inputs["input_features"], output_hidden_states=True)

    def forward_part(self, model, inputs, owner, **kw):
        return Encoder.forward_part(self, model, inputs, owner, **kw)  # no padding to avoid

    def subset(self, inputs, pieces):
        index = torch.as_tensor(pieces, device=inputs["lengths"].device)
        return {k: v[index] for k, v in inputs.items()}  # every piece spans 30 s already


def recorded_reverse(folder: str | os.PathLike) -> bool:
    """Whether a fine-tuned speech fold folder's head definition says it was trained on
    time-reversed audio; False for any other folder (a pretrained checkpoint has none).

    Args:
        folder: A model folder.

    Returns:
        The recorded ``reverse``.
    """
    try:
        head = json.loads((Path(folder) / HEAD_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(head.get("reverse", False)) if isinstance(head, dict) else False
