"""MNIST, Fashion-MNIST, CIFAR-10/100 and SVHN through torchvision, cached as memory-mapped ``.npy``.

torchvision's dataset classes read (and, with ``download=true``, fetch) the
original files once; the decoded splits are then written to
``<data-root>/fedetf-cache/<name>/{x_train,y_train,x_test,y_test}.npy``
(x: uint8 N x C x H x W, y: int64) with a ``done.json`` marker written last.
Every later load memory-maps that cache read-only, so client processes share
the same pages and never touch the original files again.

Fetch ahead of a run with ``python -m data_prep.vision cifar10 svhn --root DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np

from data_prep.datasets import ArraySplits, DatasetInfo, register_dataset

ENV_DATA_ROOT = "FEDETF_DATA_ROOT"
CACHE_FOLDER = "fedetf-cache"
CACHE_FORMAT = "fedetf-vision-cache"
CACHE_VERSION = 1
ARRAYS = ("x_train", "y_train", "x_test", "y_test")

#: Training augmentation per dataset (crop = RandomCrop(32, padding=4); flip = horizontal flip).
TRAIN_AUGMENT: dict[str, str] = {
    "cifar10": "crop-flip",
    "cifar100": "crop-flip",
    "svhn": "crop",
    "mnist": "none",
    "fmnist": "none",
}

#: torchvision.datasets class that reads each dataset.
TORCHVISION_CLASS: dict[str, str] = {
    "mnist": "MNIST",
    "fmnist": "FashionMNIST",
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "svhn": "SVHN",
}

_DIGITS = tuple(str(i) for i in range(10))
_FMNIST = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR100 = tuple(
    """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can
    castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin
    elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster
    man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck
    pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk
    skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger
    tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
)


def _info(
    name: str,
    num_classes: int,
    channels: int,
    size: int,
    model: str,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    classes: tuple[str, ...],
) -> DatasetInfo:
    return DatasetInfo(
        name=name,
        num_classes=num_classes,
        in_channels=channels,
        image_size=size,
        default_model=model,
        mean=mean,
        std=std,
        class_names=classes,
        train_augment=TRAIN_AUGMENT[name],
    )


#: Static facts (published per-channel mean/std on 0..1; FedGELA's default models).
VISION_INFOS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        _info("mnist", 10, 1, 28, "cnn", (0.1307,), (0.3081,), _DIGITS),
        _info("fmnist", 10, 1, 28, "cnn", (0.2860,), (0.3530,), _FMNIST),
        _info("cifar10", 10, 3, 32, "resnet18", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), _CIFAR10),
        _info("cifar100", 100, 3, 32, "resnet18", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), _CIFAR100),
        _info("svhn", 10, 3, 32, "cnn", (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), _DIGITS),
    )
}


class DatasetMissingError(FileNotFoundError):
    """The dataset's files are absent or corrupted and downloading was not allowed (or failed)."""


def resolve_data_root(value: str) -> Path:
    """``value`` if non-empty, else ``$FEDETF_DATA_ROOT``, else ``~/.cache/fedetf/data`` (absolute)."""
    raw = value or os.environ.get(ENV_DATA_ROOT, "")
    root = Path(raw).expanduser() if raw else Path.home() / ".cache" / "fedetf" / "data"
    return root.absolute()


def cache_dir(root: Path, name: str) -> Path:
    """Folder of the decoded cache of dataset ``name`` under data root ``root``."""
    return root / CACHE_FOLDER / name


def fetch_hint(name: str, root: Path) -> str:
    """The two commands that fetch ``name`` into ``root``."""
    return (
        f"flwr run . --run-config \"dataset='{name}' download=true data-root='{root}'\" "
        f"or python -m data_prep.vision {name} --root {shlex.quote(str(root))}"
    )


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


# --- reading the original files through torchvision ---------------------------------------------


def _torchvision_class(name: str) -> Any:
    import torchvision.datasets

    return getattr(torchvision.datasets, TORCHVISION_CLASS[name])


def _expected_files(name: str, root: Path) -> tuple[Path | None, list[tuple[Path, str | None]]]:
    """The folder (if any) and the files, with md5 where torchvision checks one, that ``name`` reads."""
    cls = _torchvision_class(name)
    if name in ("mnist", "fmnist"):
        folder = root / cls.__name__ / "raw"
        return folder, [(folder / os.path.splitext(os.path.basename(url))[0], None) for url, _ in cls.resources]
    if name in ("cifar10", "cifar100"):
        folder = root / cls.base_folder
        files = [(folder / f, md5) for f, md5 in cls.train_list + cls.test_list]
        return folder, files + [(folder / cls.meta["filename"], cls.meta["md5"])]
    return None, [(root / cls.split_list[s][1], cls.split_list[s][2]) for s in ("train", "test")]


def _diagnose(name: str, root: Path, error: Exception) -> str:
    """One line: which files are missing or corrupted, and how to fetch them."""
    from torchvision.datasets.utils import check_integrity

    folder, files = _expected_files(name, root)
    hint = fetch_hint(name, root)
    missing = [str(p) for p, _ in files if not p.is_file()]
    if missing:
        looked = str(folder) if folder is not None and not folder.is_dir() else ", ".join(missing)
        return f"dataset {name!r} not found in {root} (looked for {looked}); fetch it with: {hint}"
    bad = [str(p) for p, md5 in files if md5 is not None and not check_integrity(str(p), md5)]
    if bad:
        return f"dataset {name!r} in {root} is corrupted (md5 mismatch: {', '.join(bad)}); fetch it again with: {hint}"
    reason = " ".join(str(error).split())
    return f"dataset {name!r} could not be read from {root} ({reason}); fetch it with: {hint}"


