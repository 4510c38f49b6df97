"""Split recipes: which rows are test, and the K cross-fitting folds of the train rows.

``emo-ensemble`` reproduces the reference split exactly (so results compare with the published
table): KEMDy20 by session, ``train_test_split`` over the sorted session list with
``test_size=0.2, random_state=42`` (KEMDy19, which the reference did not use, by the same rule); AI Hub rows shuffled with ``DataFrame.sample(frac=1,
random_state=42)``, the first ``int(0.8 n)`` train. AI Hub has no speaker ids, so its split is
utterance-level and speakers may leak across it. Its folds are label-stratified group folds.

``mmm`` is the MMM benchmark's split: KEMDy20 sessions 1-32 train, 33-40 test (other corpora as
in ``emo-ensemble``), with group-aware folds like the others.

``session-kfold`` keeps the same test rows and assigns whole sessions to folds by size
(``GroupKFold``), the leave-sessions-out cross-validation of the speech emotion literature.

In both, a fold never splits a group: the session where known (KEMDy20), else the speaker, else
the utterance itself (AI Hub), so a fold model never saw the session it predicts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import (
    GroupKFold,
    GroupShuffleSplit,
    KFold,
    StratifiedGroupKFold,
    StratifiedKFold,
    train_test_split,
)

from emofeat.corpus.aihub import CORPUS as AIHUB
from emofeat.corpus.config import SPLIT_SCHEMES
from emofeat.corpus.kemdy19 import CORPUS as KEMDY19
from emofeat.corpus.kemdy20 import CORPUS as KEMDY20
from emofeat.errors import CorpusError

MMM_LAST_TRAIN_SESSION = 32  # MMM's own split: KEMDy20 sessions 1-32 train, 33-40 test
REFERENCE_SEED = 42


def kemdy20_test_sessions(sessions: list[str], corpus: str = "KEMDy20") -> set[str]:
    """Held-out sessions of the reference: ``train_test_split`` over the sorted session list
    (KEMDy19's sessions are split by the same rule)."""
    ordered = sorted(sessions, key=lambda s: int("".join(ch for ch in s if ch.isdigit()) or 0))
    if len(ordered) < 2:
        raise CorpusError(
            f"{corpus}: {len(ordered)} session(s); a train/test split needs at least 2"
        )
    _, test = train_test_split(ordered, test_size=0.2, random_state=REFERENCE_SEED)
    return set(test)


def aihub_test_mask(n: int) -> np.ndarray:
    """Test rows of the reference AI Hub split, for rows in CSV order."""
    order = (
        pd.DataFrame({"i": np.arange(n)})
        .sample(frac=1, random_state=REFERENCE_SEED)["i"]
        .to_numpy()
    )
    mask = np.zeros(n, dtype=bool)
    mask[order[int(0.8 * n) :]] = True
    return mask


def groups_of(frame: pd.DataFrame) -> np.ndarray:
    """Group of each row for fold assignment: session, else speaker, else the row id."""
    session = frame["session"].fillna("").astype(str)
    speaker = frame["speaker"].fillna("").astype(str)
    ids = frame["id"].astype(str)
    corpus = frame["corpus"].astype(str)
    return np.where(
        session != "",
        corpus + "/" + session,
        np.where(speaker != "", corpus + "/" + speaker, "id/" + ids),
    )


def _corpus_folds(sub: pd.DataFrame, k: int, scheme: str, seed: int, corpus: str) -> np.ndarray:
    groups = groups_of(sub)
    n_groups = len(set(groups))
    if n_groups < k:
        raise CorpusError(
            f"{corpus}: {k} folds need at least {k} groups (sessions, speakers or utterances) of "
            f"train rows; found {n_groups}. Use fewer folds."
        )
    y = sub["label"].fillna("").astype(str).to_numpy()
    if n_groups == len(sub):  # no sessions or speakers: plain label-stratified folds
        counts = pd.Series(y).value_counts()
        splitter = (
            StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
            if counts.min() >= k
            else KFold(n_splits=k, shuffle=True, random_state=seed)
        )
    elif scheme == "session-kfold":
        splitter = GroupKFold(n_splits=k)
    else:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    out = np.full(len(sub), -1, dtype=int)
    grouped = isinstance(splitter, (GroupKFold, StratifiedGroupKFold))
    for f, (_, held) in enumerate(splitter.split(sub, y, groups if grouped else None)):
        out[held] = f
    return out


def assign_folds(frame: pd.DataFrame, k: int, *, scheme: str, seed: int) -> np.ndarray:
    """Fold of each row (-1 for test rows); train folds are group-aware."""
    folds = np.full(len(frame), -1, dtype=int)
    train = (frame["split"] == "train").to_numpy()
    if k == 0 or not train.any():
        return folds
    if k < 2:
        raise CorpusError(f"--folds must be 0 (no cross-fitting) or at least 2, got {k}")
    given = pd.to_numeric(frame.get("fold", pd.Series(np.nan, frame.index)), errors="coerce")
    # Folds are assigned per corpus, so each fold holds its share of every corpus.
    for corpus, idx in frame[train].groupby("corpus", sort=False).indices.items():
        rows = np.flatnonzero(train)[idx]
        own = given.iloc[rows]
        if own.notna().all() and (own >= 0).all():
            # A corpus that comes with its protocol's folds (EmoBox) keeps them.
            n = int(own.max()) + 1
            if n != k:
                raise CorpusError(
                    f"{corpus}: the corpus comes with {n} folds of its own protocol; pass "
                    f"--folds {n}"
                )
            folds[rows] = own.astype(int).to_numpy()
            continue
        folds[rows] = _corpus_folds(frame.iloc[rows], k, scheme, seed, corpus)
    return folds


def apply_split(frame: pd.DataFrame, scheme: str, *, k: int, seed: int) -> pd.DataFrame:
    """Set ``split`` and ``fold`` of manifest rows from several corpora."""
    if scheme not in SPLIT_SCHEMES:
        raise CorpusError(
            f"unknown split scheme {scheme!r}; expected one of {', '.join(SPLIT_SCHEMES)}"
        )
    frame = frame.copy().reset_index(drop=True)
    given = (
        frame["split"].fillna("").astype(str)
        if "split" in frame.columns
        else pd.Series([""] * len(frame))
    )
    split = np.array(["train"] * len(frame), dtype=object)
    for corpus, idx in frame.groupby("corpus", sort=False).indices.items():
        part = frame.iloc[idx]
        if corpus == KEMDY20 and scheme == "mmm":
            number = part["session"].map(lambda s: int("".join(c for c in s if c.isdigit()) or 0))
            split[idx] = np.where(number > MMM_LAST_TRAIN_SESSION, "test", "train")
        elif corpus in (KEMDY20, KEMDY19):
            test = kemdy20_test_sessions(sorted(part["session"].unique()), corpus)
            split[idx] = np.where(part["session"].isin(test), "test", "train")
        elif corpus == AIHUB:
            split[idx] = np.where(aihub_test_mask(len(part)), "test", "train")
        elif (given.iloc[idx] != "").all():
            split[idx] = given.iloc[idx].to_numpy()
        elif (part["label"].fillna("") == "").all():
            split[idx] = "test"  # unlabelled recordings: prediction only
        else:
            groups = groups_of(part)
            if len(set(groups)) < 2:
                raise CorpusError(
                    f"{corpus}: every row is in one group ({groups[0]}), and a test split needs "
                    "two at least, so that no session or speaker is on both sides; give the CSV "
                    "a split column (train/test per row), or rows of more sessions or speakers"
                )
            gss = GroupShuffleSplit(n_splits=1, test_size=0.2, random_state=seed)
            _, held = next(gss.split(part, groups=groups))
            s = np.array(["train"] * len(part), dtype=object)
            s[held] = "test"
            split[idx] = s
    frame["split"] = split
    n_train = int((split == "train").sum())
    if not n_train and (frame["label"].fillna("") == "").all():
        # New, unlabelled recordings: a prediction-only manifest (extract --run, then predict).
        frame["fold"] = -1
        return frame
    if not n_train:
        raise CorpusError(
            f"the {scheme} split of {len(frame)} utterance(s) leaves no train rows; "
            "give a larger corpus (or a split column with train rows)"
        )
    frame["fold"] = assign_folds(frame, k, scheme=scheme, seed=seed)
    filled = len(set(frame.loc[frame["split"] == "train", "fold"]) - {-1})
    if k and filled < k:
        raise CorpusError(
            f"--folds {k}: the {n_train} train row(s) fill only {filled} fold(s) (a session or "
            "speaker never spans two); lower --folds or give a larger corpus"
        )
    return frame
