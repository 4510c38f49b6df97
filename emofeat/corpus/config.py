"""The options of ``emofeat data prepare`` and ``emofeat data synth``, declared once
(:mod:`emofeat.options`)."""

from __future__ import annotations

from dataclasses import dataclass

from emofeat.options import OptionError, Options, option, seed_option

SPLIT_SCHEMES = ("emo-ensemble", "session-kfold", "mmm")
MULTILABEL_POLICIES = ("drop", "first", "soft", "duplicate")
TEXT_MODES = ("raw", "clean")


def _label_list(text: str) -> bool:
    names = [n.strip().lower() for n in text.split(",")]
    return all(names) and len(set(names)) == len(names)


@dataclass(frozen=True)
class PrepareConfig(Options):
    """How corpora become a manifest (recorded in the manifest's sidecar)."""

    split: str = option(
        "emo-ensemble",
        help="The split recipe: emo-ensemble (the reference's), session-kfold, mmm.",
        choices=SPLIT_SCHEMES,
    )
    folds: int = option(
        5,
        help="Cross-fitting folds of the train rows (0: none).",
        low=0,
        high=1000,
        rule=lambda k: k != 1,
        rule_text="0 (none) or an integer from 2 to 1000",
    )
    text: str = option(
        "raw",
        help="Transcripts as written (raw) or cleaned of symbols and annotation marks (clean).",
        choices=TEXT_MODES,
    )
    kemdy19_role: str = option(
        "speaker",
        help="KEMDy19: whose annotation a segment takes, its speaker's (the actor who spoke it) "
        "or its listener's.",
        choices=("speaker", "listener"),
    )
    multilabel: str = option(
        "drop",
        help="KEMDy19/KEMDy20 rows with several consensus labels: drop (the reference), first, soft "
        "(vote fractions), duplicate (one row per label, each with its own label; MMM's data "
        "code gave every copy the last label).",
        choices=MULTILABEL_POLICIES,
    )
    labels: str | None = option(
        None,
        help="The classes in label-index order, comma-separated (default: the sorted union of "
        "the classes the readers declare and the labels the rows hold, after --label-map).",
        rule=_label_list,
        rule_text="comma-separated class names, each once",
    )
    label_map: str | None = option(
        None,
        help="A YAML or JSON file mapping raw labels to classes (happiness: happy) or to null "
        "(the row is kept unlabelled: extracted, never trained on or scored).",
        path=True,
    )
    corpus: str | None = option(
        None, help="With --emobox: the EmoBox corpus to read (a folder of its data folder)."
    )
    seed: int = seed_option(help="Seed of the fold assignment.")
    skip_missing: bool = option(
        False, help="Leave out utterances whose wav/txt is missing.", flag=True
    )

    def label_order(self) -> list[str] | None:
        """``--labels`` as a list (None when not given)."""
        return [n.strip() for n in self.labels.split(",")] if self.labels else None


@dataclass(frozen=True)
class SynthConfig(Options):
    """The synthetic KEMDy20 + AI Hub corpus (``emofeat data synth``)."""

    seed: int = seed_option()
    sessions: int = option(
        10, help="KEMDy20 sessions (2 speakers each; 0: none).", low=0, high=1000
    )
    per_session: int = option(40, help="Utterances per session.", low=1, high=100_000)
    aihub: int = option(200, help="AI Hub utterances (0: none).", low=0, high=1_000_000)
    kemdy19: int = option(
        0,
        help="KEMDy19 sessions (2 actors each, --per-session segments; 0: none).",
        low=0,
        high=1000,
    )
    csv: int = option(
        0,
        help="Utterances of a corpus in the generic CSV format (own/corpus.csv; 0: none), "
        "labelled with --classes.",
        low=0,
        high=1_000_000,
    )
    classes: str = option(
        "angry,happy,neutral,sad",
        help="The generic CSV corpus's classes (2 to 7 names; each sounds and reads like the "
        "KEMDy20 emotion of its name, or like one no other class took).",
        rule=lambda text: 2 <= len(text.split(",")) <= 7 and _label_list(text),
        rule_text="2 to 7 comma-separated class names, each once",
    )
    csv_sessions: int = option(
        6, help="Sessions of the generic CSV corpus (2 speakers each).", low=1, high=1000
    )
    min_seconds: float = option(1.0, help="Shortest clip (s).", low=0.1, high=600)
    max_seconds: float = option(2.0, help="Longest clip (s).", low=0.1, high=600)

    def check(self) -> None:
        if not (self.sessions or self.aihub or self.csv or self.kemdy19):
            raise OptionError(
                "--sessions, --aihub, --csv and --kemdy19 are all 0: nothing to write"
            )
        if self.min_seconds > self.max_seconds:
            raise OptionError(
                f"--min-seconds {self.min_seconds} is above --max-seconds {self.max_seconds}"
            )
