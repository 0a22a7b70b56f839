"""FedLC and FedRS: FedAvg clients that train on logits adjusted by their local label counts.

Only the training logits change; evaluation uses the plain model, as in the papers.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        self._shift = torch.where(counts > 0, self.settings.tau * counts.clamp(min=1) ** -0.25, torch.inf)

    def loss(self, model: FedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x, personal=True)
        return self.criterion(logits - self._shift.to(logits.device), y)


class FedRS(LocalMethod):
    """FedRS (Li & Zhan, KDD 2021): restricted softmax, logits of locally absent classes scaled by alpha."""

    name = "fedrs"
    paper = "Li & Zhan, KDD 2021"
    objective = "CE on z with absent classes' logits scaled by alpha"

    @dataclass(frozen=True)
    class Settings:
        alpha: float = setting(0.5, "scale of absent classes' logits", ge=0, le=1)

    def begin(self, model: FedModel, rnd: ClientRound) -> None:
        self._scale = torch.where(rnd.label_counts > 0, 1.0, self.settings.alpha).to(torch.float32)

    def loss(self, model: FedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x, personal=True)
        return self.criterion(logits * self._scale.to(logits.device), y)
