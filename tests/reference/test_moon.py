"""MOON's client against the authors' ``train_net_fedcon``.

Reference: QinbinLi/MOON @ 8fcba3c, ``main.py`` 279-315::

    _, pro1, out = net(x)                  # projection output, logits
    _, pro2, _ = global_net(x)             # received global model (eval mode, 486-488)
    posi = cos(pro1, pro2)
    _, pro3, _ = previous_net(x)           # the client's model after its last round (eval, 537-552)
    nega = cos(pro1, pro3)
    logits = cat(posi, nega) / temperature
    loss = CE(out, target) + mu * CE(logits, 0)

``pro`` is the output of the projection MLP ``l2(relu(l1(h)))`` (``model.py`` 562-586),
which is fedetf's feature head; defaults ``--mu 1 --temperature 0.5`` (lines 42, 44).
In a client's first round the authors' pool of previous models is empty, so the
contrastive logits have one column and the term is exactly 0; fedetf uses the
received model as the previous one, which makes the term the constant
``mu * log 2`` with zero gradient: the same update.

Expected values are built here from that formula in plain torch (cosine written out).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch.testing import assert_close
from torch.utils.data import DataLoader, TensorDataset

from fedetf.methods import ClientRound, ModelSpec, TrainSettings
from fedetf.methods.moon import Moon
from fedetf.models import FedModel
from fedetf.train import train_local

SPEC = ModelSpec(backbone="cnn", in_channels=1, num_classes=4, feature_dim=8, seed=0, image_size=8)
COUNTS = torch.tensor([4, 3, 3, 2])
PLAIN = TrainSettings(epochs=1, lr=0.1, momentum=0.0, weight_decay=0.0, clip_grad_norm=1e9)


def _data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 1, 8, 8, generator=g), torch.tensor([0, 1, 2, 3, 0, 1, 2, 0])


def _projection(net: FedModel, x: torch.Tensor) -> torch.Tensor:
    """The authors' ``pro``: backbone then projection MLP, in eval mode for the frozen models."""
    return net.feature_head(net.backbone(x))


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def test_defaults_are_the_authors() -> None:
    assert (Moon.Settings().mu, Moon.Settings().tau) == (1.0, 0.5)


def test_first_round_update_equals_plain_ce_as_with_the_authors_empty_pool() -> None:
    mu = 1.0
    method = Moon(SPEC, Moon.Settings(mu=mu, tau=0.5))
    model = method.build_model()
    method.begin(model, ClientRound(COUNTS))
    expected = copy.deepcopy(model)
    x, y = _data(4)

    probe = copy.deepcopy(model).eval()  # a copy, so the BatchNorm statistics of ``model`` stay untouched
    assert_close(method.loss(probe, x, y), F.cross_entropy(probe(x), y) + mu * math.log(2), rtol=1e-6, atol=1e-6)

    train_local(model, method, DataLoader(TensorDataset(x, y), batch_size=8), PLAIN)
    expected.train()
    params = list(expected.parameters())
    grads = torch.autograd.grad(F.cross_entropy(expected(x), y), params)  # loss2 = 0: one-column logits
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p -= PLAIN.lr * g
    got = model.state_dict()
    for k, v in expected.state_dict().items():
        assert_close(got[k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_later_round_loss_contrasts_projection_with_global_and_previous_local_model() -> None:
    mu, tau = 0.7, 0.5
    # Round 1: the client trains, and keeps its model as the previous one.
    first = Moon(SPEC, Moon.Settings(mu=mu, tau=tau))
    model = first.build_model()
    rnd = ClientRound(COUNTS)
    first.begin(model, rnd)
    x1, y1 = _data(5)
    steps = train_local(model, first, DataLoader(TensorDataset(x1, y1), batch_size=8), PLAIN)[1]
    first.end(model, rnd, steps)
    previous = copy.deepcopy(model).eval()

    # Round 2: a new global model arrives (here: the trained one moved by a fixed delta).
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    glob = copy.deepcopy(model).eval()
    second = Moon(SPEC, Moon.Settings(mu=mu, tau=tau))
    second.begin(model, ClientRound(COUNTS, state=rnd.state))

    x, y = _data(7)
    model.train()
    got = second.loss(model, x, y)
    with torch.no_grad():
        pro1 = _projection(model, x)
        out = model.classifier(pro1)
        pro2, pro3 = _projection(glob, x), _projection(previous, x)
        logits = torch.stack([_cos(pro1, pro2), _cos(pro1, pro3)], dim=1) / tau
        expected = F.cross_entropy(out, y) + mu * F.cross_entropy(logits, torch.zeros(len(x), dtype=torch.long))
    assert not torch.allclose(pro2, pro3)  # the two anchors differ, so the term is not the constant log 2
    assert_close(got.detach(), expected, rtol=1e-5, atol=1e-6)
