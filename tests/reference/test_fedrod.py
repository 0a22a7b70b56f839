"""FedRoD against its references: ZexiLee/ICCV-2023-FedETF@092ace3 ``client_funct.py`` 281-313 (``client_fedrod``)
and TsingZ0/PFLlib@d832e76 ``system/flcore/clients/clientrod.py`` 41-59.

Per batch: (1) body and generic head step on the balanced softmax ``CE(g + log n_c, y)`` with the node's optimiser
(class counts clamped to 1 as in ``nodes.py`` 157); (2) the personal head steps on ``CE(g.detach() + p(h.detach()),
y)`` with ``SGD(p_head.parameters(), lr=args.lr)``: plain SGD, re-created each round (line 288). Worked example:
g = [2, 1, 0.5], p = [0.1, -0.3, 0.2], counts [3, 0, 1], y = 0: balanced loss 0.179821, personal loss 0.400917.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedetf.methods import ClientRound, ModelSpec, TrainSettings
from fedetf.methods.fedrod import FedRoD
from fedetf.models import DualHead, FedModel
from fedetf.train import train_local

COUNTS = torch.tensor([3, 0, 1])


def test_loss_is_the_balanced_generic_loss_plus_the_personal_loss_of_the_worked_example() -> None:
    head = DualHead(1, 3)
    with torch.no_grad():
        head.generic.weight.zero_()
        head.personal.weight.zero_()
        head.generic.bias.copy_(torch.tensor([2.0, 1.0, 0.5]))
        head.personal.bias.copy_(torch.tensor([0.1, -0.3, 0.2]))
    model = FedModel(nn.Identity(), nn.Identity(), head)
    method = FedRoD(ModelSpec("cnn", 1, 3, 1, 0))
    method.begin(model, ClientRound(COUNTS))
    loss = method.loss(model, torch.ones(1, 1), torch.tensor([0]))
    torch.testing.assert_close(loss, torch.tensor(0.179821 + 0.400917), rtol=0, atol=1e-6)


def test_personal_head_trains_with_plain_sgd_and_the_rest_with_the_runs_optimiser() -> None:
    """Two steps of the reference loop, written out with its two optimisers, equal fedetf's round."""
    spec = ModelSpec(backbone="cnn", in_channels=1, num_classes=3, feature_dim=4, seed=0, image_size=8)
    settings = TrainSettings(epochs=2, lr=0.1, momentum=0.9, weight_decay=0.05, clip_grad_norm=1e9)
    g = torch.Generator().manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(4, 1, 8, 8, generator=g), torch.tensor([0, 2, 0, 2])), batch_size=4)
    method = FedRoD(spec)
    model = method.build_model()
    ref = copy.deepcopy(model)
    method.begin(model, ClientRound(COUNTS))
    train_local(model, method, data, settings)

    p_head = ref.classifier.personal
    body = [p for n, p in ref.named_parameters() if not n.startswith("classifier.personal.")]
    opt = torch.optim.SGD(body, lr=0.1, momentum=0.9, weight_decay=0.05)
    opt_p = torch.optim.SGD(p_head.parameters(), lr=0.1)
    ref.train()
    for _ in range(settings.epochs):
        for x, y in data:
            opt.zero_grad()
            opt_p.zero_grad()
            feature = ref.features(x)
            logit_g = ref.classifier.generic(feature)
            F.cross_entropy(logit_g + COUNTS.clamp(min=1).float().log(), y).backward()
            opt.step()
            F.cross_entropy(logit_g.detach() + p_head(feature.detach()), y).backward()
            opt_p.step()
    for (name, ours), theirs in zip(model.state_dict().items(), ref.state_dict().values(), strict=True):
        torch.testing.assert_close(ours, theirs, msg=name)
