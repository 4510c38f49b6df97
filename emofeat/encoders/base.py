"""The encoder interface every model family implements, the family registry, and masked pooling.

An :class:`Encoder` owns everything that differs between text and speech: loading (a pretrained
encoder, a new classifier on it, a fine-tuned fold folder), checking and reading manifest rows,
batching, collation, the minimum input length and the masked, pooled forward pass over any set of
hidden layers. Fine-tuning (:mod:`emofeat.finetune.run`) and extraction (:mod:`emofeat.extract.run`) ask
the encoder and never branch on the modality.

Families register themselves by name (the way lhotse registers feature extractors)::

    @register_family
    class ElectraEncoder(TextEncoder):
        family = "electra"
        model_types = ("electra",)

and :data:`MODELS` maps the short model names users type to (family, hub id).
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from emofeat.errors import EmofeatError
from emofeat.options import OptionError

if TYPE_CHECKING:
    from emofeat.corpus.manifest import Manifest

log = logging.getLogger(__name__)

FAMILIES: dict[str, type[Encoder]] = {}


def register_family(cls: type[Encoder]) -> type[Encoder]:
    """Class decorator: make an encoder family known by its ``family`` name."""
    FAMILIES[cls.family] = cls
    return cls


# ------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class InputOptions:
    """How manifest rows become model inputs (the parts of a run that decide what a model sees)."""

    max_len: int = 64  # text: token limit
    sample_rate: int = 16000  # speech
    reverse: bool = False  # speech: time-reverse the waveform (the reference's second model)
    max_seconds: float | None = None  # speech, extraction only: window length for long clips
    # Text, for MMM's text store as published: "hangul" keeps Hangul (and spaces) only, and
    # "max_length" sequences hold all max_len positions, the pad token's states included.
    text_filter: str = "none"
    sequence_padding: str = "valid"


@dataclass
class RowCheck:
    """Result of checking manifest rows: usable rows, (id, reason) of the others, and a length
    per usable row (characters for text, seconds for speech) for batching."""

    good: np.ndarray
    bad: list[tuple[str, str]]
    lengths: np.ndarray
    bad_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))


def check_rows(
    manifest: Manifest,
    rows: np.ndarray,
    check_row: Callable[[int], float | str],
    *,
    skip_bad: bool,
) -> RowCheck:
    """Usable rows and the others with their reasons, by ``check_row`` (a row's length, or why
    it cannot be used); without ``skip_bad`` a bad row is an error that lists the first ones."""
    good, bad, bad_rows, lengths = [], [], [], []
    ids = manifest.ids
    for r in rows:
        res = check_row(int(r))
        if isinstance(res, str):
            bad.append((ids[r], res))
            bad_rows.append(int(r))
        else:
            good.append(int(r))
            lengths.append(res)
    if bad and not skip_bad:
        listing = "\n".join(f"  {u}: {why}" for u, why in bad[:10])
        raise EmofeatError(
            f"{len(bad)} unusable utterance(s); first ones:\n{listing}\n"
            "Fix them, or pass --skip-bad to leave them out (they are recorded)."
        )
    return RowCheck(
        np.asarray(good, dtype=int),
        bad,
        np.asarray(lengths, dtype=float),
        np.asarray(bad_rows, dtype=int),
    )


@dataclass
class EncoderOutput:
    """One forward pass of one model over a batch of rows: per hidden-state index the pooled
    (mean, std) of each row, the logits (models with a head) and extra pooled outputs (BERT's
    pooler) — all float32, on the model's device."""

    pooled: dict[int, tuple[torch.Tensor, torch.Tensor]]
    logits: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    # With ``sequence_layer``: per row, that layer's states at the valid positions (tokens or
    # frames, windows of a long clip concatenated), (T_row, H) float32.
    sequences: list[torch.Tensor] | None = None

    @staticmethod
    def mean(parts: Sequence[EncoderOutput]) -> EncoderOutput:
        """The element-wise mean of several models' features on the same rows (fold models)."""
        n = len(parts)
        first = parts[0]
        pooled = {
            i: (sum(p.pooled[i][0] for p in parts) / n, sum(p.pooled[i][1] for p in parts) / n)
            for i in first.pooled
        }
        logits = sum(p.logits for p in parts) / n if first.logits is not None else None
        extra = {k: sum(p.extra[k] for p in parts) / n for k in first.extra}
        sequences = (
            [sum(p.sequences[i] for p in parts) / n for i in range(len(first.sequences))]
            if first.sequences is not None
            else None
        )
        return EncoderOutput(pooled, logits, extra, sequences)


