"""Training and test transforms on uint8 CHW tensors (torchvision transforms v2)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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


class AffineFlipCrop(torch.nn.Module):
    """Random scale, rotation about the centre, h/v flips and a random crop, in one resampling.

    Equivalent in distribution to ``RandomAffine(degrees, scale)`` (same canvas,
    zero fill) -> random flips -> ``RandomCrop(crop)``, but only the ``crop x
    crop`` output is interpolated (bilinear), once. Input: uint8 or float CHW;
    output: float CHW in [0, 1].
    """

    def __init__(self, crop: int = 200, degrees: float = 50.0, scale: tuple[float, float] = (0.93, 1.07)) -> None:
        super().__init__()
        self.crop, self.degrees, self.scale = crop, degrees, scale

    def theta(self, height: int, width: int) -> torch.Tensor:
        """The 2x3 map from output to input normalised coordinates (``F.affine_grid``)."""
        c = self.crop
        u = torch.rand(5, dtype=torch.float64)
        angle = math.radians((2 * float(u[0]) - 1) * self.degrees)
        s = self.scale[0] + float(u[1]) * (self.scale[1] - self.scale[0])
        fx, fy = (1 if torch.rand(()) < 0.5 else -1), (1 if torch.rand(()) < 0.5 else -1)
        ox = int(torch.randint(0, width - c + 1, ())) if width > c else (width - c) / 2
        oy = int(torch.randint(0, height - c + 1, ())) if height > c else (height - c) / 2

        def m(a: float, b: float, tx: float, d: float, e: float, ty: float) -> torch.Tensor:
            return torch.tensor([[a, b, tx], [d, e, ty], [0, 0, 1]], dtype=torch.float64)

        cos, sin = math.cos(angle) / s, math.sin(angle) / s
        cx, cy = width / 2, height / 2
        chain = [
            m(2 / width, 0, -1, 0, 2 / height, -1),  # source pixel -> normalised
            m(1, 0, cx, 0, 1, cy) @ m(cos, sin, 0, -sin, cos, 0) @ m(1, 0, -cx, 0, 1, -cy),  # inverse rotate/scale
            m(fx, 0, width if fx < 0 else 0, 0, fy, height if fy < 0 else 0),  # undo flips
            m(1, 0, ox, 0, 1, oy),  # crop offset
            m(c / 2, 0, c / 2, 0, c / 2, c / 2),  # output normalised -> output pixel
        ]
        out = chain[0]
        for step in chain[1:]:
            out = out @ step
        return out[:2].float()

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = img.float().div_(255.0) if img.dtype == torch.uint8 else img.float()
        theta = self.theta(*x.shape[-2:])
        grid = F.affine_grid(theta[None], [1, x.shape[0], self.crop, self.crop], align_corners=False)
        return F.grid_sample(x[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


class BrightnessContrast(torch.nn.Module):
    """Random brightness and contrast factors in ``[1 - b, 1 + b]``, ``[1 - c, 1 + c]`` (float CHW in [0, 1])."""

    def __init__(self, brightness: float = 0.15, contrast: float = 0.1) -> None:
        super().__init__()
        self.brightness, self.contrast = brightness, contrast
        self.register_buffer("gray", torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1), persistent=False)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        b, c = (1 + (2 * torch.rand(2) - 1) * torch.tensor([self.brightness, self.contrast])).tolist()
        img = (img * b).clamp_(0, 1)
        mean = float((img * self.gray).sum(0).mean())
        return img.sub_(mean).mul_(c).add_(mean).clamp_(0, 1)


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
