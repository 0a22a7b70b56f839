"""FedLC and FedRS: FedAvg clients that train on logits adjusted by their local label counts.

Only the training logits change; evaluation uses the plain model, as in the papers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fedetf.methods.base import ClientRound, LocalMethod, setting
from fedetf.models import FedModel


class FedLC(LocalMethod):
    """FedLC (Zhang et al., ICML 2022): train on ``z_c - tau * n_c^(-1/4)``; absent classes (n_c = 0) drop out."""

    name = "fedlc"
    paper = "Zhang et al., ICML 2022"
    objective = "CE on z_c - tau * n_c^(-1/4)"

    @dataclass(frozen=True)
    class Settings:
        tau: float = setting(1.0, "calibration strength", ge=0)

    def begin(self, model: FedModel, rnd: ClientRound) -> None:
        counts = rnd.label_counts.to(torch.float32)
        tau = self.settings.tau
        absent = torch.inf if tau > 0 else 0.0  # tau = 0 turns the calibration off, absent classes included
        self._shift = torch.where(counts > 0, tau * counts.clamp(min=1) ** -0.25, absent)

    def loss(self, model: FedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x, personal=True)
        return self.criterion(logits - self._shift.to(logits.device), y)


class FedRS(LocalMethod):
    """FedRS (Li & Zhan, KDD 2021): restricted softmax on a bias-free head.

    Class ``c``'s training logit is scaled by ``alpha + (1 - alpha) * n_c / max_c n_c``,
    so locally absent classes get ``alpha`` and rarer classes a graded scale
    (lxcnju/FedRepo ``algorithms/fedrs.py`` 185-189; bias-free classifier in
    ``networks/basic_nets.py`` 82-84).
    """

    name = "fedrs"
    paper = "Li & Zhan, KDD 2021"
    objective = "CE on z_c * (alpha + (1 - alpha) n_c / max n_c), bias-free head"

    @dataclass(frozen=True)
    class Settings:
        alpha: float = setting(0.5, "scale of absent classes' logits (paper: 0.5-0.9)", ge=0, le=1)

    def head_options(self) -> dict[str, Any]:
        return {"bias": False}

    def begin(self, model: FedModel, rnd: ClientRound) -> None:
        counts = rnd.label_counts.to(torch.float32)
        alpha = self.settings.alpha
        self._scale = alpha + (1 - alpha) * counts / counts.max()

    def loss(self, model: FedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x, personal=True)
        return self.criterion(logits * self._scale.to(logits.device), y)
