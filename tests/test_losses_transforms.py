import math

import torch

from data_prep.transforms import CoarseDropout, isic_test_transform, isic_train_transform, small_image_transform
from fedetf.losses import FocalLoss, build_criterion, inverse_frequency_weights
from fedetf.models import build_model


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


def test_isic_transforms_shapes() -> None:
    img = torch.randint(0, 256, (3, 224, 298), dtype=torch.uint8)
    assert isic_train_transform()(img).shape == (3, 200, 200)
    out = isic_test_transform()(img)
    assert out.shape == (3, 200, 200) and out.dtype == torch.float32


def test_coarse_dropout_zeroes_patches() -> None:
    torch.manual_seed(0)
    out = CoarseDropout(8, 16)(torch.full((3, 64, 64), 255, dtype=torch.uint8))
    zeros = int((out == 0).all(0).sum())
    assert 16 * 16 <= zeros <= 8 * 16 * 16


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


def test_affine_flip_crop_without_rotation_is_an_exact_crop() -> None:
    from data_prep.transforms import AffineFlipCrop

    torch.manual_seed(0)
    x = torch.rand(3, 40, 57)
    op = AffineFlipCrop(32, degrees=0, scale=(1.0, 1.0))
    for _ in range(10):
        out = op(x)
        views = [x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2)]
        assert any(
            torch.allclose(out, v[:, oy : oy + 32, ox : ox + 32], atol=1e-5)
            for v in views
            for oy in range(9)
            for ox in range(26)
        )


def test_affine_flip_crop_rotates_about_the_centre() -> None:
    from data_prep.transforms import AffineFlipCrop

    # A bright centre pixel stays at the centre of a centred crop, whatever the rotation/scale.
    x = torch.zeros(1, 33, 33)
    x[:, 16, 16] = 1.0
    op = AffineFlipCrop(33, degrees=50, scale=(0.93, 1.07))
    for _ in range(10):
        out = op(x)
        assert out[0, 16, 16] == out.max() and out.max() > 0.5
