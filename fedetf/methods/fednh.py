"""FedNH (Dai et al., AAAI 2023): fixed class prototypes on the unit sphere, smoothed by the server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fedetf.methods.base import ClientRound, LocalMethod, Tensors, setting
from fedetf.methods.fedgela import class_feature_sums
from fedetf.models import ETFHead, FedModel

#: The server's prototypes (broadcast; ``{"prototypes": K x d}``).
PROTOTYPES_KEY = "fednh.prototypes"
#: A client's class statistics (reply; ``{"scaled": K x d, "counts": K}``).
CLASS_STATS_KEY = "fednh.class_stats"


def initial_prototypes(num_classes: int, dim: int, seed: int) -> torch.Tensor:
    """The run's initial prototypes, ``K x d``: the authors' orthogonal initialisation, rows on the unit sphere.

    With ``d >= K`` the rows are orthonormal (the most spread-out unit vectors
    when ``K <= d``); with ``d < K`` torch's orthogonal init gives orthonormal
    columns, and the rows are then normalised to unit length.
    """
    gen = torch.Generator().manual_seed(seed)
    w = torch.nn.init.orthogonal_(torch.empty(num_classes, dim), generator=gen)
    return F.normalize(w, dim=1)


def prototype_stats(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """The authors' client upload per class: ``n_c * normalize(mean_c)`` (zero rows for absent classes)."""
    return counts[:, None] * F.normalize(sums, dim=1)


class FedNH(LocalMethod):
    """FedNH's client: cross-entropy on ``s * normalize(h) . p_c`` against the server's fixed prototypes ``p_c``.

    Prototypes start orthogonal on the unit sphere (seeded by the run's seed,
    so every process agrees) and are never trained by the clients; the logit
    scale ``s`` is a learned, shared weight (authors: learned from 1.0). After
    training, the client sends per class ``n_c * normalize(mean_c)`` of its
    normalised features (eval mode) with the counts ``n_c``; the server
    smooths the prototypes towards the pooled class means
    (:class:`strategies.fednh.FedNH`) and broadcasts them (:data:`PROTOTYPES_KEY`).

    Personal view: the authors' personalised accuracy is each client's locally
    trained model (as for their FedAvg); fedetf records it as ``personal_acc``
    (and the received global model as ``personal_acc_before``). FedNH has no
    personal head of its own.
    """

    name = "fednh"
    paper = "Dai et al., AAAI 2023"
    shares = "backbone + feature head + logit scale, and class statistics; prototypes come from the server"
    keeps = "nothing"
    objective = "CE on s * cos(h, p_c) against fixed prototypes"
    head = "etf"  # the fixed-vector head, holding the prototypes
    local_prefixes = ("classifier.etf",)

    @dataclass(frozen=True)
    class Settings:
        rho: float = setting(0.9, "smoothing: weight of the previous prototypes in the server's update", ge=0, le=1)
        scale: float = setting(1.0, "initial logit scale s (authors: 1.0 for their CNN, 20.0 for ResNet)", gt=0)
        fixed_scale: bool = setting(False, "keep s fixed instead of learning it (authors' option: s = 30)")

    def head_options(self) -> dict[str, Any]:
        return {"normalize": True, "scale": self.settings.scale, "mode": "none"}

    def prototypes(self, received: Any = None) -> torch.Tensor:
        """The round's prototypes (``K x d``): the server's broadcast, else the seeded initial ones."""
        if received and PROTOTYPES_KEY in received:
            return received[PROTOTYPES_KEY]["prototypes"]
        return initial_prototypes(self.spec.num_classes, self.feature_dim(), self.spec.seed)

    def load(self, model, shared, initial, state, received=None) -> None:  # type: ignore[no-untyped-def]
        super().load(model, shared, initial, state, received)
        model.classifier.etf.copy_(self.prototypes(received).T)

    def trainable_parameters(self, model: torch.nn.Module):  # type: ignore[no-untyped-def]
        scale = model.classifier.scale if self.settings.fixed_scale else None
        return (p for p in model.parameters() if p.requires_grad and p is not scale)

    def end(self, model: FedModel, rnd: ClientRound, steps: int) -> dict[str, Tensors]:
        assert isinstance(model.classifier, ETFHead)
        sums, counts = class_feature_sums(model, rnd.train_loader, len(rnd.label_counts), rnd.device)
        return {CLASS_STATS_KEY: {"scaled": prototype_stats(sums, counts), "counts": counts}}

    def sends_records(self) -> bool:
        return True

    def server_kwargs(self) -> dict[str, Any]:
        return {"initial_prototypes": self.prototypes().numpy(), "rho": self.settings.rho}
