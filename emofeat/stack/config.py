"""The options of ``emofeat stack``, declared once (:mod:`emofeat.options`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from emofeat.options import OptionError, Options, allow_incomplete_option, option, seed_option
from emofeat.tasks import TASKS

AUTO = "auto"  # --meta auto: the candidate with the best nested-CV accuracy
AUTO_CANDIDATES = ("softvote", "caruana", "logreg", "lgbm")
DIM_METAS = ("mean", "ridge", "lgbm", "caruana")  # emofeat.stack.dimensional builds them


def _meta_names() -> list[str]:
    from emofeat.stack.meta import META_LEARNERS  # scikit-learn, LightGBM: asked when needed

    return [*META_LEARNERS, AUTO]


def _weights_ok(weights: list[float]) -> bool:
    return all(math.isfinite(w) and w >= 0 for w in weights) and sum(weights) > 0


@dataclass(frozen=True)
class StackConfig(Options):
    """The options of ``emofeat stack`` (saved as the stack's ``config.yaml``)."""

    meta: str | None = option(
        None,
        help="The meta-learner of the classes (`emofeat stack --list-meta` describes each); auto: the one of "
        + ", ".join(AUTO_CANDIDATES)
        + " with the best nested-CV accuracy over the train folds (the report lists every "
        "candidate).",
        choices=_meta_names,
        default_text="none: required unless --target dimensional",
    )
    target: str = option(
        "categorical",
        help="What the stack predicts: the classes (categorical), valence and arousal "
        "(dimensional: from stores of runs fine-tuned with --task dimensional or both), or both.",
        choices=TASKS,
    )
    dim_meta: str = option(
        "ridge",
        help="The meta-learner of valence and arousal: mean (the stores' mean, fits nothing), "
        "ridge, lgbm, caruana (greedy selection by CCC), or auto (the one of them with the best "
        "mean CCC by CV over the train folds).",
        choices=(*DIM_METAS, AUTO),
    )
    weights: list[float] | None = option(
        None,
        help="softvote weights in store order, e.g. 0.25,0.25,1/6,1/6,1/6 (the reference).",
        rule=_weights_ok,
        rule_text="finite, non-negative numbers (fractions like 1/6 allowed), not all zero",
        default_text="equal",
    )
    features: str = option(
        "proba", help="What logreg/lgbm learn from.", choices=("proba", "logits")
    )
    passthrough: str | None = option(
        None,
        help="Append this embedding (PCA-reduced, fitted on train rows) to logreg/lgbm features.",
    )
    mixer_embedding: str = option("last", help="Embedding the pooled-mixer fuses.")
    calibrate: str = option(
        "none",
        help="temperature: scale the ensemble's probabilities by one temperature fitted on the "
        "out-of-fold train rows (never test); the report scores every system before and after.",
        choices=("none", "temperature"),
    )
    allow_in_sample: bool = option(
        False,
        help="Stack stores without out-of-fold train predictions (the report says so).",
        flag=True,
    )
    allow_incomplete: bool = allow_incomplete_option()
    seed: int = seed_option()

    def check(self) -> None:
        if self.meta is not None and self.target == "dimensional":
            raise OptionError(
                "--meta chooses the classes' meta-learner; --target dimensional stacks valence "
                "and arousal alone (their meta-learner is --dim-meta)"
            )
        if self.meta == AUTO and self.weights is not None:
            raise OptionError("--weights fixes the soft vote; --meta auto chooses by CV instead")
        if self.weights is not None and self.meta != "softvote":
            raise OptionError(
                f"--weights sets the soft vote's fixed weights; --meta {self.meta} learns its own "
                "and would ignore them"
            )
        if self.passthrough and self.meta not in (AUTO, None):
            from emofeat.stack.meta import get_meta

            if get_meta(self.meta).inputs != "features":
                raise OptionError("--passthrough works with logreg and lgbm")

    def record(self) -> dict:
        """The options as the stack's ``config.yaml`` holds them (weights as typed)."""
        out = self.to_dict()
        if out["weights"] is not None:  # repr round-trips floats
            out["weights"] = ",".join(repr(float(w)) for w in out["weights"])
        return out


@dataclass(frozen=True)
class PredictConfig(Options):
    """How a fitted stack reads the stores it predicts from (``emofeat predict``)."""

    allow_incomplete: bool = allow_incomplete_option()


# Inputs a stack's record holds beside the options (re-run with --config STACK/config.yaml).
INPUTS = ("stores", "out")
