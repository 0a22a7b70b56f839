"""Backbones, feature heads and classifier heads with named parts.

A :class:`FedModel` is ``backbone -> feature_head -> classifier``. The three are
separate submodules so strategies and methods can address them by state-dict
key prefix (``backbone.``, ``feature_head.``, ``classifier.``).
"""

from __future__ import annotations

import torch
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
    import torchvision  # here: torchvision imports torch._dynamo (~1 s, ~100 MB per process)

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
    import torchvision

    net = torchvision.models.efficientnet_b0(weights=None)
    if weights_path:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        missing, _ = net.load_state_dict(state, strict=False)
        if any(k.startswith("features.") for k in missing):
            raise ValueError(f"{weights_path}: not an efficientnet_b0 state dict (missing {missing[:3]})")
    trunk = nn.Sequential(net.features, net.avgpool, nn.Flatten())
    trunk.out_dim = net.classifier[1].in_features
    return trunk


class SimpleCNN(nn.Module):
    """The FedGELA/MOON authors' "simple-cnn": two 5x5 conv layers without BatchNorm, then 120 -> 84 units.

    Conv(C->6, 5) ReLU MaxPool2, Conv(6->16, 5) ReLU MaxPool2, flatten, Linear(., 120) ReLU, Linear(120, 84) ReLU.
    Defined for 28x28 (flatten 16*4*4) and 32x32 (flatten 16*5*5) inputs only.
    """

    SIZES = {28: 16 * 4 * 4, 32: 16 * 5 * 5}

    def __init__(self, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        if image_size not in self.SIZES:
            raise ValueError(
                f"model='simple-cnn' takes 28x28 or 32x32 images, not {image_size}x{image_size}; "
                "use model='cnn' for other sizes"
            )
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(self.SIZES[image_size], 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
        )
        self.out_dim = 84
        #: The authors' projection is Linear(84, 84) ReLU Linear(84, d): hidden width 84.
        self.head_hidden = 84

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class MLP(nn.Module):
    """Flatten, then one hidden layer (ReLU): for feature vectors such as Synthetic(alpha, beta)'s 60."""

    def __init__(self, in_channels: int = 1, input_features: int = 0, hidden: int = 200) -> None:
        super().__init__()
        if input_features <= 0:
            raise ValueError("model='mlp' needs the length of one sample (the dataset's input_features)")
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(input_features, hidden), nn.ReLU(inplace=True))
        self.out_dim = hidden
        #: One Linear from the hidden layer to the features: a two-layer MLP before the classifier.
        self.head_hidden = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


BACKBONES = {
    "mlp": MLP,
    "cnn": SmallCNN,
    "simple-cnn": SimpleCNN,
    "resnet18": resnet18_cifar,
    "efficientnet_b0": efficientnet_b0,
}


class FeatureHead(nn.Module):
    """MLP projection to ``dim`` features (one ``Linear`` when ``hidden=0``), optionally BatchNorm-ed (FedGELA)."""

    def __init__(self, in_dim: int, dim: int, hidden: int = 256, batchnorm: bool = False) -> None:
        super().__init__()
        layers = [nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim)] if hidden else []
        self.mlp = nn.Sequential(*layers) if layers else nn.Sequential(nn.Linear(in_dim, dim))
        self.norm = nn.BatchNorm1d(dim) if batchnorm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.mlp(x))


class LinearHead(nn.Module):
    """Learned linear classifier (FedAvg and most baselines); ``bias=False`` for FedRS's bias-free head."""

    def __init__(self, dim: int, num_classes: int, bias: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, num_classes, bias=bias)

    def forward(self, h: torch.Tensor, personal: bool = False) -> torch.Tensor:
        return self.fc(h)


