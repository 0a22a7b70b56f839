"""Fed-ISIC2019 for training: the prepared cache as a natural 6-client federation.

``python -m data_prep.isic2019 prepare ... --out <data-root>/fed-isic2019``
writes the cache this module reads: ``index.csv`` (image, center, label, fold,
height, width), ``images/<image>.npy`` (uint8 HxWx3, shorter edge 224,
Shades-of-Gray) and, last, ``manifest.json``. Images are loaded per sample as
``.npy`` (no JPEG decoding) and augmented with FLamby's transforms.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from data_prep.datasets import DatasetInfo, register_dataset
from data_prep.isic2019 import CLASSES
from data_prep.transforms import IMAGENET_MEAN, IMAGENET_STD, isic_test_transform, isic_train_transform

CACHE_NAME = "fed-isic2019"


class IsicImages(Dataset):
    """Cached ISIC images (``.npy``) with a per-sample transform."""

    def __init__(self, files: list[Path], labels: np.ndarray, transform: Any) -> None:
        self.files, self.labels, self.transform = files, torch.from_numpy(labels), transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = torch.from_numpy(np.load(self.files[i])).permute(2, 0, 1)
        return self.transform(img), self.labels[i]


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

    def dataset(self, split: str, idx: np.ndarray, train: bool, info: DatasetInfo) -> Dataset:
        files = self.files_train if split == "train" else self.files_test
        labels = self.y_train if split == "train" else self.y_test
        transform = isic_train_transform() if train else isic_test_transform()
        return IsicImages([files[i] for i in idx], labels[idx].copy(), transform)


def cache_dir(data_root: str) -> Path:
    from data_prep.vision import resolve_data_root

    return resolve_data_root(data_root) / CACHE_NAME


def load_isic(seed: int, options: dict[str, Any]) -> IsicSplits:
    """Open the prepared cache; one line naming the folder and the prep command if absent."""
    root = cache_dir(str(options.get("data-root", "")))
    if not (root / "manifest.json").is_file():
        raise FileNotFoundError(
            f"dataset 'fed-isic2019' not prepared in {root} (no manifest.json); prepare it with: "
            f"python -m data_prep.isic2019 prepare --images ISIC_2019_Training_Input.zip "
            f"--metadata ISIC_2019_Training_Metadata.csv --ground-truth ISIC_2019_Training_GroundTruth.csv "
            f"--ham-metadata HAM10000_metadata.csv --out {root}"
        )
    manifest = json.loads((root / "manifest.json").read_text())
    if manifest.get("format") != "fedetf-isic2019":
        raise ValueError(f"{root / 'manifest.json'}: not a fedetf Fed-ISIC2019 cache")
    index = pd.read_csv(root / "index.csv")
    parts = {fold: index[index["fold"] == fold].reset_index(drop=True) for fold in ("train", "test")}

    def files(df: pd.DataFrame) -> list[Path]:
        return [root / "images" / f"{name}.npy" for name in df["image"]]

    return IsicSplits(
        root=root,
        y_train=parts["train"]["label"].to_numpy(np.int64),
        y_test=parts["test"]["label"].to_numpy(np.int64),
        clients_train=parts["train"]["center"].to_numpy(np.int64),
        clients_test=parts["test"]["center"].to_numpy(np.int64),
        files_train=files(parts["train"]),
        files_test=files(parts["test"]),
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
    ),
    load_isic,
)
