"""FedProx (Li et al., MLSys 2020): the local loss plus ``mu / 2 * ||w - w_global||^2``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fedetf.methods.base import ClientRound, LocalMethod, setting
from fedetf.models import FedModel


class FedProx(LocalMethod):
    """FedProx's client. ``mu`` comes from the round's ``proximal-mu`` (sent by Flower's FedProx strategy)."""

    name = "fedprox"
    paper = "Li et al., MLSys 2020"
    objective = "CE + mu/2 ||w - w_global||^2"
    keeps_partial_work = True  # its proximal term makes partial work safe to average (Li et al., Section 3)

    @dataclass(frozen=True)
    class Settings:
        mu: float = setting(0.01, "weight of the proximal term", ge=0)

    def begin(self, model: FedModel, rnd: ClientRound) -> None:
        self.mu = float(rnd.config.get("proximal-mu", self.settings.mu))
        self._anchor = [p.detach().clone() for p in self.trainable_parameters(model)]

    def loss(self, model: FedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        params = list(self.trainable_parameters(model))
        if self._anchor[0].device != params[0].device:  # the model moved to the training device
            self._anchor = [a.to(params[0].device) for a in self._anchor]
        prox = sum(((p - a) ** 2).sum() for p, a in zip(params, self._anchor, strict=True))
        return super().loss(model, x, y) + self.mu / 2 * prox

    def server_kwargs(self) -> dict[str, Any]:
        return {"proximal_mu": self.settings.mu}
