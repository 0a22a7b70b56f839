"""FedETF against its authors' code: ZexiLee/ICCV-2023-FedETF@092ace3.

* Model (``models_dict/resnet.py`` 171-174, 187-201): the projection is one ``Linear(in, K)``; features are
  L2-normalised; logits ``scaling_train * f @ proto`` with a K x K simplex ETF and a learned scale (default 1).
* Training loss (``client_funct.py`` 236-279, ``nodes.py`` 151-158): balanced softmax ``CE(logits + log n_c, y)``
  with counts clamped to 1. Worked example: f = normalize([1, 0.5, -0.2]), the ETF of P = I
  (``proto_classifiers.py`` 11-26: ``sqrt(K/(K-1)) P (I - 11^T/K)``), scale 1, counts [4, 0, 2],
  y = 0: loss 0.249120.
* Personalisation, once after the last round (``main.py`` 147-151, ``client_funct.py`` 169-196): 20 cycles of
  3 epochs of the ETF alone with ``SGD([proto], lr=0.1)`` (no momentum, no weight decay), then 3 epochs of the
  projection alone with ``SGD(lr=0.05, momentum=args.momentum, weight_decay=args.local_wd_rate)``, both with
  plain cross-entropy. Earlier rounds' personal accuracy has no fine-tuning (``main.py`` 119-121).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedetf.methods import ClientRound, ModelSpec, TrainSettings
from fedetf.methods.fedetf import FedETF
from fedetf.models import ETFHead, FedModel

SPEC = ModelSpec(backbone="cnn", in_channels=1, num_classes=3, feature_dim=16, seed=0, image_size=8)
RUN = TrainSettings(epochs=1, lr=0.04, momentum=0.9, weight_decay=5e-4, clip_grad_norm=1e9)


def _data() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(6, 1, 8, 8, generator=g), torch.tensor([0, 2] * 3)), batch_size=3)


def test_projection_is_one_linear_layer_to_k_dims() -> None:
    model = FedETF(SPEC).build_model()
    layers = [m for m in model.feature_head.modules() if not isinstance(m, nn.Sequential | nn.Identity)]
    layers = [m for m in layers if m is not model.feature_head]
    assert len(layers) == 1 and isinstance(layers[0], nn.Linear)
    assert layers[0].out_features == 3 and layers[0].in_features == model.backbone.out_dim
    assert model.classifier.etf.shape == (3, 3)


def test_balanced_softmax_matches_the_worked_example() -> None:
    head = ETFHead(3, 3, seed=0, normalize=True, scale=1.0, mode="none")
    head.etf.copy_((1.5**0.5) * (torch.eye(3) - 1 / 3))  # the ETF built from P = I
    model = FedModel(nn.Identity(), nn.Identity(), head)
    method = FedETF(ModelSpec("cnn", 1, 3, 3, 0))
    method.begin(model, ClientRound(torch.tensor([4, 0, 2])))
    loss = method.loss(model, torch.tensor([[1.0, 0.5, -0.2]]), torch.tensor([0]))
    torch.testing.assert_close(loss, torch.tensor(0.249120), rtol=0, atol=1e-6)


def test_no_fine_tuning_before_the_last_round() -> None:
    method = FedETF(SPEC)
    model = method.build_model()
    method.begin(model, ClientRound(torch.tensor([3, 0, 3]), server_round=4, num_rounds=5))
    assert method.personalize(model, _data(), RUN, "cpu") is model


def test_last_round_personalisation_runs_the_authors_cycles() -> None:
    method = FedETF(SPEC, FedETF.Settings(finetune_cycles=2))  # the authors run 20; two show the alternation
    model = method.build_model()
    method.begin(model, ClientRound(torch.tensor([3, 0, 3]), server_round=5, num_rounds=5))
    ref = copy.deepcopy(model)
    personal = method.personalize(model, _data(), RUN, "cpu")
    assert "etf" in dict(model.classifier.named_buffers())  # the model sent to the server is untouched

    proto = ref.classifier.etf.detach().clone().requires_grad_(True)

    def logits(x: torch.Tensor) -> torch.Tensor:
        return ref.classifier.scale * F.normalize(ref.features(x), dim=1) @ proto

    ref.train()
    for _ in range(2):
        for params, lr, momentum, decay in (
            ([proto], 0.1, 0.0, 0.0),
            (list(ref.feature_head.parameters()), 0.05, 0.9, 5e-4),
        ):
            opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=decay)
            for _ in range(3):
                for x, y in _data():
                    opt.zero_grad()
                    F.cross_entropy(logits(x), y).backward()
                    opt.step()
    torch.testing.assert_close(personal.classifier.etf.detach(), proto.detach())
    for (name, ours), theirs in zip(
        personal.feature_head.state_dict().items(), ref.feature_head.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(ours, theirs, msg=name)
    torch.testing.assert_close(personal.backbone.state_dict(), ref.backbone.state_dict())
