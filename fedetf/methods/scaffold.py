"""SCAFFOLD (Karimireddy et al., ICML 2020), option II control variates, correct under any momentum."""

from __future__ import annotations

import torch

from fedetf.methods.base import ClientRound, LocalMethod, Phase, Tensors, TrainSettings
from fedetf.models import FedModel

#: The client's change of its control variate (reply) and the server's control variate (broadcast).
DELTA_C_KEY, C_KEY = "scaffold.delta_c", "scaffold.c"


class Scaffold(LocalMethod):
    """SCAFFOLD's client: every gradient is corrected by ``c - c_i``.

    The new control variate is the mean of the client's own (uncorrected)
    gradients over its ``K`` local steps, weight decay included:
    ``c_i+ = (1/K) sum_k g_i(y_k)``. With plain SGD this is exactly option II,
    ``c_i+ = c_i - c + (x - y) / (K * lr)``; unlike option II it stays the mean
    gradient under momentum (where ``(x - y) / (K * lr)`` overstates it several
    times) and under clipping. The client keeps ``c_i`` and sends
    ``delta_c = c_i+ - c_i``; the server's ``c`` arrives as the record :data:`C_KEY`.
    """

    name = "scaffold"
    paper = "Karimireddy et al., ICML 2020"
    shares = "all weights + the change of its control variate"
    keeps = "its control variate c_i"
    sgd_only = "its control variates correct SGD steps (Karimireddy et al. analyse SGD only)"
    objective = "CE, gradient corrected by c - c_i"

    def begin(self, model: FedModel, rnd: ClientRound) -> None:
        params = dict(model.named_parameters())
        self._names = [n for n, p in params.items() if p.requires_grad]
        received = rnd.received.get(C_KEY, {})
        c = {n: received.get(n, torch.zeros_like(params[n])).to(params[n]) for n in self._names}
        self._ci = {n: rnd.state.get(f"scaffold.c_i.{n}", torch.zeros_like(params[n])).cpu() for n in self._names}
        self._correction: Tensors = {n: c[n] - self._ci[n].to(params[n]) for n in self._names}
        self._grad_sum: Tensors = {n: torch.zeros_like(params[n]) for n in self._names}
        self._decay = 0.0

    def phases(self, model: FedModel, base: TrainSettings) -> list[Phase]:
        self._decay = base.weight_decay
        return super().phases(model, base)

    def before_step(self, model: FedModel) -> None:
        params = dict(model.named_parameters())
        for n in self._names:
            p = params[n]
            if p.grad is None:
                continue
            if self._correction[n].device != p.device:
                self._correction[n] = self._correction[n].to(p.device)
                self._grad_sum[n] = self._grad_sum[n].to(p.device)
            self._grad_sum[n].add_(p.grad).add_(p.detach(), alpha=self._decay)  # g_i(y_k), as SGD sees it
            p.grad.add_(self._correction[n])

    def sends_records(self) -> bool:
        return True

    def end(self, model: FedModel, rnd: ClientRound, steps: int) -> dict[str, Tensors]:
        if steps == 0:
            return {DELTA_C_KEY: {n: torch.zeros_like(self._ci[n]) for n in self._names}}
        delta: Tensors = {}
        for n in self._names:
            new_ci = self._grad_sum[n].cpu() / steps
            delta[n] = new_ci - self._ci[n]
            rnd.state[f"scaffold.c_i.{n}"] = new_ci
        return {DELTA_C_KEY: delta}
