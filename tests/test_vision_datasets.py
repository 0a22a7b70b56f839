"""torchvision datasets: tiny files in the real on-disk formats, read through the production code path."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.datasets as tvd

from data_prep import vision
from data_prep.datasets import DATASETS, CorruptCacheError, DatasetError
from data_prep.federated import load_dataset, load_federation
from fedetf.io import TEMP_GLOB

ROOT = Path(__file__).resolve().parent.parent

NAMES = ("mnist", "fmnist", "cifar10", "cifar100", "svhn")
SIZES = {"train": 10, "test": 4}

Expected = dict[str, np.ndarray]
Writer = Callable[[Path, pytest.MonkeyPatch], Expected]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _arrays(seed: int, channels: int, size: int, num_classes: int) -> Expected:
    rng = np.random.default_rng(seed)
    out: Expected = {}
    for split, n in SIZES.items():
        out[f"x_{split}"] = rng.integers(0, 256, (n, channels, size, size), dtype=np.uint8)
        y = rng.integers(0, num_classes, n).astype(np.int64)
        y[:2] = [0, num_classes - 1]  # label 0 (SVHN's "10") and the last class always occur
        out[f"y_{split}"] = y
    return out


def _write_idx(root: Path, folder: str, seed: int) -> Expected:
    """MNIST-style IDX files (uncompressed, big-endian) under ``<root>/<folder>/raw``."""
    exp = _arrays(seed, 1, 28, 10)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = exp[f"x_{split}"], exp[f"y_{split}"]
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, len(x), 28, 28) + x.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 2049, len(y)) + y.astype(np.uint8).tobytes()
        )
    return exp


def write_mnist(root: Path, mp: pytest.MonkeyPatch) -> Expected:
    return _write_idx(root, "MNIST", 1)


def write_fmnist(root: Path, mp: pytest.MonkeyPatch) -> Expected:
    return _write_idx(root, "FashionMNIST", 2)


def _pickle(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, mp: pytest.MonkeyPatch) -> Expected:
    """Five train batches of 2, one test batch, batches.meta; md5s patched onto the class."""
    exp = _arrays(3, 3, 32, 10)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rows, labels = exp["x_train"].reshape(10, 3072), exp["y_train"].tolist()
    for b in range(5):
        _pickle(folder / f"data_batch_{b + 1}", {"data": rows[2 * b : 2 * b + 2], "labels": labels[2 * b : 2 * b + 2]})
    _pickle(folder / "test_batch", {"data": exp["x_test"].reshape(4, 3072), "labels": exp["y_test"].tolist()})
    _pickle(folder / "batches.meta", {"label_names": list(vision.VISION_INFOS["cifar10"].class_names)})
    mp.setattr(tvd.CIFAR10, "train_list", [[f"data_batch_{b}", _md5(folder / f"data_batch_{b}")] for b in range(1, 6)])
    mp.setattr(tvd.CIFAR10, "test_list", [["test_batch", _md5(folder / "test_batch")]])
    mp.setattr(tvd.CIFAR10, "meta", {**tvd.CIFAR10.meta, "md5": _md5(folder / "batches.meta")})
    return exp


def write_cifar100(root: Path, mp: pytest.MonkeyPatch) -> Expected:
    exp = _arrays(4, 3, 32, 100)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        x, y = exp[f"x_{split}"], exp[f"y_{split}"]
        _pickle(
            folder / split, {"data": x.reshape(len(x), 3072), "fine_labels": y.tolist(), "coarse_labels": [0] * len(y)}
        )
    _pickle(folder / "meta", {"fine_label_names": list(vision.VISION_INFOS["cifar100"].class_names)})
    mp.setattr(tvd.CIFAR100, "train_list", [["train", _md5(folder / "train")]])
    mp.setattr(tvd.CIFAR100, "test_list", [["test", _md5(folder / "test")]])
    mp.setattr(tvd.CIFAR100, "meta", {**tvd.CIFAR100.meta, "md5": _md5(folder / "meta")})
    return exp


def write_svhn(root: Path, mp: pytest.MonkeyPatch) -> Expected:
    """``X`` H x W x C x N uint8 and ``y`` N x 1 with 10 for digit 0, as in the .mat files."""
    exp = _arrays(5, 3, 32, 10)
    root.mkdir(parents=True, exist_ok=True)
    split_list = {k: list(v) for k, v in tvd.SVHN.split_list.items()}
    for split in ("train", "test"):
        x, y = exp[f"x_{split}"], exp[f"y_{split}"]
        path = root / f"{split}_32x32.mat"
        mat_y = np.where(y == 0, 10, y).astype(np.uint8).reshape(-1, 1)
        scipy.io.savemat(path, {"X": np.ascontiguousarray(x.transpose(2, 3, 1, 0)), "y": mat_y})
        split_list[split][2] = _md5(path)
    mp.setattr(tvd.SVHN, "split_list", split_list)
    return exp


WRITERS: dict[str, Writer] = {
    "mnist": write_mnist,
    "fmnist": write_fmnist,
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
    "svhn": write_svhn,
}
RAW = {
    "mnist": ["MNIST"],
    "fmnist": ["FashionMNIST"],
    "cifar10": ["cifar-10-batches-py"],
    "cifar100": ["cifar-100-python"],
    "svhn": ["train_32x32.mat", "test_32x32.mat"],
}


def _remove_raw(root: Path, name: str) -> None:
    for entry in RAW[name]:
        path = root / entry
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _options(root: Path, download: bool = False) -> dict[str, object]:
    return {"data-root": str(root), "download": download}


def _load(name: str, root: Path, download: bool = False):
    return DATASETS[name].load(0, _options(root, download))


def _assert_matches(data, exp: Expected) -> None:
    for key, want in exp.items():
        got = getattr(data, key)
        assert got.dtype == want.dtype and got.shape == want.shape, key
        np.testing.assert_array_equal(got, want, err_msg=key)


def _assert_mmap_readonly(data) -> None:
    for key in vision.ARRAYS:
        arr = getattr(data, key)
        assert isinstance(arr, np.memmap) and not arr.flags.writeable, key
    with pytest.raises(ValueError):
        data.x_train[0, 0, 0, 0] = 1


@pytest.fixture(autouse=True)
def _clear_caches():
    load_dataset.cache_clear()
    load_federation.cache_clear()
    yield
    load_dataset.cache_clear()
    load_federation.cache_clear()


#: Published facts: (classes, channels, image side, default model, training augmentation, first class name).
KNOWN = {
    "digits": (10, 1, 8, "cnn", "none", "0"),
    "mnist": (10, 1, 28, "cnn", "none", "0"),
    "fmnist": (10, 1, 28, "cnn", "none", "T-shirt/top"),
    "cifar10": (10, 3, 32, "resnet18", "crop-flip", "airplane"),
    "cifar100": (100, 3, 32, "resnet18", "crop-flip", "apple"),
    "svhn": (10, 3, 32, "cnn", "crop", "0"),
    "fed-isic2019": (8, 3, 200, "efficientnet_b0", "none", "MEL"),
}


def test_registry_entries() -> None:
    assert set(KNOWN) <= set(DATASETS)
    for name, (classes, channels, side, model, augment, first) in KNOWN.items():
        info = DATASETS[name].info
        assert info.name == name
        assert (info.num_classes, info.in_channels, info.image_size) == (classes, channels, side), name
        assert (info.default_model, info.train_augment) == (model, augment), name
        assert len(info.class_names) == len(set(info.class_names)) == classes and info.class_names[0] == first, name
        assert len(info.mean) == len(info.std) == channels, name
    # The published per-channel statistics (on 0..1), spot-checked.
    assert DATASETS["mnist"].info.mean == (0.1307,) and DATASETS["mnist"].info.std == (0.3081,)
    assert DATASETS["cifar10"].info.mean == (0.4914, 0.4822, 0.4465)
    assert DATASETS["cifar100"].info.std == (0.2673, 0.2564, 0.2762)
    assert DATASETS["cifar100"].info.class_names[-1] == "worm"
    assert DATASETS["fmnist"].info.class_names[-1] == "Ankle boot"
    assert DATASETS["fed-isic2019"].info.natural_clients == 6 and DATASETS["fed-isic2019"].info.default_loss == "focal"


def test_resolve_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(vision.ENV_DATA_ROOT, raising=False)
    assert vision.resolve_data_root("") == tmp_path / "home" / ".cache" / "fedetf" / "data"
    monkeypatch.setenv(vision.ENV_DATA_ROOT, str(tmp_path / "env"))
    assert vision.resolve_data_root("") == tmp_path / "env"
    assert vision.resolve_data_root(str(tmp_path / "explicit")) == tmp_path / "explicit"
    assert vision.resolve_data_root("~/d") == tmp_path / "home" / "d"
    monkeypatch.chdir(tmp_path)
    assert vision.resolve_data_root("rel") == tmp_path / "rel"


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_and_cache_reuse(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exp = WRITERS[name](tmp_path, monkeypatch)
    first = load_dataset(name, 0, tuple(_options(tmp_path).items()))
    _assert_matches(first, exp)
    _assert_mmap_readonly(first)

    folder = tmp_path / "fedetf-cache" / name
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "done.json",
        "x_test.npy",
        "x_train.npy",
        "y_test.npy",
        "y_train.npy",
    ]
    assert not list(folder.glob(TEMP_GLOB))
    marker = json.loads((folder / "done.json").read_text())
    assert marker["dataset"] == name and marker["arrays"]["x_train"]["shape"] == list(exp["x_train"].shape)
    np.testing.assert_array_equal(np.load(folder / "y_test.npy"), exp["y_test"])

    # The second load reads only the cache: the raw files are gone and torchvision's class refuses to run.
    _remove_raw(tmp_path, name)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("torchvision dataset constructed although the cache is complete")

    monkeypatch.setattr(tvd, vision.TORCHVISION_CLASS[name], refuse)
    load_dataset.cache_clear()
    second = load_dataset(name, 0, tuple(_options(tmp_path).items()))
    assert second is not first
    _assert_matches(second, exp)
    _assert_mmap_readonly(second)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_memmapped_splits_feed_the_federation(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    WRITERS[name](tmp_path, monkeypatch)
    fed = load_federation(name, "iid", 2, 0, options=tuple(_options(tmp_path).items()))
    info = fed.info
    train, test = fed.client_loaders(0, batch_size=4, seed=0)
    xb, yb = next(iter(train))
    assert xb.shape[1:] == (info.in_channels, info.image_size, info.image_size) and xb.dtype == torch.float32
    assert yb.dtype == torch.int64
    assert sum(len(b[1]) for b in test) == len(fed.parts[0][1])


@pytest.mark.parametrize("name", ["mnist", "svhn"])
def test_interrupted_cache_is_rebuilt(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exp = WRITERS[name](tmp_path, monkeypatch)
    _load(name, tmp_path)
    folder = tmp_path / "fedetf-cache" / name
    (folder / "done.json").unlink()
    (folder / "x_train.npy").write_bytes(b"\x93NUMPY half-written")
    data = _load(name, tmp_path)
    _assert_matches(data, exp)
    _assert_mmap_readonly(data)
    assert (folder / "done.json").is_file()

    # Arrays without done.json are never trusted, even when they look complete.
    (folder / "done.json").unlink()
    _remove_raw(tmp_path, name)
    with pytest.raises(vision.DatasetMissingError):
        _load(name, tmp_path)


def test_crash_while_writing_leaves_no_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exp = write_cifar10(tmp_path, monkeypatch)
    real_save, calls = np.save, []

    def crash_on_third(file, arr, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            Path(file).write_bytes(b"partial")
            raise KeyboardInterrupt
        return real_save(file, arr, **kwargs)

    monkeypatch.setattr(np, "save", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        _load("cifar10", tmp_path)
    folder = tmp_path / "fedetf-cache" / "cifar10"
    assert not (folder / "done.json").exists() and not (folder / "x_test.npy").exists()
    assert not list(folder.glob(TEMP_GLOB))
    monkeypatch.setattr(np, "save", real_save)
    _assert_matches(_load("cifar10", tmp_path), exp)


def _cached(name: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Build ``name``'s cache from the tiny original files, then delete those: only the cache is left."""
    WRITERS[name](root, monkeypatch)
    _load(name, root)
    _remove_raw(root, name)
    load_dataset.cache_clear()
    return root / "fedetf-cache" / name


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def _append(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(bytes(16))


def _garble_header(path: Path) -> None:
    path.write_bytes(b"garbage!" + path.read_bytes()[8:])


DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (_truncate, r"is truncated or damaged \(mmap length is greater than file size\)"),
    "trailing-bytes": (_append, r"has \d+ bytes, \d+ expected"),
    "garbled-header": (_garble_header, r"is truncated or damaged \("),
    "missing": (Path.unlink, r"is missing"),
}


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("name, key", [("mnist", "x_train"), ("cifar10", "y_test")])
def test_damaged_cache_file_is_named_with_the_fix(
    name: str, key: str, damage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _cached(name, tmp_path, monkeypatch)
    path = folder / f"{key}.npy"
    spoil, problem = DAMAGES[damage]
    spoil(path)
    with pytest.raises(CorruptCacheError, match=problem) as err:
        load_federation(name, "iid", 2, 0, options=tuple(_options(tmp_path).items()))
    msg = str(err.value)
    assert msg.startswith(f"dataset '{name}': cache file {path} ") and "\n" not in msg
    assert msg.endswith(f"; delete {folder} to rebuild it from the original files")
    assert isinstance(err.value, ValueError)  # the ServerApp reports ValueErrors as one line, no traceback


def test_damaged_labels_and_marker_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _cached("mnist", tmp_path, monkeypatch)
    y = np.load(folder / "y_train.npy")
    y[3] = 10
    np.save(folder / "y_train.npy", y)  # same shape, dtype and size: only the values are wrong
    with pytest.raises(CorruptCacheError, match=r"y_train\.npy holds labels outside 0\.\.9; delete "):
        _load("mnist", tmp_path)
    (folder / "done.json").write_text('{"format": "fedetf-vision-cache", "vers')
    with pytest.raises(CorruptCacheError, match=r"cache file .*done\.json is unreadable \(.*\); delete "):
        _load("mnist", tmp_path)


def test_deleting_the_damaged_cache_rebuilds_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _cached("svhn", tmp_path, monkeypatch)
    _truncate(folder / "x_test.npy")
    with pytest.raises(CorruptCacheError):
        _load("svhn", tmp_path)
    shutil.rmtree(folder)  # the fix the message names
    exp = write_svhn(tmp_path, monkeypatch)
    _assert_matches(_load("svhn", tmp_path), exp)


def test_fetch_command_reports_a_damaged_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    folder = _cached("fmnist", tmp_path, monkeypatch)
    _append(folder / "y_test.npy")
    assert vision.main(["fmnist", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fmnist: dataset 'fmnist': cache file {folder / 'y_test.npy'} has ") and err.count("\n") == 1


def test_unwritable_cache_falls_back_to_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exp = write_fmnist(tmp_path, monkeypatch)

    def deny(*args: object, **kwargs: object) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(vision, "write_cache", deny)
    with pytest.warns(UserWarning, match="cannot write the cache"):
        data = _load("fmnist", tmp_path)
    _assert_matches(data, exp)


@pytest.mark.parametrize("name", NAMES)
def test_missing_files_one_line_error(name: str, tmp_path: Path) -> None:
    root = tmp_path / "data"
    with pytest.raises(vision.DatasetMissingError) as err:
        _load(name, root)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, DatasetError) and "\n" not in msg
    assert msg.startswith(f"dataset '{name}' not found in {root} (looked for {root}")
    assert f"python -m data_prep.vision {name} --root {root}" in msg
    assert f"dataset='{name}' download=true data-root='{root}'" in msg
    assert not root.exists()  # nothing was created while looking


def test_partially_missing_files_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar10(tmp_path, monkeypatch)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(vision.DatasetMissingError, match=r"looked for .*cifar-10-batches-py/data_batch_3\)"):
        _load("cifar10", tmp_path)


@pytest.mark.parametrize("name, file", [("cifar10", "cifar-10-batches-py/data_batch_2"), ("svhn", "test_32x32.mat")])
def test_corrupted_file_is_named(name: str, file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    WRITERS[name](tmp_path, monkeypatch)
    with open(tmp_path / file, "ab") as f:
        f.write(b"\0")
    with pytest.raises(vision.DatasetMissingError) as err:
        _load(name, tmp_path)
    msg = str(err.value)
    assert "corrupted" in msg and str(tmp_path / file) in msg and "\n" not in msg
    assert f"python -m data_prep.vision {name} --root {tmp_path}" in msg
    assert not (tmp_path / "fedetf-cache" / name / "done.json").exists()


def _record_downloads(name: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the class's ``download`` with one that writes the tiny files (no network)."""
    calls: list[str] = []
    cls = getattr(tvd, vision.TORCHVISION_CLASS[name])

    def fake_download(self) -> None:
        calls.append(str(self.root))
        if len(calls) == 1:
            WRITERS[name](root, monkeypatch)

    monkeypatch.setattr(cls, "download", fake_download)
    return calls


@pytest.mark.parametrize("name", NAMES)
def test_download_true_asks_torchvision(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    calls = _record_downloads(name, root, monkeypatch)
    with pytest.raises(vision.DatasetMissingError):
        _load(name, root, download=False)
    assert calls == []
    data = _load(name, root, download=True)
    assert calls and set(calls) == {str(root)}
    assert len(data.y_train) == SIZES["train"] and (root / "fedetf-cache" / name / "done.json").is_file()


def test_fetch_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    calls = {name: _record_downloads(name, root, monkeypatch) for name in ("mnist", "svhn")}
    assert vision.main(["mnist", "svhn", "--root", str(root)]) == 0
    assert all(calls.values())
    out = capsys.readouterr().out
    assert "mnist: 10 train / 4 test images" in out and "svhn: 10 train / 4 test images" in out
    for name in ("mnist", "svhn"):
        assert (root / "fedetf-cache" / name / "done.json").is_file()
    with pytest.raises(SystemExit):
        vision.main(["imagenet", "--root", str(root)])


def test_fetch_command_reports_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def offline(self) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://example, got:\nno network")

    monkeypatch.setattr(tvd.MNIST, "download", offline)
    assert vision.main(["mnist", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mnist: Error downloading") and err.count("\n") == 1


def test_module_entry_point_runs_without_runtime_warning() -> None:
    res = subprocess.run(
        [sys.executable, "-W", "default", "-m", "data_prep.vision", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0 and res.stdout.startswith("usage: python -m data_prep.vision"), res.stderr
    assert "RuntimeWarning" not in res.stderr, res.stderr


@pytest.mark.parametrize("name", ["mnist", "fmnist"])
@pytest.mark.parametrize("file", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
def test_truncated_idx_file_is_named_with_the_fix(
    name: str, file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    WRITERS[name](tmp_path, monkeypatch)
    path = next(tmp_path.rglob(file))
    _truncate(path)
    with pytest.raises(vision.DatasetMissingError) as err:
        _load(name, tmp_path)
    msg = str(err.value)
    assert str(path) in msg and "IDX header" in msg and "truncated or damaged" in msg and "\n" not in msg
    assert f"python -m data_prep.vision {name} --root {tmp_path}" in msg


def test_the_digits_split_is_cached_and_a_damaged_cache_is_split_again(tmp_path: Path) -> None:
    """The cached split is scikit-learn's stratified split for that seed; a damaged cache file is replaced."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from data_prep.datasets import load_digits_splits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    expected = train_test_split(images, digits.target, test_size=0.25, stratify=digits.target, random_state=7)
    options = {"data-root": str(tmp_path)}

    def same(splits: object) -> bool:
        got = [splits.x_train, splits.x_test, splits.y_train, splits.y_test]  # type: ignore[attr-defined]
        return all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))

    assert same(load_digits_splits(7, options))
    [cached] = (tmp_path / vision.CACHE_FOLDER / "digits").glob("*.npz")
    assert "seed7-test0.25-sklearn" in cached.name
    written = cached.stat().st_mtime_ns
    assert same(load_digits_splits(7, options)) and cached.stat().st_mtime_ns == written  # read, not written again
    cached.write_bytes(cached.read_bytes()[:100])
    assert same(load_digits_splits(7, options)) and np.load(cached)["y_test"].shape == (450,)
