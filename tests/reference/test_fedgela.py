"""FedGELA's client against the authors' code: logits ``h^T M diag(Ew) / T`` with ``Ew = K n_c / n``.

Reference: MediaBrain-SJTU/FedGELA @ b5b20d5, ``FedGELA.py``

* 15-45 ``produce_Ew``: ``Ew[c] = K * count_c / num_samples``, 0 for absent classes;
* 122-129 ``get_etf``: ``M = sqrt(K/(K-1)) P (I - 11^T/K)``, ``P`` with orthonormal columns;
* 186-213 ``train_net``: ``out_g = h @ (Ew * ETF)``; ``loss = NLLLoss(LogSoftmax(out_g / T))``;
  ``clip_grad_norm_(max_norm=20)``; ``SGD(lr, momentum=0.9, weight_decay=reg)``
  (defaults ``--temperature 0.2 --lr 0.01 --reg 1e-4``, lines 148, 169-170);
* 47-64 ``compute_accuracy_g``: generic logits ``h @ ETF``;
* ``model.py`` 309-310, 417-435: ``h`` is the projection MLP's output through
  ``BatchNorm1d`` (the ``etf`` proxy); the ETF is a plain global tensor, never trained.

The literal numbers come from running those lines (``produce_Ew``, ``get_etf`` with a
fixed Hadamard ``P``, the ``train_net`` loss, ``compute_accuracy_g``'s product) on the
tensors below in float64; the optimiser step is written out with ``torch.optim.SGD``.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close
from torch.utils.data import DataLoader, TensorDataset

from fedetf.methods import ClientRound, ModelSpec, TrainSettings
from fedetf.methods.fedgela import FedGELA
from fedetf.train import train_local

K, D, T = 4, 8, 0.2
SPEC = ModelSpec(backbone="cnn", in_channels=1, num_classes=K, feature_dim=D, seed=0, image_size=8)
COUNTS = torch.tensor([5, 0, 2, 1])
EW = [2.5, 0.0, 1.0, 0.5]  # produce_Ew on labels [0]*5 + [2]*2 + [3]
H = torch.tensor(
    [
        [0.3, -1.2, 0.8, 0.5, -0.1, 0.9, 0.2, -0.4],
        [1.1, 0.4, -0.6, 0.2, 0.7, -0.3, 0.5, 0.1],
        [-0.8, 0.5, 1.4, -0.2, 0.3, 0.1, -0.7, 0.6],
        [0.6, 0.9, -0.3, 1.0, -0.5, 0.4, 0.0, -0.2],
    ]
)
Y = torch.tensor([0, 2, 3, 0])
#: ``h @ (Ew * ETF)`` from train_net, before the division by T.
OUT_G = [
    [0.8164965809277263, 0.0, -0.5715476066494081, -0.12247448713915893],
    [0.3061862178478973, 0.0, -0.04082482904638627, 0.06123724356957942],
    [1.7350552344714174, 0.0, -0.20412414523193148, -0.1837117307087383],
    [1.8371173070873832, 0.0, 0.3265986323710904, -0.04082482904638631],
]
#: ``h @ ETF`` from compute_accuracy_g.
GENERIC = [
    [0.32659863237109044, 0.4898979485566356, -0.5715476066494081, -0.24494897427831785],
    [0.1224744871391589, -0.20412414523193148, -0.04082482904638627, 0.12247448713915884],
    [0.6940220937885669, -0.1224744871391589, -0.20412414523193148, -0.3674234614174766],
    [0.7348469228349533, -0.9797958971132712, 0.3265986323710904, -0.08164965809277262],
]
TRAIN_LOSS = 2.969802178220706


def _authors_etf() -> torch.Tensor:
    """``get_etf`` with ``P`` = the first K columns of the normalised 8x8 Hadamard matrix."""
    h2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    p = torch.kron(torch.kron(h2, h2), h2)[:, :K] / math.sqrt(D)
    return math.sqrt(K / (K - 1)) * p @ (torch.eye(K) - torch.ones(K, K) / K)


def _head_on_fixed_features() -> tuple[FedGELA, nn.Module]:
    """A FedGELA client whose features are its input (``h = H``) and whose ETF is the authors' ``M``."""
    method = FedGELA(SPEC)
    model = method.build_model()
    model.backbone, model.feature_head = nn.Identity(), nn.Identity()
    with torch.no_grad():
        model.classifier.etf.copy_(_authors_etf())
    method.begin(model, ClientRound(COUNTS))
    return method, model


