"""Backbones, feature heads and classifier heads with named parts.

A :class:`FedModel` is ``backbone -> feature_head -> classifier``. The three are
separate submodules so strategies and methods can address them by state-dict
key prefix (``backbone.``, ``feature_head.``, ``classifier.``).
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from fedetf.etf import simplex_etf


class SmallCNN(nn.Module):
    """Two conv blocks and global pooling; works on 8x8, 28x28 and 32x32 inputs."""

    def __init__(self, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.out_dim = 2 * width * 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def resnet18_cifar(in_channels: int = 3) -> nn.Module:
    """ResNet-18, CIFAR variant: 3x3 stem with stride 1 and no max-pool."""
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.out_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net


def efficientnet_b0(in_channels: int = 3, weights_path: str = "") -> nn.Module:
    """torchvision EfficientNet-B0 trunk (1280-d pooled features).

    ImageNet weights come from a local file (``weights_path``: a torchvision
    ``efficientnet_b0`` state dict); without one the trunk starts from scratch.
    """
    if in_channels != 3:
        raise ValueError("efficientnet_b0 needs 3-channel images")
    net = torchvision.models.efficientnet_b0(weights=None)
    if weights_path:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        missing, _ = net.load_state_dict(state, strict=False)
        if any(k.startswith("features.") for k in missing):
            raise ValueError(f"{weights_path}: not an efficientnet_b0 state dict (missing {missing[:3]})")
    trunk = nn.Sequential(net.features, net.avgpool, nn.Flatten())
    trunk.out_dim = net.classifier[1].in_features
    return trunk


BACKBONES = {"cnn": SmallCNN, "resnet18": resnet18_cifar, "efficientnet_b0": efficientnet_b0}


class FeatureHead(nn.Module):
    """MLP projection to ``dim`` features, optionally BatchNorm-ed (FedGELA)."""

    def __init__(self, in_dim: int, dim: int, hidden: int = 256, batchnorm: bool = False) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))
        self.norm = nn.BatchNorm1d(dim) if batchnorm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.mlp(x))


class LinearHead(nn.Module):
    """Learned linear classifier (FedAvg and most baselines)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, h: torch.Tensor, personal: bool = False) -> torch.Tensor:
        return self.fc(h)


class ETFHead(nn.Module):
    """Fixed simplex-ETF classifier with FedGELA's local adaptation.

    Generic logits are ``h^T M``. Personal (locally adapted) logits are
    ``h^T M diag(Ew) / T`` where ``Ew`` is the client's adaptation vector. ``M``
    is a persistent buffer (saved with the model, never trained); ``Ew`` is a
    non-persistent buffer, so it never leaves the client.
    """

    def __init__(self, dim: int, num_classes: int, seed: int, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.register_buffer("etf", simplex_etf(num_classes, dim, seed))
        self.register_buffer("adaptation", torch.ones(num_classes), persistent=False)

    def set_adaptation(self, ew: torch.Tensor) -> None:
        """Set the per-class scale vector ``Ew`` (length K)."""
        self.adaptation.copy_(ew.to(self.adaptation))

    def forward(self, h: torch.Tensor, personal: bool = False) -> torch.Tensor:
        logits = h @ self.etf
        if personal:
            logits = logits * self.adaptation / self.temperature
        return logits


class ImageInput(nn.Module):
    """uint8 NHWC image batch -> normalised float NCHW (channels-last memory).

    Lets loaders ship compact uint8 batches and normalise on the training device
    (4x fewer bytes to collate and transfer). ``mean``/``std`` are in [0, 1]
    units, as torchvision's; they are non-persistent, so never sent or averaged.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("scale", 1 / (255 * torch.tensor(std)), persistent=False)
        self.register_buffer("shift", -torch.tensor(mean) / torch.tensor(std), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != len(self.scale):
            raise ValueError(
                f"ImageInput takes uint8 NHWC batches with {len(self.scale)} channels, not {x.dtype} {tuple(x.shape)}"
            )
        return torch.addcmul(self.shift, x.to(self.scale.dtype), self.scale).permute(0, 3, 1, 2)


class FedModel(nn.Module):
    """``input -> backbone -> feature_head -> classifier`` with named, swappable parts.

    ``input`` is the identity unless the loaders yield raw uint8 batches
    (:class:`ImageInput`); it has no state-dict entries.
    """

    def __init__(
        self, backbone: nn.Module, feature_head: nn.Module, classifier: nn.Module, input_stage: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.input = input_stage if input_stage is not None else nn.Identity()
        self.backbone = backbone
        self.feature_head = feature_head
        self.classifier = classifier

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_head(self.backbone(self.input(x)))

    def forward(self, x: torch.Tensor, personal: bool = False) -> torch.Tensor:
        return self.classifier(self.features(x), personal=personal)


def build_model(
    backbone: str,
    in_channels: int,
    num_classes: int,
    feature_dim: int,
    head: str = "linear",
    seed: int = 0,
    temperature: float = 0.2,
    weights_path: str = "",
    input_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> FedModel:
    """Build a :class:`FedModel`; ``head`` is ``"linear"`` or ``"etf"``.

    Initialisation is seeded by ``seed`` so every process builds the same model.
    ``weights_path`` (EfficientNet-B0 only) loads pretrained trunk weights.
    ``input_norm`` (mean, std) makes the model take uint8 NHWC batches.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"model={backbone!r} is unknown; allowed: {sorted(BACKBONES)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        extra = {"weights_path": weights_path} if backbone == "efficientnet_b0" else {}
        body = BACKBONES[backbone](in_channels=in_channels, **extra)
        if head == "etf":
            feat = FeatureHead(body.out_dim, feature_dim, batchnorm=True)
            cls: nn.Module = ETFHead(feature_dim, num_classes, seed=seed, temperature=temperature)
        elif head == "linear":
            feat = FeatureHead(body.out_dim, feature_dim, batchnorm=False)
            cls = LinearHead(feature_dim, num_classes)
        else:
            raise ValueError(f"head={head!r} is unknown; allowed: ['etf', 'linear']")
    return FedModel(body, feat, cls, ImageInput(*input_norm) if input_norm else None)
