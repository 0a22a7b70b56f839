"""Methods that keep the classifier head on the client: FedPer, FedRep, and FedBABU's frozen head."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from torch import nn

from fedetf.methods.base import ClientRound, LocalMethod, Phase, TrainSettings, setting
from fedetf.models import FedModel


def split_head(model: FedModel) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(body parameters, classifier-head parameters)."""
    head = {id(p) for p in model.classifier.parameters()}
    body = [p for p in model.parameters() if id(p) not in head]
    return body, list(model.classifier.parameters())


def fine_tune(model: FedModel, phases: list[Phase], loader: Any, base: TrainSettings, device: Any) -> None:
    """Plain CE fine-tuning, phase by phase (personal models; no method-specific loss)."""
    from fedetf.train import run_phases  # local import: train imports methods

    run_phases(
        model, phases, loader, base, device, loss_fn=lambda m, x, y: nn.functional.cross_entropy(m(x, personal=True), y)
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

    def unseen_head_epochs(self, base: TrainSettings) -> int:
        return base.epochs

    def adapt_unseen(self, model: FedModel, loader: Any, base: TrainSettings, device: Any) -> FedModel:
        """A fresh head (the seeded initial one) trained on the client's data over the received body."""
        personal = copy.deepcopy(model)
        _, head = split_head(personal)
        fine_tune(personal, [Phase(head, self.unseen_head_epochs(base), base.lr, "head")], loader, base, device)
        return personal


class FedRep(FedPer):
    """FedRep's client: the head alone for ``local-epochs - body-epochs`` epochs, then the body alone.

    The authors train ``local_ep - local_rep_ep`` head epochs, then ``local_rep_ep``
    body epochs (10 + 1 on CIFAR-10), and in the last round only the head, for
    ``max(10, local_ep - local_rep_ep)`` epochs (lgcollins/FedRep ``models/Update.py``).
    """

    name = "fedrep"
    paper = "Collins et al., ICML 2021"
    objective = "CE; head epochs, then body epochs"

    @dataclass(frozen=True)
    class Settings:
        body_epochs: int = setting(1, "of the local epochs, how many train the body (the rest train the head)", ge=0)

    _last = False  # set per round by begin()

    def begin(self, model: FedModel, rnd: ClientRound) -> None:
        self._last = rnd.last

    def unseen_head_epochs(self, base: TrainSettings) -> int:
        return max(10, base.epochs - min(self.settings.body_epochs, base.epochs))  # its last round's head epochs

    def phases(self, model: FedModel, base: TrainSettings) -> list[Phase]:
        body, head = split_head(model)
        body_epochs = min(self.settings.body_epochs, base.epochs)
        if self._last:
            return [Phase(head, self.unseen_head_epochs(base), base.lr, "head")]
        return [
            Phase(head, base.epochs - body_epochs, base.lr, "head"),
            Phase(body, body_epochs, base.lr, "body"),
        ]


class FedBABU(LocalMethod):
    """FedBABU's client: the head keeps its seeded random initialisation, is never trained during
    federated training and never sent. The personal model fine-tunes the received global model
    (or the locally trained one), the whole model (or the head), with CE at its own lr,
    momentum 0.9 and no weight decay (the authors: 5 epochs, lr 1e-3, whole model, from the
    received model; jhoon-oh/FedBABU)."""

    name = "fedbabu"
    paper = "Oh, Kim & Yun, ICLR 2022"
    shares = "body (backbone + feature head)"
    keeps = "nothing (the head is fixed; fine-tuned only for personal evaluation)"
    objective = "CE with a frozen random head"
    personal_model = True
    local_prefixes = ("classifier.",)

    @dataclass(frozen=True)
    class Settings:
        finetune_epochs: int = setting(5, "local fine-tuning epochs that form the personal model", ge=0)
        finetune_lr: float = setting(1e-3, "lr of the personal fine-tuning (momentum 0.9, no weight decay)", gt=0)
        finetune: str = setting("full", "what the personal fine-tuning trains", choices=("full", "head"))
        finetune_from: str = setting("received", "the model fine-tuning starts from", choices=("received", "local"))

    def begin(self, model: FedModel, rnd: ClientRound) -> None:
        keep = self.settings.finetune_from == "received" and self.settings.finetune_epochs > 0
        self._received = copy.deepcopy(model) if keep else None

    def phases(self, model: FedModel, base: TrainSettings) -> list[Phase]:
        body, _ = split_head(model)
        return [Phase(body, base.epochs, base.lr, "body")]

    def personalize(self, model: FedModel, loader: Any, base: TrainSettings, device: Any) -> FedModel:
        s = self.settings
        if s.finetune_epochs == 0:
            return model
        personal = self._received if self._received is not None else copy.deepcopy(model)
        body, head = split_head(personal)
        params = head if s.finetune == "head" else body + head
        phase = Phase(
            params, s.finetune_epochs, s.finetune_lr, "fine-tune", momentum=0.9, weight_decay=0.0, optimizer="sgd"
        )
        fine_tune(personal, [phase], loader, base, device)
        return personal
