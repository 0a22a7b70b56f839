"""FedBABU against its authors' code: jhoon-oh/FedBABU@e34c15b.

Federated training (``main_fed.py`` 86-87, ``models/Update.py`` 29-79): the head's lr is 0, so it stays at its
random initialisation and only the body is trained and sent. Personalisation (``analysis.ipynb``, cells 2 and 4):
from the received global model, the whole model (body and head) is fine-tuned with plain cross-entropy for
``personalization_epoch = 5`` epochs with ``SGD(lr=1e-3, momentum=0.9)`` and no weight decay. The expected model
below is that loop written out with torch's SGD.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from fedetf.methods import ClientRound, ModelSpec, TrainSettings
from fedetf.methods.personal_heads import FedBABU
from fedetf.train import train_local

SPEC = ModelSpec(backbone="cnn", in_channels=1, num_classes=4, feature_dim=8, seed=0, image_size=8)
RUN = TrainSettings(epochs=1, lr=0.1, momentum=0.9, weight_decay=1e-3, clip_grad_norm=1e9)


def _data() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(6, 1, 8, 8, generator=g), torch.tensor([0, 2] * 3)), batch_size=3)


def test_defaults_are_the_authors() -> None:
    s = FedBABU.Settings()
    assert (s.finetune_epochs, s.finetune_lr, s.finetune, s.finetune_from) == (5, 1e-3, "full", "received")


def test_head_stays_at_its_initialisation_and_is_never_sent() -> None:
    method = FedBABU(SPEC)
    model = method.build_model()
    head = copy.deepcopy(model.classifier.state_dict())
    method.begin(model, ClientRound(torch.tensor([3, 0, 3, 0])))
    train_local(model, method, _data(), RUN)
    assert all(torch.equal(v, model.classifier.state_dict()[k]) for k, v in head.items())
    assert not any(k.startswith("classifier.") for k in method.shared_state(model))


def test_personal_model_fine_tunes_the_whole_received_model_as_the_authors() -> None:
    method = FedBABU(SPEC)
    model = method.build_model()
    received = copy.deepcopy(model)
    method.begin(model, ClientRound(torch.tensor([3, 0, 3, 0])))
    train_local(model, method, _data(), RUN)
    personal = method.personalize(model, _data(), RUN, "cpu")

    opt = torch.optim.SGD(received.parameters(), lr=1e-3, momentum=0.9)
    received.train()
    for _ in range(5):
        for x, y in _data():
            opt.zero_grad()
            F.cross_entropy(received(x), y).backward()
            opt.step()
    for (name, ours), theirs in zip(personal.state_dict().items(), received.state_dict().values(), strict=True):
        torch.testing.assert_close(ours, theirs, msg=name)
