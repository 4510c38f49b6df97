"""The HDF5 feature store: round trips, resume, crash safety, concurrent reading, validation."""

import re
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import emofeat
from emofeat.cli import main
from emofeat.errors import StoreError
from emofeat.store import (
    Provenance,
    StoreLayout,
    create_store,
    merge_stores,
    open_store,
    open_writer,
    validate_store,
)

NAMES = ["a", "b", "c"]


def meta(n=50):
    ids = [f"u{i:04d}" for i in range(n)]
    labels = np.arange(n) % 3
    labels[0] = -1
    split = ["test" if i % 5 == 0 else "train" for i in range(n)]
    fold = [-1 if s == "test" else i % 2 for i, s in enumerate(split)]
    return dict(ids=ids, labels=labels, split=split, fold=fold, label_names=NAMES)


def row_values(rows, dim=8):
    rows = np.asarray(rows)
    return rows[:, None] * 1.0 + np.arange(dim)[None, :] / 10


def test_round_trip_in_any_row_order(tmp_path):
    m = meta()
    path = tmp_path / "s.h5"
    layout = StoreLayout(
        **m, embeddings={"last": 8, "layer_01": 4}, embedding_dtype="float16", config={"k": 1}
    )
    attrs = Provenance(model_id="x", out_of_fold=True, layers=["last"]).to_attrs()
    w = create_store(path, layout, attrs=attrs)
    rng = np.random.default_rng(0)
    order = rng.permutation(50)
    for batch in np.array_split(order, 7):
        w.write(
            batch,
            logits=row_values(batch, 3),
            embeddings={"last": row_values(batch), "layer_01": row_values(batch, 4)},
        )
    assert w.finalize() is True
    with open_store(path) as s:
        assert s.complete and list(s.ids) == m["ids"] and s.label_names == NAMES
        np.testing.assert_array_equal(s.labels, m["labels"])
        np.testing.assert_allclose(s.logits(), row_values(np.arange(50), 3))
        np.testing.assert_allclose(
            s.embeddings("last"), row_values(np.arange(50)).astype(np.float16)
        )
        assert s.embeddings("last").dtype == np.float16
        np.testing.assert_array_equal(
            s.embeddings("layer_01", [7, 3]), row_values([7, 3], 4).astype(np.float16)
        )
        assert list(s.select(split="train", fold=1)) == [
            i for i in range(50) if i % 5 and i % 2 == 1
        ]
        assert s.config == {"k": 1} and s.attrs["model_id"] == "x"
        # Provenance round-trips through the root attributes.
        assert s.provenance == Provenance(
            model_id="x", out_of_fold=True, layers=["last"], emofeat_version=emofeat.__version__
        )
        frame = s.to_pandas(embedding="layer_01")
        assert frame.loc["u0007", "logit_b"] == pytest.approx(7.1) and frame.loc[
            "u0007", "layer_01_3"
        ] == pytest.approx(7.3, abs=1e-2)
        x, y = s.to_numpy("layer_01")
        assert x.shape == (50, 4) and (y == m["labels"]).all()
        ds = s.torch_dataset("last", split="test")
        assert len(ds) == 10 and int(ds[1][1]) == m["labels"][5]


def test_plain_h5py_store_is_accepted(tmp_path):
    """Someone else's code writes the documented layout with plain h5py (default libver)."""
    path = tmp_path / "plain.h5"
    m = meta(6)
    with h5py.File(path, "w") as f:
        f["ids"] = np.array(m["ids"], dtype=h5py.string_dtype())
        f["labels"] = np.asarray(m["labels"], np.int16)
        f["split"] = np.array(m["split"], dtype=h5py.string_dtype())
        f["fold"] = np.asarray(m["fold"], np.int16)
        f["logits"] = np.ones((6, 3), np.float32)
        f["embeddings/mine"] = np.zeros((6, 5), np.float32)
        f["done"] = np.ones(6, bool)
        f.attrs["schema_version"] = 1
        f.attrs["label_names"] = NAMES
        f.attrs["complete"] = True
    assert validate_store(path) == []
    with open_store(path) as s:
        assert s.embedding_names == ["mine"] and s.skip_reasons() == {}


