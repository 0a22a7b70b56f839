"""FedGELA (Fan et al., NeurIPS 2023): a fixed global simplex ETF, locally adapted by class proportions.

Defaults are the authors' released code. Principled variants (docs/methods.md) are
settings of this one method, each defaulting to the authors' behaviour: normalised features with a learned scale
(``features``), an additive log-prior (``prior``), a soft mask for missing
classes (``missing_alpha``), vacant-class distillation (``distill``), and the
nearest-ETF rotation on the server (``nearest_etf``; clients then send class
feature statistics). d = K is ``feature-dim = K``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fedetf.etf import simplex_etf
from fedetf.methods.base import ClientRound, LocalMethod, Tensors, setting
from fedetf.models import ETFHead, FedModel

#: A client's class feature statistics (reply) and the server's rotated ETF (broadcast).
CLASS_STATS_KEY, ETF_KEY = "fedgela.class_stats", "fedgela.etf"


def adaptation_vector(label_counts: torch.Tensor, mode: str = "proportion", missing: float = 0.0) -> torch.Tensor:
    """FedGELA's ``Ew[c] = K * n_c / n`` (``mode="proportion"``) or ones (``"none"``).

    ``missing`` replaces the entries of locally absent classes (0 in the
    authors' code; FedRS-style soft mask otherwise).
    """
    counts = label_counts.to(torch.float32)
    if mode == "none":
        return torch.ones_like(counts)
    if mode != "proportion":
        raise ValueError(f"adaptation={mode!r} is unknown; allowed: ['none', 'proportion']")
    total = counts.sum()
    if total <= 0:
        raise ValueError("adaptation vector needs at least one local sample")
    ew = len(counts) * counts / total
    return torch.where(counts > 0, ew, torch.full_like(ew, missing))


def log_prior(label_counts: torch.Tensor) -> torch.Tensor:
    """``log(max(n_c, 1))``: the additive term of balanced softmax / logit adjustment."""
    return label_counts.to(torch.float32).clamp(min=1).log()


def missing_class_kl(teacher: torch.Tensor, student: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(teacher_m) || softmax(student_m))`` over the missing classes ``m``, mean over the batch."""
    if int(missing.sum()) < 2:  # a distribution over fewer than two classes carries nothing
        return student.new_zeros(())
    t = F.log_softmax(teacher[:, missing], dim=1)
    s = F.log_softmax(student[:, missing], dim=1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean")


class FedGELA(LocalMethod):
    """FedGELA's client: cross-entropy on ``h^T M diag(Ew) / T``; the ETF is never trained or sent."""

    name = "fedgela"
    paper = "Fan et al., NeurIPS 2023"
    shares = "backbone + feature head (with BatchNorm statistics); not the ETF"
    keeps = "nothing (Ew is recomputed from local label counts)"
    objective = "CE on h^T M diag(Ew) / T"
    personal_model = True
    head = "etf"
    local_prefixes = ("classifier.etf",)

    @dataclass(frozen=True)
    class Settings:
        temperature: float = setting(0.2, "T of the locally adapted logits (code 0.2; README example 1e-5)", gt=0)
        adaptation: str = setting(
            "proportion", "Ew: K * local class share, or none (Ew = 1)", choices=("proportion", "none")
        )
        features: str = setting(
            "batchnorm",
            "BatchNorm1d on features (authors), or L2-normalised with a learned scale (variant 1)",
            choices=("batchnorm", "normalized"),
        )
        scale: float = setting(10.0, "initial learned logit scale when features='normalized'", gt=0)
        prior: str = setting(
            "multiplicative",
            "local adaptation: Ew and T (authors), or additive log n_c (variant 2)",
            choices=("multiplicative", "additive"),
        )
        missing_alpha: float = setting(0.0, "Ew of locally missing classes (0 = authors; variant 3)", ge=0, le=1)
        distill: float = setting(0.0, "weight of KL to the received model on missing classes (variant 4)", ge=0)
        nearest_etf: bool = setting(False, "rotate the ETF to the class-mean features on the server (variant 5)")
        etf_delta: float = setting(0.1, "weight of the previous ETF in the rotation target", ge=0)
        etf_warmup: int = setting(1, "rounds before the first rotation", ge=0)

    @property
    def feature_norm(self) -> str:  # type: ignore[override]
        return "batchnorm" if self.settings.features == "batchnorm" else "none"

    def head_options(self) -> dict[str, Any]:
        s = self.settings
        normalized = s.features == "normalized"
        return {
            "temperature": s.temperature,
            "normalize": normalized,
            "scale": s.scale if normalized else None,
            "mode": s.prior,
        }

    def load(self, model, shared, initial, state, received=None) -> None:  # type: ignore[no-untyped-def]
        super().load(model, shared, initial, state, received)
        if received and ETF_KEY in received:  # the server's nearest-ETF rotation
            model.classifier.etf.copy_(received[ETF_KEY]["etf"])

    def begin(self, model: FedModel, rnd: ClientRound) -> None:
        head = model.classifier
        assert isinstance(head, ETFHead)
        s = self.settings
        counts = rnd.label_counts
        head.set_adaptation(adaptation_vector(counts, s.adaptation, s.missing_alpha))
        head.set_log_prior(log_prior(counts))
        self._missing = counts == 0
        self._teacher = None
        if s.distill > 0 and int(self._missing.sum()) >= 2:
            self._teacher = copy.deepcopy(model).eval().requires_grad_(False)

    def loss(self, model: FedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = model.features(x)
        loss = self.criterion(model.classifier(h, personal=True), y)
        if self._teacher is not None:
            with torch.no_grad():
                teacher = self._teacher(x)
            student = model.classifier.generic(h)
            loss = loss + self.settings.distill * missing_class_kl(teacher, student, self._missing.to(x.device))
        return loss

    def end(self, model: FedModel, rnd: ClientRound, steps: int) -> dict[str, Tensors]:
        if not self.settings.nearest_etf:
            return {}
        sums, counts = class_feature_sums(model, rnd.train_loader, len(rnd.label_counts), rnd.device)
        return {CLASS_STATS_KEY: {"sums": sums, "counts": counts}}

    def sends_records(self) -> bool:
        return bool(self.settings.nearest_etf)

    def server_kwargs(self) -> dict[str, Any]:
        s = self.settings
        if not s.nearest_etf:
            return {}
        etf = simplex_etf(self.spec.num_classes, self.feature_dim(), self.spec.seed)
        return {"initial_etf": etf.numpy(), "delta": s.etf_delta, "warmup": s.etf_warmup}


@torch.no_grad()
def class_feature_sums(
    model: FedModel, loader: Any, num_classes: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums (K x d) and counts (K) of the features the ETF head sees, in eval mode."""
    model.to(device).eval()
    head = model.classifier
    sums: torch.Tensor | None = None
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for x, y in loader:
        h = model.features(x.to(device))
        if getattr(head, "normalize", False):
            h = F.normalize(h, dim=1)
        h, y = h.double().cpu(), y.cpu()
        if sums is None:
            sums = torch.zeros(num_classes, h.shape[1], dtype=torch.float64)
        sums.index_add_(0, y, h)
        counts += torch.bincount(y, minlength=num_classes).double()
    assert sums is not None, "class_feature_sums needs a non-empty loader"
    return sums.float(), counts.float()
