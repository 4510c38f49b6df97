"""What a feature store holds and how that is checked: the schema constants, the typed layout
(:class:`StoreLayout`: rows, datasets, config, evidence) and provenance (:class:`Provenance`),
and the one validation of rows that creating and loading a store share (:func:`check_rows`).
Also the low-level helpers every part of the store uses (opening a file with a clear error,
refusing crafted files, attribute coding). h5py + numpy only."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from emofeat.errors import StoreError, printable

SCHEMA_VERSION = 1
REQUIRED = ("ids", "labels", "split", "fold", "done")
SPLITS = ("train", "test")
_STR = h5py.string_dtype("utf-8")
REASON_BYTES = 200
DEFAULT_CHUNK_ROWS = 32  # measured: 16-64 row chunks give the fastest random row reads


# ------------------------------------------------------------------------------------------ open
def _open_h5(path: Path, mode: str = "r") -> h5py.File:
    """Open an HDF5 file, turning h5py's errors into a StoreError that names the file."""
    if not path.exists():
        raise StoreError(f"{path}: no such store")
    # Readers take no HDF5 file lock: one that did made a writer starting at that moment fail
    # ("unable to lock file"). Live writers are marked by the store writer's own advisory lock.
    try:
        return h5py.File(path, mode, **({"locking": False} if mode == "r" else {}))
    except OSError as err:
        msg = str(err)
        if mode == "r" and ("already open for write" in msg or "unable to lock file" in msg):
            # A writer is appending (or was killed): read through SWMR, which needs no lock.
            try:
                return h5py.File(path, "r", libver="latest", swmr=True, locking=False)
            except OSError as err2:
                msg = str(err2)
        if "truncated file" in msg:
            raise StoreError(
                f"{path}: the file is shorter than HDF5 says ({msg}): a write failed (disk full?) "
                "or the file was cut. Re-run the command that writes it: it repairs and resumes."
            ) from None
        raise StoreError(
            f"{path}: not a readable HDF5 store ({msg}); is the file truncated or not a store?"
        ) from None


def check_plain(f: h5py.File, path: Path) -> None:
    """Refuse what a feature store never contains and a crafted file could use to read or write
    outside itself: external links, soft links, external storage, virtual datasets."""
    problems: list[str] = []

    def visit(name: str, link: Any) -> None:
        if isinstance(link, h5py.SoftLink):
            # Only the aliases emofeat writes: /embeddings/last -> /embeddings/layer_NN.
            target = f.get(link.path)
            inside = name.startswith("embeddings/") and link.path.startswith("/embeddings/")
            if not (inside and isinstance(target, h5py.Dataset)):
                problems.append(f"/{name} is a SoftLink to {link.path}")
            return
        if isinstance(link, h5py.ExternalLink):
            problems.append(f"/{name} is a {type(link).__name__}")
            return
        obj = f.get(name)
        if isinstance(obj, h5py.Dataset):
            if obj.external:
                problems.append(f"/{name} uses external storage")
            if obj.is_virtual:
                problems.append(f"/{name} is a virtual dataset")

    f.visititems_links(visit)
    if problems:
        raise StoreError(
            f"{path}: not a plain feature store ({'; '.join(problems[:3])}); emofeat reads and "
            "writes only datasets stored in the file itself"
        )


def _attr(value: Any) -> Any:
    """Coerce a provenance value into something HDF5 can store as an attribute."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return np.array(value, dtype=_STR)
        return np.asarray(value)
    if isinstance(value, dict):
        import yaml

        return yaml.safe_dump(value, sort_keys=False, allow_unicode=True)
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.dtype.kind in "OS":
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---------------------------------------------------------------------------------------- layout
def embedding_datasets(f: h5py.File) -> tuple[dict[str, h5py.Dataset], dict[str, str]]:
    """The embedding datasets of a store, and its aliases (soft links: name -> dataset name)."""
    group = f.get("embeddings")
    datasets, aliases = {}, {}
    for name in group.keys() if group is not None else []:
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.SoftLink):
            aliases[name] = link.path.rsplit("/", 1)[-1]
        else:
            datasets[name] = group[name]
    return datasets, aliases


def sequence_shapes(f: h5py.File) -> dict[str, tuple[int, int]]:
    """name -> (T, H) of a store's sequence datasets."""
    group = f.get("sequences")
    if group is None:
        return {}
    return {
        k: (int(ds.shape[1]), int(ds.shape[2]))
        for k, ds in group.items()
        if not k.endswith("_length")
    }


