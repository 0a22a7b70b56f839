"""SCAFFOLD (Karimireddy et al., ICML 2020), option II control variates."""

from __future__ import annotations

import torch

from fedetf.methods.base import ClientRound, LocalMethod, Tensors
from fedetf.models import FedModel


class Scaffold(LocalMethod):
    """SCAFFOLD's client: every gradient is corrected by ``c - c_i``.

    After ``K`` local steps at lr ``eta`` from the global weights ``x`` to ``y``:
    ``c_i+ = c_i - c + (x - y) / (K * eta)``. The client keeps ``c_i`` and sends
    ``delta_c = c_i+ - c_i``; the server's ``c`` arrives as the record ``scaffold.c``.
    """

    name = "scaffold"
    paper = "Karimireddy et al., ICML 2020"
    shares = "all weights + the change of its control variate"
    keeps = "its control variate c_i"
    objective = "CE, gradient corrected by c - c_i"
    server = "strategies.scaffold:Scaffold"

    def begin(self, model: FedModel, rnd: ClientRound) -> None:
        self._names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        received = rnd.received.get("scaffold.c", {})
        self._x = {n: params[n].detach().clone() for n in self._names}
        self._c = {n: received.get(n, torch.zeros_like(params[n])).to(params[n]) for n in self._names}
        self._ci = {
            n: rnd.state.get(f"scaffold.c_i.{n}", torch.zeros_like(params[n])).to(params[n]) for n in self._names
        }
        self._correction: Tensors = {n: self._c[n] - self._ci[n] for n in self._names}
        self._lr = 0.0

    def phases(self, model, base):  # type: ignore[no-untyped-def]
        phases = super().phases(model, base)
        self._lr = phases[0].lr
        return phases

    def before_step(self, model: FedModel) -> None:
        params = dict(model.named_parameters())
        for n in self._names:
            p = params[n]
            if p.grad is not None:
                corr = self._correction[n]
                if corr.device != p.device:
                    corr = self._correction[n] = corr.to(p.device)
                p.grad.add_(corr)

    def end(self, model: FedModel, rnd: ClientRound, steps: int) -> dict[str, Tensors]:
        if steps == 0:
            return {"scaffold.delta_c": {n: torch.zeros_like(self._ci[n]) for n in self._names}}
        params = dict(model.named_parameters())
        delta: Tensors = {}
        for n in self._names:
            y = params[n].detach().cpu()
            new_ci = self._ci[n].cpu() - self._c[n].cpu() + (self._x[n].cpu() - y) / (steps * self._lr)
            delta[n] = new_ci - self._ci[n].cpu()
            rnd.state[f"scaffold.c_i.{n}"] = new_ci
        return {"scaffold.delta_c": delta}
