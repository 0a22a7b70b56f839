"""Methods that keep the classifier head on the client: FedPer, FedRep, and FedBABU's frozen head."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from torch import nn

from fedetf.methods.base import LocalMethod, Phase, TrainSettings, setting
from fedetf.models import FedModel


def split_head(model: FedModel) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(body parameters, classifier-head parameters)."""
    head = {id(p) for p in model.classifier.parameters()}
    body = [p for p in model.parameters() if id(p) not in head]
    return body, list(model.classifier.parameters())


def fine_tune(
    model: FedModel, params: list[nn.Parameter], loader: Any, epochs: int, base: TrainSettings, device: Any
) -> None:
    """Plain CE fine-tuning of ``params`` (personal models; no method-specific loss)."""
    from fedetf.train import run_phases  # local import: train imports methods

    run_phases(
        model,
        [Phase(params, epochs, base.lr, "fine-tune")],
        loader,
        base,
        device,
        loss_fn=lambda m, x, y: nn.functional.cross_entropy(m(x, personal=True), y),
    )


class FedPer(LocalMethod):
    """FedPer's client: body and head train together; only the body is sent, the head stays on the client."""

    name = "fedper"
    paper = "Arivazhagan et al., 2019"
    shares = "body (backbone + feature head)"
    keeps = "its classifier head"
    personal_model = True
    local_prefixes = ("classifier.",)
    personal_prefixes = ("classifier.",)


class FedRep(FedPer):
    """FedRep's client: first the head alone for ``head_epochs``, then the body alone for ``local-epochs``."""

    name = "fedrep"
    paper = "Collins et al., ICML 2021"
    objective = "CE; head epochs, then body epochs"

    @dataclass(frozen=True)
    class Settings:
        head_epochs: int = setting(1, "epochs of head-only training before the body epochs", ge=1)

    def phases(self, model: FedModel, base: TrainSettings) -> list[Phase]:
        body, head = split_head(model)
        return [Phase(head, self.settings.head_epochs, base.lr, "head"), Phase(body, base.epochs, base.lr, "body")]


class FedBABU(LocalMethod):
    """FedBABU's client: the head keeps its seeded random initialisation, is never trained during
    federated training and never sent; the personal model fine-tunes the head (or everything) locally."""

    name = "fedbabu"
    paper = "Oh, Kim & Yun, ICLR 2022"
    shares = "body (backbone + feature head)"
    keeps = "nothing (the head is fixed; fine-tuned only for personal evaluation)"
    objective = "CE with a frozen random head"
    personal_model = True
    local_prefixes = ("classifier.",)

    @dataclass(frozen=True)
    class Settings:
        finetune_epochs: int = setting(1, "local fine-tuning epochs that form the personal model", ge=0)
        finetune: str = setting("head", "what the personal fine-tuning trains", choices=("head", "full"))

    def phases(self, model: FedModel, base: TrainSettings) -> list[Phase]:
        body, _ = split_head(model)
        return [Phase(body, base.epochs, base.lr, "body")]

    def personalize(self, model: FedModel, loader: Any, base: TrainSettings, device: Any) -> FedModel:
        if self.settings.finetune_epochs == 0:
            return model
        personal = copy.deepcopy(model)
        body, head = split_head(personal)
        params = head if self.settings.finetune == "head" else body + head
        fine_tune(personal, params, loader, self.settings.finetune_epochs, base, device)
        return personal
