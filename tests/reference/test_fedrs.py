"""FedRS against its authors' rule: lxcnju/FedRepo@617ee01 ``algorithms/fedrs.py`` 78-88 and 182-192.

``cdist = dist / dist.max(); cdist = cdist * (1 - alpha) + alpha; logits = cdist * hs @ W^T`` with a bias-free
classifier (``networks/basic_nets.py`` 83-85), then cross-entropy. Expected numbers: counts [5, 0, 3, 1],
alpha 0.5 give scales [1, 0.5, 0.8, 0.6]; h = [1, 2], W rows [[1, 0], [0, 1], [1, 1], [-1, 1]], y = 2 give
logits [1, 1, 2.4, 0.6] and loss 0.505909 (computed from the reference's lines).
"""

from __future__ import annotations

import torch
from torch import nn

from fedetf.methods import ClientRound, ModelSpec
from fedetf.methods.logit_adjust import FedRS
from fedetf.models import FedModel

SPEC = ModelSpec(backbone="cnn", in_channels=1, num_classes=4, feature_dim=2, seed=0, image_size=8)


def test_graded_scale_on_a_bias_free_head_matches_the_worked_example() -> None:
    method = FedRS(SPEC, FedRS.Settings(alpha=0.5))
    head = method.build_model().classifier
    assert head.fc.bias is None  # bias-free, as the authors' ClassifyNet
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 1.0]]))
    model = FedModel(nn.Identity(), nn.Identity(), head)  # features = the input h
    method.begin(model, ClientRound(torch.tensor([5, 0, 3, 1])))
    loss = method.loss(model, torch.tensor([[1.0, 2.0]]), torch.tensor([2]))
    torch.testing.assert_close(loss, torch.tensor(0.505909), rtol=0, atol=1e-6)


def test_evaluation_uses_the_plain_logits() -> None:
    """FedRepo evaluates with the model's own logits (fedrs.py 225-250): no scaling outside training."""
    method = FedRS(SPEC, FedRS.Settings(alpha=0.1))
    model = method.build_model().eval()
    method.begin(model, ClientRound(torch.tensor([5, 0, 3, 1])))
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    h = model.features(x)
    torch.testing.assert_close(model(x, personal=True), h @ model.classifier.fc.weight.T)
