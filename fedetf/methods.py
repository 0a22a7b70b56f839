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
    #: Baselines' hyperparameters: FedProx's mu, FedLC's tau, FedRS's alpha.
    prox_mu: float = 0.01
    fedlc_tau: float = 1.0
    fedrs_alpha: float = 0.5


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


class FedProxMethod(LocalMethod):
    """FedProx (Li et al., 2020): the loss plus ``mu / 2 * ||w - w_global||^2`` over trained weights."""

    name = "fedprox"

    def prepare(self, model: FedModel, label_counts: torch.Tensor) -> None:
        # Called right after the global weights are loaded: they are the anchor.
        self._anchor = [p.detach().clone() for p in self.trainable_parameters(model)]

    def loss(self, model: FedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        params = list(self.trainable_parameters(model))
        if self._anchor[0].device != params[0].device:  # the model moved to the training device
            self._anchor = [a.to(params[0].device) for a in self._anchor]
        prox = sum(((p - a) ** 2).sum() for p, a in zip(params, self._anchor, strict=True))
        return super().loss(model, x, y) + self.spec.prox_mu / 2 * prox


class _LogitAdjustMethod(LocalMethod):
    """A FedAvg client that trains on ``combine(logits, v)``, ``v`` computed from its label counts.

    Only training logits change; evaluation uses the plain model, as in the papers.
    """

    def vector(self, counts: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def combine(self, logits: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def prepare(self, model: FedModel, label_counts: torch.Tensor) -> None:
        self._v = self.vector(label_counts.to(torch.float32))

    def loss(self, model: FedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x, personal=True)
        if self._v.device != logits.device:
            self._v = self._v.to(logits.device)
        return self.criterion(self.combine(logits, self._v), y)


class FedLCMethod(_LogitAdjustMethod):
    """FedLC (Zhang et al., ICML 2022): train on ``z_c - tau * n_c^(-1/4)``; absent classes (n_c = 0) get -inf."""

    name = "fedlc"

    def vector(self, counts: torch.Tensor) -> torch.Tensor:
        return torch.where(counts > 0, self.spec.fedlc_tau * counts.clamp(min=1) ** -0.25, torch.inf)

    def combine(self, logits: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return logits - v


class FedRSMethod(_LogitAdjustMethod):
    """FedRS (Li & Zhan, KDD 2021): restricted softmax, logits of locally absent classes scaled by alpha."""

    name = "fedrs"

    def vector(self, counts: torch.Tensor) -> torch.Tensor:
        return torch.where(counts > 0, 1.0, self.spec.fedrs_alpha)

    def combine(self, logits: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return logits * v


METHODS: dict[str, type[LocalMethod]] = {
    "fedavg": FedAvgMethod,
    "fedgela": FedGELAMethod,
    "fedprox": FedProxMethod,
    "fedlc": FedLCMethod,
    "fedrs": FedRSMethod,
}


def get_method(name: str, spec: ModelSpec) -> LocalMethod:
    """Instantiate a registered client method by name."""
    if name not in METHODS:
        raise ValueError(f"client method {name!r} is unknown; allowed: {sorted(METHODS)}")
    return METHODS[name](spec)
