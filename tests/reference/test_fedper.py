"""FedPer's client against its references: body and head train together on CE; only the body is
sent; the head stays on the client and is used again at its next round.

References
----------
* Arivazhagan et al., 2019 (FedPer): base layers federated, personalisation layers local.
* TsingZ0/PFLlib @ d832e76, ``system/flcore/clients/clientper.py`` 22-35 (the whole
  ``self.model``, base and head, trains on CE) and 45-47 (``set_parameters`` overwrites
  ``self.model.base`` only, so the head is kept); ``system/flcore/servers/serverper.py``
  70-85 (the server receives ``client.model.base`` only).
* KarhouTam/FL-bench @ 06e658b, ``src/client/fedper.py`` 4-9: the ``classifier`` keys are
  the client's personal parameters; everything else is aggregated (buffers too, under the
  default ``common.buffers: global``; PFLlib averages ``parameters()`` only).

The expected weights are computed here with ``torch.optim.SGD`` on a copy of the model
(momentum, weight decay, global-norm clipping of all parameters), not with fedetf's loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close
from torch.utils.data import DataLoader, TensorDataset

from fedetf.methods import ClientRound, ModelSpec, TrainSettings
from fedetf.methods.personal_heads import FedPer
from fedetf.train import client_round, initial_state

SPEC = ModelSpec(backbone="cnn", in_channels=1, num_classes=4, feature_dim=8, seed=0, image_size=8)
COUNTS = torch.tensor([4, 2, 2, 0])
SETTINGS = TrainSettings(epochs=1, lr=0.05, momentum=0.9, weight_decay=1e-4, clip_grad_norm=0.5)


def _loader(seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 1, 8, 8, generator=g), torch.tensor([0, 1, 2, 0, 0, 1, 2, 0])
    return DataLoader(TensorDataset(x, y), batch_size=4)


def _sgd_round(model: nn.Module, loader: DataLoader) -> None:
    """The references' local round: every parameter, body and head, on plain CE."""
    model.train()
    opt = torch.optim.SGD(
        model.parameters(), lr=SETTINGS.lr, momentum=SETTINGS.momentum, weight_decay=SETTINGS.weight_decay
    )
    for x, y in loader:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        nn.utils.clip_grad_norm_(model.parameters(), SETTINGS.clip_grad_norm)
        opt.step()


def _is_head(key: str) -> bool:
    return key.startswith("classifier.")


def test_two_rounds_train_body_and_head_send_the_body_and_keep_the_head() -> None:
    method = FedPer(SPEC)
    model = method.build_model()
    initial = initial_state(model)
    body0 = {k: v for k, v in initial.items() if not _is_head(k)}
    rnd = ClientRound(COUNTS)

    # Round 1: the server's body, the client's (initial) head; body and head train together.
    result = client_round(method, model, initial, body0, rnd, _loader(9), _loader(10), SETTINGS)
    expected = method.build_model()
    expected.load_state_dict(initial)
    _sgd_round(expected, _loader(9))
    want = {k: v.clone() for k, v in expected.state_dict().items()}
    assert result.shared.keys() == {k for k in want if not _is_head(k)}  # only the body is sent
    for k, v in result.shared.items():
        assert_close(v, want[k], rtol=1e-5, atol=1e-7, msg=k)
    for k in (k for k in want if _is_head(k)):
        assert not torch.equal(want[k], initial[k])  # the head trained too
        assert_close(rnd.state[f"model.{k}"], want[k], rtol=1e-5, atol=1e-7, msg=k)  # and is kept

    # Round 2: a new body arrives; the client's own trained head is used with it.
    g = torch.Generator().manual_seed(11)
    body1 = {
        k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()
        for k, v in result.shared.items()
    }
    result2 = client_round(FedPer(SPEC), model, initial, body1, rnd, _loader(12), _loader(10), SETTINGS)
    expected.load_state_dict({**want, **body1})  # PFLlib set_parameters: the base is overwritten, the head stays
    _sgd_round(expected, _loader(12))
    want2 = expected.state_dict()
    for k, v in result2.shared.items():
        assert_close(v, want2[k], rtol=1e-5, atol=1e-7, msg=k)
    for k in (k for k in want2 if _is_head(k)):
        assert_close(rnd.state[f"model.{k}"], want2[k], rtol=1e-5, atol=1e-7, msg=k)
