"""``emofeat crosscorpus``: how well does what is learned on one corpus hold on another?

For every ordered pair (A, B) of the manifest's corpora (KEMDy19, KEMDy20, AI Hub, a generic
CSV), a head is trained on all labelled rows of A and scored on all labelled rows of B, over the
classes both corpora hold (the manifest's label set: every corpus's raw labels were mapped into
it by ``data prepare``, and the table states which raw labels each shared class holds per
corpus). The diagonal is the within-corpus figure: the head cross-validated over the fold plan
on A's train rows (out-of-fold predictions pooled). Figures: UAR and macro F1 for the classes;
the CCC of valence and arousal (ridge regression) where both corpora carry them.

The features are a frozen encoder's store: a fine-tuned model learned from rows of every corpus,
so its features of B's rows are not unseen by anything trained on A's neighbours, and a store
that holds a trained model's logits is refused. Written: ``crosscorpus.csv`` (one row per cell
and figure), ``crosscorpus.md`` (a matrix per figure and the class mapping) and
``crosscorpus.png`` (heatmaps).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from emofeat.analysis.config import CrossCorpusConfig
from emofeat.analysis.probe import ridge
from emofeat.crossfit import FoldPlan
from emofeat.errors import EmofeatError
from emofeat.metrics import ccc, classification_metrics
from emofeat.outputs import check_output, register_csv_kind

CROSSCORPUS_HEADER = "train,test,metric,value,train_rows,test_rows,classes"
register_csv_kind("crosscorpus-table", CROSSCORPUS_HEADER)
CLASS_FIGURES = ("uar", "macro_f1", "accuracy")


def cross_corpus(
    store: str | os.PathLike, manifest: str | os.PathLike, out: str | os.PathLike, **options: Any
) -> pd.DataFrame:
    """Write the cross-corpus matrix of one frozen store (see the module docstring).

    Args:
        store: A frozen encoder's store of the manifest's rows (``emofeat extract --model``).
        manifest: The manifest the store was extracted from (its ``corpus`` column tells the
            corpora apart).
        out: The folder for ``crosscorpus.csv``, ``crosscorpus.md`` and ``crosscorpus.png``.
        options: The options of :class:`~emofeat.analysis.config.CrossCorpusConfig`.

    Returns:
        The table written to ``crosscorpus.csv``: one row per (train, test) cell and figure.

    Raises:
        EmofeatError: a store of a trained model, a store and manifest that do not match (ids,
            labels or classes), fewer than two corpora, or a missing embedding.
        OptionError: an option's value is refused.
    """
    from emofeat.corpus.manifest import read_manifest, read_sidecar_record
    from emofeat.stack.meta import MetaContext, get_meta
    from emofeat.store import StoreLayout, open_store

    cfg = CrossCorpusConfig(**options)
    out = Path(out)
    check_output(out / "crosscorpus.csv", kind="crosscorpus-table", inputs=[store, manifest])
    m = read_manifest(manifest)
    with open_store(store) as s:
        if not s.complete:
            raise EmofeatError(
                f"{store}: extraction has not finished (rows not done); re-run it to complete"
            )
        if s.has_logits:
            raise EmofeatError(
                f"{store}: holds a trained model's logits; its model learned from rows of every "
                "corpus, so its features are not a cross-corpus test. Use a frozen encoder's "
                "store (emofeat extract --model NAME --manifest ...)"
            )
        if cfg.embedding not in s.embedding_names:
            raise EmofeatError(
                f"{store}: no embedding {cfg.embedding!r}; it holds {s.embedding_names}"
            )
        # The store must hold the manifest's rows, labels, split and folds (matched by id).
        expected = StoreLayout(
            ids=m.ids, labels=m.label_indices, split=m.split, fold=m.fold, label_names=m.label_names
        )
        problems = s.layout.differences(
            expected, by_id=True, datasets=False, there=f"in {manifest}"
        )
        if problems:
            raise EmofeatError(
                f"{store}: {'; '.join(problems[:2])}: give the manifest the store was extracted "
                "from"
            )
        at = pd.Series(np.arange(len(m)), index=m.ids)[s.ids].to_numpy()  # store row → manifest
        labels = s.labels.astype(int)
        X = s.embeddings(cfg.embedding).astype(np.float64)
        targets = (
            s.dimension_targets().astype(np.float64)
            if s.has_dimension_targets
            else np.full((len(s), 2), np.nan)
        )
        dimension_names = s.dimension_names if s.has_dimension_targets else []
        plan = FoldPlan.from_store(s)
    if not np.isfinite(X).all():
        raise EmofeatError(f"{store}: non-finite values in {cfg.embedding!r}; re-extract it")
    corpus = m.frame["corpus"].to_numpy()[at]
    corpora = list(dict.fromkeys(corpus))
    if len(corpora) < 2:
        raise EmofeatError(
            f"{manifest}: one corpus ({corpora}); a cross-corpus matrix needs two or more "
            "(data prepare --kemdy19 ... --kemdy20 ... --aihub ...)"
        )
    head = get_meta(cfg.head)
    labelled = labels >= 0
    records: list[dict[str, Any]] = []
    shared_by_pair: dict[tuple[str, str], list[int]] = {}
    for a in corpora:
        for b in corpora:
            in_a, in_b = (corpus == a) & labelled, (corpus == b) & labelled
            classes = sorted(set(labels[in_a]) & set(labels[in_b]))
            shared_by_pair[a, b] = classes
            if len(classes) < 2:
                continue
            estimator = head.build(MetaContext(classes=classes, seed=cfg.seed))
            if a == b:
                rows = np.flatnonzero(in_a & np.isin(np.arange(len(at)), plan.train_rows))
                truth, pred, n_fit = _cross_validated(estimator, X, labels, rows, plan)
            else:
                fit = np.flatnonzero(in_a & np.isin(labels, classes))
                held = np.flatnonzero(in_b & np.isin(labels, classes))
                model = clone(estimator).fit(X[fit], labels[fit])
                truth, pred, n_fit = labels[held], model.predict(X[held]), len(fit)
            if truth is None:
                continue
            figures = classification_metrics(truth, pred)
            names = ",".join(m.label_names[c] for c in classes)
            for metric in CLASS_FIGURES:
                records.append(_cell(a, b, metric, figures[metric], n_fit, len(truth), names))
            records += _dimension_cells(
                a, b, X, targets, dimension_names, corpus, plan, names, same=a == b
            )
    table = pd.DataFrame(records, columns=CROSSCORPUS_HEADER.split(","))
    out.mkdir(parents=True, exist_ok=True)
    from emofeat.atomic import write_text

    maps = read_sidecar_record(m.path).get("label_maps") or {}
    write_text(out / "crosscorpus.csv", table.to_csv(index=False))
    write_text(
        out / "crosscorpus.md",
        crosscorpus_markdown(table, corpora, shared_by_pair, list(m.label_names), maps, cfg),
    )
    _plot(table, corpora, out / "crosscorpus.png")
    return table


def _cell(a, b, metric, value, n_fit, n_test, classes) -> dict[str, Any]:
    return {
        "train": a,
        "test": b,
        "metric": metric,
        "value": float(value),
        "train_rows": int(n_fit),
        "test_rows": int(n_test),
        "classes": classes,
    }


def _cross_validated(estimator, X, y, rows, plan: FoldPlan):
    """The within-corpus cell: out-of-fold predictions over the fold plan's folds of ``rows``
    (pooled), or (None, None, 0) when those rows span fewer than two folds."""
    sub = plan.subset(rows)
    if not sub.cross_fitted:
        return None, None, 0
    pred = np.full(len(rows), -1)
    for _, fit, held in sub.fold_pairs():
        model = clone(estimator).fit(X[rows[fit]], y[rows[fit]])
        pred[held] = model.predict(X[rows[held]])
    scored = pred >= 0
    return y[rows][scored], pred[scored], int(len(rows))


def _dimension_cells(a, b, X, targets, names, corpus, plan, classes, *, same: bool) -> list[dict]:
    """CCC cells of valence and arousal (ridge), where both corpora carry them."""
    has = np.isfinite(targets).all(axis=1)
    in_a, in_b = np.flatnonzero((corpus == a) & has), np.flatnonzero((corpus == b) & has)
    if not names or not len(in_a) or not len(in_b):
        return []
    if same:
        in_a = in_a[np.isin(in_a, plan.train_rows)]
        sub = plan.subset(in_a)
        if not sub.cross_fitted:
            return []
        truth, pred = targets[in_a], np.full((len(in_a), len(names)), np.nan)
        for _, fit, held in sub.fold_pairs():
            for j in range(len(names)):
                model = ridge().fit(X[in_a[fit]], targets[in_a[fit], j])
                pred[held, j] = model.predict(X[in_a[held]])
        n_fit, n_test = len(in_a), len(in_a)
    else:
        truth = targets[in_b]
        pred = np.column_stack(
            [ridge().fit(X[in_a], targets[in_a, j]).predict(X[in_b]) for j in range(len(names))]
        )
        n_fit, n_test = len(in_a), len(in_b)
    scores = {f"{n}_ccc": ccc(truth[:, j], pred[:, j]) for j, n in enumerate(names)}
    scores["mean_ccc"] = float(np.mean(list(scores.values())))
    return [_cell(a, b, k, v, n_fit, n_test, classes) for k, v in scores.items()]


def crosscorpus_markdown(
    table: pd.DataFrame,
    corpora: list[str],
    shared: dict[tuple[str, str], list[int]],
    label_names: list[str],
    maps: dict,
    cfg: CrossCorpusConfig,
) -> str:
    """The matrices (rows: trained on, columns: tested on) and the class mapping."""
    lines = [
        "# Cross-corpus matrix",
        "",
        f"Features: `{cfg.embedding}` of a frozen encoder's store; head: {cfg.head} (classes), "
        "ridge (valence, arousal). Off the diagonal: trained on every labelled row of the row's "
        "corpus, tested on every labelled row of the column's, over the classes both hold. "
        "Diagonal: cross-validated over the fold plan on the corpus's train rows.",
        "",
    ]
    for metric in dict.fromkeys(table["metric"]):
        lines += [f"## {metric}", "", "| trained on \\ tested on | " + " | ".join(corpora) + " |"]
        lines.append("|---|" + "---|" * len(corpora))
        for a in corpora:
            cells = []
            for b in corpora:
                hit = table[(table.train == a) & (table.test == b) & (table.metric == metric)]
                cells.append(f"{hit.value.iloc[0]:.4f}" if len(hit) else "–")
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Classes of each pair", ""]
    for (a, b), classes in shared.items():
        if a != b:
            names = [label_names[c] for c in classes]
            note = "" if len(classes) >= 2 else " (fewer than 2: no cell)"
            lines.append(f"- {a} → {b}: {', '.join(names) or 'none'}{note}")
    lines += ["", "## How each corpus's raw labels map to the classes", ""]
    if not maps:
        from emofeat.corpus.labels import ALIASES

        aliases = ", ".join(f"{a} → {t}" for a, t in ALIASES.items())
        lines.append(
            "No label map: each corpus's labels are the classes as its reader reads them (the "
            f"readers' spellings: {aliases}; AI Hub's English words as `data prepare` documents)."
        )
    else:
        for name, mapping in maps.items():
            pairs = ", ".join(
                f"{raw} → {cls if cls else '(unlabelled)'}" for raw, cls in mapping.items()
            )
            lines.append(f"- {name}: {pairs}")
    return "\n".join(lines) + "\n"


def _plot(table: pd.DataFrame, corpora: list[str], path: Path) -> None:
    """One heatmap per figure (UAR, macro F1, and mean CCC where there is one)."""
    from emofeat.analysis.plots import pyplot, save_figure

    shown = [m for m in ("uar", "macro_f1", "mean_ccc") if m in set(table["metric"])]
    if not shown:
        return
    plt = pyplot()
    fig, axes = plt.subplots(
        1, len(shown), figsize=(4.6 * len(shown) + 1.0, 4.0), layout="constrained"
    )
    for n, (ax, metric) in enumerate(zip(np.atleast_1d(axes), shown)):
        grid = np.full((len(corpora), len(corpora)), np.nan)
        for i, a in enumerate(corpora):
            for j, b in enumerate(corpora):
                hit = table[(table.train == a) & (table.test == b) & (table.metric == metric)]
                if len(hit):
                    grid[i, j] = hit.value.iloc[0]
        low = 0 if metric != "mean_ccc" else -1
        image = ax.imshow(grid, cmap="viridis", vmin=low, vmax=1)
        for i in range(len(corpora)):
            for j in range(len(corpora)):
                value = grid[i, j]
                bright = not np.isnan(value) and (value - low) / (1 - low) > 0.6
                text = "none" if np.isnan(value) else f"{value:.2f}"
                colour = "grey" if np.isnan(value) else ("black" if bright else "white")
                ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=9)
        ax.set_xticks(range(len(corpora)), corpora, rotation=30, ha="right")
        ax.set_yticks(range(len(corpora)), corpora if n == 0 else [])
        ax.set_xlabel("tested on")
        if n == 0:
            ax.set_ylabel("trained on")
        ax.set_title(f"{metric} (diagonal: within-corpus CV)", fontsize=10)
        fig.colorbar(image, ax=ax, fraction=0.046)
    save_figure(fig, path)
