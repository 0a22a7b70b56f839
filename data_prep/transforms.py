"""Training and test transforms on uint8 CHW tensors (torchvision transforms v2)."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CoarseDropout(torch.nn.Module):
    """Zero 1..``max_holes`` random ``size x size`` patches (albumentations' CoarseDropout)."""

    def __init__(self, max_holes: int = 8, size: int = 16) -> None:
        super().__init__()
        self.max_holes, self.size = max_holes, size

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        img = img.clone()
        h, w = img.shape[-2:]
        for _ in range(int(torch.randint(1, self.max_holes + 1, ()))):
            y = int(torch.randint(0, max(h - self.size, 0) + 1, ()))
            x = int(torch.randint(0, max(w - self.size, 0) + 1, ()))
            img[..., y : y + self.size, x : x + self.size] = 0
        return img


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


def isic_train_transform(crop: int = 200) -> v2.Compose:
    """FLamby's Fed-ISIC2019 training augmentation, in torchvision v2."""
    return v2.Compose(
        [
            v2.RandomAffine(degrees=50, scale=(0.93, 1.07)),
            v2.ColorJitter(brightness=0.15, contrast=0.1),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomCrop(crop),
            CoarseDropout(8, 16),
            *_normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def isic_test_transform(crop: int = 200) -> v2.Compose:
    """FLamby's Fed-ISIC2019 test transform: centre crop and ImageNet normalisation."""
    return v2.Compose([v2.CenterCrop(crop), *_normalize(IMAGENET_MEAN, IMAGENET_STD)])
