"""FEMNIST: small parquet files in flwrlabs/femnist's format, read through the same flwr-datasets path as a download."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep import femnist
from data_prep.datasets import DATASETS, CorruptCacheError, DatasetError, DatasetMissingError
from data_prep.federated import load_federation
from simulations.config import ConfigError, parse_run_config
from tests.inprocess import run_in_process

#: Samples per writer (1 and 2 exercise the split's edge cases), in an order that is not the sorted one.
COUNTS = {"f0412_07": 25, "f0003_41": 12, "f1000_33": 1, "f0003_12": 40, "f2100_90": 2, "f0500_15": 20}


def write_parquet(folder: Path, seed: int = 0) -> None:
    """Two parquet shards with flwrlabs/femnist's features (Image PNG, string writer_id, hsf_id, ClassLabel(62)),
    the writers' rows interleaved."""
    from datasets import ClassLabel, Dataset, Features, Value
    from datasets import Image as HFImage

    rng = np.random.default_rng(seed)
    writers = rng.permutation([w for w, n in COUNTS.items() for _ in range(n)])
    rows: dict[str, list] = {"image": [], "writer_id": [], "hsf_id": [], "character": []}
    for i, writer in enumerate(writers):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode="L").save(buf, format="PNG")
        rows["image"].append({"bytes": buf.getvalue(), "path": None})
        rows["writer_id"].append(str(writer))
        rows["hsf_id"].append(int(rng.integers(0, 8)))
        rows["character"].append(i % 62 if i < 62 else int(rng.integers(0, 62)))
    features = Features(
        {
            "image": HFImage(),
            "writer_id": Value("string"),
            "hsf_id": Value("int64"),
            "character": ClassLabel(names=list(femnist.CLASS_NAMES)),
        }
    )
    ds = Dataset.from_dict(rows, features=features)
    (folder / "data").mkdir(parents=True)
    half = len(ds) // 2
    ds.select(range(half)).to_parquet(folder / "data" / "train-00000-of-00002.parquet")
    ds.select(range(half, len(ds))).to_parquet(folder / "data" / "train-00001-of-00002.parquet")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with the parquet files and the cache built from them."""
    root = tmp_path_factory.mktemp("femnist-root")
    write_parquet(femnist.source_dir(root))
    femnist.prepare(root, download=False)
    return root


def _options(root: Path) -> tuple[tuple[str, object], ...]:
    return (("data-root", str(root)), ("download", False))


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


def test_registered_as_natural_at_most_dataset() -> None:
    info = DATASETS["femnist"].info
    assert (info.natural_clients, info.client_count, info.num_classes, info.in_channels, info.image_size) == (
        3597,
        "at-most",
        62,
        1,
        28,
    )
    assert info.default_model == "cnn" and info.class_names[:11] == tuple("0123456789A") and info.class_names[-1] == "z"
    assert parse_run_config({"dataset": "femnist", "num-clients": 3597}).natural
    with pytest.raises(ConfigError, match="num-clients=3598; allowed: at most the 3597 clients"):
        parse_run_config({"dataset": "femnist", "num-clients": 3598})


def test_clients_are_the_natural_id_partitions(root: Path) -> None:
    from flwr_datasets import FederatedDataset
    from flwr_datasets.partitioner import NaturalIdPartitioner

    files = [str(p) for p in femnist.parquet_files(root)]
    assert [Path(f).name for f in files] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    fds = FederatedDataset(
        dataset="parquet",
        data_files={"train": files},
        partitioners={"train": NaturalIdPartitioner(partition_by="writer_id")},
        shuffle=False,
        cache_dir=str(root / "hf-check"),
    )
    data = femnist.prepare(root, download=False)
    assert data.writers == tuple(sorted(COUNTS))  # the partitioner's order: sorted writer ids
    for cid, writer in enumerate(data.writers):
        part = fds.load_partition(cid)
        assert set(part["writer_id"]) == {writer}
        expected = sorted(
            (np.asarray(img).tobytes(), y) for img, y in zip(part["image"], part["character"], strict=True)
        )
        tr, te = np.flatnonzero(data.clients_train == cid), np.flatnonzero(data.clients_test == cid)
        ours = [(data.x_train[i, 0].tobytes(), int(data.y_train[i])) for i in tr]
        ours += [(data.x_test[i, 0].tobytes(), int(data.y_test[i])) for i in te]
        assert sorted(ours) == expected


def test_per_writer_split_is_leaf_90_10_fixed_and_deterministic(root: Path, tmp_path: Path) -> None:
    data = femnist.prepare(root, download=False)
    for cid, writer in enumerate(data.writers):
        n = COUNTS[writer]
        assert np.count_nonzero(data.clients_train == cid) == max(1, int(0.9 * n))
        assert np.count_nonzero(data.clients_test == cid) == n - max(1, int(0.9 * n))
    assert np.all(np.diff(data.clients_train) >= 0) and np.all(np.diff(data.clients_test) >= 0)
    # Rebuilt from the same files elsewhere: the same split, byte for byte; the run seed plays no part.
    shutil.copytree(femnist.source_dir(root), femnist.source_dir(tmp_path))
    again = femnist.load_femnist(7, {"data-root": str(tmp_path)})
    for key in femnist.ARRAYS:
        assert np.array_equal(getattr(again, key), getattr(data, key)), key
    clients = np.repeat(np.arange(5), [3, 10, 1, 2, 30])
    mask = femnist.writer_split(clients, 5)
    assert np.array_equal(mask, femnist.writer_split(clients, 5))
    assert not np.array_equal(femnist.writer_split(clients, 5, seed=1), femnist.writer_split(clients, 5, seed=2))
    assert np.bincount(clients[mask], minlength=5).tolist() == [2, 9, 1, 1, 27]
    marker = json.loads((femnist.cache_dir(root) / "done.json").read_text())
    assert marker["writers"] == sorted(COUNTS) and marker["split_seed"] == femnist.SPLIT_SEED
    assert 0.4 < marker["train_pixel_mean"] < 0.6  # uniform random pixels


def test_cache_reopens_without_flwr_datasets(root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    shutil.copytree(femnist.cache_dir(root), femnist.cache_dir(tmp_path))  # the cache only, no parquet files
    for module in ("datasets", "flwr_datasets", "flwr_datasets.partitioner"):
        monkeypatch.setitem(sys.modules, module, None)  # importing them now raises ImportError
    data = femnist.load_femnist(0, {"data-root": str(tmp_path)})
    assert (
        isinstance(data.x_train, np.memmap) and data.x_train.dtype == np.uint8 and data.x_train.shape[1:] == (1, 28, 28)
    )
    assert len(data.y_train) + len(data.y_test) == sum(COUNTS.values())


@pytest.mark.parametrize("damage", ["truncate", "done", "clients"])
def test_corrupt_cache_is_one_line_naming_the_file(root: Path, tmp_path: Path, damage: str) -> None:
    folder = femnist.cache_dir(tmp_path)
    shutil.copytree(femnist.cache_dir(root), folder)
    if damage == "truncate":
        bad = folder / "x_train.npy"
        bad.write_bytes(bad.read_bytes()[:-100])
    elif damage == "done":
        bad = folder / "done.json"
        bad.write_text("{not json")
    else:
        bad = folder / "clients_test.npy"
        np.save(bad, np.full(np.load(bad).shape, 99, dtype=np.int64))
    with pytest.raises(CorruptCacheError) as err:
        femnist.prepare(tmp_path, download=False)
    msg = _one_line(err)
    assert f"cache file {bad} " in msg and f"delete {folder}" in msg


def test_missing_data_is_one_line_naming_the_folder_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissingError) as err:
        load_federation("femnist", "natural", 3, 0, options=_options(tmp_path))
    msg = _one_line(err)
    assert str(tmp_path / "femnist") in msg and "download=true" in msg and "flwrlabs/femnist" in msg


def test_failed_download_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'flwrlabs/femnist' on the Hub (LocalEntryNotFoundError)\nmore")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DatasetMissingError) as err:
        femnist.prepare(tmp_path, download=True)
    msg = _one_line(err)
    assert "downloading flwrlabs/femnist" in msg and "ConnectionError: Couldn't reach" in msg
    assert str(tmp_path / "femnist") in msg
    assert not (femnist.cache_dir(tmp_path) / "done.json").exists()


def test_unreadable_parquet_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "femnist").mkdir()
    (tmp_path / "femnist" / "train.parquet").write_bytes(b"not parquet")
    with pytest.raises(DatasetError) as err:
        femnist.prepare(tmp_path, download=False)
    assert f"the parquet files in {tmp_path / 'femnist'} could not be read" in _one_line(err)


def test_load_federation_takes_the_first_writers(root: Path) -> None:
    fed = load_federation("femnist", "natural", 3, 5, options=_options(root))
    data = femnist.prepare(root, download=False)
    assert fed.num_clients == 3 and len(fed.global_test) == len(data.y_test)
    for cid in range(3):
        assert np.array_equal(fed.labels(cid), data.y_train[data.clients_train == cid])
        assert np.array_equal(fed.labels(cid, "test"), data.y_test[data.clients_test == cid])
    train, test = fed.client_loaders(0, 4, seed=0)
    x, _ = next(iter(train))
    assert x.shape[1:] == (1, 28, 28) and -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    with pytest.raises(ValueError, match="num-clients=7: natural client 6 has no train samples"):
        load_federation("femnist", "natural", 7, 5, options=_options(root))


def test_one_round_in_process(root: Path, tmp_path: Path) -> None:
    outcome = run_in_process(
        {
            "dataset": "femnist",
            "data-root": str(root),
            "num-clients": 3,
            "num-server-rounds": 1,
            "local-epochs": 1,
            "output-dir": str(tmp_path / "out"),
        },
        num_nodes=2,
    )
    assert outcome.exit is None, outcome.errors
    assert (tmp_path / "out" / "metrics.csv").is_file()