def decode(name: str, root: Path, download: bool) -> dict[str, np.ndarray]:
    """Read both splits with torchvision's class (downloading only if ``download``) as NCHW uint8 / int64."""
    info, cls = VISION_INFOS[name], _torchvision_class(name)
    out: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        try:
            if name == "svhn":
                ds = cls(str(root), split=split, download=download)
                x, y = ds.data, ds.labels  # already N x C x H x W; torchvision maps label 10 to 0
            else:
                ds = cls(str(root), train=split == "train", download=download)
                x, y = ds.data, ds.targets
                # MNIST: uint8 tensor N x H x W; CIFAR: uint8 array N x H x W x C.
                x = x.numpy()[:, None] if name in ("mnist", "fmnist") else x.transpose(0, 3, 1, 2)
        except RuntimeError as e:
            if "not found" not in str(e):
                raise
            raise DatasetMissingError(_diagnose(name, root, e)) from e
        x = np.ascontiguousarray(x, dtype=np.uint8)
        y = np.asarray(y, dtype=np.int64).reshape(-1)
        want = (info.in_channels, info.image_size, info.image_size)
        if x.ndim != 4 or x.shape[1:] != want or len(x) != len(y):
            raise ValueError(f"dataset {name!r} {split}: images {x.shape} / labels {y.shape}, expected N x {want}")
        if len(y) and (y.min() < 0 or y.max() >= info.num_classes):
            raise ValueError(f"dataset {name!r} {split}: labels outside 0..{info.num_classes - 1}")
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    return out


# --- the memory-mapped cache --------------------------------------------------------------------


def _atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` through a temp file in the same folder and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """Exclusive lock so concurrent processes do not write the same cache at once (POSIX only)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(folder / ".lock", "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def write_cache(folder: Path, name: str, arrays: dict[str, np.ndarray]) -> None:
    """Write the four arrays atomically, then ``done.json`` (a cache without it is never trusted)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "done.json").unlink(missing_ok=True)
    for key in ARRAYS:
        _atomic_write(folder / f"{key}.npy", partial(np.save, arr=arrays[key], allow_pickle=False))
    _fsync_dir(folder)
    marker = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "dataset": name,
        "arrays": {k: {"shape": list(arrays[k].shape), "dtype": str(arrays[k].dtype)} for k in ARRAYS},
    }
    _atomic_write(folder / "done.json", lambda f: f.write(json.dumps(marker, indent=1).encode()))
    _fsync_dir(folder)


def open_cache(folder: Path, name: str) -> ArraySplits | None:
    """The cache memory-mapped read-only, or None if it is absent, unfinished or inconsistent."""
    try:
        marker = json.loads((folder / "done.json").read_text())
        if marker.get("format") != CACHE_FORMAT or marker.get("version") != CACHE_VERSION:
            return None
        if marker.get("dataset") != name:
            return None
        arrays = {k: np.load(folder / f"{k}.npy", mmap_mode="r", allow_pickle=False) for k in ARRAYS}
        for k, arr in arrays.items():
            meta = marker["arrays"][k]
            if list(arr.shape) != meta["shape"] or str(arr.dtype) != meta["dtype"]:
                return None
        return ArraySplits(**arrays)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def prepare(name: str, root: Path, download: bool) -> ArraySplits:
    """Open ``name``'s cache under ``root``, decoding the original files (once) if needed."""
    if name not in VISION_INFOS:
        raise KeyError(f"{name!r} is not a torchvision dataset; allowed: {sorted(VISION_INFOS)}")
    folder = cache_dir(root, name)
    cached = open_cache(folder, name)
    if cached is not None:
        return cached
    arrays = decode(name, root, download)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _build_lock(folder):
            if open_cache(folder, name) is None:  # another process may have finished meanwhile
                write_cache(folder, name, arrays)
    except OSError as e:
        warnings.warn(f"dataset {name!r}: cannot write the cache in {folder} ({e}); using it in memory", stacklevel=2)
        return ArraySplits(**arrays)
    cached = open_cache(folder, name)
    if cached is None:
        raise RuntimeError(f"dataset {name!r}: the cache just written in {folder} does not open")
    return cached


def load_vision(name: str, seed: int, options: dict[str, Any]) -> ArraySplits:
    """Registry loader: the provided train/test splits as-is (``seed`` is unused)."""
    root = resolve_data_root(str(options.get("data-root", "") or ""))
    return prepare(name, root, _as_bool(options.get("download", False)))


for _name, _vinfo in VISION_INFOS.items():
    register_dataset(_vinfo, partial(load_vision, _name))


def main(argv: list[str] | None = None) -> int:
    """Download (``download=True``) and decode datasets into the memory-mapped cache."""
    parser = argparse.ArgumentParser(prog="python -m data_prep.vision", description=main.__doc__)
    parser.add_argument("names", nargs="+", choices=sorted(VISION_INFOS), metavar="NAME", help=", ".join(VISION_INFOS))
    parser.add_argument("--root", default="", help=f"data root (default: ${ENV_DATA_ROOT} or ~/.cache/fedetf/data)")
    args = parser.parse_args(argv)
    root = resolve_data_root(args.root)
    for name in args.names:
        try:
            data = prepare(name, root, download=True)
        except (OSError, RuntimeError) as e:  # torchvision's download errors span several lines
            print(f"{name}: {' '.join(str(e).split())}", file=sys.stderr)
            return 1
        print(f"{name}: {len(data.y_train)} train / {len(data.y_test)} test images in {cache_dir(root, name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
