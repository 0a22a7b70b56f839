"""Ditto against its authors' code: litian96/ditto@26d9b29 ``flearn/trainers_MTL/ditto.py`` 85-125.

Per local step the personal model moves by plain SGD on its loss plus the proximal pull towards the
global model the client received this round (lines 116-118):
``v <- v - lr * (grad F_i(v) + lam * (v - w_global))``; the global model takes an ordinary SGD step
(121-125) and only it is sent (129). Personal models start as copies of the initial global model
(``fedbase.py`` 22-28). TsingZ0/PFLlib@d832e76 ``clientditto.py`` 64-89 with ``fedoptimizer.py`` 64-75 is the
same rule (``plocal_epochs`` epochs, prox to the received model). Worked example: v = 1.0, w_global = 0.5,
grad 0.2, lam 1, lr 0.05: v' = 1 - 0.05 * (0.2 + 0.5) = 0.965; a second step: 0.965 - 0.05 * (0.2 + 0.465)
= 0.93175.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedetf.methods import ClientRound, ModelSpec, TrainSettings
from fedetf.methods.ditto import PERSONAL_PREFIX, Ditto
from fedetf.methods.fedavg import FedAvg
from fedetf.train import client_round, initial_state

SPEC = ModelSpec(backbone="cnn", in_channels=1, num_classes=4, feature_dim=8, seed=0, image_size=8)


class Point(nn.Module):
    """A one-weight model whose output is the weight itself."""

    def __init__(self, w: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([w]))

    def forward(self, x: torch.Tensor, personal: bool = False) -> torch.Tensor:
        return self.w.expand(len(x))


def _point_round(received: float, state: dict, initial: float, batches: int, epochs: int) -> torch.Tensor:
    """One personal update of Ditto on ``F_i(v) = 0.2 v`` (gradient 0.2), lr 0.05, lam 1."""
    method = Ditto(SPEC, Ditto.Settings(lam=1.0, personal_epochs=epochs))
    method.criterion = lambda out, y: 0.2 * out.sum()  # type: ignore[assignment]
    model = Point(received)
    method.load(model, {"w": torch.tensor([received])}, {"w": torch.tensor([initial])}, state)
    loader = [(torch.zeros(1), torch.zeros(1))] * batches
    rnd = ClientRound(torch.ones(2), state=dict(state), train_loader=loader)
    method.begin(model, rnd)
    method.phases(model, TrainSettings(epochs=1, lr=0.05, momentum=0.9, weight_decay=0.1))
    with torch.no_grad():
        model.w.fill_(-3.0)  # the global model's own local training moves it; the anchor stays the received one
    method.end(model, rnd, steps=1)
    return rnd.state[f"{PERSONAL_PREFIX}w"]


def test_personal_step_worked_example() -> None:
    torch.testing.assert_close(
        _point_round(0.5, {f"{PERSONAL_PREFIX}w": torch.tensor([1.0])}, 9.0, 1, 1), torch.tensor([0.965])
    )


@pytest.mark.parametrize(("batches", "epochs"), [(2, 1), (1, 2)])
def test_two_plain_sgd_steps_towards_the_received_model(batches: int, epochs: int) -> None:
    """Plain SGD whatever the run's momentum and weight decay (authors: GradientDescentOptimizer)."""
    v = _point_round(0.5, {f"{PERSONAL_PREFIX}w": torch.tensor([1.0])}, 9.0, batches, epochs)
    torch.testing.assert_close(v, torch.tensor([0.93175]))


def test_first_personal_model_is_the_initial_model() -> None:
    """No personal model yet: v starts from the initial weights (2.0), not the received ones (0.5)."""
    torch.testing.assert_close(_point_round(0.5, {}, 2.0, 1, 1), torch.tensor([2.0 - 0.05 * (0.2 + 1.5)]))


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(2)
    return DataLoader(TensorDataset(torch.randn(6, 1, 8, 8, generator=g), torch.tensor([0, 2, 1] * 2)), batch_size=3)


def test_round_on_a_model_sends_fedavgs_update_and_keeps_the_reference_personal_model() -> None:
    run = TrainSettings(epochs=1, lr=0.05, momentum=0.9, weight_decay=1e-3, clip_grad_norm=1e9)
    lam = 0.5
    method = Ditto(SPEC, Ditto.Settings(lam=lam, personal_epochs=2))
    model = method.build_model()
    init = initial_state(model)
    received = {k: v + 0.01 for k, v in method.shared_state(init).items()}  # a global model unlike the initial one
    counts = torch.tensor([2, 2, 2, 0])

    # The references' personal loop, written out: from the initial model, 2 epochs of plain SGD steps
    # v <- v - lr * (grad CE(v) + lam * (v - w_received)); BatchNorm statistics update in train mode.
    v = method.build_model()
    v.load_state_dict(init)
    v.train()
    anchor = {n: received[n] for n, _ in v.named_parameters()}
    for _ in range(2):
        for x, y in _loader():
            params = dict(v.named_parameters())
            grads = torch.autograd.grad(F.cross_entropy(v(x), y), list(params.values()))
            with torch.no_grad():
                for (n, p), g in zip(params.items(), grads, strict=True):
                    p -= run.lr * (g + lam * (p - anchor[n]))

    fedavg = client_round(
        FedAvg(SPEC), method.build_model(), init, received, ClientRound(counts), _loader(), _loader(), run
    )
    rnd = ClientRound(counts)
    out = client_round(method, model, init, received, rnd, _loader(), _loader(), run)
    for k, w in fedavg.shared.items():  # the global model's update is FedAvg's
        torch.testing.assert_close(out.shared[k], w)
    for k, w in v.state_dict().items():
        torch.testing.assert_close(rnd.state[PERSONAL_PREFIX + k], w, rtol=1e-5, atol=1e-6)
    personal = method.personalize(model, _loader(), run, "cpu")
    assert personal is not model
    for k, w in personal.state_dict().items():
        assert torch.equal(w, rnd.state[PERSONAL_PREFIX + k])
