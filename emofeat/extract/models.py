"""What an extraction runs and on which rows: the fold models of a fine-tuned run (or one
pretrained encoder), loaded with the run's input options, and the routing of every row to the
models that may compute it (the cross-fitting rule of :class:`emofeat.crossfit.FoldPlan`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from emofeat.corpus.manifest import Manifest
from emofeat.crossfit import FoldPlan
from emofeat.encoders import families, resolve
from emofeat.encoders.base import Encoder, InputOptions
from emofeat.encoders.source import local_source
from emofeat.encoders.speech import recorded_reverse
from emofeat.errors import EmofeatError
from emofeat.extract.config import ExtractConfig
from emofeat.records import weights_digests
from emofeat.runs import RunFolder, RunInfo, fine_tuned_without_record, trained_rows

log = logging.getLogger(__name__)


@dataclass
class Models:
    """What an extraction runs: the encoder family (with its processor and input options), one
    model per fold (one pretrained encoder for a frozen store), and where they came from."""

    encoder: Encoder
    models: list[torch.nn.Module]
    label_names: list[str]
    model_id: str
    # The weights' sha256 (whole, per folder), hashed in a thread while the models load.
    digests: Future[tuple[str, list[str]]]
    run: RunInfo | None = None
    run_path: str = ""
    # The run's folds the loaded models hold out, in order (-1: the model on all train rows).
    model_folds: list[int] = field(default_factory=list)
    # A single model folder that emofeat fine-tuned, loaded with --model: the ids it trained or
    # chose on (its rows.json). None: a pretrained encoder, which saw no row of the corpus.
    trained_on: set[str] | None = None
    # A folder whose files say it was fine-tuned but that holds no rows.json: which rows it
    # learned from is unknown, so no row's evidence can be given (the store records none).
    evidence_unknown: bool = False

    @property
    def out_of_fold(self) -> bool:
        """Whether train rows get predictions from the fold model that did not see them."""
        return self.run is not None and self.run.folds > 0


def load_models(cfg: ExtractConfig, label_names: Sequence[str] = ()) -> Models:
    """The fold models of ``cfg.run`` (with the run's input options), or the pretrained encoder
    ``cfg.model`` for frozen embeddings.

    ``label_names``: the manifest's classes. A run's heads must have the same classes in the
    same order (its logits are read by index); a frozen store takes them as its label names.
    An unlabelled manifest (no classes) takes the run's."""
    if cfg.run:
        run = RunFolder(cfg.run)
        info = run.info()
        if label_names and list(label_names) != list(info.label_names):
            raise EmofeatError(
                f"run {cfg.run} was trained on the classes {info.label_names}; the manifest's "
                f"are {list(label_names)}: extract it with a manifest of its label set (prepare "
                "it with --labels and --label-map)"
            )
        folds = run.fold_ids()
        if len(folds) > 1 and cfg.test_rows != "refit":  # a refit model would predict nothing
            folds = [k for k in folds if k >= 0]
        dirs = [str(d) for d in run.finished_fold_dirs(folds)]
        families()[info.family].check_max_len(dirs[0], cfg.max_len)
        digests = _hash_weights(dirs)
        options = InputOptions(
            max_len=cfg.max_len or info.max_len,
            sample_rate=info.sample_rate,
            reverse=info.reverse if cfg.reverse is None else cfg.reverse,
            max_seconds=cfg.max_seconds,
            text_filter=cfg.text_filter,
            sequence_padding=cfg.sequence_padding,
        )
        # The fold folders hold the tokenizer or feature extractor the run was trained with.
        encoder = families()[info.family].from_folder(dirs[0], options)
        models = [encoder.load_classifier(d) for d in dirs]
        return Models(
            encoder,
            models,
            info.label_names,
            info.source,
            digests,
            run=info,
            run_path=str(cfg.run),
            model_folds=folds,
        )
    if not cfg.model:
        raise EmofeatError("give --model (frozen encoder) or --run (fine-tuned run)")
    spec = resolve(cfg.model, cfg.model_path)
    source = local_source(spec.source)
    digests = _hash_weights([source])
    cls = spec.encoder_class
    cls.check_max_len(source, cfg.max_len)
    processor = cls.load_processor(source)
    options = InputOptions(
        max_len=cfg.max_len or cls.own_limit(processor, source) or 64,
        sample_rate=int(getattr(processor, "sampling_rate", 0) or 16000),
        # A fine-tuned speech folder records whether it hears time-reversed audio (head.json):
        # loaded as a frozen encoder it still hears what it was trained on, unless told.
        reverse=recorded_reverse(source) if cfg.reverse is None else bool(cfg.reverse),
        max_seconds=cfg.max_seconds,
        text_filter=cfg.text_filter,
        sequence_padding=cfg.sequence_padding,
    )
    encoder = cls(processor, options)
    return Models(
        encoder,
        [encoder.load_pretrained(source)],
        list(label_names),
        spec.source,
        digests,
        trained_on=trained_rows(source),
        evidence_unknown=fine_tuned_without_record(source),
    )


def _hash_weights(folders: list[str]) -> Future[tuple[str, list[str]]]:
    """:func:`weights_digests` of ``folders`` in a thread (hashlib releases the GIL): ~0.7 s
    per GB of weights (this 2-core AMD EPYC) that would otherwise come on top of loading them."""
    pool = ThreadPoolExecutor(max_workers=1)
    digests = pool.submit(weights_digests, folders)
    pool.shutdown(wait=False)
    return digests


@dataclass
class Routing:
    """Which fold models compute each row, and the row's out-of-fold evidence."""

    groups: list[tuple[list[int], np.ndarray]]  # (fold models, rows): values are their mean
    in_sample: np.ndarray  # per row: a model that produced it trained on it or chose on it
    plan: FoldPlan  # the rule the groups come from


def route_rows(m: Manifest, loaded_models: Models, *, refit: bool = False) -> Routing:
    """Route rows to models by the cross-fitting rule (:class:`emofeat.crossfit.FoldPlan`): a
    held-out train row → the fold model that held it out; every other row → the mean over the
    fold models.

    With a cross-fitted run the manifest's fold assignment is checked against the rows each fold
    model recorded (``rows.json``): a labelled train row whose fold differs from the run's, a
    labelled train row the run never saw, or a test row some fold model trained on is refused,
    with the first differences. The run's records also give each row's ``in_sample`` flag."""
    plan = FoldPlan.from_manifest(m)
    if loaded_models.run is None:  # one model for every row
        everyone = list(range(len(loaded_models.models)))
        groups = [(everyone, np.arange(len(m)))]
        # A pretrained encoder never saw these rows; a folder emofeat fine-tuned says which it
        # trained on, whichever option loaded it.
        used = [loaded_models.trained_on or set()]
        if loaded_models.evidence_unknown:
            log.warning(
                "%s was fine-tuned (its files say so) but has no rows.json: which rows it "
                "learned from is unknown, so the store records no evidence and `stack` will "
                "refuse it as unknown",
                loaded_models.model_id,
            )
            return Routing(groups, None, plan)
        return Routing(groups, plan.in_sample(groups, used), plan)
    run = RunFolder(loaded_models.run_path)
    model_folds = loaded_models.model_folds
    used = [u for k, u in zip(run.fold_ids(), run.fold_usage()) if k in model_folds]
    skipped = run.skipped_ids()
    plan = plan.excluding(i for i, u in enumerate(plan.ids) if u in skipped)
    # Every run, a single model's (--folds 0) too: no test row may be one a model trained on.
    count, problems = plan.check_models(model_folds, used)
    if count:
        listing = "\n  ".join(problems)
        raise EmofeatError(
            f"{run.path} was trained with another fold assignment than {m.path or m.root} "
            f"({count} row(s) differ), so some values would not be out-of-fold:\n  {listing}\n"
            f"Extract with the manifest the run was made from ({loaded_models.run.manifest}), "
            "or fine-tune a new run on this manifest."
        )
    if refit and -1 not in model_folds:
        raise EmofeatError(
            f"--test-rows refit: {run.path} has no model refit on all train rows; fine-tune it "
            "with --refit (the fold models are kept), or extract with --test-rows mean"
        )
    groups = plan.model_groups(model_folds, refit=refit)
    return Routing(groups, plan.in_sample(groups, used), plan)
