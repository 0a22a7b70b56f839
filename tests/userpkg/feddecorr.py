"""FedDecorr (Shi et al., ICLR 2023) as a user's method: FedAvg plus a feature-decorrelation penalty."""

from dataclasses import dataclass

import torch

from fedetf.methods import LocalMethod, setting
from fedetf.models import FedModel


class FedDecorr(LocalMethod):
    """CE + beta * ||Corr(z)||_F^2 / d^2 on the batch's features z (against dimensional collapse)."""

    name = "feddecorr"  # its settings' keys: feddecorr.beta, feddecorr.eps
    paper = "Shi et al., ICLR 2023"
    objective = "CE + beta * ||Corr(z)||_F^2 / d^2"
    server = "fedavgm"  # any Flower strategy name, or "package.module:ClassName"

    @dataclass(frozen=True)
    class Settings:
        beta: float = setting(0.1, "weight of the decorrelation penalty", ge=0)
        eps: float = setting(1e-8, "added to the feature std before standardising", gt=0)

    def loss(self, model: FedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = model.features(x)
        ce = self.criterion(model.classifier(z, personal=True), y)
        if len(z) < 2:
            return ce
        z = (z - z.mean(0)) / (z.std(0) + self.settings.eps)
        corr = z.T @ z / len(z)
        return ce + self.settings.beta * (corr**2).sum() / z.shape[1] ** 2
