"""The cross-fitting rule (emofeat.crossfit) against hand-made plans."""

import hashlib

import numpy as np
import pytest

from emofeat.crossfit import FoldPlan

# Ten rows written out by hand: u0-u5 labelled train rows in folds 0,1,2; u6 a train row
# without a label; u7 a train row alone in fold 3 (a fold of size one); u8, u9 test rows.
IDS = [f"u{i}" for i in range(10)]
SPLIT = ["train"] * 8 + ["test"] * 2
FOLD = [0, 0, 1, 1, 2, 2, 1, 3, -1, -1]
LABELS = [0, 1, 2, 0, 1, 2, -1, 1, 0, 2]
SESSIONS = ["s1", "s1", "s2", "s2", "s3", "s3", "s2", "s4", "s5", "s5"]


def plan(**changes):
    values = {"ids": IDS, "split": SPLIT, "fold": FOLD, "labels": LABELS, "groups": SESSIONS}
    values.update(changes)
    return FoldPlan.from_arrays(**values)


def test_rows_that_fit_and_rows_held_out():
    p = plan()
    assert p.train_rows.tolist() == [0, 1, 2, 3, 4, 5, 7]  # u6 has no label: nobody fits it
    assert p.folds == [0, 1, 2, 3] and p.cross_fitted
    assert p.fit_rows(0).tolist() == [2, 3, 4, 5, 7]
    assert p.held_rows(0).tolist() == [0, 1]
    assert p.fit_rows(3).tolist() == [0, 1, 2, 3, 4, 5] and p.held_rows(3).tolist() == [7]
    assert p.fit_rows(-1).tolist() == [0, 1, 2, 3, 4, 5, 7] and p.held_rows(-1).tolist() == []
    pairs = p.fold_pairs()
    assert [k for k, _, _ in pairs] == [0, 1, 2, 3]
    # Every labelled train row is held out exactly once, and never fitted by its own model.
    held = np.concatenate([h for _, _, h in pairs])
    assert sorted(held.tolist()) == p.train_rows.tolist()
    for _, fit, h in pairs:
        assert not set(fit) & set(h)


def test_model_groups_route_held_rows_to_their_model_and_the_rest_to_all():
    p = plan()
    groups = p.model_groups([0, 1, 2, 3])
    assert [(m, r.tolist()) for m, r in groups] == [
        ([0], [0, 1]),
        ([1], [2, 3]),
        ([2], [4, 5]),
        ([3], [7]),
        ([0, 1, 2, 3], [6, 8, 9]),  # unlabelled train row and test rows: the mean
    ]
    # One model on all train rows (a run without folds): every row from it.
    assert [(m, r.tolist()) for m, r in p.model_groups([-1])] == [([0], list(range(10)))]


def test_excluded_rows_are_fitted_by_no_model():
    p = plan().excluding([2])  # u2 could not be read
    assert 2 not in p.train_rows and 2 not in p.fit_rows(0) and 2 not in p.held_rows(1)
    groups = dict((tuple(m), r.tolist()) for m, r in p.model_groups([0, 1, 2, 3]))
    assert groups[(1,)] == [3] and 2 in groups[(0, 1, 2, 3)]


def test_subset_is_reindexed():
    p = plan().subset(np.array([2, 3, 4, 8]))
    assert list(p.ids) == ["u2", "u3", "u4", "u8"]
    assert p.held_rows(1).tolist() == [0, 1] and p.fit_rows(1).tolist() == [2]


def test_in_sample_from_what_trained_each_model_and_from_the_inputs():
    p = plan()
    groups = p.model_groups([0, 1, 2, 3])
    used = [set(IDS[i] for i in p.fit_rows(k)) for k in [0, 1, 2, 3]]
    assert not p.in_sample(groups, used).any()  # a clean cross-fit
    # A model that also chose its checkpoint on a test row makes that row in-sample.
    used[2] = used[2] | {"u9"}
    assert np.flatnonzero(p.in_sample(groups, used)).tolist() == [9]
    # In-sample inputs stay in-sample whatever the model did.
    inputs = np.zeros(10, bool)
    inputs[[0, 8]] = True
    assert np.flatnonzero(p.in_sample(groups, used, inputs)).tolist() == [0, 8, 9]
    # One model on every train row: every labelled train row is in-sample.
    one = p.model_groups([-1])
    assert np.flatnonzero(p.in_sample(one, [set(IDS[i] for i in p.fit_rows(-1))])).tolist() == [
        0,
        1,
        2,
        3,
        4,
        5,
        7,
    ]


