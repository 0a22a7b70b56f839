"""FedETF (Li et al., ICCV 2023): projection to K dims, normalised features, a fixed ETF, a learned scale."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fedetf.methods.base import ClientRound, LocalMethod, TrainSettings, setting
from fedetf.methods.fedgela import log_prior
from fedetf.methods.personal_heads import fine_tune
from fedetf.models import ETFHead, FedModel


class FedETF(LocalMethod):
    """FedETF's client: balanced softmax on ``s * normalize(h)^T M`` with ``M`` a K x K simplex ETF.

    The projection (feature head) maps to d = K; the scale ``s`` is learned and
    averaged; the ETF is never sent. The personal model fine-tunes the
    projection and the ETF locally with cross-entropy.
    """

    name = "fedetf"
    paper = "Li et al., ICCV 2023"
    shares = "body + projection + scale; not the ETF"
    keeps = "nothing (fine-tunes a copy for personal evaluation)"
    objective = "balanced softmax on s * normalize(h)^T M"
    personal_model = True
    head = "etf"
    local_prefixes = ("classifier.etf",)

    @dataclass(frozen=True)
    class Settings:
        scale: float = setting(1.0, "initial learned logit scale (paper: 1 for ResNets, 10 for small CNNs)", gt=0)
        finetune_epochs: int = setting(1, "local fine-tuning epochs of projection and ETF for the personal model", ge=0)

    def feature_dim(self) -> int:
        return self.spec.num_classes

    def head_options(self) -> dict[str, Any]:
        return {"normalize": True, "scale": self.settings.scale, "mode": "none"}

    def begin(self, model: FedModel, rnd: ClientRound) -> None:
        self._log_prior = log_prior(rnd.label_counts)

    def loss(self, model: FedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        return self.criterion(logits + self._log_prior.to(logits.device), y)

    def personalize(self, model: FedModel, loader: Any, base: TrainSettings, device: Any) -> FedModel:
        if self.settings.finetune_epochs == 0:
            return model
        personal = copy.deepcopy(model)
        head = personal.classifier
        assert isinstance(head, ETFHead)
        etf = nn.Parameter(head.etf.detach().clone())
        del head._buffers["etf"]
        head.etf = etf
        params = [*personal.feature_head.parameters(), etf]
        fine_tune(personal, params, loader, self.settings.finetune_epochs, base, device)
        return personal
