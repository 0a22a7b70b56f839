"""Each method's defining mechanism, on tiny models without Flower."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from fedetf.etf import nearest_etf, simplex_etf
from fedetf.methods import ClientRound, ModelSpec, TrainSettings
from fedetf.methods.fedetf import FedETF
from fedetf.methods.fedgela import FedGELA, adaptation_vector, missing_class_kl
from fedetf.methods.fedprox import FedProx
from fedetf.methods.fedrod import FedRoD
from fedetf.methods.logit_adjust import FedLC
from fedetf.methods.moon import Moon, model_contrastive_loss
from fedetf.methods.personal_heads import FedPer, FedRep
from fedetf.train import client_round, initial_state, run_phases

SPEC = ModelSpec(backbone="cnn", in_channels=1, num_classes=4, feature_dim=8, seed=0, image_size=8)
COUNTS = torch.tensor([5, 0, 3, 0])  # classes 1 and 3 absent locally
PLAIN = TrainSettings(epochs=1, lr=0.1, momentum=0.0, weight_decay=0.0, clip_grad_norm=1e9)


def _batch(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 8, 8, generator=g), torch.tensor([0, 2] * (n // 2))


def _loader(n: int = 6, batch: int = 6) -> DataLoader:
    return DataLoader(TensorDataset(*_batch(n)), batch_size=batch)


def _ready(cls, settings=None, counts=COUNTS, **rnd):  # type: ignore[no-untyped-def]
    method = cls(SPEC, settings)
    model = method.build_model()
    method.begin(model, ClientRound(counts, **rnd))
    return method, model


def test_fedprox_adds_mu_half_squared_distance_and_reads_flowers_proximal_mu() -> None:
    method, model = _ready(FedProx, FedProx.Settings(mu=0.3), config={"proximal-mu": 0.5})
    model.eval()
    x, y = _batch()
    assert torch.allclose(method.loss(model, x, y), F.cross_entropy(model(x), y))  # 0 at the global weights
    weight = model.classifier.fc.weight
    with torch.no_grad():
        weight.add_(0.5)
    expected = F.cross_entropy(model(x), y) + 0.5 / 2 * 0.25 * weight.numel()  # mu from the round's config
    assert torch.allclose(method.loss(model, x, y), expected, rtol=1e-5)
    assert FedProx(SPEC, FedProx.Settings(mu=0.3)).server_kwargs() == {"proximal_mu": 0.3}


def test_fedlc_calibrates_by_local_counts_and_drops_absent_classes() -> None:
    method, model = _ready(FedLC, FedLC.Settings(tau=0.7))
    model.eval()
    x, y = _batch()
    z = model(x)
    present = torch.tensor([0, 2])
    calibrated = z[:, present] - 0.7 * COUNTS[present].float() ** -0.25
    expected = F.cross_entropy(calibrated, torch.where(y == 2, 1, 0))
    assert torch.allclose(method.loss(model, x, y), expected, rtol=1e-5)


def test_scaffold_server_updates_c_by_participation_share() -> None:
    import numpy as np
    from flwr.app import Array, ArrayRecord

    from strategies.scaffold import Scaffold as ScaffoldServer

    server = ScaffoldServer()
    server.num_nodes = 4
    extras = [
        {"scaffold.delta_c": ArrayRecord({"w": Array(np.array([1.0, 3.0]))})},
        {"scaffold.delta_c": ArrayRecord({"w": Array(np.array([3.0, 5.0]))})},
    ]
    server.aggregate_extras(1, extras, [1.0, 9.0])  # the mean is unweighted, scaled by |S|/N = 1/2
    np.testing.assert_allclose(server.broadcast["scaffold.c"]["w"].numpy(), [1.0, 2.0])
    server.aggregate_extras(2, extras[:1], [1.0])
    np.testing.assert_allclose(server.c["w"], [1.25, 2.75])


def test_moon_contrasts_against_global_and_previous_models() -> None:
    z = torch.tensor([[1.0, 0.0]])
    loss = model_contrastive_loss(z, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), tau=0.5)
    assert loss.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 1)))
    x, y = _batch()
    method, model = _ready(Moon, Moon.Settings(mu=2.0, tau=0.5))
    model.eval()
    # First round: previous model = received model = current model, so the term is mu * log 2.
    assert method.loss(model, x, y).item() == pytest.approx(F.cross_entropy(model(x), y).item() + 2 * math.log(2))
    # A stored previous model is used as the negative.
    rnd = ClientRound(COUNTS)
    method.end(model, rnd, 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)
    m2 = Moon(SPEC, Moon.Settings(mu=2.0, tau=0.5))
    m2.begin(model, rnd)
    assert not torch.equal(m2._prev.features(x), m2._glob.features(x))


def test_personal_head_round_trips_through_client_state() -> None:
    method = FedPer(SPEC)
    model = method.build_model()
    init = initial_state(model)
    shared = {k: v.clone() for k, v in method.shared_state(model).items()}
    rnd = ClientRound(COUNTS)
    client_round(FedPer(SPEC), model, init, shared, rnd, _loader(), _loader(), PLAIN)
    trained_head = rnd.state["model.classifier.fc.weight"].clone()
    assert not torch.equal(trained_head, init["classifier.fc.weight"])
    # Another client with no state starts from the seeded head, not from the first client's.
    FedPer(SPEC).load(model, shared, init, {})
    assert torch.equal(model.classifier.fc.weight, init["classifier.fc.weight"])
    FedPer(SPEC).load(model, shared, init, rnd.state)
    assert torch.equal(model.classifier.fc.weight, trained_head)


def test_fedrod_personal_head_trains_on_detached_features() -> None:
    method, model = _ready(FedRoD)
    model.eval()
    x, y = _batch()
    method.loss(model, x, y).backward()
    full = model.backbone.features[0].weight.grad.clone()
    model.zero_grad()
    g = model.classifier.generic(model.features(x))
    F.cross_entropy(g + torch.log(COUNTS.float().clamp(min=1)), y).backward()  # balanced softmax alone
    torch.testing.assert_close(model.backbone.features[0].weight.grad, full)
    h = model.features(x)
    torch.testing.assert_close(model(x, personal=True), model.classifier.generic(h) + model.classifier.personal(h))
    assert set(method.personal_state(model)) == {"classifier.personal.weight", "classifier.personal.bias"}


def test_fedetf_normalised_features_scale_and_balanced_softmax() -> None:
    method, model = _ready(FedETF, FedETF.Settings(scale=3.0))
    model.eval()
    assert model.classifier.etf.shape == (4, 4)  # d = K
    x, y = _batch()
    h = F.normalize(model.features(x), dim=1)
    torch.testing.assert_close(model(x), 3.0 * h @ model.classifier.etf)
    expected = F.cross_entropy(model(x) + COUNTS.float().clamp(min=1).log(), y)
    torch.testing.assert_close(method.loss(model, x, y), expected)
    assert "classifier.scale" in method.shared_state(model) and "classifier.etf" not in method.shared_state(model)


# -- FedGELA and its variants ------------------------------------------------------------------


def test_fedgela_logits_follow_the_spec() -> None:
    method, model = _ready(FedGELA, FedGELA.Settings(temperature=0.5))
    model.eval()
    x, _ = _batch()
    h = model.features(x)
    ew = torch.tensor([4 * 5 / 8, 0.0, 4 * 3 / 8, 0.0])
    torch.testing.assert_close(model(x), h @ model.classifier.etf)
    torch.testing.assert_close(model(x, personal=True), (h @ model.classifier.etf) * ew / 0.5)
    assert isinstance(model.feature_head.norm, torch.nn.BatchNorm1d)
    assert "classifier.etf" not in method.shared_state(model)


def test_soft_mask_scales_exactly_the_missing_classes() -> None:
    hard = adaptation_vector(COUNTS)
    soft = adaptation_vector(COUNTS, missing=0.9)
    assert torch.equal(soft[COUNTS > 0], hard[COUNTS > 0])
    assert torch.equal(soft[COUNTS == 0], torch.full((2,), 0.9)) and torch.equal(hard[COUNTS == 0], torch.zeros(2))
    _, model = _ready(FedGELA, FedGELA.Settings(missing_alpha=0.9))
    assert torch.equal(model.classifier.adaptation, soft)


def test_additive_prior_equals_the_log_counts() -> None:
    _, model = _ready(FedGELA, FedGELA.Settings(prior="additive"))
    model.eval()
    x, _ = _batch()
    torch.testing.assert_close(model.classifier.log_prior, torch.log(torch.tensor([5.0, 1.0, 3.0, 1.0])))
    torch.testing.assert_close(model(x, personal=True) - model(x), model.classifier.log_prior.expand(6, 4))


def test_normalised_features_variant_has_a_learned_scale_and_no_batchnorm() -> None:
    method, model = _ready(FedGELA, FedGELA.Settings(features="normalized", scale=7.0))
    model.eval()
    x, _ = _batch()
    assert isinstance(model.feature_head.norm, torch.nn.Identity)
    torch.testing.assert_close(model(x), 7.0 * F.normalize(model.features(x), dim=1) @ model.classifier.etf)
    assert "classifier.scale" in method.shared_state(model)


def test_distillation_is_zero_when_local_and_global_agree_and_positive_otherwise() -> None:
    counts = torch.tensor([5, 0, 0, 0])  # three missing classes
    method, model = _ready(FedGELA, FedGELA.Settings(distill=1.0), counts=counts)
    model.eval()
    x, y = _batch()
    y = torch.zeros_like(y)
    ce = F.cross_entropy(model(x, personal=True), y)
    torch.testing.assert_close(method.loss(model, x, y), ce)
    with torch.no_grad():
        model.feature_head.mlp[2].weight.add_(torch.randn_like(model.feature_head.mlp[2].weight))
    ce = F.cross_entropy(model(x, personal=True), y)
    assert method.loss(model, x, y) > ce + 1e-4
    t, s = torch.randn(3, 4), torch.randn(3, 4)
    mask = counts == 0
    expected = F.kl_div(F.log_softmax(s[:, mask], 1), F.softmax(t[:, mask], 1), reduction="batchmean")
    torch.testing.assert_close(missing_class_kl(t, s, mask), expected)


@pytest.mark.parametrize("d", [9, 10, 16])
def test_nearest_etf_is_still_a_simplex_etf_and_moves_towards_the_means(d: int) -> None:
    k = 10
    prev = simplex_etf(k, d, seed=0)
    target = simplex_etf(k, d, seed=1)
    noisy = 3.0 * target + 0.05 * torch.randn(d, k, generator=torch.Generator().manual_seed(2))
    rotated = nearest_etf(noisy, prev, delta=0.0)
    gram = rotated.T @ rotated
    torch.testing.assert_close(torch.diagonal(gram), torch.ones(k), atol=1e-5, rtol=0)
    off = gram[~torch.eye(k, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, -1 / (k - 1)), atol=1e-5, rtol=0)
    assert (rotated - target).norm() < 0.2 * (prev - target).norm()
    torch.testing.assert_close(nearest_etf(prev, prev, delta=0.5), prev, atol=1e-5, rtol=0)


def test_nearest_etf_round_trip_through_the_server_strategy() -> None:
    import numpy as np
    from flwr.app import ArrayRecord

    from strategies.fedgela import FedGELA as FedGELAServer

    method = FedGELA(SPEC, FedGELA.Settings(nearest_etf=True, etf_warmup=1))
    server = FedGELAServer(**method.server_kwargs())
    model = method.build_model()
    rnd = ClientRound(COUNTS, train_loader=_loader())
    method.begin(model, rnd)
    stats = method.end(model, rnd, 1)["fedgela.class_stats"]
    assert stats["counts"].tolist() == [3.0, 0.0, 3.0, 0.0]
    server.aggregate_extras(1, [{"fedgela.class_stats": ArrayRecord(stats)}], [1.0])
    etf = server.broadcast["fedgela.etf"]["etf"].numpy()
    assert not np.allclose(etf, model.classifier.etf.numpy())
    received = {"fedgela.etf": {"etf": torch.from_numpy(etf)}}
    init = initial_state(model)
    method.load(model, method.shared_state(model), init, {}, received)
    assert np.array_equal(model.classifier.etf.numpy(), etf)


def test_phases_freeze_parameters_outside_the_phase_and_restore_flags() -> None:
    method, model = _ready(FedRep)
    body, head = list(model.backbone.parameters()), list(model.classifier.parameters())
    before = [p.clone() for p in body]
    two = TrainSettings(epochs=2, lr=0.1, momentum=0.0, weight_decay=0.0, clip_grad_norm=1e9)
    run_phases(model, [method.phases(model, two)[0]], _loader(), two, loss_fn=method.loss)
    assert all(torch.equal(a, b) for a, b in zip(before, body, strict=True))
    assert all(p.requires_grad for p in model.parameters())
    assert head[0].grad is not None


def test_fedlc_with_tau_zero_is_plain_cross_entropy() -> None:
    method, model = _ready(FedLC, FedLC.Settings(tau=0.0))
    model.eval()
    x, y = _batch()
    torch.testing.assert_close(method.loss(model, x, y), F.cross_entropy(model(x), y))


def test_ditto_personal_view_before_training_is_the_stored_personal_model() -> None:
    from fedetf.methods.ditto import PERSONAL_PREFIX, Ditto

    method = Ditto(SPEC)
    model = method.build_model()
    init = initial_state(model)
    stored = {PERSONAL_PREFIX + k: v + 0.5 if v.is_floating_point() else v for k, v in init.items()}
    method.load(model, method.shared_state(model), init, stored)
    rnd = ClientRound(COUNTS, state=stored)
    method.begin(model, rnd)
    view = method.before_view(model, rnd)
    assert view is not model
    torch.testing.assert_close(view.classifier.fc.weight, init["classifier.fc.weight"] + 0.5)
    torch.testing.assert_close(model.classifier.fc.weight, init["classifier.fc.weight"])
