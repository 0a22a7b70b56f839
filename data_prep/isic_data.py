"""Fed-ISIC2019 for training: the prepared cache as a natural 6-client federation.

``python -m data_prep.isic2019 prepare ... --out <data-root>/fed-isic2019``
writes the cache this module reads: ``index.csv`` (image, center, label, fold,
height, width), ``images/<image>.npy`` (uint8 HxWx3, shorter edge 224,
Shades-of-Gray) and, last, ``manifest.json``. Images are loaded per sample as
``.npy`` (no JPEG decoding) and augmented with FLamby's transforms. A missing
``manifest.json``, a damaged ``index.csv`` or an image listed there but absent
is refused when loading, with one line naming the file and the prep command.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from data_prep.datasets import CorruptCacheError, DatasetInfo, DatasetMissingError, register_dataset
from data_prep.isic_format import CENTRES, CLASSES, IMAGENET_MEAN, IMAGENET_STD, MANIFEST_FORMAT

if TYPE_CHECKING:
    import albumentations as A
    import pandas as pd

CACHE_NAME = "fed-isic2019"
NPY_V1 = b"\x93NUMPY\x01\x00"
INDEX_COLUMNS = ("image", "center", "label", "fold", "height", "width")


def read_image(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """A cached uint8 image of known shape: the ``.npy`` payload without parsing its header."""
    data = path.read_bytes()
    if data[:8] != NPY_V1:
        return np.load(path)
    offset = 10 + int.from_bytes(data[8:10], "little")
    if len(data) - offset != shape[0] * shape[1] * shape[2]:
        raise CorruptCacheError(
            f"{path}: {len(data) - offset} bytes of pixels, index.csv says {shape}; "
            f"re-run the prep with --out {shlex.quote(str(path.parent.parent))} to rebuild it"
        )
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape)


class IsicImages(Dataset):
    """Cached ISIC images as uint8 HWC tensors, after an albumentations transform.

    The transform's random state is seeded at first use in each process or
    DataLoader worker from its torch seed (the ClientApp seeds torch per round
    and client, then builds fresh loaders), so a run's
    augmentations are reproducible for a given ``num-workers`` (0 and N workers
    draw different streams). Batches stay uint8;
    the model normalises them on its device (:class:`fedetf.models.ImageInput`).
    """

    def __init__(
        self, files: list[Path], shapes: list[tuple[int, int, int]], labels: np.ndarray, transform: A.BaseCompose
    ) -> None:
        self.files, self.shapes, self.labels, self.transform = files, shapes, torch.from_numpy(labels), transform
        self._seeded_from: int | None = None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._seeded_from != (seed := torch.initial_seed()):
            import cv2

            from data_prep.isic_transforms import seed_transform

            seed_transform(self.transform, seed % 2**32)
            self._seeded_from = seed
            cv2.setNumThreads(1)  # one small warp per image: parallelism comes from loader workers/clients
        out = self.transform(image=read_image(self.files[i], self.shapes[i]))["image"]
        return torch.from_numpy(np.require(out, requirements=("C", "W"))), self.labels[i]


@dataclass(frozen=True)
class IsicSplits:
    """Labels, centres and image files of the prepared Fed-ISIC2019 cache."""

    root: Path
    y_train: np.ndarray
    y_test: np.ndarray
    clients_train: np.ndarray
    clients_test: np.ndarray
    files_train: list[Path] = field(repr=False)
    files_test: list[Path] = field(repr=False)
    shapes_train: list[tuple[int, int, int]] = field(repr=False)
    shapes_test: list[tuple[int, int, int]] = field(repr=False)

    def dataset(self, split: str, idx: np.ndarray, train: bool, info: DatasetInfo) -> Dataset:
        files, shapes, labels = (
            (self.files_train, self.shapes_train, self.y_train)
            if split == "train"
            else (self.files_test, self.shapes_test, self.y_test)
        )
        from data_prep.isic_transforms import isic_test_transform, isic_train_transform  # albumentations: ~0.7 s import

        transform = isic_train_transform() if train else isic_test_transform()
        return IsicImages([files[i] for i in idx], [shapes[i] for i in idx], labels[idx].copy(), transform)


def cache_dir(data_root: str) -> Path:
    from data_prep.vision import resolve_data_root

    return resolve_data_root(data_root) / CACHE_NAME


def prep_command(root: Path) -> str:
    """The command that (re)builds the cache in ``root``; it keeps the images already prepared there."""
    return (
        "python -m data_prep.isic2019 prepare --images ISIC_2019_Training_Input.zip "
        "--metadata ISIC_2019_Training_Metadata.csv --ground-truth ISIC_2019_Training_GroundTruth.csv "
        f"--ham-metadata HAM10000_metadata.csv --out {shlex.quote(str(root))}"
    )


def _broken(root: Path, file: Path, problem: str) -> CorruptCacheError:
    return CorruptCacheError(
        f"dataset 'fed-isic2019': {file} {' '.join(problem.split())}; rebuild it with: {prep_command(root)}"
    )


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / "manifest.json"
    if not path.is_file():
        raise DatasetMissingError(
            f"dataset 'fed-isic2019' not prepared in {root} (no {path}); prepare it with: {prep_command(root)}"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise _broken(root, path, f"is unreadable ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise _broken(root, path, "is not the manifest of a fedetf Fed-ISIC2019 cache")
    return manifest


def _read_index(root: Path, manifest: dict[str, Any]) -> pd.DataFrame:
    """``index.csv``, checked for its columns, row count, labels, centres and folds."""
    import pandas as pd  # here, not at import: workers of other datasets never load pandas

    path = root / "index.csv"
    try:
        index = pd.read_csv(path)
    except (OSError, ValueError) as e:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise _broken(root, path, f"is unreadable ({e})") from None
    if missing := [c for c in INDEX_COLUMNS if c not in index.columns]:
        raise _broken(root, path, f"lacks column(s) {', '.join(missing)}")
    if len(index) != manifest.get("num_images", len(index)):
        raise _broken(root, path, f"has {len(index)} rows, manifest.json says {manifest['num_images']} images")
    for col, allowed in (("label", range(len(CLASSES))), ("center", range(len(CENTRES))), ("fold", ("train", "test"))):
        if bad := sorted(set(index[col].tolist()) - set(allowed), key=str):
            raise _broken(root, path, f"has {col} value(s) {bad[:3]} outside {list(allowed)}")
    return index


def _check_images(root: Path, names: pd.Series) -> None:
    """Every image listed in index.csv is in ``images/`` (one folder listing, no per-file stat)."""
    folder = root / "images"
    try:
        present = {e.name for e in os.scandir(folder)}
    except OSError:
        raise _broken(root, folder, "is missing") from None
    missing = [n for n in names if f"{n}.npy" not in present]
    if missing:
        more = f" (and {len(missing) - 1} more of the {len(names)} listed)" if len(missing) > 1 else ""
        raise _broken(root, folder / f"{missing[0]}.npy", f"is listed in index.csv but absent{more}")


def load_isic(seed: int, options: dict[str, Any]) -> IsicSplits:
    """Open the prepared cache; one line naming the file and the prep command if it is absent or damaged."""
    root = cache_dir(str(options.get("data-root", "")))
    index = _read_index(root, _read_manifest(root))
    _check_images(root, index["image"])
    parts = {fold: index[index["fold"] == fold].reset_index(drop=True) for fold in ("train", "test")}

    def files(df: pd.DataFrame) -> list[Path]:
        return [root / "images" / f"{name}.npy" for name in df["image"]]

    def shapes(df: pd.DataFrame) -> list[tuple[int, int, int]]:
        return [(int(h), int(w), 3) for h, w in zip(df["height"], df["width"], strict=True)]

    return IsicSplits(
        root=root,
        y_train=parts["train"]["label"].to_numpy(np.int64),
        y_test=parts["test"]["label"].to_numpy(np.int64),
        clients_train=parts["train"]["center"].to_numpy(np.int64),
        clients_test=parts["test"]["center"].to_numpy(np.int64),
        files_train=files(parts["train"]),
        files_test=files(parts["test"]),
        shapes_train=shapes(parts["train"]),
        shapes_test=shapes(parts["test"]),
    )


register_dataset(
    DatasetInfo(
        name="fed-isic2019",
        num_classes=8,
        in_channels=3,
        image_size=200,
        default_model="efficientnet_b0",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        class_names=CLASSES,
        natural_clients=6,
        default_loss="focal",
        eval_batch_size=64,
        uint8_batches=True,
    ),
    load_isic,
)
