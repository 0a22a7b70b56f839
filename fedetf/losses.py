"""Local losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FocalLoss(nn.Module):
    """Weighted focal loss ``-alpha_y (1 - p_y)^gamma log p_y`` (Lin et al. 2017), mean over the batch.

    FLamby's Fed-ISIC2019 loss uses ``gamma = 2`` and ``alpha_c = N / n_c`` from
    the pooled train counts.
    """

    def __init__(self, alpha: torch.Tensor | None = None, gamma: float = 2.0) -> None:
        super().__init__()
        self.gamma = gamma
        self.register_buffer("alpha", alpha.float() if alpha is not None else None)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
        loss = -((1 - logp.exp()) ** self.gamma) * logp
        if self.alpha is not None:
            loss = loss * self.alpha.to(logits.device)[target]
        return loss.mean()


def inverse_frequency_weights(counts: torch.Tensor) -> torch.Tensor:
    """``alpha_c = N / n_c`` (0 for absent classes)."""
    counts = counts.double()
    return torch.where(counts > 0, counts.sum() / counts.clamp(min=1), torch.zeros_like(counts)).float()


#: The local losses a run can choose.
LOSSES = ("ce", "focal")


def build_criterion(name: str, class_weights: tuple[float, ...] = ()) -> nn.Module:
    """``ce`` (cross-entropy) or ``focal`` (weighted by ``class_weights`` when given)."""
    if name == "ce":
        return nn.CrossEntropyLoss()
    if name == "focal":
        return FocalLoss(torch.tensor(class_weights) if class_weights else None, gamma=2.0)
    raise ValueError(f"loss={name!r} is unknown; allowed: {list(LOSSES)}")