def test_resume_continues_and_mismatch_is_refused(tmp_path):
    m = meta()
    path = tmp_path / "s.h5"
    w = open_writer(path, StoreLayout(**m, embeddings={"last": 8}, config={"a": 1}))
    w.write(
        np.arange(20),
        logits=row_values(np.arange(20), 3),
        embeddings={"last": row_values(np.arange(20))},
    )
    w.skip([25], "unreadable audio: x.wav")
    w.close()
    w = open_writer(path, StoreLayout(**m, embeddings={"last": 8}, config={"a": 1}))
    assert list(w.pending) == [i for i in range(20, 50) if i != 25]
    w.close()
    other = dict(m, labels=np.roll(m["labels"], 1))
    with pytest.raises(
        StoreError, match=r"(?s)labels differ at row 0.*-1 in the store, 1 asked for.*--overwrite"
    ):
        open_writer(path, StoreLayout(**other, embeddings={"last": 8}, config={"a": 1}))
    with pytest.raises(StoreError, match="config differs"):
        open_writer(path, StoreLayout(**m, embeddings={"last": 8}, config={"a": 2}))
    with pytest.raises(StoreError, match="embeddings"):
        open_writer(path, StoreLayout(**m, embeddings={"last": 4}, config={"a": 1}))
    w = open_writer(
        path, StoreLayout(**other, embeddings={"last": 8}, config={"a": 1}), overwrite=True
    )
    assert len(w.pending) == 50
    w.close()
    with open_store(path) as s:
        assert not s.complete


def test_dense_sparse_and_contiguous_writes_keep_every_other_row(tmp_path):
    """Writes dense in their span go through a read-patch-write of the chunk-aligned block; the
    rows of that block that are not written (done earlier, or never) keep their values."""
    from emofeat.store.writer import DENSE

    m = meta(300)
    path = tmp_path / "d.h5"
    w = create_store(path, StoreLayout(**m, embeddings={"last": 8}), chunk_rows=32)
    expected = np.full((300, 8), np.nan, np.float32)  # rows never written read back as NaN
    writes = [
        np.arange(40, 72),  # exactly two chunks
        np.arange(33, 70, 2),  # dense, inside chunks holding done rows
        np.array([3, 150, 299]),  # sparse: spans far more than DENSE x rows
        np.arange(100, 100 + 8 * DENSE, DENSE),  # the densest a sparse-looking write gets
    ]
    for k, rows in enumerate(writes):
        values = (row_values(rows) + 1000 * (k + 1)).astype(np.float32)
        w.write(rows[::-1], logits=row_values(rows[::-1], 3), embeddings={"last": values[::-1]})
        expected[rows] = values
    w.finalize()
    with open_store(path) as s:
        done = np.unique(np.concatenate(writes))
        assert list(s.select(done=True)) == list(done)
        np.testing.assert_array_equal(s.embeddings("last", np.arange(300)), expected)
        np.testing.assert_array_equal(s.logits(done), row_values(done, 3).astype(np.float32))


WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from emofeat.store import StoreLayout, open_writer
    sys.path.insert(0, {tests!r})
    from test_store import meta, row_values
    w = open_writer({path!r}, StoreLayout(**meta(400), embeddings={{"last": 64}}, config={{"a": 1}}))
    for batch in np.array_split(w.pending, 100):
        w.write(batch, logits=row_values(batch, 3), embeddings={{"last": row_values(batch, 64)}})
        print(int(w.done.sum()), flush=True)
        time.sleep({pause})
    w.finalize()
    print("finished", flush=True)
    """
)


def start_writer(path, pause):
    from pathlib import Path

    code = WRITER.format(tests=str(Path(__file__).parent), path=str(path), pause=pause)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_sigkill_mid_write_leaves_a_consistent_resumable_store(tmp_path):
    path = tmp_path / "k.h5"
    proc = start_writer(path, pause=0.01)
    for _ in range(20):
        proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open_store(path) as s:  # opens although the writer died holding it
        done = s.select(done=True)
        assert 0 < len(done) < 400 and not s.complete
        np.testing.assert_allclose(s.logits(done), row_values(done, 3))
        np.testing.assert_allclose(s.embeddings("last", done), row_values(done, 64))
    proc = start_writer(path, pause=0)  # re-running the same job finishes the rest
    assert proc.communicate()[0].strip().endswith("finished")
    with open_store(path) as s:
        assert s.complete and s.done.all()
        np.testing.assert_allclose(s.embeddings("last"), row_values(np.arange(400), 64))


def test_reader_sees_rows_while_writer_appends(tmp_path):
    path = tmp_path / "r.h5"
    proc = start_writer(path, pause=0.05)
    proc.stdout.readline()
    seen = []
    try:
        for _ in range(3):
            with open_store(path) as s:
                done = s.select()
                seen.append(len(done))
                np.testing.assert_allclose(s.logits(done), row_values(done, 3))
            time.sleep(0.15)
        with pytest.raises(StoreError, match="another process is writing"):
            open_writer(path, StoreLayout(**meta(400), embeddings={"last": 64}, config={"a": 1}))
    finally:
        proc.kill()
        proc.wait()
    assert seen[0] > 0 and seen[-1] > seen[0]


def test_bad_files_give_clear_errors(tmp_path):
    (tmp_path / "not.h5").write_text("hello")
    with pytest.raises(StoreError, match="not.h5.*not a readable HDF5"):
        open_store(tmp_path / "not.h5")
    w = create_store(tmp_path / "t.h5", StoreLayout(**meta(), embeddings={"last": 256}))
    w.finalize()
    data = (tmp_path / "t.h5").read_bytes()
    (tmp_path / "trunc.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(StoreError, match="trunc.h5"):
        open_store(tmp_path / "trunc.h5")
    with pytest.raises(StoreError, match="no such store"):
        open_store(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "nolabels.h5", "w") as f:
        f["ids"] = np.array(["a", "a"], dtype=h5py.string_dtype())
    with pytest.raises(StoreError, match="missing labels, split, fold, done"):
        open_store(tmp_path / "nolabels.h5")
    with h5py.File(tmp_path / "t.h5", "r+") as f:
        f["ids"][1] = "u0000"
    with pytest.raises(StoreError, match="duplicate ids"):
        open_store(tmp_path / "t.h5")


def test_import_store_needs_neither_torch_nor_transformers():
    code = "import sys, emofeat.store; print(sorted(m for m in ('torch', 'transformers', 'pandas') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_merge_shards_and_refuse_overlaps(tmp_path):
    m = meta()
    shards = []
    for k in range(2):
        w = create_store(
            tmp_path / f"s{k}.h5", StoreLayout(**m, embeddings={"last": 8}, config={"a": 1})
        )
        rows = np.arange(k, 50, 2)
        w.write(rows, logits=row_values(rows, 3), embeddings={"last": row_values(rows)})
        w.finalize()
        shards.append(tmp_path / f"s{k}.h5")
    out = merge_stores(shards, tmp_path / "all.h5")
    with open_store(out) as s:
        assert s.complete and s.attrs["config"].strip() == "a: 1"
        np.testing.assert_allclose(s.embeddings("last"), row_values(np.arange(50)))
    with pytest.raises(StoreError, match="both hold row 0"):
        merge_stores([shards[0], shards[0]], tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()
    w = create_store(
        tmp_path / "other.h5",
        StoreLayout(
            **dict(m, label_names=["x", "y", "z"]), embeddings={"last": 8}, config={"a": 1}
        ),
    )
    w.finalize()
    with pytest.raises(StoreError, match="label_names differ"):
        merge_stores([shards[0], tmp_path / "other.h5"], tmp_path / "x.h5")


def test_merge_takes_rows_shared_by_shards_once_computed_before_skipped(tmp_path):
    """The shards of a job resumed with other shares hold some rows twice: with shared_rows
    each is taken once, from the first shard that computed it, and a row one shard skipped and
    another computed is computed."""
    m = meta()
    layout = StoreLayout(**m, embeddings={"last": 8}, config={"a": 1})
    first, second = tmp_path / "s0.h5", tmp_path / "s1.h5"
    w = create_store(first, layout)
    w.write(
        np.arange(0, 30),
        logits=row_values(np.arange(30), 3),
        embeddings={"last": row_values(np.arange(30))},
    )
    w.skip([30], "unreadable then")
    w.finalize()
    w = create_store(second, layout)
    rows = np.arange(20, 50)  # 20-29 again, with other values; 30 computed this time
    w.write(rows, logits=row_values(rows, 3) + 1, embeddings={"last": row_values(rows) + 1})
    w.finalize()
    with pytest.raises(StoreError, match="both hold row 20"):
        merge_stores([first, second], tmp_path / "x.h5")
    out = merge_stores([first, second], tmp_path / "all.h5", shared_rows=True)
    expected = row_values(np.arange(50))
    expected[30:] += 1  # rows only the second shard computed
    with open_store(out) as s:
        assert s.complete and not s.skipped.any()
        np.testing.assert_allclose(s.embeddings("last"), expected)


def test_store_commands(tmp_path):
    m = meta()
    w = create_store(
        tmp_path / "s.h5", StoreLayout(**m, embeddings={"last": 8}), attrs={"model_id": "tiny"}
    )
    w.write(
        np.arange(50),
        logits=row_values(np.arange(50), 3),
        embeddings={"last": np.random.default_rng(0).normal(size=(50, 8))},
    )
    w.finalize()
    runner = CliRunner()
    r = runner.invoke(main, ["store", "inspect", str(tmp_path / "s.h5")])
    assert r.exit_code == 0 and "model_id" in r.output and "complete True" in r.output
    assert "/embeddings/last" in r.output and "(50, 8)" in r.output
    r = runner.invoke(main, ["store", "validate", str(tmp_path / "s.h5")])
    assert r.exit_code == 0
    (tmp_path / "bad.h5").write_text("x")
    r = runner.invoke(main, ["store", "validate", str(tmp_path / "bad.h5")])
    assert r.exit_code == 1
    r = runner.invoke(
        main,
        [
            "store",
            "plot",
            str(tmp_path / "s.h5"),
            "--embedding",
            "last",
            "-o",
            str(tmp_path / "p.png"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    r = runner.invoke(
        main,
        [
            "store",
            "plot",
            str(tmp_path / "s.h5"),
            "--embedding",
            "nope",
            "-o",
            str(tmp_path / "q.png"),
        ],
    )
    assert r.exit_code == 2 and "available: ['last']" in r.output


@pytest.mark.parametrize("compression", [None, "lzf", "shuffle", "scaleoffset", "fletcher32"])
def test_random_row_reads_equal_a_plain_read(tmp_path, compression):
    """Row-subset reads equal a plain read whatever filters a store's writer used (shuffle,
    scale-offset and checksums too: raw chunks are read only from unfiltered datasets)."""
    n = 300
    m = dict(
        ids=[f"r{i}" for i in range(n)],
        labels=np.zeros(n, int),
        split=["train"] * n,
        fold=np.zeros(n, int),
        label_names=NAMES,
    )
    w = create_store(
        tmp_path / "s.h5",
        StoreLayout(**m, embeddings={"last": 16}),
        chunk_rows=32,
        compression=compression if compression == "lzf" else None,
    )
    written = np.arange(0, 200)  # rows 200.. never written: their chunks do not exist
    w.write(written, embeddings={"last": row_values(written, 16)})
    w.close()
    if compression not in (None, "lzf"):  # rewritten by other code with another filter
        with h5py.File(tmp_path / "s.h5", "r+") as f:
            values = f["embeddings/last"][:200]
            del f["embeddings/last"]
            filters = {
                "shuffle": {"shuffle": True},
                "scaleoffset": {"scaleoffset": 6},
                "fletcher32": {"fletcher32": True},
            }[compression]
            ds = f.create_dataset(
                "embeddings/last",
                shape=(n, 16),
                dtype="float32",
                chunks=(32, 16),
                fillvalue=np.nan,
                **filters,
            )
            ds[:200] = values
    with open_store(tmp_path / "s.h5") as s:
        rows = np.array([150, 3, 77, 31, 32, 199])
        np.testing.assert_array_equal(
            s.embeddings("last", rows), row_values(rows, 16).astype(np.float32)
        )
        mixed = s.embeddings("last", np.array([5, 250]))
        np.testing.assert_array_equal(mixed[0], row_values([5], 16)[0].astype(np.float32))
        assert np.isnan(mixed[1]).all()


def test_integer_rows_are_range_checked_before_any_cast(tmp_path):
    """An int32 label 65536 + k would read as class k after a cast to int16; it is refused."""
    m = meta(10)
    with pytest.raises(StoreError, match=r"labels outside -1..2 .*\(e.g. 65537\)"):
        StoreLayout(**dict(m, labels=np.array([65537] + [0] * 9, dtype=np.int32)))
    with pytest.raises(StoreError, match=r"fold outside -1..32767"):
        StoreLayout(**dict(m, fold=np.array([70000] + [0] * 9)))
    with pytest.raises(StoreError, match="/labels must hold integers"):
        StoreLayout(**dict(m, labels=np.zeros(10)))
    # The same rule when a file written by other code is loaded.
    path = tmp_path / "crafted.h5"
    create_store(path, StoreLayout(**m)).finalize()
    with h5py.File(path, "r+") as f:
        del f["labels"]
        f["labels"] = np.array([65537] + [0] * 9, dtype=np.int32)
    with pytest.raises(StoreError, match=r"crafted.h5: labels outside -1..2"):
        open_store(path)


def test_a_declared_size_the_file_cannot_hold_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.h5"
    create_store(path, StoreLayout(**meta(10))).finalize()
    with h5py.File(path, "r+") as f:
        for name in ("ids", "labels", "split", "fold", "done"):
            dtype = f[name].dtype
            del f[name]
            f.create_dataset(name, shape=(2**40,), dtype=dtype)  # 8 TiB of ids, never written
    with pytest.raises(
        StoreError, match=r"/ids declares 1099511627776 rows, more than the file can hold"
    ):
        open_store(path)


def test_a_config_attribute_of_nested_aliases_is_not_expanded(tmp_path):
    """A crafted store's ``config`` attribute (a few KB of nested YAML aliases) would expand to
    gigabytes when its identity is formatted; it is read as no config at all."""
    path = tmp_path / "s.h5"
    w = create_store(path, StoreLayout(**meta(), embeddings={"last": 8}, config={"a": 1}))
    w.write(
        np.arange(50),
        logits=row_values(np.arange(50), 3),
        embeddings={"last": row_values(np.arange(50))},
    )
    w.finalize()
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefghi", "bcdefghij")
    )
    with h5py.File(path, "r+") as f:
        f.attrs["config"] = laughs
    with open_store(path) as s:
        assert s.config == {}
        assert len(s.identity) < 200


@pytest.mark.parametrize("dataset", ["embeddings", "sequences"])
def test_values_that_overflow_the_stored_dtype_are_refused_not_marked_done(tmp_path, dataset):
    """Finite float32 values above 65,504 are inf in float16: the writer checks the values as
    stored, so such rows are refused (naming the dtype and the fix) and never marked done."""
    path = tmp_path / "s.h5"
    layout = StoreLayout(
        **meta(10),
        embeddings={"last": 4},
        embedding_dtype="float16",
        sequences={"last": (3, 4)},
        config={"a": 1},
    )
    w = create_store(path, layout)
    fine = np.ones((2, 4), np.float32)
    big = fine * 1e5
    values = {"embeddings": {"last": fine}, "sequences": {"last": [fine[:1], fine[:1]]}}
    values[dataset] = {"last": big} if dataset == "embeddings" else {"last": [big[:1], big[:1]]}
    with pytest.raises(StoreError, match=r"exceed float16's range .*--dtype float32"):
        w.write([0, 1], embeddings=values["embeddings"], sequences=values["sequences"])
    w.write([2, 3], embeddings={"last": fine}, sequences={"last": [fine[:1], fine[:1]]})
    w.close()
    with open_store(path) as s:
        assert list(np.flatnonzero(s.done)) == [2, 3]
        assert np.isfinite(s.embeddings("last", [2, 3])).all()


def _seq_store(path):
    layout = StoreLayout(**meta(10), embeddings={"last": 4}, sequences={"last": (3, 4)})
    w = create_store(path, layout)
    rows = np.arange(10)
    w.write(
        rows,
        logits=row_values(rows, 3),
        embeddings={"last": row_values(rows, 4)},
        sequences={"last": [np.ones((2, 4))] * 10},
    )
    w.finalize()


def _replace(f, name, data):
    del f[name]
    f.create_dataset(name, data=data)


CRAFTED = {
    "zero-width embedding": (
        lambda f: _replace(f, "embeddings/last", np.zeros((10, 0), np.float32)),
        r"/embeddings/last is float32 of shape \(10, 0\)",
    ),
    "string logits": (
        lambda f: _replace(f, "logits", np.array([["a"] * 3] * 10, dtype="S1")),
        r"/logits is \|S1 of shape \(10, 3\), expected floats",
    ),
    "2-D sequences": (
        lambda f: _replace(f, "sequences/last", np.zeros((10, 3), np.float16)),
        r"/sequences/last is float16 of shape \(10, 3\), expected floats of shape \(10, T, H\)",
    ),
    "no lengths": (
        lambda f: f.__delitem__("sequences/last_length"),
        r"needs /sequences/last_length",
    ),
    "negative length": (
        lambda f: f["sequences/last_length"].__setitem__(4, -1),
        r"last_length of row 4 is -1, outside 1..3",
    ),
    "length beyond the positions": (
        lambda f: f["sequences/last_length"].__setitem__(2, 9),
        r"last_length of row 2 is 9",
    ),
    "complete with no row done": (
        lambda f: f["done"].__setitem__(slice(None), False),
        r"marked complete, but 10 of 10 rows are neither done nor skipped",
    ),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_store_is_refused_when_opened_and_reported_by_validate(tmp_path, case):
    path = tmp_path / "s.h5"
    _seq_store(path)
    craft, message = CRAFTED[case]
    with h5py.File(path, "r+") as f:
        craft(f)
    with pytest.raises(StoreError, match=message):
        open_store(path)
    problems = validate_store(path)
    assert len(problems) == 1 and re.search(message, problems[0])


def test_validate_reads_every_sequence_row(tmp_path):
    path = tmp_path / "s.h5"
    _seq_store(path)
    assert validate_store(path) == []
    with h5py.File(path, "r+") as f:
        f["sequences/last"][7, 1, 2] = np.inf
    assert validate_store(path) == [f"{path}: non-finite values in done rows of /sequences/last"]
