"""The options of ``emofeat probe`` and ``emofeat store plot``, declared once
(:mod:`emofeat.options`)."""

from __future__ import annotations

from dataclasses import dataclass

from emofeat.options import OptionError, Options, option, seed_option

PROBE_HEADS = ("logreg", "lgbm")  # the meta-learners that read a feature matrix


@dataclass(frozen=True)
class ProbeConfig(Options):
    """A layer-wise probe: which head is cross-validated on each stored layer."""

    meta: str = option(
        "logreg", help="The head cross-validated on each layer.", choices=PROBE_HEADS
    )
    weighted: bool = option(
        False, help="Also the SUPERB-style learned weighted sum of layers.", flag=True
    )
    target: str = option(
        "categorical",
        help="What each layer is probed for: the classes (the head's accuracy, macro F1, UAR) "
        "or valence and arousal (dimensional: ridge regression per dimension, scored by CCC).",
        choices=("categorical", "dimensional"),
    )
    seed: int = seed_option()

    def check(self) -> None:
        if self.target == "dimensional" and self.weighted:
            raise OptionError(
                "--weighted learns a weighted sum of layers for the classes; with --target "
                "dimensional each layer is probed by ridge regression alone"
            )


@dataclass(frozen=True)
class CrossCorpusConfig(Options):
    """The cross-corpus matrix: which stored features, which head."""

    embedding: str = option(
        "last", help="The store's embedding the heads read (a layer_NN of --layers all, or last)."
    )
    head: str = option(
        "logreg",
        help="The classifier trained on one corpus, tested on another.",
        choices=PROBE_HEADS,
    )
    seed: int = seed_option()


@dataclass(frozen=True)
class PlotConfig(Options):
    """A 2-D map of one embedding of a store."""

    embedding: str = option("last", help="Embedding dataset name.")
    method: str = option("pca", help="The projection.", choices=("pca", "tsne"))
    max_points: int = option(
        5000,
        help="Draw a seeded random subset of the done rows above this many.",
        low=2,
        high=10_000_000,
    )
    seed: int = seed_option()