def test_defaults_are_the_authors() -> None:
    s = FedGELA.Settings()
    assert (s.temperature, s.adaptation, s.features, s.prior, s.missing_alpha) == (
        0.2,
        "proportion",
        "batchnorm",
        "multiplicative",
        0.0,
    )
    base = TrainSettings()
    assert (base.lr, base.momentum, base.weight_decay, base.clip_grad_norm, base.epochs) == (0.01, 0.9, 1e-4, 20.0, 10)


def test_adaptation_vector_is_produce_ew() -> None:
    _, model = _head_on_fixed_features()
    assert_close(model.classifier.adaptation, torch.tensor(EW))


def test_personal_and_generic_logits_and_the_training_loss_equal_the_authors() -> None:
    method, model = _head_on_fixed_features()
    model.eval()
    out_g = torch.tensor(OUT_G, dtype=torch.float64)
    assert_close(model(H, personal=True).double(), out_g / T, rtol=1e-5, atol=1e-6)
    assert_close(model(H).double(), torch.tensor(GENERIC, dtype=torch.float64), rtol=1e-5, atol=1e-6)
    loss = method.loss(model, H, Y)
    assert_close(loss.double(), torch.tensor(TRAIN_LOSS, dtype=torch.float64), rtol=1e-6, atol=1e-6)


def test_seeded_etf_has_get_etfs_form() -> None:
    """``M^T M = K/(K-1) (I - 11^T/K)`` for any ``P`` with orthonormal columns, as ``get_etf``'s output."""
    m = FedGELA(SPEC).build_model().classifier.etf.double()
    assert m.shape == (D, K)
    assert_close(m.T @ m, K / (K - 1) * (torch.eye(K, dtype=torch.float64) - 1 / K), rtol=0, atol=1e-6)


def test_two_local_steps_equal_the_authors_train_net_and_leave_the_etf_fixed_and_unsent() -> None:
    method = FedGELA(SPEC)
    model = method.build_model()
    method.begin(model, ClientRound(COUNTS))
    expected = copy.deepcopy(model)
    etf = model.classifier.etf.clone()
    g = torch.Generator().manual_seed(8)
    x, y = torch.randn(8, 1, 8, 8, generator=g), torch.tensor([0, 0, 2, 3, 0, 2, 0, 0])
    s = TrainSettings(epochs=1, lr=0.05, momentum=0.9, weight_decay=1e-4, clip_grad_norm=0.5)
    train_local(model, method, DataLoader(TensorDataset(x, y), batch_size=4), s)

    expected.train()
    ew = torch.tensor(EW)
    opt = torch.optim.SGD(expected.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    norms = []
    for xb, yb in ((x[:4], y[:4]), (x[4:], y[4:])):
        opt.zero_grad()
        h = expected.feature_head(expected.backbone(xb))  # encoder, then the BatchNorm1d proxy
        out_g = h @ (ew * etf)
        F.nll_loss(F.log_softmax(out_g / T, dim=1), yb).backward()
        norms.append(float(nn.utils.clip_grad_norm_(expected.parameters(), max_norm=s.clip_grad_norm)))
        opt.step()
    assert max(norms) > s.clip_grad_norm  # clipping is exercised
    got = model.state_dict()
    for k, v in expected.state_dict().items():
        assert_close(got[k], v, rtol=1e-5, atol=1e-7, msg=k)
    assert torch.equal(model.classifier.etf, etf)
    assert not any("etf" in k for k in method.shared_state(model))
