"""FedETF (Li et al., ICCV 2023): a linear projection to K dims, normalised features, a fixed ETF, a learned scale."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fedetf.methods.base import ClientRound, LocalMethod, Phase, TrainSettings, setting
from fedetf.methods.fedgela import log_prior
from fedetf.methods.personal_heads import fine_tune
from fedetf.models import ETFHead, FedModel


class FedETF(LocalMethod):
    """FedETF's client: balanced softmax on ``s * normalize(P h)^T M`` with ``M`` a K x K simplex ETF.

    The projection ``P`` is one ``Linear(in, K)``; the scale ``s`` is learned and
    averaged; the ETF is never sent. Personalisation follows the authors
    (ZexiLee/ICCV-2023-FedETF ``client_funct.py`` 168-197, run once after the last
    round, ``main.py`` 147-150): after the last round's balanced local epochs,
    ``finetune-cycles`` times: ``finetune-epochs`` epochs of the ETF alone (CE, plain
    SGD at ``etf-lr``), then ``finetune-epochs`` epochs of the projection alone (CE,
    ``projection-lr`` with the run's momentum and weight decay). Earlier rounds'
    personal view is the locally trained model without fine-tuning.
    """

    name = "fedetf"
    paper = "Li et al., ICCV 2023"
    shares = "body + projection + scale; not the ETF"
    keeps = "nothing (fine-tunes a copy for personal evaluation after the last round)"
    objective = "balanced softmax on s * normalize(P h)^T M"
    personal_model = True
    head = "etf"
    projection = "linear"
    local_prefixes = ("classifier.etf",)

    @dataclass(frozen=True)
    class Settings:
        scale: float = setting(1.0, "initial learned logit scale (authors' default 1)", gt=0)
        finetune_cycles: int = setting(20, "ETF-then-projection fine-tuning cycles after the last round", ge=0)
        finetune_epochs: int = setting(3, "epochs of each fine-tuning stage (ETF, then projection)", ge=1)
        etf_lr: float = setting(0.1, "lr of the ETF stage (plain SGD)", gt=0)
        projection_lr: float = setting(0.05, "lr of the projection stage (run's momentum and weight decay)", gt=0)

    def feature_dim(self) -> int:
        return self.spec.num_classes

    def head_options(self) -> dict[str, Any]:
        return {"normalize": True, "scale": self.settings.scale, "mode": "none"}

    def begin(self, model: FedModel, rnd: ClientRound) -> None:
        self._log_prior = log_prior(rnd.label_counts)
        self._last = rnd.last

    def loss(self, model: FedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        return self.criterion(logits + self._log_prior.to(logits.device), y)

    def personalize(self, model: FedModel, loader: Any, base: TrainSettings, device: Any) -> FedModel:
        s = self.settings
        if not self._last or s.finetune_cycles == 0:
            return model
        personal = copy.deepcopy(model)
        head = personal.classifier
        assert isinstance(head, ETFHead)
        etf = nn.Parameter(head.etf.detach().clone())
        del head._buffers["etf"]
        head.etf = etf
        projection = list(personal.feature_head.parameters())
        cycle = [
            Phase([etf], s.finetune_epochs, s.etf_lr, "fine-tune ETF", momentum=0.0, weight_decay=0.0, optimizer="sgd"),
            Phase(projection, s.finetune_epochs, s.projection_lr, "fine-tune projection", optimizer="sgd"),
        ]
        fine_tune(personal, cycle * s.finetune_cycles, loader, base, device)
        return personal
