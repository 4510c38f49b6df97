"""``emofeat compare``: one table across stacks and runs, with the spread over seeds.

Each path is a stack folder (``emofeat stack``) or a run folder (``emofeat finetune``); a folder
holding several of them is searched. A stack row gives its test figures and cross-validated
accuracy; a run row the mean ± std of its held-out folds. Rows whose configuration is the same
but for the seed are also summarised as mean ± std over the seeds. Written as ``compare.md`` and
``compare.csv``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emofeat.corpus.manifest import DIMENSIONS
from emofeat.errors import EmofeatError
from emofeat.outputs import check_output, is_output, register_csv_kind
from emofeat.records import FOLDER_RECORD
from emofeat.runs import RunFolder
from emofeat.stack.folder import StackFolder

FIGURES = ("accuracy", "weighted_f1", "macro_f1", "uar")


def find_artifacts(paths: Sequence[str | os.PathLike]) -> list[StackFolder | RunFolder]:
    """Stack and run folders among ``paths`` (or below them): folders whose ``config.yaml`` is
    a stack's or a run's record and that hold their ``metrics.json``."""
    found: dict[Path, StackFolder | RunFolder] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise EmofeatError(f"{path}: no such folder")
        candidates = (
            [path]
            if (path / FOLDER_RECORD).is_file()
            else sorted(p.parent for p in path.glob(f"**/{FOLDER_RECORD}"))
        )
        for folder in candidates:
            artifact = _artifact(folder)
            if artifact is not None:
                found[folder] = artifact
    if not found:
        raise EmofeatError(f"no stack or run folders with their metrics in {list(paths)}")
    return [found[p] for p in sorted(found)]


def _artifact(folder: Path) -> StackFolder | RunFolder | None:
    """The stack or run folder at ``folder`` (by its record's kind), once it has metrics."""
    for kind, artifact in (("stack", StackFolder(folder)), ("run", RunFolder(folder))):
        # (a run without metrics is still training its first fold)
        if is_output(folder, kind) and artifact.metrics_path.is_file():
            return artifact
    return None


def _checked_row(artifact: StackFolder | RunFolder) -> dict[str, Any]:
    """:func:`_row`, with a record or metrics file of another shape than emofeat writes (a
    crafted or hand-edited one) named in one line instead of a traceback."""
    try:
        return _row(artifact)
    except (AttributeError, TypeError, ValueError, KeyError) as err:
        raise EmofeatError(
            f"{artifact.path}: its metrics.json or config.yaml is not what emofeat writes "
            f"({type(err).__name__}: {' '.join(str(err).split())[:200]}); re-run the command "
            "that made it, or leave the folder out"
        ) from None


def _row(artifact: StackFolder | RunFolder) -> dict[str, Any]:
    folder = artifact.path
    record = artifact.read_record()
    config = record["config"]
    seed = record.get("seed", config.get("seed"))
    if isinstance(artifact, StackFolder):
        metrics = artifact.metrics()
        stores = ",".join(Path(s).stem for s in config.get("stores", []))
        dims = metrics.get("dimensional") or {}
        metas = [m for m in (metrics.get("meta"), dims.get("meta")) if m]
        key = f"stack {' + '.join(metas)} over {stores}"
        row = {"path": str(folder), "kind": "stack", "configuration": key, "seed": seed}
        if "meta" in metrics:  # the classes
            test = metrics.get("test", {}).get("ensemble", {})
            row.update({f"test_{m}": test.get(m) for m in FIGURES})
            cv = metrics.get("cv", {}).get("accuracy", {})
            # In-sample figures are never shown as cross-validation.
            prefix = "insample" if metrics.get("cv_protocol") == "in-sample" else "cv"
            row.update(
                {f"{prefix}_accuracy": cv.get("mean"), f"{prefix}_accuracy_std": cv.get("std")}
            )
        if dims:  # valence and arousal: test CCC per dimension and their mean
            ensemble = dims.get("test", {}).get("ensemble", {})
            for name in (*DIMENSIONS, "mean"):
                row[f"test_{name}_ccc"] = ensemble.get(name, {}).get("ccc")
        sources = sorted(set((metrics.get("test_predictions") or {}).values()))
        row["base_test_rows"] = "; ".join(sources) or None
        return row
    summary = artifact.summary().get("summary", {})
    options = {k: v for k, v in config.items() if k not in ("seed", "device", "manifest")}
    key = f"run {options.get('model')} " + json.dumps(
        {k: options[k] for k in sorted(options) if k in ("preset", "dropout", "reverse", "select")}
    )
    row = {"path": str(folder), "kind": "run", "configuration": key, "seed": seed}
    row.update(
        {
            f"heldout_{m}": summary.get(m, {}).get("mean")
            for m in ("accuracy", "macro_f1", "uar", "mean_ccc")
            if m in summary
        }
    )
    row["heldout_accuracy_std"] = summary.get("accuracy", {}).get("std")
    return row


def _is_store_file(path: Path) -> bool:
    from emofeat.store.reader import is_store

    return path.suffix == ".h5" and is_store(path)


def _store_predictions(path: Path) -> pd.DataFrame:
    """A store's split, predicted and true classes (names) of its labelled, done rows that no
    model trained on (its evidence), indexed by id; refused without logits."""
    import numpy as np

    from emofeat.store import open_store

    with open_store(path) as s:
        if not s.has_logits:
            raise EmofeatError(
                f"{path}: a frozen encoder's store has no predictions to compare; compare the "
                "store of a head trained on it (emofeat fuse --model layer-sum)"
            )
        keep = (s.labels >= 0) & s.done
        if s.in_sample is not None:
            keep &= ~s.in_sample
        rows = np.flatnonzero(keep)
        names = np.asarray(s.label_names)
        predicted = names[s.logits(rows).argmax(1)]
        return pd.DataFrame(
            {"split": s.split[rows], "label": names[s.labels[rows]], "predicted": predicted},
            index=pd.Index(s.ids[rows], name="id"),
        )


def _store_row(path: Path, frame: pd.DataFrame) -> dict[str, Any]:
    """A store's row of the table from its predictions (:func:`_store_predictions`): its test
    figures, and its out-of-fold train rows' (each predicted by a model that did not train on
    it: held-out)."""
    from emofeat.metrics import classification_metrics

    row: dict[str, Any] = {
        "path": str(path),
        "kind": "store",
        "configuration": f"store {path.stem}",
    }
    for split, prefix in (("test", "test"), ("train", "heldout")):
        part = frame[frame.split == split]
        if len(part):
            figures = classification_metrics(part.label.to_numpy(), part.predicted.to_numpy())
            for m in FIGURES if prefix == "test" else ("accuracy", "macro_f1", "uar"):
                row[f"{prefix}_{m}"] = figures[m]
    return row


def _check_label_sets(artifacts: Sequence[StackFolder | RunFolder]) -> None:
    """Figures over different classes are not comparable: refuse folders of several label sets,
    naming each set and a folder that has it (folders written before label sets were recorded
    are not checked)."""
    sets: dict[tuple[str, ...], Path] = {}
    for artifact in artifacts:
        try:
            names = artifact.read_record()["config"].get("label_names")
        except (KeyError, TypeError, AttributeError):
            continue  # _checked_row names a malformed record
        if isinstance(names, list) and names:
            sets.setdefault(tuple(map(str, names)), artifact.path)
    if len(sets) > 1:
        listed = "; ".join(f"{list(names)} ({path})" for names, path in sets.items())
        raise EmofeatError(
            f"these folders score different label sets, whose figures do not compare: {listed}. "
            "Compare folders of one label set (a manifest prepared with --labels/--label-map)"
        )


def compare(
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    *,
    paired: bool = False,
    repeated: bool = False,
) -> pd.DataFrame:
    """One table across stack and run folders (``emofeat compare``).

    Args:
        paths: Stack or run folders, or folders holding them (searched recursively), and
            stores (a run's ``extract --run`` store, a fused or frozen head's): a store's row
            holds its test figures and its out-of-fold train rows' (held-out) figures.
        out: A folder to write ``compare.md`` and ``compare.csv`` into; None to write nothing.
        paired: Also compare every two stacks or stores on their common test rows
            (:func:`paired_stacks`, written as ``paired.csv`` and a section of ``compare.md``);
            ones scored on different rows are then refused.
        repeated: ``paths`` are repetitions of one protocol (:func:`repeated_comparison`): also each
            system's figures over them and the paired tests across them, written as
            ``repeated.csv``, ``repeated-pairs.csv`` and a section of ``compare.md``.

    Returns:
        One row per stack, run or store, then one per configuration run with several seeds
        (mean ± std); its ``attrs["markdown"]`` is the text of ``compare.md`` (every section).

    Raises:
        EmofeatError: no stack or run folder under ``paths``, an output that is an input, or
            (``paired``) stacks scored on different test rows.
    """
    stores = [Path(p) for p in paths if Path(p).is_file() and _is_store_file(Path(p))]
    folders = [p for p in paths if Path(p) not in stores]
    artifacts = find_artifacts(folders) if folders or not stores else []
    _check_label_sets(artifacts)
    if out:
        found = [a.path for a in artifacts] + stores
        check_output(Path(out) / "compare.csv", kind="comparison", inputs=found, what="-o")
    predictions = {p: _store_predictions(p) for p in stores}  # each store read once
    rows = pd.DataFrame(
        [_checked_row(f) for f in artifacts] + [_store_row(p, f) for p, f in predictions.items()]
    )
    rows["seed"] = rows["seed"].astype("Int64") if "seed" in rows else pd.NA  # stores have none
    labels = ("path", "kind", "configuration", "seed", "base_test_rows")
    numeric = [c for c in rows.columns if c not in labels]
    seeds = rows.groupby("configuration").filter(lambda g: g["seed"].nunique() > 1)
    summary = []
    for key, group in seeds.groupby("configuration"):
        entry = {
            "path": f"{len(group)} seeds",
            "kind": group["kind"].iloc[0],
            "configuration": key,
            "seed": ",".join(map(str, sorted(group["seed"]))),
        }
        if "base_test_rows" in group:
            entry["base_test_rows"] = group["base_test_rows"].iloc[0]
        for col in numeric:
            values = pd.to_numeric(group[col], errors="coerce").dropna()
            if len(values):  # numbers stay numbers in the CSV: mean, and the std beside it
                entry[col], entry[f"{col}_seed_std"] = values.mean(), values.std(ddof=0)
        summary.append(entry)
    table = pd.concat([rows, pd.DataFrame(summary)], ignore_index=True) if summary else rows
    pairs = pd.DataFrame()
    if paired:
        stacks = [a for a in artifacts if isinstance(a, StackFolder)]
        pairs = _paired({**_stack_test_rows(stacks), **_test_rows(predictions)})
    over = repeated_pairs = pd.DataFrame()
    if repeated:
        over, repeated_pairs = repeated_comparison(paths)
    text = to_markdown(table)
    text += "\n" + paired_markdown(pairs) if len(pairs) else ""
    text += "\n" + repeated_markdown(over, repeated_pairs) if repeated else ""
    table.attrs["markdown"] = text  # what compare.md holds (the CLI prints it)
    if out:
        from emofeat.atomic import write_text

        out = Path(out)
        write_text(out / "compare.csv", table.to_csv(index=False))
        if len(pairs):
            write_text(out / "paired.csv", pairs.to_csv(index=False))
        if repeated:
            write_text(out / "repeated.csv", over.to_csv(index=False))
            write_text(out / "repeated-pairs.csv", repeated_pairs.to_csv(index=False))
        write_text(out / "compare.md", text)
    return table


def paired_stacks(
    stacks: Sequence[StackFolder], stores: Sequence[str | os.PathLike] = ()
) -> pd.DataFrame:
    """Every pair of stacks (of the classes) and stores compared on the same test rows: per
    metric the difference A − B with its paired bootstrap interval, and McNemar's exact test
    (:func:`emofeat.metrics.paired_comparisons`), from the stacks' predictions.csv and the
    stores' logits. Ones scored on different rows are refused, naming the rows that differ.

    Args:
        stacks: Stack folders.
        stores: Stores (a run's, a fused or frozen head's): their labelled test rows that no
            model trained on.

    Returns:
        One row per pair (``a``, ``b``, ``rows``, ``<metric>``, ``<metric>_low``,
        ``<metric>_high``, ``mcnemar_b``, ``mcnemar_c``, ``mcnemar_p``); empty for fewer than two.

    Raises:
        EmofeatError: two of them scored on different test rows (the message names some).
    """
    predictions = {Path(p): _store_predictions(Path(p)) for p in stores}
    return _paired({**_stack_test_rows(stacks), **_test_rows(predictions)})


def _stack_test_rows(stacks: Sequence[StackFolder]) -> dict[Path, pd.DataFrame]:
    """Each stack's scored test rows from its predictions.csv: labelled, and not produced by a
    model that trained on them (stacks of valence and arousal alone have no classes)."""
    from emofeat.stack.folder import PREDICTIONS

    scored = {}
    for folder in stacks:
        path = folder.path / PREDICTIONS
        if not path.is_file() or "label" not in pd.read_csv(path, nrows=0).columns:
            continue
        frame = pd.read_csv(path, dtype={"id": str, "label": str}, keep_default_na=False)
        test = frame[
            (frame.split == "test") & (frame.label != "") & (frame.provenance != "in-sample")
        ]
        scored[folder.path] = test.set_index("id")
    return scored


def _test_rows(predictions: dict[Path, pd.DataFrame]) -> dict[Path, pd.DataFrame]:
    """The stores' scored test rows (:func:`_store_predictions`)."""
    return {p: frame[frame.split == "test"] for p, frame in predictions.items()}


def _paired(scored: dict[Path, pd.DataFrame]) -> pd.DataFrame:
    """Every two of ``scored`` (test rows: ``label`` and ``predicted``, indexed by id) compared
    on the same rows (see :func:`paired_stacks`)."""
    from emofeat.metrics import PAIRED_METRICS, paired_comparisons

    records = []
    paths = list(scored)
    for i, a in enumerate(paths):
        for b in paths[i + 1 :]:
            A, B = scored[a], scored[b]
            if set(A.index) != set(B.index):
                only_a = sorted(set(A.index) - set(B.index))[:3]
                only_b = sorted(set(B.index) - set(A.index))[:3]
                raise EmofeatError(
                    f"{a} and {b} were scored on different test rows (only in the first: "
                    f"{only_a}; only in the second: {only_b}); a paired comparison needs the "
                    "same rows: stacks of one manifest"
                )
            B = B.loc[A.index]
            names = sorted(set(A.label) | set(A.predicted) | set(B.predicted))
            code = {n: k for k, n in enumerate(names)}
            result = paired_comparisons(
                A.label.map(code), A.predicted.map(code), {"b": B.predicted.map(code)}, len(names)
            )["b"]
            record = {"a": str(a), "b": str(b), "rows": result["rows"]}
            for m in PAIRED_METRICS:
                record[m] = result[m]["difference"]
                record[f"{m}_low"], record[f"{m}_high"] = result[m]["ci95"]
            mcnemar = result["mcnemar"]
            record.update(mcnemar_b=mcnemar["b"], mcnemar_c=mcnemar["c"], mcnemar_p=mcnemar["p"])
            records.append(record)
    return pd.DataFrame(records)


def paired_markdown(paired: pd.DataFrame) -> str:
    """The paired comparisons of stacks as markdown."""
    lines = [
        "## Paired comparisons on the same test rows",
        "",
        "A − B with 95 % paired bootstrap intervals; McNemar's exact test of accuracy (b: rows "
        "only A got right, c: only B).",
        "",
        "| A | B | rows | Δ accuracy | Δ macro F1 | Δ UAR | b / c | p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _, r in paired.iterrows():
        cells = [
            f"{r[m]:+.4f} [{r[m + '_low']:+.3f}, {r[m + '_high']:+.3f}]"
            for m in ("accuracy", "macro_f1", "uar")
        ]
        a, b = _short_names(Path(r.a), Path(r.b))
        lines.append(
            f"| {a} | {b} | {r.rows} | "
            + " | ".join(cells)
            + f" | {r.mcnemar_b} / {r.mcnemar_c} | {r.mcnemar_p:.3g} |"
        )
    return "\n".join(lines) + "\n"


REPEATED_FIGURES = ("accuracy", "weighted_f1", "macro_f1", "uar", "mean_ccc")
SHOWN_PAIRED = ("accuracy", "uar", "mean_ccc")


HELD_OUT = "held-out folds"  # what a run's figures are scored on (the others: test rows)


@dataclass
class _System:
    """One system of a repetition: what it is (``ensemble``, ``base`` model of a stack, or
    ``run``) and its figures."""

    kind: str
    figures: dict[str, float]

    @property
    def scored_on(self) -> str:
        return HELD_OUT if self.kind == "run" else "test"


def _systems(artifacts: Sequence[StackFolder | RunFolder], root: Path) -> dict[str, _System]:
    """Every system scored under one repetition's folder, in the order shown: each stack's
    ensemble (``stack-lgbm``: its test figures), each base model a stack scored (its store's
    name: the same test rows), then each run (``run kobert-p05``: the mean of its held-out
    folds)."""
    ensembles: dict[str, _System] = {}
    bases: dict[str, _System] = {}
    runs: dict[str, _System] = {}
    for artifact in artifacts:
        name = artifact.path.relative_to(root).as_posix()
        if isinstance(artifact, RunFolder):
            summary = artifact.summary().get("summary", {})
            figures = {m: summary[m]["mean"] for m in REPEATED_FIGURES if m in summary}
            runs[f"run {name}"] = _System("run", figures)
            continue
        metrics = artifact.metrics()
        test = metrics.get("test") or {}
        dims = (metrics.get("dimensional") or {}).get("test") or {}
        ensemble = {m: test.get("ensemble", {}).get(m) for m in REPEATED_FIGURES[:4]}
        if dims:
            ensemble["mean_ccc"] = dims["ensemble"]["mean"]["ccc"]
        ensembles[name] = _System("ensemble", {m: v for m, v in ensemble.items() if v is not None})
        for model, figures in (test.get("models") or {}).items():
            entry = bases.setdefault(model, _System("base", {})).figures
            entry.update({m: figures[m] for m in REPEATED_FIGURES[:4] if m in figures})
        for model, figures in (dims.get("models") or {}).items():
            bases.setdefault(model, _System("base", {})).figures["mean_ccc"] = figures["mean"][
                "ccc"
            ]
    return {**ensembles, **bases, **runs}


def repeated_comparison(paths: Sequence[str | os.PathLike]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Repetitions of one protocol (``recipe --seeds N``; or any folders that hold the same
    stacks and runs by the same relative paths, each trained with other seeds or folds): every
    system's figures as mean ± std over the repetitions, and every stack's ensemble against
    each base model and each other ensemble, paired by repetition
    (:func:`emofeat.metrics.paired_repetitions`: paired t-test, exact Wilcoxon signed-rank).

    Args:
        paths: One folder per repetition (two or more).

    Returns:
        ``(summary, pairs)``: summary has one row per system and figure (``system``,
        ``scored_on`` (test rows, or a run's held-out folds), ``metric``, ``n``, ``mean``,
        ``std`` (ddof 1), then one column per repetition); pairs one row per pair and figure
        (``a``, ``b``, ``metric`` and the test's values), every figure of
        :data:`REPEATED_FIGURES` both have.

    Raises:
        EmofeatError: fewer than two repetitions, or a system missing from some of them (named).
    """
    from emofeat.metrics import paired_repetitions

    roots = [Path(p) for p in paths]
    if len(roots) < 2:
        raise EmofeatError("--repeated needs two or more repetition folders")
    artifacts = [find_artifacts([root]) for root in roots]
    _check_label_sets([a for found in artifacts for a in found])
    found = [_systems(mine, root) for mine, root in zip(artifacts, roots)]
    names = list(found[0])
    for root, systems in zip(roots[1:], found[1:]):
        missing = sorted(set(names) ^ set(systems))
        if missing:
            raise EmofeatError(
                f"{roots[0]} and {root} do not hold the same stacks and runs ({missing[:4]} in "
                "one only); repetitions must be the same protocol (re-run the missing steps)"
            )

    def values(name: str, metric: str) -> list[float | None]:
        return [systems[name].figures.get(metric) for systems in found]

    summary = []
    for name in names:
        for m in REPEATED_FIGURES:
            got = values(name, m)
            if any(v is None for v in got):
                continue
            row = {"system": name, "scored_on": found[0][name].scored_on, "metric": m}
            row.update(n=len(got), mean=float(np.mean(got)), std=float(np.std(got, ddof=1)))
            row.update({f"repetition_{i}": v for i, v in enumerate(got)})
            summary.append(row)
    ensembles = [n for n in names if found[0][n].kind == "ensemble"]
    bases = [n for n in names if found[0][n].kind == "base"]
    pairs = []
    for i, a in enumerate(ensembles):
        for b in [*bases, *ensembles[i + 1 :]]:
            for m in REPEATED_FIGURES:
                va, vb = values(a, m), values(b, m)
                if any(v is None for v in va + vb):
                    continue
                pairs.append({"a": a, "b": b, "metric": m, **paired_repetitions(va, vb)})
    return pd.DataFrame(summary), pd.DataFrame(pairs)


def repeated_markdown(summary: pd.DataFrame, pairs: pd.DataFrame) -> str:
    """:func:`repeated_comparison`'s tables as markdown."""
    n = int(summary["n"].iloc[0]) if len(summary) else 0
    metrics = [m for m in REPEATED_FIGURES if m in set(summary.get("metric", []))]
    lines = [
        f"## Over {n} repetitions (mean ± std, ddof 1)",
        "",
        "Stacks and the base models they score: the test rows; runs: the mean of their "
        "held-out folds.",
        "",
        "| system | scored on | " + " | ".join(metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
    ]
    for system, part in summary.groupby("system", sort=False):
        cells = [part["scored_on"].iloc[0]]
        for m in metrics:
            hit = part[part.metric == m]
            cells.append(
                f"{hit['mean'].iloc[0]:.4f} ± {hit['std'].iloc[0]:.4f}" if len(hit) else ""
            )
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"## Paired across the {n} repetitions",
        "",
        "A − B per repetition: mean ± std, wins / losses / ties, the paired t-test's p and the "
        "exact Wilcoxon signed-rank p (its smallest possible value with n repetitions is "
        "2 / 2^n).",
        "",
        "| A | B | figure | Δ mean ± std | W / L / T | t-test p | Wilcoxon p |",
        "|---|---|---|---|---|---|---|",
    ]
    # accuracy, UAR and mean CCC here; every figure in repeated-pairs.csv
    shown = pairs[pairs.metric.isin(SHOWN_PAIRED)] if len(pairs) else pairs
    for _, r in shown.iterrows():
        lines.append(
            f"| {r.a} | {r.b} | {r.metric} | {r.mean_difference:+.4f} ± {r.std_difference:.4f}"
            f" | {r.wins} / {r.losses} / {r.ties} | {r.t_p:.3g} | {r.wilcoxon_p:.3g} |"
        )
    return "\n".join(lines) + "\n"


def _short_names(a: Path, b: Path) -> tuple[str, str]:
    """Two folders' names as a table shows them: their own names, or where those are the same,
    their paths below the folder they share."""
    if a.name != b.name:
        return a.name, b.name
    common = Path(os.path.commonpath([a.resolve(), b.resolve()]))
    return str(a.resolve().relative_to(common)), str(b.resolve().relative_to(common))


COMPARISON_HEADER = "path,kind,configuration,seed"


register_csv_kind("comparison", COMPARISON_HEADER)


def to_markdown(table: pd.DataFrame) -> str:
    """The table as markdown (numbers to 4 decimals, empty cells blank)."""

    def cell(v: Any) -> str:
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            return ""
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    def value(row: pd.Series, col: str) -> str:
        spread = row.get(f"{col}_seed_std")
        if spread is not None and not pd.isna(spread):
            return f"{row[col]:.4f} ± {spread:.4f}"
        return cell(row[col])

    cols = [c for c in table.columns if table[c].notna().any() and not c.endswith("_seed_std")]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(value(r, c) for c in cols) + " |" for _, r in table.iterrows()]
    return "\n".join(lines) + "\n"