def _strings(values: Iterable[Any]) -> np.ndarray:
    return np.array([str(v) for v in values], dtype=object)


FOLD_RANGE = (-1, 32767)  # /fold is int16: -1 (no fold) or a fold index


def check_rows(
    where: Any,
    *,
    ids: np.ndarray,
    labels: np.ndarray,
    split: np.ndarray,
    fold: np.ndarray,
    label_names: list[str],
    per_row: Mapping[str, np.ndarray] | None = None,
) -> None:
    """The one validation of a store's rows, for creating and for loading one: every per-row
    array has one value per id, ids are unique, labels are integers in -1..C-1 and folds in
    -1..32767 (checked on the values as given, before any cast to the stored int16), split
    values are train or test. Raises a StoreError naming ``where`` and what is wrong."""
    n = len(ids)
    for name, arr in [
        ("labels", labels),
        ("split", split),
        ("fold", fold),
        *(per_row or {}).items(),
    ]:
        if np.shape(arr) != (n,):
            raise StoreError(
                f"{where}: /{name} has shape {np.shape(arr)}, expected ({n},) like /ids"
            )
    for name, arr, (low, high) in [
        ("labels", labels, (-1, len(label_names) - 1)),
        ("fold", fold, FOLD_RANGE),
    ]:
        arr = np.asarray(arr)
        if n and arr.dtype.kind not in "iu":
            raise StoreError(
                f"{where}: /{name} must hold integers ({'class indices, -1 unknown' if name == 'labels' else 'fold indices, -1 none'}), got {arr.dtype}"
            )
        if n and (int(arr.min()) < low or int(arr.max()) > high):
            bad = arr[(arr < low) | (arr > high)][0]
            names = f" for label_names {label_names}" if name == "labels" else ""
            raise StoreError(f"{where}: {name} outside {low}..{high}{names} (e.g. {bad})")
    if len(set(ids)) != n:
        seen: set[str] = set()
        dup = sorted({u for u in ids if u in seen or seen.add(u)})[:5]
        raise StoreError(f"{where}: duplicate ids {dup}")
    bad_split = sorted(set(split) - set(SPLITS))
    if bad_split:
        raise StoreError(f"{where}: /split values must be train or test, got {bad_split[:5]}")


