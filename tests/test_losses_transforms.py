import math

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from data_prep.isic_transforms import (
    CoarseHoles,
    FlambyGeometry,
    flamby_affine,
    isic_test_transform,
    isic_train_transform,
)
from data_prep.transforms import small_image_transform
from fedetf.losses import FocalLoss, build_criterion, inverse_frequency_weights
from fedetf.models import ImageInput, build_model


def test_focal_loss_matches_its_definition() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.1, 0.2, 0.3]])
    target = torch.tensor([0, 2])
    alpha = torch.tensor([1.0, 2.0, 3.0])
    p = torch.softmax(logits, 1)[torch.arange(2), target]
    expected = (-(alpha[target]) * (1 - p) ** 2 * torch.log(p)).mean()
    assert torch.allclose(FocalLoss(alpha, 2.0)(logits, target), expected)
    # gamma = 0 and no weights is plain cross-entropy
    assert torch.allclose(FocalLoss(None, 0.0)(logits, target), torch.nn.functional.cross_entropy(logits, target))


def test_flamby_alpha_from_pooled_train_counts() -> None:
    # Pooled Fed-ISIC2019 train counts (sum of the six centres in the spec).
    counts = torch.tensor([3332, 9084, 2649, 712, 1950, 184, 201, 485])
    alpha = inverse_frequency_weights(counts)
    flamby = [5.5813, 2.0472, 7.0204, 26.1194, 9.5369, 101.0707, 92.5224, 38.3443]
    assert all(math.isclose(a, b, rel_tol=2e-3) for a, b in zip(alpha.tolist(), flamby, strict=True))
    assert isinstance(build_criterion("focal", tuple(alpha.tolist())), FocalLoss)


def test_isic_transforms_give_uint8_crops_and_are_seeded() -> None:
    img = np.random.default_rng(0).integers(0, 256, (224, 298, 3), dtype=np.uint8)
    a, b = isic_train_transform(seed=3), isic_train_transform(seed=3)
    outs = [a(image=img)["image"] for _ in range(3)]
    assert all(o.shape == (200, 200, 3) and o.dtype == np.uint8 for o in outs)
    assert all(np.array_equal(o, b(image=img)["image"]) for o in outs)  # same seed, same stream
    assert not np.array_equal(outs[0], outs[1])
    test = isic_test_transform()(image=img)["image"]
    assert np.array_equal(test, img[12:212, 49:249])


def test_coarse_dropout_zeroes_one_to_eight_16px_holes() -> None:
    t = isic_train_transform(seed=0)
    white = np.full((224, 224, 3), 255, np.uint8)
    # Brightness/contrast never darkens a white pixel below ~200: exact zeros are holes.
    zeros = [int((t(image=white)["image"] == 0).all(-1).sum()) for _ in range(40)]
    assert all(z == 0 or 16 * 16 <= z <= 8 * 16 * 16 for z in zeros)  # 1-8 (maybe overlapping) 16x16 holes
    assert 8 < sum(z > 0 for z in zeros) < 32  # applied with p = 0.5, as in FLamby
    assert len({z for z in zeros if z}) > 3  # the number of holes varies


def test_coarse_holes_are_16px_squares_and_leave_the_input_alone() -> None:
    img = np.full((40, 50, 3), 9, np.uint8)
    op = A.Compose([CoarseHoles(max_holes=1, size=16, p=1.0)], seed=0)
    for _ in range(10):
        out = op(image=img)["image"]
        ys, xs = np.nonzero((out == 0).all(-1))
        assert len(ys) == 256 and np.ptp(ys) == np.ptp(xs) == 15
    assert (img == 9).all()


def test_flamby_geometry_without_scale_or_rotation_is_an_exact_crop_or_flip() -> None:
    x = np.random.default_rng(1).integers(0, 256, (211, 250, 3), dtype=np.uint8)
    op = A.Compose([FlambyGeometry(200, scale_limit=0, rotate_limit=0)], seed=1)
    views = [x, x[:, ::-1], x[::-1], x[::-1, ::-1]]
    seen = set()
    for _ in range(40):
        out = op(image=x)["image"]
        hits = [
            k
            for k, v in enumerate(views)
            for a in range(12)
            for b in range(51)
            if np.array_equal(out[0], v[a, b : b + 200])  # the first row first: cheap
            and np.array_equal(out, v[a : a + 200, b : b + 200])
        ]
        assert hits
        seen.add(hits[0])
    assert seen == {0, 1, 2, 3}  # no flip, and each of FLamby's three flips


