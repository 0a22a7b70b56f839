"""FedRep's local schedule against its authors' code: lgcollins/FedRep@d82e629 ``models/Update.py`` 585-609.

``head_eps = local_eps - local_rep_ep``: epochs ``iter < head_eps`` train the head alone, the remaining
``local_rep_ep`` epochs the body alone. The authors' scripts: ``FedRep_cifar10_2shards.sh`` ``--local_ep 11
--local_rep_ep 1`` (10 head + 1 body epochs), ``FedRep_cifar100_{5,20}shards.sh`` ``--local_ep 15 --local_rep_ep 5``
(10 + 5). In the last round (``last=True``, lines 577-584) only the head trains, for
``max(10, local_ep - local_rep_ep)`` epochs. Only the body is sent; the head stays with the client
(``main_fedrep.py`` 150-154).
"""

from __future__ import annotations

import pytest
import torch

from fedetf.methods import ClientRound, ModelSpec, TrainSettings
from fedetf.methods.personal_heads import FedRep

SPEC = ModelSpec(backbone="cnn", in_channels=1, num_classes=4, feature_dim=8, seed=0, image_size=8)


@pytest.mark.parametrize(("local_ep", "rep_ep", "head", "body"), [(11, 1, 10, 1), (15, 5, 10, 5)])
def test_head_epochs_then_body_epochs_as_the_authors_scripts(local_ep: int, rep_ep: int, head: int, body: int) -> None:
    method = FedRep(SPEC, FedRep.Settings(body_epochs=rep_ep))
    model = method.build_model()
    method.begin(model, ClientRound(torch.tensor([1, 1, 0, 0])))
    phases = method.phases(model, TrainSettings(epochs=local_ep))
    assert [(p.name, p.epochs) for p in phases] == [("head", head), ("body", body)]
    head_ids = {id(p) for p in model.classifier.parameters()}
    assert {id(p) for p in phases[0].params} == head_ids
    assert {id(p) for p in phases[1].params} == {id(p) for p in model.parameters()} - head_ids
    assert not any(k.startswith("classifier.") for k in method.shared_state(model))


def test_default_is_one_body_epoch() -> None:
    assert FedRep.Settings().body_epochs == 1


@pytest.mark.parametrize(("local_ep", "head"), [(11, 10), (3, 10), (15, 14)])
def test_last_round_trains_only_the_head(local_ep: int, head: int) -> None:
    method = FedRep(SPEC)
    model = method.build_model()
    method.begin(model, ClientRound(torch.tensor([1, 1, 0, 0]), server_round=7, num_rounds=7))
    phases = method.phases(model, TrainSettings(epochs=local_ep))
    assert [(p.name, p.epochs) for p in phases] == [("head", head)]
