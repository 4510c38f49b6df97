"""openSMILE as a feature source: ``emofeat extract --model opensmile:eGeMAPSv02`` (or
``opensmile:ComParE_2016``, any feature set of ``opensmile.FeatureSet``).

Each row's audio is decoded and resampled by emofeat's audio path (:func:`emofeat.audio.load_audio`,
16 kHz mono, time-reversed with ``--reverse``) — the same samples every speech model of
emofeat sees — and handed to ``opensmile.Smile.process_signal``: the feature set's functionals
(eGeMAPSv02: 88 values; ComParE_2016: 6,373) are the store's one embedding, ``functionals``
(aliased ``last``); with ``--sequence`` the low-level descriptors per 10 ms frame are its
``last`` sequence (eGeMAPSv02: 25 per frame). A frozen feature extractor learned from no row of
the corpus: its store's rows are out-of-fold by construction (no row in-sample, no logits).
The store records the feature set and openSMILE's version; its identity holds the sha256 of
the feature set's configuration files, so another openSMILE release that computes other values
is a new store, never resumed into. Resumable like every extraction: the rows done are kept.

openSMILE is an optional dependency (``pip install 'emofeat[opensmile]'``; ``make install``
installs it).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from emofeat.audio import load_audio
from emofeat.corpus.manifest import DIMENSIONS, Manifest
from emofeat.encoders.base import check_rows
from emofeat.encoders.speech import audio_row
from emofeat.errors import EmofeatError
from emofeat.extract.config import STORE_IDENTITY, VALUE_KEYS, ExtractConfig
from emofeat.records import environment, record_paths
from emofeat.store import Provenance, StoreLayout, open_writer
from emofeat.store.layout import describe_test_predictions

PREFIX = "opensmile:"
SAMPLE_RATE = 16000
EMBEDDING = "functionals"
DEFAULT_SEQUENCE_FRAMES = 512  # 10 ms frames: 5.12 s, as a speech model's 512 frames at 20 ms


def family_row() -> dict[str, str]:
    """openSMILE's row of ``emofeat models list`` (its feature sets, when it is installed)."""
    try:
        import opensmile

        sets = ", ".join(PREFIX + f.name for f in opensmile.FeatureSet)
        needs = f"nothing: the opensmile package ({opensmile.__version__}) computes the features"
    except ImportError:
        sets = f"{PREFIX}eGeMAPSv02, {PREFIX}ComParE_2016, ..."
        needs = "the opensmile package: pip install 'emofeat[opensmile]' (not installed)"
    return {
        "family": "opensmile",
        "modality": "speech",
        "model_types": "-",
        "short_names": sets,
        "needs": needs,
        "inputs": "16 kHz mono samples decoded by emofeat; one vector of functionals per row "
        "(eGeMAPSv02: 88), low-level descriptors per 10 ms frame with --sequence.",
    }


def model_table() -> list[dict[str, str]]:
    """Every model ``extract --model`` takes, one row per source (``emofeat models list``, the
    encoder families page): the encoder families, then openSMILE."""
    from emofeat.encoders import family_table

    return [*family_table(), family_row()]


def is_opensmile(model: str | None) -> bool:
    """Whether ``--model`` names an openSMILE feature set (``opensmile:NAME``)."""
    return bool(model) and str(model).startswith(PREFIX)


def feature_set(model: str):
    """The ``opensmile.FeatureSet`` that ``opensmile:NAME`` names.

    Raises:
        EmofeatError: openSMILE is not installed, or NAME is not one of its feature sets.
    """
    try:
        import opensmile
    except ImportError:
        raise EmofeatError(
            f"--model {model}: openSMILE is not installed; pip install 'emofeat[opensmile]'"
        ) from None
    name = model[len(PREFIX) :]
    known = [f.name for f in opensmile.FeatureSet]
    if name not in known:
        raise EmofeatError(f"--model {model}: no openSMILE feature set {name!r}; known: {known}")
    return opensmile.FeatureSet[name]


def _smile(model: str, level: str):
    import opensmile

    return opensmile.Smile(
        feature_set=feature_set(model), feature_level=opensmile.FeatureLevel[level]
    )


def _config_sha256(smile) -> str:
    """The sha256 of the feature set's configuration files (what decides the values)."""
    digest = hashlib.sha256()
    folder = Path(smile.config_path).parent
    for path in sorted(folder.rglob("*.conf")):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _check_options(cfg: ExtractConfig) -> None:
    """Refuse the options that mean nothing to openSMILE (by name), before anything is read."""
    problems = cfg.changed("model_path", "text_filter", "sequence_padding", "max_len", "precision")
    problems += [f"--pooling {cfg.pooling}"] if cfg.pooling != "mean" else []
    if cfg.layers not in ("last", "all"):
        problems.append(f"--layers {cfg.layers}")
    if problems:
        raise EmofeatError(
            f"--model {cfg.model}: {', '.join(problems)} do(es) not apply to openSMILE (its "
            "functionals are one per-utterance vector: no layers, pooling, tokens or autocast)"
        )