def test_flamby_geometry_rotates_about_the_centre() -> None:
    # A bright centre pixel stays at the centre of a full-size crop, whatever the rotation/flip.
    x = np.zeros((33, 33, 3), np.uint8)
    x[16, 16] = 255
    op = A.Compose([FlambyGeometry(33, scale_limit=0, rotate_limit=50, step_p=1.0)], seed=0)
    for _ in range(10):
        out = op(image=x)["image"]
        assert out[16, 16, 0] == out.max() == 255


def test_flamby_geometry_scales_the_canvas() -> None:
    # Scaling changes the canvas (RandomScale), so a crop of the full original size
    # sees reflected borders after shrinking: never an exact copy of the input.
    x = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    op = A.Compose([FlambyGeometry(64, rotate_limit=0, step_p=1.0)], seed=0)
    assert not any(np.array_equal(op(image=x)["image"], x) for _ in range(5))


def test_image_input_normalises_uint8_nhwc() -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = torch.randint(0, 256, (2, 5, 7, 3), dtype=torch.uint8)
    expected = (x.permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(
        3, 1, 1
    )
    assert torch.allclose(ImageInput(mean, std)(x), expected, atol=1e-5)
    with pytest.raises(ValueError, match="uint8 NHWC"):
        ImageInput(mean, std)(x.permute(0, 3, 1, 2).float())
    model = build_model("cnn", 3, 4, 8, input_norm=(mean, std))
    assert model.eval()(x).shape == (2, 4)
    assert not any(k.startswith("input") for k in model.state_dict())  # never sent or averaged


def test_small_image_augment_keeps_size() -> None:
    img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    t = small_image_transform("crop-flip", 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert t(img).shape == (3, 32, 32)


def test_efficientnet_b0_from_local_weights(tmp_path) -> None:
    import torchvision

    ref = torchvision.models.efficientnet_b0(weights=None)
    path = tmp_path / "effnet_b0.pth"
    torch.save(ref.state_dict(), path)
    model = build_model("efficientnet_b0", 3, 8, 16, head="etf", seed=0, weights_path=str(path))
    assert torch.equal(model.backbone[0][0][0].weight, ref.features[0][0].weight)
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 8)


def _sequential(img: np.ndarray, scaled, angle, flip, offset, crop: int) -> np.ndarray:
    """FLamby's steps one at a time with OpenCV, as albumentations 1.x runs them."""
    (sh, sw), (oy, ox) = scaled, offset
    x = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_LINEAR)  # RandomScale
    centre = (sw / 2 - 0.5, sh / 2 - 0.5)  # Rotate
    x = cv2.warpAffine(x, cv2.getRotationMatrix2D(centre, angle, 1.0), (sw, sh), borderMode=cv2.BORDER_REFLECT_101)
    x = x if flip is None else cv2.flip(x, flip)  # Flip
    return x[oy : oy + crop, ox : ox + crop]  # RandomCrop


@pytest.mark.parametrize(
    ("scale", "angle", "flip"),
    [(1.0, 0.0, None), (1.0, 37.0, 1), (1.0, -50.0, -1), (1.07, 23.0, 0), (0.93, -11.0, None)],
)
def test_flamby_affine_matches_the_sequential_steps(scale: float, angle: float, flip) -> None:
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (224, 298, 3), dtype=np.uint8), (0, 0), 3)  # smooth, like skin
    scaled = (int(224 * scale), int(298 * scale))
    offset = (scaled[0] - 200) // 2, (scaled[1] - 200) // 3
    want = _sequential(img, scaled, angle, flip, offset, 200).astype(int)
    got = FlambyGeometry(200).apply(img, flamby_affine((224, 298), scaled, angle, flip, offset)).astype(int)
    diff = np.abs(got - want)
    if scale == 1.0:  # one resampling on both sides: equal up to fixed-point rounding
        assert diff.max() <= 1
    else:  # the sequential path resamples twice, the fused one once (a wrong map gives mean ~8)
        assert diff.mean() < 0.5 and np.percentile(diff, 99) <= 2


def test_the_steps_share_one_random_stream() -> None:
    # With a stream per step (albumentations' Compose(seed=...)), the steps' coin flips
    # agree on the first image after seeding; with seed_transform they are independent.
    img = np.full((224, 240, 3), 128, np.uint8)
    agree = 0
    for seed in range(200):
        t = isic_train_transform(seed=seed)
        t.save_applied_params = True
        applied = {name for name, _ in t(image=img)["applied_transforms"]}
        agree += ("RandomBrightnessContrast" in applied) == ("CoarseHoles" in applied)
    assert 60 < agree < 140
