"""Local training and evaluation loops shared by every method."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from fedetf.methods import LocalMethod
from fedetf.metrics import accuracy, balanced_accuracy
from fedetf.models import FedModel


@dataclass(frozen=True)
class TrainSettings:
    """Local optimisation settings (the authors' defaults)."""

    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    clip_grad_norm: float = 20.0


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one evaluation pass."""

    loss: float
    acc: float
    bacc: float
    num_examples: int
    num_correct: int


def train_local(
    model: FedModel,
    method: LocalMethod,
    loader: DataLoader,
    settings: TrainSettings,
    device: torch.device | str = "cpu",
) -> tuple[float, int]:
    """Run local SGD; return (mean training loss, number of optimizer steps).

    The optimizer is built afresh on each call, so momentum restarts every
    round, as in the FedGELA authors' code.
    """
    model.to(device).train()
    params = list(method.trainable_parameters(model))
    opt = torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    total, steps = 0.0, 0
    for _ in range(settings.epochs):
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            loss = method.loss(model, x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, settings.clip_grad_norm)
            opt.step()
            total += float(loss.detach())
            steps += 1
    return (total / steps if steps else float("nan")), steps


@torch.no_grad()
def predict(
    model: FedModel, loader: DataLoader, personal: bool, device: torch.device | str = "cpu"
) -> tuple[np.ndarray, np.ndarray, float]:
    """Return (labels, predictions, summed cross-entropy) over a loader."""
    model.to(device).eval()
    ys, preds, loss = [], [], 0.0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x, personal=personal)
        loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
        ys.append(y.cpu().numpy())
        preds.append(logits.argmax(1).cpu().numpy())
    if not ys:
        return np.empty(0, np.int64), np.empty(0, np.int64), 0.0
    return np.concatenate(ys), np.concatenate(preds), loss


def evaluate(
    model: FedModel, loader: DataLoader, personal: bool = False, device: torch.device | str = "cpu"
) -> EvalResult:
    """Evaluate the generic (``personal=False``) or locally adapted view."""
    y, p, loss = predict(model, loader, personal, device)
    n = len(y)
    return EvalResult(
        loss=loss / n if n else float("nan"),
        acc=accuracy(y, p),
        bacc=balanced_accuracy(y, p),
        num_examples=n,
        num_correct=int((y == p).sum()),
    )
