"""Ditto (Li, Hu, Beirami & Smith, ICML 2021): a personal model pulled towards the global one."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from fedetf.methods.base import ClientRound, LocalMethod, Phase, Tensors, TrainSettings, setting
from fedetf.models import FedModel

#: Prefix of the personal model's weights in the client's state.
PERSONAL_PREFIX = "ditto.personal."


def proximal_term(model: torch.nn.Module, anchor: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``1/2 * sum ||v - w||^2`` over the trainable parameters ``v`` of ``model`` and their ``anchor`` ``w``."""
    terms = [((p - anchor[n].to(p)) ** 2).sum() for n, p in model.named_parameters() if p.requires_grad]
    return 0.5 * torch.stack(terms).sum()


class Ditto(LocalMethod):
    """Ditto's client: FedAvg's local update of the global model ``w``, plus a personal model ``v``.

    Each round the client trains ``w`` as FedAvg does and sends it; then it trains
    its own ``v`` on ``F_i(v) + lam/2 * ||v - w^t||^2``, where ``w^t`` is the
    global model it received this round. As in the authors' code the personal
    steps are plain SGD at the run's lr (no momentum, weight decay or clipping),
    ``v`` starts from the run's seeded initial model, and it changes only in
    rounds the client is sampled. ``v`` (weights and BatchNorm statistics) is
    kept in the client's state; the personal accuracy is ``v``'s.

    The authors interleave one personal step with one global step on the same
    batch; fedetf runs the personal epochs after the global ones (the anchor
    ``w^t`` is fixed during the round, so only the batch order differs), as
    PFLlib and FL-bench do.
    """

    name = "ditto"
    paper = "Li et al., ICML 2021"
    shares = "all weights (the global model)"
    keeps = "its personal model"
    objective = "CE (global model); CE + lam/2 * ||v - w_global||^2 (personal model v, plain SGD)"
    personal_model = True

    @dataclass(frozen=True)
    class Settings:
        lam: float = setting(
            1.0, "lambda: pull of the personal model towards the received global model (authors' scripts: 1)", ge=0
        )
        personal_epochs: int = setting(
            0, "personal-model epochs per round; 0 = as many as local-epochs (authors: one step per global step)", ge=0
        )

    def load(self, model, shared, initial, state, received=None) -> None:  # type: ignore[no-untyped-def]
        super().load(model, shared, initial, state, received)
        self._initial = initial

    def begin(self, model: FedModel, rnd: ClientRound) -> None:
        self._anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
        self._personal: FedModel | None = None
        self._base = TrainSettings()

    def _stored(self, model: FedModel, state: Mapping[str, torch.Tensor]) -> FedModel:
        """A copy of ``model`` holding the client's personal model (the initial model before its first round)."""
        personal = copy.deepcopy(model)
        own = {k.removeprefix(PERSONAL_PREFIX): v for k, v in state.items() if k.startswith(PERSONAL_PREFIX)}
        personal.load_state_dict(own or self._initial)
        return personal

    def before_view(self, model: FedModel, rnd: ClientRound) -> FedModel:
        return self._stored(model, rnd.state)

    def phases(self, model: FedModel, base: TrainSettings) -> list[Phase]:
        self._base = base
        return super().phases(model, base)

    def end(self, model: FedModel, rnd: ClientRound, steps: int) -> dict[str, Tensors]:
        from fedetf.train import run_phases  # local import: train imports methods

        personal = self._stored(model, rnd.state)
        base = self._base
        epochs = self.settings.personal_epochs or base.epochs
        plain = replace(base, momentum=0.0, weight_decay=0.0, clip_grad_norm=float("inf"), optimizer="sgd")
        lam = self.settings.lam

        def loss(m: FedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            ce = self.criterion(m(x, personal=True), y)
            return ce + lam * proximal_term(m, self._anchor) if lam else ce

        params = list(self.trainable_parameters(personal))
        run_phases(personal, [Phase(params, epochs, base.lr, "personal")], rnd.train_loader, plain, rnd.device, loss)
        for k, v in personal.state_dict().items():
            rnd.state[PERSONAL_PREFIX + k] = v.detach().cpu().clone()
        self._personal = personal
        return {}

    def personalize(self, model: FedModel, loader: Any, base: TrainSettings, device: torch.device | str) -> FedModel:
        return self._personal if self._personal is not None else model
