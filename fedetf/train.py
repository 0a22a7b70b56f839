"""Local training and evaluation loops shared by every method, and one client round."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from fedetf.methods.base import ClientRound, LocalMethod, Phase, Tensors, TrainSettings
from fedetf.metrics import accuracy, balanced_accuracy
from fedetf.models import FedModel
from fedetf.nc import ClassStats, ClassStatsAccumulator, angle_collapse, nc_metrics, space_waste


class NonFiniteError(FloatingPointError):
    """Local training produced a non-finite loss or weights."""


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one evaluation pass."""

    loss: float
    acc: float
    bacc: float
    num_examples: int
    num_correct: int


LossFn = Callable[[FedModel, torch.Tensor, torch.Tensor], torch.Tensor]


def run_phases(
    model: FedModel,
    phases: list[Phase],
    loader: DataLoader,
    settings: TrainSettings,
    device: torch.device | str = "cpu",
    loss_fn: LossFn | None = None,
    before_step: Callable[[FedModel], None] | None = None,
) -> tuple[float, int]:
    """Run local SGD phase by phase; return (mean training loss, number of optimizer steps).

    Each phase trains only its parameters (the others are frozen meanwhile) with a
    fresh optimizer, so momentum restarts every phase and round, as in the FedGELA
    authors' code. Raises :class:`NonFiniteError` on a non-finite loss.
    """
    model.to(device).train()
    loss_fn = loss_fn or (lambda m, x, y: nn.functional.cross_entropy(m(x, personal=True), y))
    all_params = list(model.parameters())
    flags = [p.requires_grad for p in all_params]
    total = torch.zeros((), dtype=torch.float64, device=device)
    steps = 0
    try:
        for phase in phases:
            params, plain = _ordered(all_params, phase.params), _ordered(all_params, phase.plain)
            trained = {id(p) for p in params + plain}
            for p in all_params:
                p.requires_grad_(id(p) in trained)
            if not params or phase.epochs == 0:
                continue
            momentum = settings.momentum if phase.momentum is None else phase.momentum
            decay = settings.weight_decay if phase.weight_decay is None else phase.weight_decay
            kind = phase.optimizer or settings.optimizer
            opts = [make_optimizer(kind, params, phase.lr, momentum, decay)]
            if plain:  # plain SGD, whatever the run's optimizer (e.g. FedRoD's personal head)
                opts.append(torch.optim.SGD(plain, lr=phase.lr))
            for _ in range(phase.epochs):
                for x, y in loader:
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    for opt in opts:
                        opt.zero_grad(set_to_none=True)
                    loss = loss_fn(model, x, y)
                    loss.backward()
                    if before_step is not None:
                        before_step(model)
                    torch.nn.utils.clip_grad_norm_(params, settings.clip_grad_norm)
                    for opt in opts:
                        opt.step()
                    total += loss.detach()
                    steps += 1
                if not torch.isfinite(total):  # one check per epoch: no device sync per step
                    raise NonFiniteError(
                        f"local training diverged in phase {phase.name!r}: non-finite loss "
                        f"(lower lr, or raise temperature)"
                    )
    finally:
        for p, flag in zip(all_params, flags, strict=True):
            p.requires_grad_(flag)
    return (float(total) / steps if steps else float("nan")), steps


def make_optimizer(
    kind: str, params: list[nn.Parameter], lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """A fresh optimizer of ``kind`` (:data:`~fedetf.methods.base.OPTIMIZERS`); ``momentum`` applies to SGD only."""
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer={kind!r}; allowed: 'sgd', 'adam', 'adamw'")


def round_lr(lr: float, schedule: str, decay: float, server_round: int, num_rounds: int) -> float:
    """The local learning rate of ``server_round`` (1-based): ``constant``; ``exponential``, ``lr * decay**(r-1)``;
    ``cosine`` over the rounds, ``lr * (1 + cos(pi (r-1) / R)) / 2`` (never 0 in the last round)."""
    server_round = max(1, server_round)
    if schedule == "constant":
        return lr
    if schedule == "exponential":
        return lr * decay ** (server_round - 1)
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * (server_round - 1) / max(1, num_rounds)))
    raise ValueError(f"lr-schedule={schedule!r}; allowed: {', '.join(map(repr, LR_SCHEDULES))}")


#: Learning-rate schedules over rounds (run config ``lr-schedule``).
LR_SCHEDULES = ("constant", "exponential", "cosine")


def _ordered(model_params: list[nn.Parameter], chosen: list[nn.Parameter]) -> list[nn.Parameter]:
    """``chosen`` in the model's parameter order, then any that are not the model's (e.g. a detached ETF)."""
    ids = {id(p) for p in chosen}
    own = {id(p) for p in model_params}
    return [p for p in model_params if id(p) in ids] + [p for p in chosen if id(p) not in own]


def train_local(
    model: FedModel,
    method: LocalMethod,
    loader: DataLoader,
    settings: TrainSettings,
    device: torch.device | str = "cpu",
) -> tuple[float, int]:
    """Train with the method's phases, loss and per-step hook; return (mean loss, steps)."""
    return run_phases(model, method.phases(model, settings), loader, settings, device, method.loss, method.before_step)


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


