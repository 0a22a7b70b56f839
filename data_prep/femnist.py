"""FEMNIST (LEAF) through flwr-datasets: its writers as natural clients, cached as memory-mapped ``.npy``.

Source: the Hugging Face dataset ``flwrlabs/femnist``. Relied on, from its dataset card: one split
``train`` of 814,277 rows in ``data/train-*.parquet``; columns ``image`` (28x28 grayscale PNG),
``writer_id`` (string), ``hsf_id`` (int, unused here) and ``character`` (ClassLabel of 62 names:
``0-9``, ``A-Z``, ``a-z``, checked when decoding). Its 3,597 writers (:data:`NUM_WRITERS`) bound
``num-clients`` in the config; with fewer writers in the files, asking for more clients fails with
one line (:func:`~data_prep.federated.natural_parts`). It is read with
``flwr_datasets.FederatedDataset`` (``shuffle=False``, so rows keep the files' order) and
``NaturalIdPartitioner(partition_by="writer_id")``, either from the Hub (``download=true``) or from
parquet files already in ``<data-root>/femnist/`` (any ``*.parquet`` below it, hidden folders
skipped, read in sorted path order: e.g. a snapshot of the dataset's repository with its
``data/train-*.parquet``); local files win over a download. Client ``k`` is the partitioner's
partition ``k``: writers in sorted ``writer_id`` order, so ``num-clients=N`` takes the first ``N``
of them.

Each writer's samples are split 90/10 into train/test as LEAF's ``split_data.py --by_sample`` does
(``max(1, int(0.9 n))`` train samples, a random subset), drawn from a fixed seed
(:data:`SPLIT_SEED`), not the run's: the split is a property of the cache. A writer with a single
sample keeps it for training (LEAF drops such writers). The decoded arrays go to
``<data-root>/fedetf-cache/femnist/`` (``x_*``: uint8 N x 1 x 28 x 28, ``y_*``: int64 labels,
``clients_*``: int64 client ids; train and test sorted by client, then row) with ``done.json``
written last; the Hugging Face cache of the source goes to ``<data-root>/fedetf-cache/femnist-hf/``.
Decoding takes a build lock, so one process decodes and the others wait and then only open the
cache: opening it needs neither ``flwr_datasets`` nor ``datasets``. A truncated or damaged cache is
refused with one line naming the file (:class:`~data_prep.datasets.CorruptCacheError`).
"""

from __future__ import annotations

import os
import shlex
import string
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.datasets import (
    ArraySplits,
    CorruptCacheError,
    DatasetError,
    DatasetInfo,
    DatasetMissingError,
    register_dataset,
)

NAME = "femnist"
HF_DATASET = "flwrlabs/femnist"
PARTITION_BY = "writer_id"
LABEL_COLUMN = "character"
IMAGE_COLUMN = "image"
#: Writers of ``flwrlabs/femnist`` (its natural clients).
NUM_WRITERS = 3597
CLASS_NAMES = tuple(string.digits + string.ascii_uppercase + string.ascii_lowercase)
#: Train share of each writer's samples (LEAF's ``--frac 0.9``).
TRAIN_SHARE = 0.9
#: Seed of the per-writer train/test split (fixed: the split does not follow the run's seed).
SPLIT_SEED = 0
#: Folder of ``<data-root>`` searched for the source parquet files.
SOURCE_FOLDER = "femnist"
CACHE_FORMAT = "fedetf-femnist-cache"
CACHE_VERSION = 1
#: Images per decoding task.
_CHUNK = 8192
ARRAYS = ("x_train", "y_train", "clients_train", "x_test", "y_test", "clients_test")

INFO = DatasetInfo(
    name=NAME,
    num_classes=len(CLASS_NAMES),
    in_channels=1,
    image_size=28,
    default_model="cnn",
    # Pixels are scaled to [-1, 1] whatever the images' polarity; done.json records the measured mean/std.
    mean=(0.5,),
    std=(0.5,),
    class_names=CLASS_NAMES,
    natural_clients=NUM_WRITERS,
    client_count="at-most",
)


