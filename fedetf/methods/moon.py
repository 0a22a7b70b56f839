"""MOON (Li, He & Song, CVPR 2021): model-contrastive federated learning."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fedetf.methods.base import ClientRound, LocalMethod, Tensors, setting
from fedetf.models import FedModel


def model_contrastive_loss(z: torch.Tensor, z_glob: torch.Tensor, z_prev: torch.Tensor, tau: float) -> torch.Tensor:
    """``-log(e^{cos(z, z_glob)/tau} / (e^{cos(z, z_glob)/tau} + e^{cos(z, z_prev)/tau}))``, mean over the batch."""
    pos = F.cosine_similarity(z, z_glob, dim=1) / tau
    neg = F.cosine_similarity(z, z_prev, dim=1) / tau
    logits = torch.stack([pos, neg], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(z), dtype=torch.long, device=z.device))


class Moon(LocalMethod):
    """MOON's client: CE plus ``mu`` times the contrast of its representation against the
    received global model's (positive) and its own previous local model's (negative).

    The representation is the feature head's output. The previous local model
    (shared weights) is kept in the client's state; at a client's first round it
    is the received model, which makes the term constant.
    """

    name = "moon"
    paper = "Li, He & Song, CVPR 2021"
    keeps = "its previous local model"
    objective = "CE + mu * model-contrastive loss (temperature tau)"

    @dataclass(frozen=True)
    class Settings:
        mu: float = setting(1.0, "weight of the model-contrastive term (paper: 5 on CIFAR-10, 1 elsewhere)", ge=0)
        tau: float = setting(0.5, "temperature of the contrastive term", gt=0)

    def begin(self, model: FedModel, rnd: ClientRound) -> None:
        self._glob = copy.deepcopy(model).eval().requires_grad_(False)
        self._prev = copy.deepcopy(self._glob)
        prev = {k.removeprefix("moon.prev."): v for k, v in rnd.state.items() if k.startswith("moon.prev.")}
        if prev:
            own = self._prev.state_dict()
            self._prev.load_state_dict({**own, **prev})

    def loss(self, model: FedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = model.features(x)
        ce = self.criterion(model.classifier(z, personal=True), y)
        if self.settings.mu == 0:
            return ce
        with torch.no_grad():
            self._glob.to(x.device)
            self._prev.to(x.device)
            z_glob, z_prev = self._glob.features(x), self._prev.features(x)
        return ce + self.settings.mu * model_contrastive_loss(z, z_glob, z_prev, self.settings.tau)

    def end(self, model: FedModel, rnd: ClientRound, steps: int) -> dict[str, Tensors]:
        for k, v in self.shared_state(model).items():
            rnd.state[f"moon.prev.{k}"] = v.detach().cpu().clone()
        return {}
