"""Local-only training against its references: Yutong-Dai/FedNH@60c3161 ``main.py`` 172-186 and
TsingZ0/PFLlib@d832e76 ``system/flcore/servers/serverlocal.py`` 22-39.

Each client starts from the initial model (``client.set_params(init_weight)``, FedNH ``main.py`` 178) and, in
every round it takes part in, runs the ordinary local training of its own model
(``FedAvgClient.training``, ``src/flbase/strategies/FedAvg.py`` 32-69: a fresh ``SGD(lr, momentum,
weight_decay)`` each round, cross-entropy, one step per batch); nothing is sent or averaged. The expected
model below is that loop written out with torch's SGD.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from fedetf.methods import ClientRound, ModelSpec, TrainSettings
from fedetf.methods.local import LocalOnly
from fedetf.train import client_round, initial_state

SPEC = ModelSpec(backbone="cnn", in_channels=1, num_classes=4, feature_dim=8, seed=0, image_size=8)
RUN = TrainSettings(epochs=2, lr=0.05, momentum=0.9, weight_decay=1e-3, clip_grad_norm=1e9)


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(1)
    return DataLoader(TensorDataset(torch.randn(6, 1, 8, 8, generator=g), torch.tensor([0, 2, 1] * 2)), batch_size=3)


def _authors_rounds(model: torch.nn.Module, rounds: int) -> dict[str, torch.Tensor]:
    """The references' local loop: ``rounds`` x (fresh SGD, ``epochs`` epochs of CE steps), from the initial model."""
    model = copy.deepcopy(model)
    for _ in range(rounds):
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=RUN.lr, momentum=RUN.momentum, weight_decay=RUN.weight_decay)
        for _ in range(RUN.epochs):
            for x, y in _loader():
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
    return model.state_dict()


def test_nothing_is_sent_and_every_weight_is_the_clients_own() -> None:
    method = LocalOnly(SPEC)
    model = method.build_model()
    assert method.shared_state(model) == {}
    assert set(method.personal_state(model)) == set(model.state_dict())
    assert LocalOnly.generic_model is False and LocalOnly.personal_model is True


def test_two_rounds_equal_the_references_local_loop() -> None:
    method = LocalOnly(SPEC)
    model = method.build_model()
    init = initial_state(model)
    expected = _authors_rounds(model, rounds=2)
    rnd = ClientRound(torch.tensor([2, 2, 2, 0]))
    first = client_round(LocalOnly(SPEC), model, init, {}, rnd, _loader(), _loader(), RUN)
    assert first.shared == {} and first.extras == {}
    assert set(rnd.state) == {f"model.{k}" for k in init}
    rnd = ClientRound(torch.tensor([2, 2, 2, 0]), state=rnd.state)  # the next round, same client
    second = client_round(LocalOnly(SPEC), model, init, {}, rnd, _loader(), _loader(), RUN)
    for k, v in expected.items():
        torch.testing.assert_close(rnd.state[f"model.{k}"], v, rtol=1e-5, atol=1e-6)
    # The personal view before a round is the client's own model as it left the previous round.
    assert second.before.acc == first.after.acc and second.before.loss == first.after.loss


def test_a_new_client_starts_from_the_initial_model_not_another_clients() -> None:
    method = LocalOnly(SPEC)
    model = method.build_model()
    init = initial_state(model)
    rnd = ClientRound(torch.tensor([2, 2, 2, 0]))
    client_round(method, model, init, {}, rnd, _loader(), _loader(), RUN)
    LocalOnly(SPEC).load(model, {}, init, {})
    for k, v in model.state_dict().items():
        assert torch.equal(v, init[k])
