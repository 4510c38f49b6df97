"""Read an emofeat feature store with plain h5py, numpy and pandas — emofeat is not needed.

    python examples/read_store.py store/kobert-p05.h5 [--embedding last]

Prints what the store holds, the rows a study may use (done, labelled, out-of-fold), and the
accuracy of the store's own logits on its train rows (out-of-fold) and its test rows; the last
line is the same as JSON. ``tests/test_docs.py`` runs this script and checks its figures against
emofeat's own reader.
"""

from __future__ import annotations

import argparse
import json

import h5py
import numpy as np
import pandas as pd


def load(
    path: str, embedding: str = "last"
) -> tuple[pd.DataFrame, list[str], np.ndarray | None, np.ndarray]:
    """One row per utterance (index: the id), the class names, the logits and one embedding."""
    with h5py.File(path, "r") as f:
        names = [str(n) for n in f.attrs["label_names"]]
        rows = pd.DataFrame(
            {
                "label": f["labels"][:],
                "split": f["split"].asstr()[:],
                "fold": f["fold"][:],
                "done": f["done"][:].astype(bool),
                # Absent: the evidence is unknown, so no row can be called out-of-fold.
                "in_sample": f["in_sample"][:].astype(bool) if "in_sample" in f else True,
                "skipped": f["skipped"][:].astype(bool) if "skipped" in f else False,
            },
            index=pd.Index(f["ids"].asstr()[:], name="id"),
        )
        logits = f["logits"][:] if "logits" in f else None  # frozen-encoder stores have none
        x = f["embeddings"][embedding][:]  # in an all-layer store, `last` is a soft link
    return rows, names, logits, x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store")
    parser.add_argument("--embedding", default="last")
    args = parser.parse_args()
    rows, names, logits, x = load(args.store, args.embedding)
    usable = rows.done & (rows.label >= 0)
    train = usable & (rows.split == "train") & ~rows.in_sample
    test = usable & (rows.split == "test")
    print(f"{args.store}: {len(rows)} rows, classes {', '.join(names)}")
    print(f"embedding {args.embedding!r}: {x.shape[1]} values per row, {x.dtype}")
    print(
        rows[usable]
        .groupby(["split", "label"])
        .size()
        .unstack(fill_value=0)
        .rename(columns=dict(enumerate(names)))
    )
    result = {
        "rows": len(rows),
        "train_out_of_fold": int(train.sum()),
        "test": int(test.sum()),
        "embedding_width": int(x.shape[1]),
        "accuracy": {},
    }
    if logits is not None:
        pred = logits.argmax(axis=1)
        for part, mask in (("train_out_of_fold", train), ("test", test)):
            if mask.any():
                result["accuracy"][part] = float((pred[mask.to_numpy()] == rows.label[mask]).mean())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