@dataclass(frozen=True)
class FemnistSplits(ArraySplits):
    """Decoded FEMNIST: images and labels of both splits, each sample's client, and the clients' writer ids."""

    clients_train: np.ndarray
    clients_test: np.ndarray
    writers: tuple[str, ...]

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.clients_train) != len(self.y_train) or len(self.clients_test) != len(self.y_test):
            raise ValueError("client ids and labels differ in length")


# --- where things are -----------------------------------------------------------------------------


def source_dir(root: Path) -> Path:
    """Folder of the user's parquet files: ``<data-root>/femnist``."""
    return root / SOURCE_FOLDER


def hf_cache_dir(root: Path) -> Path:
    """Hugging Face ``cache_dir`` of the source (download and its Arrow copy)."""
    from data_prep.vision import CACHE_FOLDER

    return root / CACHE_FOLDER / f"{NAME}-hf"


def parquet_files(root: Path) -> list[Path]:
    """The ``*.parquet`` files below ``<data-root>/femnist`` (hidden folders skipped), in sorted path order."""
    folder = source_dir(root)
    if not folder.is_dir():
        return []
    found = (p for p in folder.rglob("*.parquet") if not any(s.startswith(".") for s in p.relative_to(folder).parts))
    return sorted(p for p in found if p.is_file())


def fetch_hint(root: Path) -> str:
    """How to get the data into ``root``."""
    return (
        f"flwr run . --run-config \"dataset='{NAME}' download=true data-root='{root}'\" "
        f"or put the parquet files of the Hugging Face dataset {HF_DATASET} (data/train-*.parquet) "
        f"in {shlex.quote(str(source_dir(root)))}"
    )


def _reason(exc: BaseException) -> str:
    """``exc`` on one line, at most about 300 characters."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- reading the source through flwr-datasets -----------------------------------------------------


def federated_dataset(root: Path, files: list[Path]) -> Any:
    """The source as a ``FederatedDataset`` with a ``NaturalIdPartitioner`` by writer: the Hub dataset, or
    ``files`` (parquet) when given. Nothing is read until its partitioners are asked for."""
    from flwr_datasets import FederatedDataset
    from flwr_datasets.partitioner import NaturalIdPartitioner

    partitioners = {"train": NaturalIdPartitioner(partition_by=PARTITION_BY)}
    common = {"partitioners": partitioners, "shuffle": False, "cache_dir": str(hf_cache_dir(root))}
    if files:
        return FederatedDataset(dataset="parquet", data_files={"train": [str(f) for f in files]}, **common)
    return FederatedDataset(dataset=HF_DATASET, **common)


def _open_source(root: Path, download: bool) -> tuple[Any, str]:
    """The train partitioner (its dataset assigned) and a description of where it came from."""
    files = parquet_files(root)
    folder = source_dir(root)
    if not files and not download:
        raise DatasetMissingError(
            f"dataset {NAME!r} not found in {root} (no cache, no *.parquet in {folder}); "
            f"get it with: {fetch_hint(root)}"
        )
    try:
        partitioner = federated_dataset(root, files).partitioners["train"]
    except Exception as e:  # noqa: BLE001 - datasets/huggingface_hub raise many types (ConnectionError, ArrowInvalid, ...)
        if files:
            raise DatasetError(
                f"dataset {NAME!r}: the parquet files in {folder} could not be read ({_reason(e)}); "
                f"replace them, or remove them and use download=true"
            ) from None
        raise DatasetMissingError(
            f"dataset {NAME!r}: downloading {HF_DATASET} into {hf_cache_dir(root)} failed ({_reason(e)}); "
            f"check the connection and retry, or put the parquet files of {HF_DATASET} in {folder}"
        ) from None
    source = f"{len(files)} parquet file(s) in {folder}" if files else f"{HF_DATASET} (Hugging Face Hub)"
    return partitioner, source


def writer_split(clients: np.ndarray, num_clients: int, seed: int = SPLIT_SEED) -> np.ndarray:
    """Train mask of a seeded per-client split: ``max(1, int(0.9 n))`` of each client's ``n`` samples train."""
    n = len(clients)
    order = np.lexsort((np.random.default_rng(seed).random(n), clients))  # by client, random within
    counts = np.bincount(clients, minlength=num_clients)
    n_train = np.maximum(1, (TRAIN_SHARE * counts).astype(np.int64))
    starts = np.cumsum(counts) - counts
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[clients[order]]
    return rank < n_train[clients]


