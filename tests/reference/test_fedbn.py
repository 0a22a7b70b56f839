"""FedBN against its authors' code: med-air/FedBN@2fa38ad ``federated/fed_digits.py`` 164-175 (``communication``,
mode fedbn).

Every state-dict entry of a BatchNorm layer (weight, bias, running_mean, running_var, num_batches_tracked)
stays on its client; every other entry is averaged and sent back. The authors pick BatchNorm entries by the
substring ``'bn'`` in their names (their layers are named ``bn1``...); fedetf's BatchNorm modules have other
names, so the expected sets below are written out per backbone. Worked example: two clients with a conv
weight 1.0 and 3.0 and BatchNorm weights 0.5 and 2.0: after the round both convs are 2.0 (uniform weights,
line 247) and each BatchNorm weight is unchanged.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from fedetf.methods import ClientRound, ModelSpec, TrainSettings
from fedetf.methods.fedbn import FedBN
from fedetf.train import client_round, initial_state

SPEC = ModelSpec(backbone="cnn", in_channels=1, num_classes=4, feature_dim=8, seed=0, image_size=8)
BN_ENTRIES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
CNN_BN_KEYS = {f"backbone.features.{i}.{e}" for i in (1, 5) for e in BN_ENTRIES}


def test_cnn_keeps_exactly_its_two_batchnorm_layers() -> None:
    method = FedBN(SPEC)
    model = method.build_model()
    local = {k for k in model.state_dict() if method.is_local(k)}
    assert local == CNN_BN_KEYS
    assert set(method.shared_state(model)) == set(model.state_dict()) - local
    assert set(method.personal_state(model)) == local


def test_simple_cnn_has_no_batchnorm_so_everything_is_shared() -> None:
    spec = ModelSpec(backbone="simple-cnn", in_channels=1, num_classes=4, feature_dim=8, seed=0, image_size=28)
    method = FedBN(spec)
    model = method.build_model()
    assert method.shared_state(model).keys() == model.state_dict().keys()


def test_resnet18_keeps_all_twenty_batchnorm_layers() -> None:
    spec = ModelSpec(backbone="resnet18", in_channels=3, num_classes=4, feature_dim=8, seed=0, image_size=32)
    method = FedBN(spec)
    model = method.build_model()
    layers = ["backbone.bn1"] + [f"backbone.layer{i}.{b}.bn{j}" for i in (1, 2, 3, 4) for b in (0, 1) for j in (1, 2)]
    layers += [f"backbone.layer{i}.0.downsample.1" for i in (2, 3, 4)]
    assert len(layers) == 20
    local = {k for k in model.state_dict() if method.is_local(k)}
    assert local == {f"{m}.{e}" for m in layers for e in BN_ENTRIES}


def test_averaged_weights_with_each_clients_own_batchnorm_worked_example() -> None:
    method = FedBN(SPEC)
    model = method.build_model()
    init = initial_state(model)
    conv, bn = "backbone.features.0.weight", "backbone.features.1.weight"
    states = []
    for conv_value, bn_value in ((1.0, 0.5), (3.0, 2.0)):
        s = {k: v.clone() for k, v in init.items()}
        s[conv].fill_(conv_value)
        s[bn].fill_(bn_value)
        states.append(s)
    sent = [method.shared_state(s) for s in states]
    assert all(bn not in s for s in sent)
    average = {k: (sent[0][k].double() + sent[1][k].double()).div(2).to(sent[0][k].dtype) for k in sent[0]}
    for s, bn_value in zip(states, (0.5, 2.0), strict=True):
        FedBN(SPEC).load(model, average, init, {f"model.{k}": s[k] for k in CNN_BN_KEYS})
        assert torch.all(model.state_dict()[conv] == 2.0)
        assert torch.all(model.state_dict()[bn] == bn_value)


def test_a_round_keeps_the_trained_running_statistics_on_the_client() -> None:
    method = FedBN(SPEC)
    model = method.build_model()
    init = initial_state(model)
    g = torch.Generator().manual_seed(3)
    loader = DataLoader(TensorDataset(torch.randn(6, 1, 8, 8, generator=g) + 2.0, torch.tensor([0, 1] * 3)), 3)
    rnd = ClientRound(torch.tensor([3, 3, 0, 0]))
    run = TrainSettings(epochs=1, lr=0.05, momentum=0.0, weight_decay=0.0, clip_grad_norm=1e9)
    out = client_round(method, model, init, method.shared_state(init), rnd, loader, loader, run)
    assert not any(k.startswith(("backbone.features.1.", "backbone.features.5.")) for k in out.shared)
    assert set(rnd.state) == {f"model.{k}" for k in CNN_BN_KEYS}
    assert int(rnd.state["model.backbone.features.1.num_batches_tracked"]) == 2
    assert not torch.equal(
        rnd.state["model.backbone.features.1.running_mean"], init["backbone.features.1.running_mean"]
    )
