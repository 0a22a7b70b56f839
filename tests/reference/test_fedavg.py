"""FedAvg's client against its references: plain CE on a learned linear head, every weight shared,
trained by the FedGELA authors' local SGD.

References
----------
* McMahan et al., AISTATS 2017: the client minimises the plain cross-entropy of its
  model and sends all its weights.
* MediaBrain-SJTU/FedGELA @ b5b20d5, ``FedAvg.py`` 174-213 (``train_net``; the same
  loop as ``FedGELA.py`` 174-213, the file differs only in ``--proxy cls``, a learned
  ``nn.Linear(feat_dim, class_num)`` head, ``model.py`` 298-302): per batch
  ``optimizer.zero_grad(); loss.backward();
  nn.utils.clip_grad_norm_(net.parameters(), max_norm=20); optimizer.step()`` with
  ``optim.SGD(lr, momentum=0.9, weight_decay=reg)`` (lines 186-187, 211-213;
  defaults ``--lr 0.01 --reg 1e-4 --epochs 10``, lines 168-170). The authors'
  loop multiplies the head's output by ``Ew * ETF`` even with the ``cls`` proxy,
  so only its optimiser step is taken from it; the loss is McMahan's plain CE.

The expected weights are computed here by writing torch's SGD rule out by hand
(``buf = mu * buf + (clip(g) + wd * w)``, ``w -= lr * buf``; ``clip`` scales all
gradients by ``min(1, max_norm / (||g|| + 1e-6))``), not by calling fedetf's loop.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close
from torch.utils.data import DataLoader, TensorDataset

from fedetf.methods import ClientRound, ModelSpec, TrainSettings
from fedetf.methods.fedavg import FedAvg
from fedetf.train import train_local

SPEC = ModelSpec(backbone="cnn", in_channels=1, num_classes=4, feature_dim=8, seed=0, image_size=8)
COUNTS = torch.tensor([4, 3, 3, 2])


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(12, 1, 8, 8, generator=g), torch.tensor([0, 1, 2, 3, 0, 1, 2, 0, 0, 1, 2, 3])


def _manual_sgd(
    model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], s: TrainSettings
) -> tuple[list[float], list[float]]:
    """torch.optim.SGD (momentum, weight decay, dampening 0) with global-norm clipping, written out."""
    params = list(model.parameters())
    bufs: list[torch.Tensor | None] = [None] * len(params)
    losses, norms = [], []
    model.train()
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, params)
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item()
        coef = min(1.0, s.clip_grad_norm / (norm + 1e-6))
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(params, grads, strict=True)):
                d = g * coef + s.weight_decay * p
                bufs[i] = d if bufs[i] is None else s.momentum * bufs[i] + d
                p -= s.lr * bufs[i]
        losses.append(loss.item())
        norms.append(norm)
    return losses, norms


def test_two_local_steps_equal_the_authors_sgd_with_momentum_weight_decay_and_clipping() -> None:
    method = FedAvg(SPEC)
    model = method.build_model()
    method.begin(model, ClientRound(COUNTS))
    expected = copy.deepcopy(model)
    x, y = _data()
    settings = TrainSettings(epochs=1, lr=0.05, momentum=0.9, weight_decay=1e-4, clip_grad_norm=0.05)
    loader = DataLoader(TensorDataset(x, y), batch_size=6)

    mean_loss, steps = train_local(model, method, loader, settings)
    losses, norms = _manual_sgd(expected, [(x[:6], y[:6]), (x[6:], y[6:])], settings)

    assert steps == 2
    assert max(norms) > settings.clip_grad_norm  # the clipping is exercised, not vacuous
    assert_close(mean_loss, sum(losses) / 2, rtol=1e-6, atol=1e-7)
    got, want = model.state_dict(), expected.state_dict()
    assert got.keys() == want.keys()
    for k in want:  # parameters and BatchNorm statistics alike
        assert_close(got[k], want[k], rtol=1e-5, atol=1e-7, msg=k)


def test_head_is_a_learned_linear_layer_and_every_weight_is_shared() -> None:
    method = FedAvg(SPEC)
    model = method.build_model()
    linears = [m for m in model.classifier.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1 and linears[0].bias is not None
    assert linears[0].weight.shape == (SPEC.num_classes, SPEC.feature_dim) and linears[0].weight.requires_grad
    assert method.shared_state(model).keys() == model.state_dict().keys()  # McMahan: the whole model is averaged
    x, _ = _data()
    model.eval()
    h = model.features(x)
    assert_close(model(x, personal=True), h @ linears[0].weight.T + linears[0].bias)  # personal view = global model