def test_check_models_finds_every_kind_of_disagreement():
    p = plan()
    folds = [0, 1, 2, 3]
    used = [set(IDS[i] for i in p.fit_rows(k)) for k in folds]
    assert p.check_models(folds, used) == (0, [])
    # A row held out by another model than its fold's (the manifest was re-prepared).
    moved = [set(u) for u in used]
    moved[1].add("u2")
    moved[1].discard("u0")
    count, problems = p.check_models(folds, moved)
    assert count == 2
    assert problems == ["u0: manifest fold 0, run fold [0, 1]", "u2: manifest fold 1, run fold []"]
    # Never seen, and a test row that trained a model.
    unseen = [u - {"u7"} for u in used]
    unseen[1].add("u8")
    count, problems = p.check_models(folds, unseen)
    assert problems == [
        "u7: train row in fold 3 of the manifest, never seen by the run",
        "u8: test row in the manifest, but fold models trained on it",
    ]
    # Rows left out of training (skipped) may be unseen.
    assert p.excluding([7]).check_models(folds, [u - {"u7"} for u in used]) == (0, [])


def test_spanning_groups_and_inner_split_keep_sessions_whole():
    assert plan().spanning_groups() == {}  # u6 (unlabelled) is not a training row
    crossing = plan(fold=[0, 1, 1, 1, 2, 2, 1, 3, -1, -1])
    assert crossing.spanning_groups() == {"s1": [0, 1]}
    many = FoldPlan.from_arrays(
        ids=[f"r{i}" for i in range(40)],
        split=["train"] * 40,
        fold=[i % 2 for i in range(40)],
        labels=[0] * 40,
        groups=[f"g{i // 4}" for i in range(40)],
    )
    fit, val = many.inner_split(np.arange(40), 0.25, seed=0)
    assert len(val) and not set(many.groups[fit]) & set(many.groups[val])
    assert sorted(np.concatenate([fit, val]).tolist()) == list(range(40))


def test_assignment_hash_and_splitter_by_hand():
    p = plan()
    lines = sorted(f"{IDS[i]}\t{FOLD[i]}\n" for i in p.train_rows)
    assert p.assignment_sha256() == hashlib.sha256("".join(lines).encode()).hexdigest()
    assert plan(fold=[1, 0, 1, 1, 2, 2, 1, 3, -1, -1]).assignment_sha256() != p.assignment_sha256()
    splits = list(p.splitter().split(np.zeros(len(p.train_rows))))
    assert [te.tolist() for _, te in splits] == [[0, 1], [2, 3], [4, 5], [6]]


def test_not_cross_fitted_without_two_folds_or_with_foldless_rows():
    assert not plan(fold=[0] * 8 + [-1, -1]).cross_fitted
    assert not plan(fold=[0, 0, 1, -1, 2, 2, 1, 3, -1, -1]).cross_fitted
    with pytest.raises(ValueError, match="fold"):
        FoldPlan.from_arrays(ids=IDS, split=SPLIT, fold=FOLD[:3], labels=LABELS)


def test_ids_with_control_characters_are_shown_escaped():
    p = plan(ids=["u\x1b[31m0", *IDS[1:]])
    used = [set(p.ids[i] for i in p.fit_rows(k)) for k in [0, 1, 2, 3]]
    used[0].add("u\x1b[31m0")  # its own fold's model trained on it
    _, problems = p.check_models([0, 1, 2, 3], used)
    assert problems == ["u\\x1b[31m0: manifest fold 0, run fold []"]


def test_other_models_are_those_that_predict_rows_outside_the_labelled_train_rows():
    from emofeat.crossfit import FoldPlan

    plan = FoldPlan.from_arrays(
        ids=np.array([f"u{i}" for i in range(6)], dtype=object),
        split=np.array(["train"] * 4 + ["test"] * 2, dtype=object),
        fold=np.array([0, 1, 0, 1, -1, -1]),
        labels=np.array([0, 1, 0, 1, 0, 1]),
    )
    assert plan.other_models(plan.model_groups([0, 1])) == [0, 1]
    assert plan.other_models(plan.model_groups([0, 1, -1], refit=True)) == [2]
    assert plan.other_models(plan.model_groups([-1])) == [0]
    train_only = plan.subset(np.arange(4))
    assert train_only.other_models(train_only.model_groups([0, 1])) == []


def test_evidence_matches_the_copies_of_a_multilabel_segment():
    """A model that trained on ``u8#happy`` (a --multilabel duplicate copy) has heard u8: in a
    manifest made with another policy, test row u8 is in-sample, and a train copy is matched
    to its segment. A '#' that is not a label copy stays part of the id."""
    p = plan(ids=[*IDS[:8], "u8", "u9#x"])
    groups = p.model_groups([-1])
    flags = p.in_sample(groups, [["u8#happy", "u9", *IDS[:8]]])
    assert flags.tolist() == [True] * 8 + [True, False]  # u9 is not u9#x
    count, problems = p.check_models([-1], [["u8#angry", *IDS[:8]]])
    assert count == 1 and problems[0].startswith("u8: test row")
    # The copies of a train row held out by their fold: matched as their segment.
    copies = plan(ids=["u0#happy", "u1#sad", *IDS[2:]])
    used = [[u for u in IDS[:8] if FOLD[int(u[1:])] != k] for k in range(4)]
    assert copies.check_models([0, 1, 2, 3], used) == (0, [])