# ------------------------------------------------------------------------------------- pooling
def training_targets(targets: list) -> torch.Tensor:
    """A batch's training targets: class indices (long), or ``[class, valence, arousal]`` rows
    (float, NaN where a row has none) for a task with dimensions (:mod:`emofeat.tasks`)."""
    if targets and isinstance(targets[0], list | tuple):
        return torch.tensor(targets, dtype=torch.float32)
    return torch.tensor(targets, dtype=torch.long)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over time of ``hidden`` (B, T, H) where ``mask`` (B, T) is true (keeps the dtype and
    the autograd graph: the speech classifier trains through it)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def layer_sums(
    hidden_states: Sequence[torch.Tensor],
    layers: Sequence[int],
    mask: torch.Tensor,
    *,
    owner: torch.Tensor | None,
    n_rows: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per hidden-state index in ``layers`` (L), the sums and sums of squares (L, R, H) over the
    positions where ``mask`` (B, T) is true, and the counts (R,), per row of pieces that belong
    to rows (``owner[piece] = row``; None: piece i is row i). In float32; padding never enters
    a sum, so pooled values do not depend on the batch. All layers are summed in one stacked
    pass (25 layers one by one cost the host 25x the kernel launches and Python)."""
    h = torch.stack([hidden_states[i] for i in layers]).float()  # (L, B, T, H)
    m = mask.to(torch.float32)
    sums = torch.einsum("bt,lbth->lbh", m, h)
    squares = torch.einsum("bt,lbth->lbh", m, h * h)
    counts = m.sum(1)
    if owner is not None:
        shape = (len(layers), n_rows, h.shape[-1])
        sums = torch.zeros(shape, device=h.device).index_add_(1, owner, sums)
        squares = torch.zeros(shape, device=h.device).index_add_(1, owner, squares)
        counts = torch.zeros(n_rows, device=h.device).index_add_(0, owner, counts)
    return sums, squares, counts


@dataclass
class Partial:
    """One model's forward passes over some pieces of ``n_rows`` rows, before pooling: masked
    sums per layer, the outputs each pass gives per row (text: logits and pooler; a text row is
    one piece) and the sequences so far. Partials of the same rows add up (``a + b``) to what
    one pass over all their pieces gives: a long clip's windows are forwarded a few at a time,
    and memory does not grow with its length."""

    layers: list[int]
    sums: torch.Tensor  # (L, R, H)
    squares: torch.Tensor
    counts: torch.Tensor  # (R,)
    logits: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    sequences: list[torch.Tensor] | None = None
    sequence_cap: int | None = None  # positions kept per row (None: all)

    def __add__(self, other: Partial) -> Partial:
        if other.logits is not None and self.logits is not None:
            raise ValueError("per-pass outputs of the same rows in two partials")
        sequences = None
        if self.sequences is not None:
            cap = self.sequence_cap
            sequences = [torch.cat([a, b])[:cap] for a, b in zip(self.sequences, other.sequences)]
        return Partial(
            self.layers,
            self.sums + other.sums,
            self.squares + other.squares,
            self.counts + other.counts,
            self.logits if self.logits is not None else other.logits,
            self.extra or other.extra,
            sequences,
            self.sequence_cap,
        )

    def pooled(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """(mean, std) per layer: one pass over the sums (std from E[x^2] - E[x]^2)."""
        n = self.counts.clamp(min=1)[None, :, None]
        mean = self.sums / n
        std = (self.squares / n - mean * mean).clamp(min=0).sqrt()
        return {i: (mean[j], std[j]) for j, i in enumerate(self.layers)}


def row_sequences(
    hidden: torch.Tensor,
    mask: torch.Tensor,
    *,
    owner: np.ndarray,
    n_rows: int,
    cap: int | None = None,
) -> list[torch.Tensor]:
    """Per row, the states of its pieces at their valid positions, pieces in order (the first
    ``cap`` positions; None: all)."""
    h = hidden.float()
    per_piece = [h[p][mask[p]] for p in range(h.shape[0])]
    owner = np.asarray(owner).tolist()
    empty = h.new_zeros((0, h.shape[-1]))  # a row with no piece in this pass
    return [
        torch.cat([empty] + [per_piece[p] for p in range(len(owner)) if owner[p] == r])[:cap]
        for r in range(n_rows)
    ]


def layer_names(spec: str, num_hidden: int) -> list[tuple[str, int]]:
    """(dataset name, hidden-state index) pairs for ``--layers``; ``num_hidden`` counts hidden
    states (layers + 1, index 0 being the input embeddings)."""
    if spec == "last":
        return [("last", num_hidden - 1)]
    if spec == "all":
        return [(f"layer_{i:02d}", i) for i in range(num_hidden)]
    out = []
    for part in spec.split(","):
        part = part.strip()
        if part == "last":
            out.append(("last", num_hidden - 1))
            continue
        try:
            i = int(part)
        except ValueError:
            raise EmofeatError(
                f"--layers {spec!r}: expected last, all or indices like 0,6,12"
            ) from None
        if not 0 <= i < num_hidden:
            raise EmofeatError(
                f"--layers: index {i} outside 0..{num_hidden - 1} (this model has {num_hidden - 1} layers)"
            )
        out.append((f"layer_{i:02d}", i))
    return out


def untimed(stage: str) -> AbstractContextManager:
    """The default ``clock`` of :meth:`Encoder.forward`: times nothing."""
    return contextlib.nullcontext()


# ------------------------------------------------------------------------------------- encoder
class Encoder(ABC):
    """A model family. Holds the processor (tokenizer or feature extractor) and the input options;
    the models themselves (one per fold) are passed to :meth:`forward`."""

    family: ClassVar[str]
    modality: ClassVar[str]  # "text" or "speech": the store's ``modality`` attribute
    model_types: ClassVar[tuple[str, ...]]  # Hugging Face ``model_type`` values it handles
    input_stage: ClassVar[str] = "decode"  # what reading a row's input is called in timings
    needs: ClassVar[str] = "config.json, model.safetensors"  # a folder's files (models list)

    def __init__(self, processor: Any, options: InputOptions):
        self.processor = processor
        self.options = options

    # -- loading
    @classmethod
    @abstractmethod
    def load_processor(cls, source: str) -> Any:
        """The tokenizer or feature extractor saved in a local model folder."""

    @classmethod
    def from_folder(cls, source: str, options: InputOptions) -> Encoder:
        """An encoder whose processor comes from ``source`` (a pretrained or fine-tuned folder)."""
        return cls(cls.load_processor(source), options)

    @abstractmethod
    def new_classifier(
        self,
        source: str,
        label_names: Sequence[str],
        dropout: float | None,
        attention: str | None = None,
    ) -> torch.nn.Module:
        """A fresh classification head on the pretrained encoder at ``source`` (``attention``:
        transformers' ``attn_implementation``, e.g. sdpa or eager; None: its default)."""

    @abstractmethod
    def load_classifier(self, folder: str) -> torch.nn.Module:
        """A fine-tuned classifier saved by :meth:`save` (eval mode)."""

    @abstractmethod
    def load_pretrained(self, source: str) -> torch.nn.Module:
        """The bare pretrained encoder (no head), for frozen-encoder extraction (eval mode)."""

    def save(self, model: torch.nn.Module, folder: str) -> None:
        """Save a fine-tuned classifier and the processor so that :meth:`load_classifier` and
        :meth:`from_folder` reload them."""
        model.save_pretrained(folder)
        self.processor.save_pretrained(folder)

    @staticmethod
    def bare(model: torch.nn.Module) -> torch.nn.Module:
        """The encoder inside a classifier (or the model itself when it has no head)."""
        return getattr(model, "base_model", model)

    def num_hidden_states(self, model: torch.nn.Module) -> int:
        """Hidden states a forward pass returns: layers + the input embeddings."""
        return int(model.config.num_hidden_layers) + 1

    def input_provenance(self) -> dict[str, Any]:
        """What a store records of the inputs: ``sample_rate`` (speech, else 0) and ``max_len``
        (tokens for text, the window length in seconds for speech)."""
        return {"sample_rate": 0, "max_len": self.options.max_len}

    def sequence_length(self) -> int:
        """Positions a stored sequence keeps (text: the token limit)."""
        return int(self.options.max_len)

    def extra_embeddings(self, model: torch.nn.Module) -> dict[str, int]:
        """Embeddings besides the pooled hidden states (name → width); none by default."""
        return {}

    # -- rows
    def min_input_length(self, config: Any) -> int:
        """Fewest input units (samples, tokens) that give a model of this config one output
        position."""
        return 1

    @abstractmethod
    def check_row(self, manifest: Manifest, row: int, min_length: int = 1) -> float | str:
        """A usable row's length (for batching), or the reason it cannot be used (e.g. shorter
        than ``min_length`` input units)."""

    def check_rows(
        self, manifest: Manifest, rows: np.ndarray, *, skip_bad: bool, min_length: int = 1
    ) -> RowCheck:
        """Usable rows and the others with their reasons (:func:`check_rows` with
        :meth:`check_row`)."""
        return check_rows(
            manifest, rows, lambda r: self.check_row(manifest, r, min_length), skip_bad=skip_bad
        )

    @abstractmethod
    def load_pieces(
        self,
        manifest: Manifest,
        row: int,
        min_length: int = 1,
        part: tuple[int, int] | None = None,
    ) -> list[Any]:
        """The model inputs of one row: the transcript, or the waveform cut into windows of
        ``options.max_seconds`` (one piece when that is None); with ``part`` = (first, stop)
        only those pieces, reading no more of the input than they need."""

    @abstractmethod
    def batches(
        self, rows: np.ndarray, lengths: np.ndarray, *, batch_size: int, batch_seconds: float
    ) -> list[np.ndarray]:
        """Rows grouped into extraction batches (similar lengths together: little padding)."""

    def row_parts(self, length: float, *, batch_seconds: float) -> list[tuple[int, int]] | None:
        """For a row of ``length`` (see :meth:`check_row`) too large for one batch, its pieces
        in parts that each fit one (``[(first, stop), ...]``); None when it fits (every text
        row: one piece)."""
        return None

    def piece_units(self, pieces: list[Any]) -> float:
        """What a row's pieces amount to for the progress rate (audio seconds; 0 for text)."""
        return 0.0

    # What the input limit does to a row that exceeds it, for the end-of-run count.
    limit_effect = "cut"

    def over_limit(self, pieces: list[Any]) -> bool:
        """Whether a row's input exceeds the encoder's limit (speech: cut into ``max_seconds``
        windows), so extraction can count them."""
        return False

    def count_over_limit(self, row_pieces: list[list[Any]], inputs: dict[str, Any]) -> int:
        """How many of a batch's rows (their pieces, and the batch as :meth:`encode` made it)
        exceeded the limit."""
        return sum(self.over_limit(pieces) for pieces in row_pieces)

    @classmethod
    def position_limit(cls, source: str) -> int | None:
        """The most input positions the model can embed (text: its position embeddings); None
        where the model sets no such limit."""
        return None

    @classmethod
    def check_max_len(cls, source: str, max_len: int | None) -> None:
        """Refuse a ``--max-len`` above the model's positions before anything is written (it
        would fail in the first forward pass, after a run folder or store exists).

        Args:
            source: The model folder.
            max_len: The token limit asked for; None for the default.

        Raises:
            OptionError: ``max_len`` is above the model's position limit.
        """
        limit = cls.position_limit(source) if max_len else None
        if limit and max_len > limit:
            raise OptionError(
                f"--max-len must be at most {limit}, the positions of {source}, got {max_len}"
            )

    @classmethod
    def own_limit(cls, processor: Any, source: str) -> int | None:
        """The model's own input limit (text: tokens its position embeddings and tokenizer
        allow), the default when ``--max-len`` is not given; None where there is none."""
        return None

    @abstractmethod
    def collator(self) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
        """Training collation: items ``{"input": text or waveform, "labels": class}`` → model keyword inputs."""

    def encode(self, pieces: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Model inputs (CPU tensors, padded to the longest piece) for extraction: tokenised
        text, or normalised waveforms with their lengths. Runs in the input workers."""
        return self.collator().encode(list(pieces))

    @abstractmethod
    def input_lengths(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Valid length of each piece of encoded ``inputs`` (tokens, samples)."""

    def subset(
        self, inputs: dict[str, torch.Tensor], pieces: np.ndarray
    ) -> dict[str, torch.Tensor]:
        """The encoded inputs of some ``pieces`` of a batch, cut to their own longest piece:
        what :meth:`encode` gives for those pieces alone (used to split a batch on OOM)."""
        index = torch.as_tensor(pieces, device=next(iter(inputs.values())).device)
        some = {k: v[index] for k, v in inputs.items()}
        longest = int(self.input_lengths(some).max())
        return {k: v[:, :longest] if v.ndim >= 2 else v for k, v in some.items()}

    # -- forward
    @abstractmethod
    def run(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> Any:
        """The model's forward pass on device ``inputs``; the output has ``hidden_states``."""

    @abstractmethod
    def valid_positions(
        self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], hidden: torch.Tensor
    ) -> torch.Tensor:
        """(B, T) mask of the output positions (tokens, frames) computed from real input."""

    def head_layers(self, model: torch.nn.Module) -> set[int]:
        """Hidden states the model's head reads pooled (see :meth:`head_outputs`)."""
        return set()

    def sequence_positions(
        self, inputs: dict[str, torch.Tensor], mask: torch.Tensor
    ) -> torch.Tensor:
        """(B, T) positions a stored sequence keeps: the valid ones (``mask``) by default."""
        return mask

    def pass_outputs(
        self, model: torch.nn.Module, out: Any
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Outputs a forward pass gives per piece (text, one piece per row: the classifier's
        logits, BERT's pooler), float32; none by default."""
        return None, {}

    def head_outputs(
        self, model: torch.nn.Module, pooled: dict[int, tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """The logits (None without a head) and extra outputs computed from the pooled layers
        (speech: the head on the pooled last layer), float32; none by default."""
        return None, {}

    def forward_part(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        owner: np.ndarray,
        *,
        n_rows: int,
        layers: Sequence[int],
        device: str,
        autocast: torch.dtype | None,
        sequence_layer: int | None = None,
        sequence_cap: int | None = None,
        clock: Callable[[str], AbstractContextManager] = untimed,
    ) -> Partial:
        """One forward pass over encoded ``inputs`` (pieces belong to rows through ``owner``),
        as a :class:`Partial` of the ``n_rows`` rows; see :meth:`forward`."""
        enc = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
        with clock("forward"), autocast_context(device, autocast):
            out = self.run(model, enc)
        with clock("pool"):
            hs = out.hidden_states
            mask = self.valid_positions(model, enc, hs[-1])
            own = owner_tensor(owner, n_rows, device)
            summed = sorted(set(layers) | self.head_layers(model))
            sums = layer_sums(hs, summed, mask, owner=own, n_rows=n_rows)
            with autocast_context(device, autocast):
                logits, extra = self.pass_outputs(model, out)
            sequences = None
            if sequence_layer is not None:
                sequences = row_sequences(
                    hs[sequence_layer],
                    self.sequence_positions(enc, mask),
                    owner=owner,
                    n_rows=n_rows,
                    cap=sequence_cap,
                )
        return Partial(summed, *sums, logits, extra, sequences, sequence_cap)

    def finish(
        self,
        model: torch.nn.Module,
        part: Partial,
        *,
        layers: Sequence[int],
        device: str,
        autocast: torch.dtype | None,
    ) -> EncoderOutput:
        """The rows' outputs once all their pieces are in ``part``: pooled ``layers``, and the
        logits and extras of the pass or of the head on the pooled layers."""
        pooled = part.pooled()
        with autocast_context(device, autocast):
            logits, extra = self.head_outputs(model, pooled)
        logits = part.logits if logits is None else logits
        extra = {**part.extra, **extra}
        return EncoderOutput({i: pooled[i] for i in layers}, logits, extra, part.sequences)

    def forward(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        owner: np.ndarray,
        *,
        n_rows: int,
        layers: Sequence[int],
        device: str,
        autocast: torch.dtype | None,
        sequence_layer: int | None = None,
        clock: Callable[[str], AbstractContextManager] = untimed,
    ) -> EncoderOutput:
        """Pooled hidden states of ``layers`` for each of ``n_rows`` rows of encoded ``inputs``
        (from :meth:`encode`; pieces belong to rows through ``owner``), the logits when
        ``model`` has a head, and with ``sequence_layer`` that layer's unpooled states per row
        (for sequence models such as MMM), in one pass (:meth:`forward_part` then
        :meth:`finish`). ``clock(stage)`` times the "forward" and "pool" stages."""
        part = self.forward_part(
            model,
            inputs,
            owner,
            n_rows=n_rows,
            layers=layers,
            device=device,
            autocast=autocast,
            sequence_layer=sequence_layer,
            clock=clock,
        )
        return self.finish(model, part, layers=layers, device=device, autocast=autocast)


def owner_tensor(owner: np.ndarray, n_rows: int, device: str) -> torch.Tensor | None:
    """``owner`` on the device, or None when piece i is row i (decided on the host: no device
    sync)."""
    owner = np.asarray(owner)
    if len(owner) == n_rows and np.array_equal(owner, np.arange(n_rows)):
        return None
    return torch.as_tensor(owner, device=device)


@contextlib.contextmanager
def inference_context(device: str, dtype: torch.dtype | None):
    """Where a loop of forward passes runs: no gradients, and with ``dtype`` an autocast region
    that stays off around the whole loop. Each forward pass enters its own (on) region inside
    it; autocast's cache of weights cast to ``dtype`` lives until the outermost region ends, so
    each weight is cast once per loop instead of once per pass (~25 ms per pass of wav2vec2-base
    on 2 CPU cores), while the loop's own arithmetic (pooling sums) stays in float32.
    ``torch.no_grad``, not ``torch.inference_mode``: autocast does not cache under inference
    mode."""
    with torch.no_grad():
        if dtype is None:
            yield
        else:
            with torch.autocast(device.split(":")[0], enabled=False):
                yield


def autocast_context(device: str, dtype: torch.dtype | None):
    """torch.autocast for ``device``, disabled when ``dtype`` is None."""
    kind = device.split(":")[0]
    if dtype is None:
        return torch.autocast(kind, enabled=False)
    return torch.autocast(kind, dtype=dtype)
