"""FedProx's client against its references: CE + (mu / 2) ||w - w_global||^2.

References
----------
* litian96/FedProx @ d2a4501 (the authors'), ``flearn/optimizer/pgd.py`` 29-36:
  ``var <- var - lr * (grad + mu * (var - vstar))``, ``vstar`` the received global
  model (set in ``set_params``, 59-64); plain SGD.
* KarhouTam/FL-bench @ 06e658b, ``src/client/fedprox.py`` 8-25: ``global_params``
  copied at the start of ``fit``; after ``loss.backward()``,
  ``w.grad += mu * (w - w_t)``, then the (momentum) optimiser's step.
* Flower's FedProx strategy sends ``proximal-mu`` in the fit config; the client adds
  ``mu / 2 * ||w - w_global||^2`` to its loss.

Expected values are written out here in plain torch from those rules.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch.testing import assert_close
from torch.utils.data import DataLoader, TensorDataset

from fedetf.methods import ClientRound, ModelSpec, TrainSettings
from fedetf.methods.fedprox import FedProx
from fedetf.train import train_local

SPEC = ModelSpec(backbone="cnn", in_channels=1, num_classes=4, feature_dim=8, seed=0, image_size=8)
COUNTS = torch.tensor([4, 3, 3, 2])
MU = 0.5


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.randn(12, 1, 8, 8, generator=g), torch.tensor([0, 1, 2, 3, 0, 1, 2, 0, 0, 1, 2, 3])


def _moved_away(mu: float = MU):  # type: ignore[no-untyped-def]
    """A FedProx client whose anchor is the received model, then every weight moved by a known delta."""
    method = FedProx(SPEC, FedProx.Settings(mu=0.01))
    model = method.build_model()
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    method.begin(model, ClientRound(COUNTS, config={"proximal-mu": mu}))
    g = torch.Generator().manual_seed(3)
    deltas = {n: 0.05 * torch.randn(p.shape, generator=g) for n, p in model.named_parameters()}
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.add_(deltas[n])
    return method, model, anchor, deltas


def test_loss_is_ce_plus_half_mu_squared_distance_with_mu_from_flowers_config() -> None:
    method, model, _, deltas = _moved_away()
    x, y = _data()
    model.eval()
    prox = sum(float((d.double() ** 2).sum()) for d in deltas.values())
    expected = F.cross_entropy(model(x), y) + MU / 2 * prox
    assert_close(method.loss(model, x, y), expected.float(), rtol=1e-6, atol=1e-6)


def test_plain_sgd_step_is_the_authors_perturbed_gradient_descent() -> None:
    method, model, anchor, _ = _moved_away()
    expected = copy.deepcopy(model)
    x, y = _data()
    lr = 0.1
    plain = TrainSettings(epochs=1, lr=lr, momentum=0.0, weight_decay=0.0, clip_grad_norm=1e9)
    train_local(model, method, DataLoader(TensorDataset(x, y), batch_size=12), plain)

    expected.train()
    params = dict(expected.named_parameters())
    grads = torch.autograd.grad(F.cross_entropy(expected(x), y), list(params.values()))
    with torch.no_grad():  # pgd.py 34: var - lr * (grad + mu * (var - vstar))
        for (n, p), grad in zip(params.items(), grads, strict=True):
            p -= lr * (grad + MU * (p - anchor[n]))
    got = model.state_dict()
    for k, v in expected.state_dict().items():
        assert_close(got[k], v, rtol=1e-5, atol=1e-7, msg=k)


def test_momentum_steps_match_fl_bench_adding_mu_times_distance_to_the_gradient() -> None:
    method, model, anchor, _ = _moved_away()
    expected = copy.deepcopy(model)
    x, y = _data()
    s = TrainSettings(epochs=1, lr=0.05, momentum=0.9, weight_decay=1e-4, clip_grad_norm=1e9)
    train_local(model, method, DataLoader(TensorDataset(x, y), batch_size=6), s)

    expected.train()
    opt = torch.optim.SGD(expected.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    for xb, yb in ((x[:6], y[:6]), (x[6:], y[6:])):
        opt.zero_grad()
        F.cross_entropy(expected(xb), yb).backward()
        with torch.no_grad():  # FL-bench fedprox.py 22-24
            for n, w in expected.named_parameters():
                w.grad += MU * (w - anchor[n])
        opt.step()
    got = model.state_dict()
    for k, v in expected.state_dict().items():
        assert_close(got[k], v, rtol=1e-5, atol=1e-7, msg=k)
