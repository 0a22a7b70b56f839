"""MNIST, Fashion-MNIST, CIFAR-10/100 and SVHN through torchvision, cached as memory-mapped ``.npy``.

torchvision's dataset classes read (and, with ``download=true``, fetch) the
original files once; the decoded splits are then written to
``<data-root>/fedetf-cache/<name>/{x_train,y_train,x_test,y_test}.npy``
(x: uint8 N x C x H x W, y: int64) with a ``done.json`` marker written last.
Every later load memory-maps that cache read-only, so client processes share
the same pages and never touch the original files again. A cache whose
``done.json`` is there but whose files are truncated or damaged is refused with
a one-line :class:`~data_prep.datasets.CorruptCacheError` naming the file.

Fetch ahead of a run with ``python -m data_prep.vision cifar10 svhn --root DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.datasets import ArraySplits, CorruptCacheError, DatasetError, DatasetMissingError
from data_prep.vision_info import VISION_INFOS
from fedetf.io import atomic_path, atomic_write_text

ENV_DATA_ROOT = "FEDETF_DATA_ROOT"
CACHE_FOLDER = "fedetf-cache"
CACHE_FORMAT = "fedetf-vision-cache"
CACHE_VERSION = 1
ARRAYS = ("x_train", "y_train", "x_test", "y_test")

#: torchvision.datasets class that reads each dataset.
TORCHVISION_CLASS: dict[str, str] = {
    "mnist": "MNIST",
    "fmnist": "FashionMNIST",
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "svhn": "SVHN",
}


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


def idx_problem(path: Path) -> str | None:
    """Why an IDX file (MNIST's format: magic ``0 0 type ndim``, then ``ndim`` big-endian sizes, then the
    data) is not whole, or None. Truncated or padded files fail the size its header declares."""
    sizes = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in sizes:
            return "has no IDX header"
        dims = f.read(4 * head[3])
    if len(dims) < 4 * head[3]:
        return "has a cut IDX header"
    want = 4 + len(dims) + sizes[head[2]] * int(np.prod(np.frombuffer(dims, dtype=">u4"), dtype=np.int64))
    have = path.stat().st_size
    return None if have == want else f"has {have} bytes, its IDX header declares {want}"


def _diagnose(name: str, root: Path, error: Exception) -> str:
    """One line: which files are missing or corrupted, and how to fetch them."""
    from torchvision.datasets.utils import check_integrity

    folder, files = _expected_files(name, root)
    hint = fetch_hint(name, root)
    missing = [str(p) for p, _ in files if not p.is_file()]
    if missing:
        looked = str(folder) if folder is not None and not folder.is_dir() else ", ".join(missing)
        return f"dataset {name!r} not found in {root} (looked for {looked}); fetch it with: {hint}"
    if name in ("mnist", "fmnist"):
        for p, _ in files:
            if problem := idx_problem(p):
                return f"dataset {name!r}: {p} {problem} (truncated or damaged); fetch it again with: {hint}"
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
        except (RuntimeError, AssertionError, ValueError, OSError, EOFError) as e:  # missing, or a damaged file
            if download and isinstance(e, RuntimeError) and "not found" not in str(e):
                raise  # the download itself failed: its own message says why
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


def write_cache(
    folder: Path,
    name: str,
    arrays: dict[str, np.ndarray],
    *,
    keys: tuple[str, ...] = ARRAYS,
    cache_format: tuple[str, int] = (CACHE_FORMAT, CACHE_VERSION),
    facts: dict[str, Any] | None = None,
) -> None:
    """Write the arrays ``keys`` atomically, then ``done.json`` with their shapes, the format and ``facts`` (a
    cache without it is never trusted)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "done.json").unlink(missing_ok=True)
    for key in keys:
        with atomic_path(folder / f"{key}.npy") as tmp:
            np.save(tmp, arrays[key], allow_pickle=False)
    marker = {
        "format": cache_format[0],
        "version": cache_format[1],
        "dataset": name,
        "arrays": {k: {"shape": list(arrays[k].shape), "dtype": str(arrays[k].dtype)} for k in keys},
        **(facts or {}),
    }
    atomic_write_text(folder / "done.json", json.dumps(marker, indent=1))


def _corrupt(folder: Path, name: str, file: Path, problem: str) -> CorruptCacheError:
    return CorruptCacheError(
        f"dataset {name!r}: cache file {file} {' '.join(problem.split())}; "
        f"delete {folder} to rebuild it from the original files"
    )


def _open_array(folder: Path, name: str, key: str, meta: Any) -> np.ndarray:
    """``<key>.npy`` memory-mapped read-only, checked against its entry of done.json."""
    path = folder / f"{key}.npy"
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise _corrupt(folder, name, path, "is missing") from None
    except (OSError, ValueError, EOFError) as e:  # a truncated file does not map: "mmap length is greater ..."
        raise _corrupt(folder, name, path, f"is truncated or damaged ({e})") from None
    try:
        shape, dtype = list(meta["shape"]), str(meta["dtype"])
    except (KeyError, TypeError):
        raise _corrupt(folder, name, folder / "done.json", f"lacks the shape and dtype of {key}") from None
    if list(arr.shape) != shape or str(arr.dtype) != dtype:
        raise _corrupt(folder, name, path, f"holds {arr.dtype} {list(arr.shape)}, done.json says {dtype} {shape}")
    size, want = path.stat().st_size, arr.offset + arr.nbytes
    if size != want:
        raise _corrupt(folder, name, path, f"has {size} bytes, {want} expected")
    return arr


def read_cache(
    folder: Path,
    name: str,
    *,
    keys: tuple[str, ...] = ARRAYS,
    cache_format: tuple[str, int] = (CACHE_FORMAT, CACHE_VERSION),
) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """What :func:`write_cache` wrote: ``done.json`` and the arrays ``keys``, memory-mapped read-only and checked
    against it; None if absent, unfinished (no done.json), of another format or of another dataset.

    Raises
    ------
    CorruptCacheError
        ``done.json`` is unreadable, or a ``.npy`` file is missing, truncated, or of another shape or size.
    """
    marker_path = folder / "done.json"
    try:
        marker = json.loads(marker_path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise _corrupt(folder, name, marker_path, f"is unreadable ({e})") from None
    if not isinstance(marker, dict) or (marker.get("format"), marker.get("version")) != cache_format:
        return None  # another format: rebuilt
    if marker.get("dataset") != name:
        return None
    metas = marker.get("arrays")
    metas = metas if isinstance(metas, dict) else {}
    return marker, {k: _open_array(folder, name, k, metas.get(k)) for k in keys}


def open_cache(folder: Path, name: str) -> ArraySplits | None:
    """The cache memory-mapped read-only; None if absent, unfinished (no done.json) or of another format.

    Raises
    ------
    CorruptCacheError
        ``done.json`` says the cache is complete but it is unreadable, or a ``.npy`` file is missing,
        truncated, of another shape or size, or holds labels outside the dataset's classes.
    """
    cached = read_cache(folder, name)
    if cached is None:
        return None
    arrays = cached[1]
    num_classes = VISION_INFOS[name].num_classes
    for key in ("y_train", "y_test"):
        y = arrays[key]
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise _corrupt(folder, name, folder / f"{key}.npy", f"holds labels outside 0..{num_classes - 1}")
    return ArraySplits(**arrays)


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
        except (OSError, RuntimeError, DatasetError) as e:  # torchvision's download errors span several lines
            print(f"{name}: {' '.join(str(e).split())}", file=sys.stderr)
            return 1
        print(f"{name}: {len(data.y_train)} train / {len(data.y_test)} test images in {cache_dir(root, name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
