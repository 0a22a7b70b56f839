"""Training and test transforms of the small-image datasets (torchvision transforms v2, uint8 CHW).

Fed-ISIC2019's albumentations pipeline is in :mod:`data_prep.isic_transforms`,
imported only when that dataset is used.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2


def _normalize(mean: tuple[float, ...], std: tuple[float, ...]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def small_image_transform(augment: str, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> v2.Compose:
    """``augment``: ``none``, ``crop`` (random crop, padding 4) or ``crop-flip`` (+ horizontal flip)."""
    ops: list[v2.Transform] = []
    if augment in ("crop", "crop-flip"):
        ops.append(v2.RandomCrop(image_size, padding=4))
    if augment == "crop-flip":
        ops.append(v2.RandomHorizontalFlip())
    if augment not in ("none", "crop", "crop-flip"):
        raise ValueError(f"unknown augmentation {augment!r}")
    return v2.Compose(ops + _normalize(mean, std))
