"""Feature-store throughput: write 100k x 1024 float16 embeddings, read 1000 random rows, scan.

Targets on the 2-core development machine: 1000 random rows in <= 50 ms, a full scan of the
page-cached file at >= 1 GB/s. Prints figures and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from emofeat.store import StoreLayout, create_store, open_store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=256, help="rows per write, as extraction writes")
    ap.add_argument(
        "--seq-rows", type=int, default=2000, help="rows of the sequence store (1 MiB each)"
    )
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "store_bench.h5"
    n, d = args.rows, args.dim
    rng = np.random.default_rng(0)
    ids = [f"utt{i:07d}" for i in range(n)]
    labels = rng.integers(0, 7, n)
    split = np.where(rng.random(n) < 0.8, "train", "test")
    fold = np.where(split == "train", rng.integers(0, 5, n), -1)
    block = rng.standard_normal((args.batch, d)).astype(np.float16)
    logits = rng.standard_normal((args.batch, 7)).astype(np.float32)

    t = time.perf_counter()
    if path.exists():
        path.unlink()
    w = create_store(
        path,
        StoreLayout(
            ids=ids,
            labels=labels,
            split=split,
            fold=fold,
            label_names=[str(i) for i in range(7)],
            embeddings={"last": d},
            embedding_dtype="float16",
        ),
    )
    for start in range(0, n, args.batch):
        rows = np.arange(start, min(n, start + args.batch))
        w.write(rows, logits=logits[: len(rows)], embeddings={"last": block[: len(rows)]})
    w.finalize()
    write_s = time.perf_counter() - t
    size = path.stat().st_size

    with open_store(path) as s:
        s.embeddings("last", np.arange(1000))  # warm the page cache of the metadata
        times = []
        for rep in range(5):
            rows = np.random.default_rng(rep).choice(n, 1000, replace=False)
            t = time.perf_counter()
            s.embeddings("last", rows)
            times.append(time.perf_counter() - t)
        random_ms = 1000 * float(np.median(times))
        s.embeddings("last")  # page cache
        t = time.perf_counter()
        full = s.embeddings("last")
        scan_s = time.perf_counter() - t
    scan_gbs = full.nbytes / scan_s / 1e9
    result = {
        "bench": "store",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "rows": n,
        "dim": d,
        "file_mb": round(size / 1e6, 1),
        "write_s": round(write_s, 2),
        "write_mb_s": round(size / 1e6 / write_s, 1),
        "random_1000_rows_ms": round(random_ms, 1),
        "scan_gb_s": round(scan_gbs, 2),
        "targets_met": random_ms <= 50 and scan_gbs >= 1.0,
    }
    print(
        f"write {n} x {d} float16: {write_s:.2f} s ({result['write_mb_s']} MB/s, file {result['file_mb']} MB)"
    )
    print(f"1000 random rows: {random_ms:.1f} ms (target <= 50 ms)")
    print(f"full scan (page-cached): {scan_gbs:.2f} GB/s (target >= 1 GB/s)")
    result.update(scattered_write_bench(out))
    print(
        f"256 scattered rows x 25 layers x 1024: one write per row {result['scattered_rows_s']:.3f} s, "
        f"as a patched block {result['scattered_block_s']:.3f} s, "
        f"256 contiguous rows {result['contiguous_rows_s']:.3f} s"
    )
    result.update(sequence_bench(out, args.seq_rows))
    print(
        f"sequence store: random 64-row minibatches {result['seq_minibatch_gb_s']:.2f} GB/s "
        f"(target >= 1 GB/s; {result['seq_rows']} rows of 512 x 1024 float16)"
    )
    result["targets_met"] = result["targets_met"] and result["seq_minibatch_gb_s"] >= 1.0
    print(json.dumps(result))
    path.unlink()


def scattered_write_bench(out: Path, n: int = 20_000, layers: int = 25, dim: int = 1024) -> dict:
    """Writing 256 rows into every layer of an all-layer float32 store: spread over the store
    (h5py: one hyperslab per row), inside a 600-row span (read-patch-write of the block, as the
    extraction writer does for dense rows), and contiguous (one window)."""
    import h5py

    from emofeat.store.writer import _write_rows

    path = out / "scatter_bench.h5"
    rng = np.random.default_rng(0)
    values = rng.standard_normal((256, dim)).astype(np.float32)
    with h5py.File(path, "w", libver="latest") as f:
        sets = [
            f.create_dataset(f"l{i}", (n, dim), "float32", chunks=(32, dim)) for i in range(layers)
        ]
        cases = {
            "scattered_rows_s": np.sort(rng.choice(n, 256, replace=False)),
            "scattered_block_s": np.sort(rng.choice(np.arange(2000, 2600), 256, replace=False)),
            "contiguous_rows_s": np.arange(5000, 5256),
        }
        res = {}
        for key, rows in cases.items():
            t = time.perf_counter()
            for ds in sets:
                _write_rows(ds, rows, values)
            res[key] = round(time.perf_counter() - t, 4)
    path.unlink()
    return res


def sequence_bench(out: Path, rows: int) -> dict:
    """Random 64-row minibatches from a page-cached sequence store (MMM's training reads:
    512 frames x 1024 float16 = 1 MiB per row, one chunk per row)."""
    from emofeat.store import create_store, open_store

    path = out / "seq_bench.h5"
    if path.exists():
        path.unlink()
    length, width = 512, 1024
    w = create_store(
        path,
        StoreLayout(
            ids=[f"u{i}" for i in range(rows)],
            labels=np.zeros(rows, int),
            split=["train"] * rows,
            fold=np.zeros(rows, int),
            label_names=["a"],
            embeddings={},
            logits=False,
            sequences={"last": (length, width)},
        ),
    )
    rng = np.random.default_rng(0)
    block = rng.normal(size=(64, length, width)).astype(np.float16)
    for start in range(0, rows, 64):
        part = np.arange(start, min(start + 64, rows))
        w.write(part, sequences={"last": list(block[: len(part)])})
    w.finalize()
    with open_store(path) as s:
        s.sequences("last")  # page cache
        times, nbytes = [], 0
        for _ in range(20):
            batch = rng.choice(rows, 64, replace=False)
            t = time.perf_counter()
            states, _ = s.sequences("last", batch)
            times.append(time.perf_counter() - t)
            nbytes = states.nbytes
    path.unlink()
    return {
        "seq_rows": rows,
        "seq_minibatch_gb_s": round(nbytes / float(np.median(times)) / 1e9, 2),
    }


if __name__ == "__main__":
    main()