class ETFHead(nn.Module):
    """Fixed simplex-ETF classifier ``M`` (d x K) with a client's local adaptation.

    Generic logits are ``g = s * f(h)^T M``: ``f`` is the identity, or L2
    normalisation when ``normalize``; ``s`` is 1, or a learned scalar when
    ``scale`` is given (its initial value). Personal logits depend on ``mode``:

    * ``"multiplicative"`` (FedGELA): ``g * Ew / T``, ``Ew`` the client's adaptation vector;
    * ``"additive"`` (logit adjustment / balanced softmax): ``g + log_prior``;
    * ``"none"``: ``g``.

    ``M`` is a persistent buffer (never trained, never averaged by fedetf's
    methods); the adaptation vector and log prior are non-persistent buffers,
    so they never leave the client.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        seed: int,
        temperature: float = 0.2,
        *,
        normalize: bool = False,
        scale: float | None = None,
        mode: str = "multiplicative",
    ) -> None:
        super().__init__()
        if mode not in ("multiplicative", "additive", "none"):
            raise ValueError(f"ETFHead mode={mode!r}; allowed: 'multiplicative', 'additive', 'none'")
        self.temperature = float(temperature)
        self.normalize = normalize
        self.mode = mode
        self.register_buffer("etf", simplex_etf(num_classes, dim, seed))
        self.scale = nn.Parameter(torch.tensor(float(scale))) if scale is not None else None
        self.register_buffer("adaptation", torch.ones(num_classes), persistent=False)
        self.register_buffer("log_prior", torch.zeros(num_classes), persistent=False)

    def set_adaptation(self, ew: torch.Tensor) -> None:
        """Set the per-class scale vector ``Ew`` (length K)."""
        self.adaptation.copy_(ew.to(self.adaptation))

    def set_log_prior(self, log_prior: torch.Tensor) -> None:
        """Set the per-class additive term (length K), e.g. ``log n_c``."""
        self.log_prior.copy_(log_prior.to(self.log_prior))

    def generic(self, h: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            h = nn.functional.normalize(h, dim=1)
        logits = h @ self.etf
        return logits * self.scale if self.scale is not None else logits

    def forward(self, h: torch.Tensor, personal: bool = False) -> torch.Tensor:
        logits = self.generic(h)
        if not personal or self.mode == "none":
            return logits
        if self.mode == "additive":
            return logits + self.log_prior
        return logits * self.adaptation / self.temperature


class DualHead(nn.Module):
    """FedRoD's two linear heads: ``generic`` (shared) and ``personal`` (kept on the client).

    Generic logits are ``generic(h)``; personal logits are ``generic(h) + personal(h)``.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.generic = nn.Linear(dim, num_classes)
        self.personal = nn.Linear(dim, num_classes)

    def forward(self, h: torch.Tensor, personal: bool = False) -> torch.Tensor:
        g = self.generic(h)
        return g + self.personal(h) if personal else g


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


HEADS = ("linear", "etf", "dual")
PROJECTIONS = ("mlp", "linear")


def build_model(
    backbone: str,
    in_channels: int,
    num_classes: int,
    feature_dim: int,
    head: str = "linear",
    seed: int = 0,
    weights_path: str = "",
    input_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    image_size: int = 0,
    feature_norm: str = "none",
    projection: str = "mlp",
    input_features: int = 0,
    **head_options: object,
) -> FedModel:
    """Build a :class:`FedModel`.

    Parameters
    ----------
    backbone : str
        A key of :data:`BACKBONES`.
    head : str
        ``"linear"`` (learned), ``"etf"`` (fixed simplex ETF; ``head_options`` go to
        :class:`ETFHead`) or ``"dual"`` (FedRoD's generic + personal heads).
    seed : int
        Seeds initialisation (and the ETF), so every process builds the same model.
    weights_path : str
        Pretrained trunk weights (EfficientNet-B0 only).
    input_norm : (mean, std) or None
        Makes the model take uint8 NHWC batches and normalise them.
    image_size : int
        Input height/width (needed by ``simple-cnn``).
    feature_norm : str
        ``"batchnorm"`` puts BatchNorm1d on the features (FedGELA), ``"none"`` does not.
    projection : str
        The feature head: ``"mlp"`` (Linear ReLU Linear) or ``"linear"`` (one Linear, FedETF's).
    input_features : int
        Length of one flattened sample (needed by ``mlp``).
    """
    if backbone not in BACKBONES:
        raise ValueError(f"model={backbone!r} is unknown; allowed: {sorted(BACKBONES)}")
    if head not in HEADS:
        raise ValueError(f"head={head!r} is unknown; allowed: {list(HEADS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        extra: dict[str, object] = {}
        if backbone == "efficientnet_b0":
            extra["weights_path"] = weights_path
        if backbone == "simple-cnn":
            extra["image_size"] = image_size
        if backbone == "mlp":
            extra["input_features"] = input_features
        body = BACKBONES[backbone](in_channels=in_channels, **extra)
        if projection not in PROJECTIONS:
            raise ValueError(f"projection={projection!r} is unknown; allowed: {list(PROJECTIONS)}")
        hidden = getattr(body, "head_hidden", 256) if projection == "mlp" else 0
        feat = FeatureHead(body.out_dim, feature_dim, hidden=hidden, batchnorm=feature_norm == "batchnorm")
        if head == "etf":
            cls: nn.Module = ETFHead(feature_dim, num_classes, seed=seed, **head_options)  # type: ignore[arg-type]
        elif head == "dual":
            cls = DualHead(feature_dim, num_classes)
        else:
            cls = LinearHead(feature_dim, num_classes, **head_options)  # type: ignore[arg-type]
    return FedModel(body, feat, cls, ImageInput(*input_norm) if input_norm else None)