@dataclass(kw_only=True)
class StoreLayout:
    """What a store holds, row for row: its rows (ids, labels, split, fold), label names, datasets
    and the options that decided its values (``config``). A resumed or merged store must match it
    exactly; stores stacked together must match it by id (:meth:`differences`). The rows are
    validated by :func:`check_rows` when a layout is made."""

    ids: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    fold: np.ndarray
    label_names: list[str]
    embeddings: dict[str, int] = field(default_factory=dict)
    logits: bool = True
    embedding_dtype: str = "float32"
    config: dict[str, Any] | None = None  # None: not compared
    # Per row: was any model that produced the row's values trained (or selected) on it?
    # None: the store does not say (unknown).
    in_sample: np.ndarray | None = None
    # Other names of embedding datasets (HDF5 soft links), e.g. {"last": "layer_24"}.
    aliases: dict[str, str] = field(default_factory=dict)
    # Per-row sequences (token or frame states): name -> (length T, width H).
    sequences: dict[str, tuple[int, int]] = field(default_factory=dict)
    # The dimensional targets (valence, arousal) per row, NaN where a row has none: (N, D) or
    # None (no row has any); ``dimensions``: whether the store holds the models' predictions of
    # them (/dimensions, like /logits). The names of both: ``dimension_names``.
    targets: np.ndarray | None = None
    dimensions: bool = False
    dimension_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ids = _strings(self.ids)
        self.split = _strings(self.split)
        self.label_names = [str(n) for n in self.label_names]
        if self.in_sample is not None:
            self.in_sample = np.asarray(self.in_sample, dtype=bool)
        check_rows(
            "store layout",
            ids=self.ids,
            labels=np.asarray(self.labels),
            split=self.split,
            fold=np.asarray(self.fold),
            label_names=self.label_names,
            per_row={"in_sample": self.in_sample} if self.in_sample is not None else None,
        )
        self.labels = np.asarray(self.labels).astype(np.int16)
        self.fold = np.asarray(self.fold).astype(np.int16)
        self.embeddings = {str(k): int(v) for k, v in (self.embeddings or {}).items()}
        self.sequences = {str(k): (int(t), int(h)) for k, (t, h) in (self.sequences or {}).items()}
        self.config = dict(self.config) if isinstance(self.config, Mapping) else None
        self.dimension_names = [str(n) for n in self.dimension_names]
        if self.targets is not None:
            self.targets = np.asarray(self.targets, dtype=np.float32)
            if self.targets.shape != (len(self.ids), len(self.dimension_names)):
                raise StoreError(
                    f"store layout: dimension targets of shape {self.targets.shape}, expected "
                    f"({len(self.ids)}, {len(self.dimension_names)}) for {self.dimension_names}"
                )
            if np.isinf(self.targets).any():
                raise StoreError("store layout: infinite dimension targets (NaN marks none)")
        if self.dimensions and not self.dimension_names:
            raise StoreError("store layout: dimensional predictions need dimension_names")
        for alias, target in self.aliases.items():
            if target not in self.embeddings or alias in self.embeddings:
                raise StoreError(f"alias {alias!r} -> {target!r} names no other dataset")

    def differences(
        self,
        other: StoreLayout,
        *,
        by_id: bool = False,
        datasets: bool = True,
        here: str = "in the store",
        there: str = "asked for",
    ) -> list[str]:
        """What differs between two layouts, as messages (empty when they match).

        ``by_id``: rows are matched by id (stores stacked together may hold them in any order);
        otherwise row by row (resume, merge). ``datasets``: also compare the embeddings, logits
        and ``config``. ``here``/``there`` name the two sides in the messages.
        """
        if by_id:
            if set(self.ids) != set(other.ids):
                only_a = sorted(set(self.ids) - set(other.ids))[:5]
                only_b = sorted(set(other.ids) - set(self.ids))[:5]
                return [f"different ids: only {here}: {only_a}; only {there}: {only_b}"]
            index = {u: i for i, u in enumerate(other.ids)}
            pos = np.array([index[u] for u in self.ids], dtype=np.int64)
        else:
            if len(self.ids) != len(other.ids):
                return [f"{len(self.ids)} rows {here}, {len(other.ids)} {there}"]
            pos = np.arange(len(self.ids))
        problems = []
        names = ["ids", "labels", "split", "fold"]
        if datasets and self.in_sample is not None and other.in_sample is not None:
            names.append("in_sample")  # the evidence is the store's own: not compared when stacking
        for name in names:
            a, b = getattr(self, name), getattr(other, name)[pos]
            bad = np.flatnonzero(a != b)
            if len(bad):
                i = int(bad[0])
                where = f"id {self.ids[i]!r}" if by_id else f"row {i} (id {self.ids[i]!r})"
                problems.append(
                    f"{name} differ at {where}: {_decode(a[i])!r} {here}, {_decode(b[i])!r} {there}"
                    + (f" ({len(bad) - 1} more)" if len(bad) > 1 else "")
                )
        if self.targets is not None and other.targets is not None:
            a, b = self.targets, other.targets[pos]
            bad = np.flatnonzero(~((a == b) | (np.isnan(a) & np.isnan(b))).all(axis=1))
            if len(bad):
                i = int(bad[0])
                problems.append(
                    f"dimension targets differ at id {self.ids[i]!r}: {a[i].tolist()} {here}, "
                    f"{b[i].tolist()} {there}"
                )
        if self.label_names != other.label_names:
            same = sorted(self.label_names) == sorted(other.label_names)
            problems.append(
                f"label_names differ: {self.label_names} {here}, {other.label_names} {there}"
                + (
                    " (the same classes in another order: prepare the manifests with the same "
                    "--labels)"
                    if same
                    else ""
                )
            )
        if datasets:
            if self.logits != other.logits:
                problems.append(f"logits {'present' if self.logits else 'absent'} {here}")
            if self.dimensions != other.dimensions:
                problems.append(
                    f"dimensional predictions {'present' if self.dimensions else 'absent'} {here}"
                )
            mine = {k: (d, self.embedding_dtype) for k, d in self.embeddings.items()}
            theirs = {k: (d, other.embedding_dtype) for k, d in other.embeddings.items()}
            if mine != theirs:
                problems.append(f"embeddings differ: {mine} {here}, {theirs} {there}")
            if self.sequences != other.sequences:
                problems.append(
                    f"sequences differ: {self.sequences} {here}, {other.sequences} {there}"
                )
            if self.aliases != other.aliases:
                problems.append(
                    f"embedding aliases differ: {self.aliases} {here}, {other.aliases} {there}"
                )
            if self.config is not None and other.config is not None and self.config != other.config:
                keys = sorted(
                    k
                    for k in set(self.config) | set(other.config)
                    if self.config.get(k) != other.config.get(k)
                )
                problems.append(
                    f"config differs ({', '.join(keys)}; see the store's `config` attribute)"
                )
        return problems