def _decode_images(column: Any, where: str) -> np.ndarray:
    """PNG bytes (a pyarrow ``image`` struct column) as uint8 N x 28 x 28, decoded in threads (OpenCV)."""
    import cv2

    out = np.empty((len(column), 28, 28), dtype=np.uint8)

    def decode(start: int) -> None:
        chunk = column.slice(start, _CHUNK).combine_chunks().field("bytes").to_pylist()
        for j, data in enumerate(chunk):
            img = None if data is None else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
            if img is None or img.shape != (28, 28):
                got = "no image bytes" if data is None else ("an undecodable image" if img is None else img.shape)
                raise DatasetError(f"dataset {NAME!r}: row {start + j} of {where} holds {got}, not a 28x28 PNG")
            out[start + j] = img

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(decode, range(0, len(column), _CHUNK)))
    return out


def _pixel_stats(x: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of uint8 pixels, on 0..1."""
    if x.size == 0:
        return 0.0, 0.0
    total = squares = 0
    for start in range(0, len(x), _CHUNK):
        part = x[start : start + _CHUNK].astype(np.int64)
        total += int(part.sum())
        squares += int((part * part).sum())
    mean = total / x.size
    return mean / 255.0, float(np.sqrt(max(squares / x.size - mean * mean, 0.0))) / 255.0


def decode(root: Path, download: bool) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read the source through flwr-datasets and split each writer's samples: the cache's arrays and facts."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from datasets import ClassLabel

    partitioner, source = _open_source(root, download)
    ds = partitioner.dataset
    missing = [c for c in (IMAGE_COLUMN, PARTITION_BY, LABEL_COLUMN) if c not in ds.column_names]
    label = ds.features.get(LABEL_COLUMN)
    if missing or not isinstance(label, ClassLabel) or tuple(label.names) != CLASS_NAMES:
        problem = f"lacks column(s) {missing}" if missing else f"has {LABEL_COLUMN!r} = {label}"
        raise DatasetError(
            f"dataset {NAME!r}: {source} {problem}, expected {HF_DATASET}'s columns (ClassLabel of 62 characters)"
        )
    writers = [partitioner.partition_id_to_natural_id[p] for p in range(partitioner.num_partitions)]
    table = ds.with_format("arrow")[0 : len(ds)]
    clients = pc.index_in(table[PARTITION_BY], value_set=pa.array(writers)).to_numpy(zero_copy_only=False)
    clients = clients.astype(np.int64)
    labels = table[LABEL_COLUMN].to_numpy(zero_copy_only=False).astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise DatasetError(f"dataset {NAME!r}: {source} has {LABEL_COLUMN!r} values outside 0..{len(CLASS_NAMES) - 1}")
    images = _decode_images(table[IMAGE_COLUMN], source)
    train = writer_split(clients, len(writers))
    order = np.argsort(clients, kind="stable")  # by client, then row
    arrays: dict[str, np.ndarray] = {}
    for split, mask in (("train", train[order]), ("test", ~train[order])):
        rows = order[mask]
        arrays[f"x_{split}"] = images[rows][:, None]
        arrays[f"y_{split}"] = labels[rows]
        arrays[f"clients_{split}"] = clients[rows]
    mean, std = _pixel_stats(arrays["x_train"])
    facts = {
        "source": source,
        "writers": writers,
        "split_seed": SPLIT_SEED,
        "train_share": TRAIN_SHARE,
        "train_pixel_mean": round(mean, 5),
        "train_pixel_std": round(std, 5),
    }
    return arrays, facts


# --- the memory-mapped cache ----------------------------------------------------------------------


def cache_dir(root: Path) -> Path:
    """Folder of the decoded cache: ``<data-root>/fedetf-cache/femnist``."""
    from data_prep.vision import cache_dir as vision_cache_dir

    return vision_cache_dir(root, NAME)


def write_cache(folder: Path, arrays: dict[str, np.ndarray], facts: dict[str, Any]) -> None:
    """Write the arrays atomically, then ``done.json`` with ``facts`` (vision's cache writer, FEMNIST's arrays)."""
    from data_prep.vision import write_cache as write_arrays

    write_arrays(folder, NAME, arrays, keys=ARRAYS, cache_format=(CACHE_FORMAT, CACHE_VERSION), facts=facts)


def _corrupt(folder: Path, file: Path, problem: str) -> CorruptCacheError:
    from data_prep.vision import _corrupt as corrupt

    return corrupt(folder, NAME, file, problem)


def open_cache(folder: Path) -> FemnistSplits | None:
    """The cache memory-mapped read-only; None if absent, unfinished (no done.json) or of another format.

    Raises
    ------
    CorruptCacheError
        ``done.json`` says the cache is complete but it is unreadable, or a ``.npy`` file is missing,
        truncated, of another shape or size, or holds labels or client ids out of range.
    """
    from data_prep.vision import read_cache

    cached = read_cache(folder, NAME, keys=ARRAYS, cache_format=(CACHE_FORMAT, CACHE_VERSION))
    if cached is None:
        return None
    marker, arrays = cached
    marker_path = folder / "done.json"
    writers = marker.get("writers")
    if not isinstance(writers, list) or not all(isinstance(w, str) for w in writers):
        raise _corrupt(folder, marker_path, "lacks the list of writers")
    for key, bound in (("y", len(CLASS_NAMES)), ("clients", len(writers))):
        for split in ("train", "test"):
            values = arrays[f"{key}_{split}"]
            if len(values) and (values.min() < 0 or values.max() >= bound):
                raise _corrupt(folder, folder / f"{key}_{split}.npy", f"holds values outside 0..{bound - 1}")
    try:
        return FemnistSplits(**arrays, writers=tuple(writers))
    except ValueError as e:
        raise _corrupt(folder, marker_path, f"describes arrays of different lengths ({e})") from None


def prepare(root: Path, download: bool) -> FemnistSplits:
    """Open the cache under ``root``, decoding the source (once, under a build lock) if needed."""
    from data_prep.vision import _build_lock

    folder = cache_dir(root)
    cached = open_cache(folder)
    if cached is not None:
        return cached
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".lock").touch()
    except OSError as e:
        warnings.warn(f"dataset {NAME!r}: cannot write the cache in {folder} ({e}); using it in memory", stacklevel=2)
        arrays, facts = decode(root, download)
        return FemnistSplits(**arrays, writers=tuple(facts["writers"]))
    with _build_lock(folder):
        cached = open_cache(folder)  # another process may have built it meanwhile
        if cached is None:
            arrays, facts = decode(root, download)
            try:
                write_cache(folder, arrays, facts)
            except OSError as e:
                warnings.warn(
                    f"dataset {NAME!r}: cannot write the cache in {folder} ({e}); using it in memory", stacklevel=2
                )
                return FemnistSplits(**arrays, writers=tuple(facts["writers"]))
            cached = open_cache(folder)
    if cached is None:
        raise RuntimeError(f"dataset {NAME!r}: the cache just written in {folder} does not open")
    return cached


def load_femnist(seed: int, options: dict[str, Any]) -> FemnistSplits:
    """Registry loader: the cached split (``seed`` is unused: the split is fixed)."""
    from data_prep.vision import _as_bool, resolve_data_root

    root = resolve_data_root(str(options.get("data-root", "") or ""))
    return prepare(root, _as_bool(options.get("download", False)))


register_dataset(INFO, load_femnist)
