"""Fed-ISIC2019 transforms: FLamby's albumentations pipeline on uint8 HWC arrays.

The geometric steps are fused into one OpenCV warp (:class:`FlambyGeometry`);
ImageNet normalisation is left to the model (:class:`fedetf.models.ImageInput`).
"""

from __future__ import annotations

import math
import os
import random
import threading
from typing import Any

# albumentations asks PyPI for a newer version on import (up to 2 s per process:
# server, every Ray actor, every DataLoader worker); offline nodes only get a warning.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402


class FlambyGeometry(A.ImageOnlyTransform):
    """FLamby's geometric augmentation as one warp straight to the ``crop x crop`` output.

    Same random draws and order as FLamby's ``RandomScale(0.07) -> Rotate(50) ->
    Flip -> RandomCrop(crop)``: each of the first three steps happens with
    probability ``step_p`` (albumentations' default 0.5): scale ``s ~ U(1 -/+
    0.07)`` (resizing the canvas to ``int(h s) x int(w s)``), rotation about the
    centre ``~ U(-50, 50)`` degrees, one of {horizontal, vertical, both} flips;
    then a uniform crop offset in the scaled image. FLamby's ``Affine(shear=0.1)``
    (a constant 0.1 degree shear in albumentations 1.x, under 0.2 px at the
    crop's corners) is left out. Composed into one affine map and
    resampled once (bilinear, reflect-101 border as FLamby's ``Rotate``), so only
    the crop is interpolated: ~4x less work than three full-image warps.
    """

    def __init__(
        self,
        crop: int = 200,
        scale_limit: float = 0.07,
        rotate_limit: float = 50.0,
        step_p: float = 0.5,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.crop, self.scale_limit, self.rotate_limit, self.step_p = crop, scale_limit, rotate_limit, step_p

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        r, p = self.py_random, self.step_p
        s = r.uniform(1 - self.scale_limit, 1 + self.scale_limit) if r.random() < p else 1.0
        angle = r.uniform(-self.rotate_limit, self.rotate_limit) if r.random() < p else 0.0
        flip = r.choice((-1, 0, 1)) if r.random() < p else None  # cv2.flip codes: both, vertical, horizontal
        sh, sw = max(int(h * s), 1), max(int(w * s), 1)
        oy = r.randint(0, sh - self.crop) if sh >= self.crop else (sh - self.crop) / 2
        ox = r.randint(0, sw - self.crop) if sw >= self.crop else (sw - self.crop) / 2
        return {"matrix": flamby_affine((h, w), (sh, sw), angle, flip, (oy, ox))}

    def apply(self, img: np.ndarray, matrix: np.ndarray, **params: Any) -> np.ndarray:
        if img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8:
            # OpenCV's bilinear warp is ~2x faster on 4 channels (SIMD path) than on 3;
            # the padded copies go to reused per-thread buffers (fresh large arrays cost page faults).
            src = _scratch("src", (*img.shape[:2], 4))
            out = _scratch("out", (self.crop, self.crop, 4))
            cv2.cvtColor(img, cv2.COLOR_RGB2RGBA, dst=src)
            cv2.warpAffine(
                src, matrix, (self.crop, self.crop), dst=out, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
            )
            return cv2.cvtColor(out, cv2.COLOR_RGBA2RGB)
        out = cv2.warpAffine(
            img, matrix, (self.crop, self.crop), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
        return out if out.ndim == img.ndim else out[..., None]


class CoarseHoles(A.ImageOnlyTransform):
    """FLamby's ``CoarseDropout(n, 16, 16)``: zero ``n ~ U{1..max_holes}`` squares of ``size`` px.

    Same draws as albumentations' ``CoarseDropout(num_holes_range=(1, 8),
    hole_*_range=(16, 16))`` (uniform positions inside the image, fill 0), at a
    fifth of its cost per image (it was a fifth of the whole augmentation).
    """

    def __init__(self, max_holes: int = 8, size: int = 16, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.max_holes, self.size = max_holes, size

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        r, size = self.py_random, self.size
        n = r.randint(1, self.max_holes)
        return {"holes": [(r.randint(0, max(h - size, 0)), r.randint(0, max(w - size, 0))) for _ in range(n)]}

    def apply(self, img: np.ndarray, holes: list[tuple[int, int]], **params: Any) -> np.ndarray:
        img = img.copy()
        for y, x in holes:
            img[y : y + self.size, x : x + self.size] = 0
        return img


_SCRATCH = threading.local()


def _scratch(name: str, shape: tuple[int, ...]) -> np.ndarray:
    buf = getattr(_SCRATCH, name, None)
    if buf is None or buf.shape != shape:
        buf = np.empty(shape, np.uint8)
        setattr(_SCRATCH, name, buf)
    return buf


def flamby_affine(
    shape: tuple[int, int], scaled: tuple[int, int], angle: float, flip: int | None, offset: tuple[float, float]
) -> np.ndarray:
    """The 2x3 forward map (source pixel -> output pixel) of resize -> rotate -> flip -> crop.

    ``shape``/``scaled``: (h, w) before/after the resize; ``angle`` in degrees
    (about the scaled image's centre, counter-clockwise as
    ``cv2.getRotationMatrix2D``); ``flip``: a ``cv2.flip`` code or None;
    ``offset``: (y, x) of the crop in the scaled image. Pixel centres map as in
    ``cv2.resize``: ``x' = (x + 0.5) * sx - 0.5``.
    """
    (h, w), (sh, sw), (oy, ox) = shape, scaled, offset
    sx, sy = sw / w, sh / h
    tx, ty = 0.5 * sx - 0.5, 0.5 * sy - 0.5
    cx, cy = (sw - 1) / 2, (sh - 1) / 2
    fx = -1.0 if flip in (-1, 1) else 1.0
    fy = -1.0 if flip in (-1, 0) else 1.0
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    # L = flip @ rotation, applied about the centre c of the scaled image.
    l00, l01, l10, l11 = fx * cos, fx * sin, -fy * sin, fy * cos
    return np.array(
        [
            [l00 * sx, l01 * sy, l00 * (tx - cx) + l01 * (ty - cy) + cx - ox],
            [l10 * sx, l11 * sy, l10 * (tx - cx) + l11 * (ty - cy) + cy - oy],
        ]
    )


def seed_transform(transform: A.BaseCompose, seed: int) -> None:
    """Seed a pipeline with one random stream shared by all its steps.

    (albumentations 2.x's ``Compose(seed=...)`` gives every step its own copy
    of the same stream, so the steps' coin flips agree on the first images.)
    """
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))


def isic_train_transform(crop: int = 200, seed: int | None = None) -> A.Compose:
    """FLamby's Fed-ISIC2019 training augmentation: uint8 HWC array -> uint8 ``crop x crop x 3`` array.

    ImageNet normalisation is left to the model (:class:`fedetf.models.ImageInput`),
    on the training device. Brightness/contrast is pointwise (``x * alpha + beta * 255``),
    so applying it after the geometry instead of between rotation and flip changes
    only rounding. Every step but the crop has albumentations' default p = 0.5, as
    in FLamby. Coarse dropout draws 1-8 holes per image (FLamby draws the count
    once per process).
    """
    transform = A.Compose(
        [
            FlambyGeometry(crop),
            A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.1),
            CoarseHoles(max_holes=8, size=16),
        ]
    )
    if seed is not None:
        seed_transform(transform, seed)
    return transform


def isic_test_transform(crop: int = 200) -> A.Compose:
    """FLamby's Fed-ISIC2019 test transform: centre crop (normalisation is done by the model)."""
    return A.Compose([A.CenterCrop(crop, crop)], seed=0)