@dataclass
class Provenance:
    """How a store was made (root attributes besides the layout). ``out_of_fold`` is None when
    unknown (a store written by other code)."""

    model_id: str = ""
    model_revision: str = ""
    checkpoint_sha256: str = ""
    family: str = ""
    modality: str = ""
    pooling: str = ""
    layers: list[str] = field(default_factory=list)
    sample_rate: int = 0
    max_len: float = 0
    text_mode: str = ""
    reverse: bool = False
    precision: str = ""
    split_scheme: str = ""
    run: str = ""
    out_of_fold: bool | None = None
    emofeat_version: str = ""

    def to_attrs(self) -> dict[str, Any]:
        """Root attributes to write (``out_of_fold`` only when known)."""
        attrs = {f.name: getattr(self, f.name) for f in fields(self)}
        attrs.pop("emofeat_version")  # written by the store itself
        if self.out_of_fold is None:
            attrs.pop("out_of_fold")
        return attrs

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Provenance:
        """From a store's root attributes; missing ones keep their defaults, others are ignored."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in attrs.items():
            if key not in known:
                continue
            value = _decode(value)
            if key == "out_of_fold":
                value = _flag(value)
            elif key == "layers":
                value = [value] if isinstance(value, str) else list(value)
            values[key] = value
        return cls(**values)


def _flag(value: Any) -> bool | None:
    """A boolean attribute as written by h5py (bool, numpy bool, 0/1); anything else: unknown."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    return None


def _parse_config(text: Any) -> dict[str, Any] | None:
    if isinstance(text, dict):
        return text
    if not isinstance(text, str) or not text:
        return None
    import yaml

    from emofeat.records import load_yaml

    try:
        data = load_yaml(text)
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def describe_test_predictions(n_models: int | None, *, refit: bool = False) -> str:
    """What predicted a store's test rows, in words (stack reports and ``compare`` name it):
    one model refit on all train rows (``refit``), one model, or the mean of ``n_models`` fold
    models (None: a number not recorded)."""
    if refit:
        return "one model refit on all train rows"
    if n_models == 1:
        return "one model"
    return f"mean of {n_models} fold models" if n_models else "mean of the fold models"