def extract_opensmile(m: Manifest, out: Path, cfg: ExtractConfig) -> Path:
    """Extract openSMILE features of every row of ``m`` into the store ``out`` (resumable).

    Args:
        m: The manifest.
        out: The store to write (``.h5``).
        cfg: The extraction options (``cfg.model`` is ``opensmile:NAME``).

    Returns:
        ``out``.

    Raises:
        EmofeatError: openSMILE missing, an unknown feature set, an option that does not apply,
            a row without readable audio (without ``skip_bad``).
    """
    import opensmile

    _check_options(cfg)
    functionals = _smile(cfg.model, "Functionals")
    lld = _smile(cfg.model, "LowLevelDescriptors") if cfg.sequence else None
    frames = cfg.sequence_length or DEFAULT_SEQUENCE_FRAMES
    # The speech encoders' row check: readable audio, unchanged since `data prepare`.
    checked = check_rows(
        m,
        np.arange(len(m)),
        lambda r: audio_row(m, r, SAMPLE_RATE),
        skip_bad=cfg.skip_bad,
    )
    bad = dict(zip(checked.bad_rows.tolist(), (why for _, why in checked.bad)))
    seconds = np.zeros(len(m))
    seconds[checked.good] = checked.lengths
    weights = _config_sha256(functionals)
    layout = StoreLayout(
        ids=m.ids,
        labels=m.label_indices,
        split=m.split,
        fold=m.fold,
        label_names=m.label_names,
        embeddings={EMBEDDING: len(functionals.feature_names)},
        logits=False,
        targets=m.dimensions if np.isfinite(m.dimensions).any() else None,
        dimension_names=list(DIMENSIONS),
        embedding_dtype=cfg.dtype,
        in_sample=np.zeros(len(m), bool),  # learned from no row: out-of-fold by construction
        aliases={"last": EMBEDDING},
        sequences={"last": (frames, len(lld.feature_names))} if lld is not None else {},
        config={
            **record_paths({k: getattr(cfg, k) for k in VALUE_KEYS}, (), out.parent),
            "sequence_length": frames if lld is not None else cfg.sequence_length,
            "weights_sha256": [weights],
            "feature_set": cfg.model[len(PREFIX) :],
            "opensmile_version": opensmile.__version__,
            "feature_names": list(functionals.feature_names),
            "test_predictions": describe_test_predictions(1),  # one extractor for every row
            "model_revision": opensmile.__version__,
        },
    )
    origin = Provenance(
        model_id=cfg.model,
        model_revision=opensmile.__version__,
        checkpoint_sha256=weights,
        family="opensmile",
        modality="speech",
        pooling=EMBEDDING,
        layers=[EMBEDDING],
        reverse=bool(cfg.reverse),
        precision="fp32",
        split_scheme=m.split_scheme,
        sample_rate=SAMPLE_RATE,
    )
    attrs = {
        **origin.to_attrs(),
        "environment": environment(),
        "identity_keys": list(STORE_IDENTITY),
    }
    writer = open_writer(out, layout, attrs=attrs, overwrite=cfg.overwrite)
    try:
        pending = [int(r) for r in writer.pending]
        for r in [r for r in pending if r in bad]:
            writer.skip([r], bad[r])
        todo = [r for r in pending if r not in bad]
        if not todo:
            tqdm.write(f"[{out.name}] every row is done already; nothing to compute")
        _compute(m, writer, todo, seconds, functionals=functionals, lld=lld, cfg=cfg, out=out)
        writer.finalize()
    finally:
        writer.close()
    return out


def _compute(
    m, writer, todo, seconds: np.ndarray, *, functionals, lld, cfg: ExtractConfig, out: Path
) -> None:
    """Compute and write the rows ``todo`` in blocks (a kill loses at most one block); the
    progress bar counts audio seconds (``seconds`` per row, exact samples from the headers)."""
    samples = np.rint(seconds * SAMPLE_RATE).astype(np.int64)  # whole units: no float drift
    total = int(samples[todo].sum()) if todo else 0
    block = cfg.flush_rows or 256
    bar = tqdm(
        total=total,
        unit="audio-s",
        unit_scale=1 / SAMPLE_RATE,
        desc=f"extract {out.name}",
        dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} audio-s [{elapsed}<{remaining}, {rate_fmt}]",
    )
    started = time.perf_counter()
    try:
        rows, values, sequences = [], [], []

        def flush() -> None:  # the computed rows, as one block
            if rows:
                writer.write(
                    rows,
                    embeddings={EMBEDDING: np.asarray(values, np.float32)},
                    sequences={"last": list(sequences)} if lld is not None else None,
                )
            for done in (rows, values, sequences):
                done.clear()

        for r in todo:
            x = load_audio(m.audio_path(r), SAMPLE_RATE, reverse=bool(cfg.reverse))
            features = functionals.process_signal(x, SAMPLE_RATE).to_numpy()[0]
            frames = lld.process_signal(x, SAMPLE_RATE).to_numpy() if lld is not None else None
            bar.update(int(samples[r]))
            if not (np.isfinite(features).all() and (frames is None or np.isfinite(frames).all())):
                # openSMILE has no value for some functionals of a very short clip
                why = (
                    f"{m.audio_path(r)}: openSMILE gives non-finite features for this "
                    f"{len(x) / SAMPLE_RATE:.3f}-s clip (too short for {cfg.model}?)"
                )
                if not cfg.skip_bad:
                    flush()  # nothing computed is lost: a re-run resumes after these rows
                    raise EmofeatError(
                        f"row {m.ids[r]!r}: {why}; pass --skip-bad to record it as skipped"
                    )
                writer.skip([r], why)
                continue
            rows.append(r)
            values.append(features)
            sequences.append(frames)
            if len(rows) == block:
                flush()
        flush()
    finally:
        bar.close()
    if todo:
        took = time.perf_counter() - started
        tqdm.write(
            f"[{out.name}] {len(todo)} rows, {total / SAMPLE_RATE:.1f} audio-s in {took:.1f} s "
            f"({total / SAMPLE_RATE / max(took, 1e-9):.1f} audio-s/s)"
        )
