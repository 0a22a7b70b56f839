"""FedProx, FedLC and FedRS: their client-side losses, config keys and registry entries."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fedetf.methods import ModelSpec, get_method
from simulations.config import ConfigError, parse_run_config
from strategies.registry import client_method_for, resolve_strategy

SPEC = ModelSpec(backbone="cnn", in_channels=1, num_classes=4, feature_dim=8, seed=0)
COUNTS = torch.tensor([5, 0, 3, 0])  # classes 1 and 3 absent locally


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(6, 1, 8, 8), torch.tensor([0, 2, 0, 2, 2, 0])


def test_fedprox_adds_mu_half_squared_distance_to_the_global_weights() -> None:
    method = get_method("fedprox", ModelSpec(**{**SPEC.__dict__, "prox_mu": 0.3}))
    model = method.build_model().eval()
    method.prepare(model, COUNTS)
    x, y = _batch()
    base = F.cross_entropy(model(x), y)
    assert torch.allclose(method.loss(model, x, y), base)  # at the global weights the term is 0
    weight = (
        model.classifier.linear.weight if hasattr(model.classifier, "linear") else next(model.classifier.parameters())
    )
    with torch.no_grad():
        weight.add_(0.5)
    expected = F.cross_entropy(model(x), y) + 0.3 / 2 * 0.25 * weight.numel()
    assert torch.allclose(method.loss(model, x, y), expected, rtol=1e-5)


def test_fedlc_calibrates_by_local_counts_and_drops_absent_classes() -> None:
    method = get_method("fedlc", ModelSpec(**{**SPEC.__dict__, "fedlc_tau": 0.7}))
    model = method.build_model().eval()
    method.prepare(model, COUNTS)
    x, y = _batch()
    z = model(x)
    present = torch.tensor([0, 2])
    calibrated = z[:, present] - 0.7 * COUNTS[present].float() ** -0.25
    expected = F.cross_entropy(calibrated, torch.where(y == 2, 1, 0))
    assert torch.allclose(method.loss(model, x, y), expected, rtol=1e-5)


def test_fedrs_scales_absent_class_logits_by_alpha() -> None:
    x, y = _batch()
    for alpha in (1.0, 0.2):
        method = get_method("fedrs", ModelSpec(**{**SPEC.__dict__, "fedrs_alpha": alpha}))
        model = method.build_model().eval()
        method.prepare(model, COUNTS)
        z = model(x)
        expected = F.cross_entropy(z * torch.tensor([1.0, alpha, 1.0, alpha]), y)
        assert torch.allclose(method.loss(model, x, y), expected)
    assert not torch.allclose(expected, F.cross_entropy(z, y))


@pytest.mark.parametrize("name", ["fedprox", "fedlc", "fedrs"])
def test_baseline_strategies_pair_with_their_client_method(name: str) -> None:
    cls = resolve_strategy(name)
    assert client_method_for(cls) == name
    assert parse_run_config({"strategy": name, "client-method": name}).client_method == name


@pytest.mark.parametrize(("key", "value"), [("prox-mu", -0.1), ("fedlc-tau", -1.0), ("fedrs-alpha", 1.5)])
def test_baseline_hyperparameters_are_validated(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"invalid run config: {key}={value}"):
        parse_run_config({key: value})