@dataclass
class RoundResult:
    """What one client round produces."""

    shared: Tensors
    extras: dict[str, Tensors]
    train_loss: float
    steps: int
    before: EvalResult
    after: EvalResult
    state: Tensors = field(default_factory=dict)
    diagnostics: dict[str, float] = field(default_factory=dict)


def client_round(
    method: LocalMethod,
    model: FedModel,
    initial: Tensors,
    shared: Tensors,
    rnd: ClientRound,
    train_loader: DataLoader,
    test_loader: DataLoader,
    settings: TrainSettings,
    device: torch.device | str = "cpu",
    diagnose: Callable[[FedModel], dict[str, float]] | None = None,
) -> RoundResult:
    """One client's round: load, adapt, evaluate before training, train, collect, personalise, evaluate.

    ``initial`` is the seeded initial state of ``model`` (the source of fixed
    weights and of personal weights the client has not trained yet); ``rnd.state``
    is updated in place with the client's new personal state. ``diagnose`` runs
    on the locally trained model (before any personal fine-tuning).
    """
    rnd.train_loader, rnd.device = train_loader, device
    method.load(model, shared, initial, rnd.state, rnd.received)
    model.to(device)
    method.begin(model, rnd)
    before = evaluate(method.before_view(model, rnd), test_loader, personal=True, device=device)
    loss, steps = train_local(model, method, train_loader, settings, device)
    out = {k: v.detach().cpu().clone() for k, v in method.shared_state(model).items()}  # not the live model's
    for k, v in out.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise NonFiniteError(f"local training produced non-finite weights in {k!r} (lower lr)")
    extras = method.end(model, rnd, steps)
    for k, v in method.personal_state(model).items():
        rnd.state[f"model.{k}"] = v.detach().cpu().clone()
    diagnostics = diagnose(model) if diagnose is not None else {}
    personal = method.personalize(model, train_loader, settings, device)
    after = evaluate(personal, test_loader, personal=True, device=device)
    return RoundResult(out, extras, loss, steps, before, after, rnd.state, diagnostics)


def initial_state(model: nn.Module) -> Tensors:
    """A detached copy of a freshly built model's state (fixed and not-yet-trained personal weights)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def head_input(model: FedModel, x: torch.Tensor) -> torch.Tensor:
    """The features the classifier compares with its class vectors (L2-normalised for a normalising ETF head)."""
    h = model.features(x)
    return nn.functional.normalize(h, dim=1) if getattr(model.classifier, "normalize", False) else h


def classifier_vectors(model: FedModel) -> torch.Tensor | None:
    """The classifier's class vectors, ``K x d``: the ETF's columns, a linear head's rows, FedRoD's generic head."""
    head = model.classifier
    if hasattr(head, "etf"):
        return head.etf.detach().T
    for name in ("fc", "generic"):
        if isinstance(getattr(head, name, None), nn.Linear):
            return getattr(head, name).weight.detach()
    return None


@torch.no_grad()
def feature_statistics(
    model: FedModel, loader: DataLoader, num_classes: int, device: torch.device | str = "cpu"
) -> ClassStats:
    """Per-class statistics of the classifier's input features over a loader (eval mode)."""
    model.to(device).eval()
    acc = ClassStatsAccumulator(num_classes)
    for x, y in loader:
        acc.update(head_input(model, x.to(device)).cpu(), y)
    return acc.finish()


def generic_diagnostics(
    model: FedModel, loader: DataLoader, num_classes: int, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """NC1, equinorm, equiangularity (and its gap to -1/(K-1)) and self-duality of a model on a test set."""
    stats = feature_statistics(model, loader, num_classes, device)
    m = nc_metrics(stats, classifier_vectors(model))
    return {
        "nc1": m["nc1"],
        "nc_equinorm": m["equinorm"],
        "nc_equiangularity": m["equiangularity"],
        "nc_cos_gap": m["cos_gap"],
        "nc_self_duality": m.get("self_duality", float("nan")),
    }


def client_diagnostics(
    model: FedModel, probe: DataLoader, label_counts: torch.Tensor, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """Angle collapse and space waste of a client's locally trained model.

    ``probe`` is a small class-balanced set (the client has no samples of its
    missing classes). Angles are between the classifier vectors of a learned
    head, or between the probe's class-mean features under a fixed ETF (whose
    vectors never move).
    """
    present = label_counts > 0
    stats = feature_statistics(model, probe, len(label_counts), device)
    fixed = hasattr(model.classifier, "etf")
    vectors = stats.means if fixed else classifier_vectors(model)
    out: dict[str, float] = {}
    if vectors is not None:
        angles = angle_collapse(vectors.to(torch.float64), present)
        out.update(angle_missing=angles["missing_angle"], angle_present=angles["present_angle"])
    out["space_missing_share"] = space_waste(stats, present)["missing_share"]
    return out
