"""Client-side pieces of FL methods: what differs from FedAvg's local training.

A method builds the model, prepares it for one client (e.g. FedGELA's
adaptation vector) and defines the local loss. The training loop itself lives
once, in :mod:`fedetf.train`, and calls these hooks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from fedetf.losses import build_criterion
from fedetf.models import ETFHead, FedModel, build_model


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build the same model in every process."""

    backbone: str
    in_channels: int
    num_classes: int
    feature_dim: int
    seed: int
    temperature: float = 0.2
    adaptation: str = "proportion"
    loss: str = "ce"
    class_weights: tuple[float, ...] = ()
    weights_path: str = ""
    #: (mean, std) when the loaders yield uint8 NHWC batches the model normalises.
    input_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None


class LocalMethod:
    """FedAvg's client: the run's loss (cross-entropy by default) on a learned linear head.

    Subclasses override only the hooks that differ.
    """

    name = "fedavg"
    head = "linear"
    #: State-dict keys that are fixed for the whole run: after loading global
    #: arrays the client keeps its own (identical, seeded) values for these.
    fixed_keys: tuple[str, ...] = ()

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.criterion = build_criterion(spec.loss, spec.class_weights)

    def build_model(self) -> FedModel:
        s = self.spec
        return build_model(
            s.backbone,
            s.in_channels,
            s.num_classes,
            s.feature_dim,
            head=self.head,
            seed=s.seed,
            temperature=s.temperature,
            weights_path=s.weights_path,
            input_norm=s.input_norm,
        )

    def load_global(self, model: FedModel, state: dict[str, torch.Tensor]) -> None:
        """Load global weights, keeping this method's fixed keys untouched."""
        own = model.state_dict()
        missing = set(own) - set(state)
        unexpected = set(state) - set(own)
        if unexpected or (missing - set(self.fixed_keys)):
            raise ValueError(
                f"global arrays do not fit method {self.name!r}: missing {sorted(missing)}, "
                f"unexpected {sorted(unexpected)}"
            )
        merged = {**state, **{k: own[k] for k in self.fixed_keys}}
        model.load_state_dict(merged)

    def prepare(self, model: FedModel, label_counts: torch.Tensor) -> None:
        """Adapt the model to one client before local training (no-op for FedAvg)."""

    def trainable_parameters(self, model: nn.Module) -> Iterable[nn.Parameter]:
        return (p for p in model.parameters() if p.requires_grad)

    def loss(self, model: FedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.criterion(model(x, personal=True), y)


FedAvgMethod = LocalMethod


class FedGELAMethod(LocalMethod):
    """FedGELA's client: fixed global ETF, locally adapted by ``Ew = K * n_c / n``.

    The loss (cross-entropy, or the run's loss) is taken on ``h^T M diag(Ew) / T``; ``Ew`` is computed once
    from the client's label counts and not learned (``adaptation="none"`` keeps
    ``Ew = 1``, i.e. a plain fixed ETF with temperature, for ablations).
    """

    name = "fedgela"
    head = "etf"
    fixed_keys = ("classifier.etf",)

    def prepare(self, model: FedModel, label_counts: torch.Tensor) -> None:
        head = model.classifier
        assert isinstance(head, ETFHead)
        head.set_adaptation(adaptation_vector(label_counts, self.spec.adaptation))


def adaptation_vector(label_counts: torch.Tensor, mode: str = "proportion") -> torch.Tensor:
    """FedGELA's ``Ew[c] = K * n_c / n`` (``mode="proportion"``) or ones (``"none"``)."""
    counts = label_counts.to(torch.float32)
    if mode == "none":
        return torch.ones_like(counts)
    if mode != "proportion":
        raise ValueError(f"adaptation={mode!r} is unknown; allowed: ['none', 'proportion']")
    total = counts.sum()
    if total <= 0:
        raise ValueError("adaptation vector needs at least one local sample")
    return len(counts) * counts / total


METHODS: dict[str, type[LocalMethod]] = {"fedavg": FedAvgMethod, "fedgela": FedGELAMethod}


def get_method(name: str, spec: ModelSpec) -> LocalMethod:
    """Instantiate a registered client method by name."""
    if name not in METHODS:
        raise ValueError(f"client method {name!r} is unknown; allowed: {sorted(METHODS)}")
    return METHODS[name](spec)
