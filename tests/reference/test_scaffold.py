"""SCAFFOLD against its references' rule (Karimireddy et al., ICML 2020, option II).

Xtra-Computing/NIID-Bench@61b901a ``experiments.py`` 297-366 (client: ``c_i+ = c_i - c + (x - y) / (cnt * lr)``,
357-361) and 679-695 (server: ``c += sum(delta_c) / n_parties``); KarhouTam/FL-bench@06e658b
``src/client/scaffold.py`` 24-47 and 55-72 (correction added to the gradient, line 68) and
``src/server/scaffold.py`` 37-51 (``x += mean(y - x)``, ``c += sum(delta_c) / N``). Both default to momentum 0,
where option II equals the mean gradient of the local steps; the expected values below are that rule, worked
by hand, and the quadratic's optimum and true gradients, which are known in closed form.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedetf.methods import ClientRound, ModelSpec, TrainSettings
from fedetf.methods.scaffold import C_KEY, DELTA_C_KEY, Scaffold
from fedetf.train import train_local

SPEC = ModelSpec(backbone="cnn", in_channels=1, num_classes=2, feature_dim=2, seed=0)


class Point(nn.Module):
    """A model that is one point ``w``."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())


class QuadraticScaffold(Scaffold):
    """SCAFFOLD's client on ``f_i(w) = 0.5 ||w - a_i||^2``."""

    def __init__(self, target: torch.Tensor) -> None:
        super().__init__(SPEC)
        self.target = target

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((model.w - self.target) ** 2).sum()


def _steps(k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.zeros(1), torch.zeros(1))] * k


def _client(x: torch.Tensor, target: torch.Tensor, c: torch.Tensor, c_i: torch.Tensor, settings: TrainSettings):
    model = Point(x)
    rnd = ClientRound(torch.ones(2), state={"scaffold.c_i.w": c_i}, received={C_KEY: {"w": c}})
    method = QuadraticScaffold(target)
    method.begin(model, rnd)
    _, steps = train_local(model, method, _steps(settings.epochs), TrainSettings(1, *_rest(settings)))
    delta = method.end(model, rnd, steps)[DELTA_C_KEY]["w"]
    return model.w.detach(), rnd.state["scaffold.c_i.w"], delta


def _rest(s: TrainSettings) -> tuple[float, float, float, float]:
    return s.lr, s.momentum, s.weight_decay, s.clip_grad_norm


def test_plain_sgd_round_equals_option_ii_worked_by_hand() -> None:
    """f(w) = 0.5 (w - 1)^2, x = 0, lr 0.1, K = 3, c = 0.5, c_i = 0.2: y = 0.1897, c_i+ = -0.932333 (both refs)."""
    settings = TrainSettings(epochs=3, lr=0.1, momentum=0.0, weight_decay=0.0, clip_grad_norm=1e9)
    y, c_i, delta = _client(torch.zeros(1), torch.ones(1), torch.tensor([0.5]), torch.tensor([0.2]), settings)
    torch.testing.assert_close(y, torch.tensor([0.1897]))
    torch.testing.assert_close(c_i, torch.tensor([-0.932333]), rtol=0, atol=1e-6)
    torch.testing.assert_close(delta, torch.tensor([-0.932333 - 0.2]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("clip", [1e9, 1.0], ids=["no-clip", "clip-1"])
def test_quadratic_converges_and_control_variates_are_true_gradients_under_momentum(clip: float) -> None:
    """4 clients, f_i = 0.5 ||w - a_i||^2, momentum 0.9: after 30 rounds |w - w*| < 1e-2 (w* = mean a_i)
    and each c_i is within 5% of its true gradient at w*, ``w* - a_i``."""
    targets = torch.tensor([[4.0, 0.0], [-2.0, 1.0], [0.5, -3.0], [1.5, 6.0]])
    settings = TrainSettings(epochs=10, lr=0.05, momentum=0.9, weight_decay=0.0, clip_grad_norm=clip)
    x, c = torch.zeros(2), torch.zeros(2)
    c_is = [torch.zeros(2) for _ in targets]
    for _ in range(30):
        ys, deltas = [], []
        for i, a in enumerate(targets):
            y, c_is[i], delta = _client(x, a, c, c_is[i], settings)
            ys.append(y)
            deltas.append(delta)
        x = torch.stack(ys).mean(0)  # every client takes part: x <- mean y_i, c <- c + mean delta_c_i
        c = c + torch.stack(deltas).mean(0)
    optimum = targets.mean(0)
    assert torch.linalg.norm(x - optimum) < 1e-2
    for a, c_i in zip(targets, c_is, strict=True):
        true = optimum - a
        assert torch.linalg.norm(c_i - true) <= 0.05 * torch.linalg.norm(true), (c_i, true)
