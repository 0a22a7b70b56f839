"""The shipped run-config presets parse as Flower parses `--run-config FILE.toml` and validate."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.common.config import parse_config_args

from simulations.config import parse_run_config
from simulations.local import default_run_config

PRESETS = sorted((Path(__file__).resolve().parent.parent / "presets").glob("*.toml"))


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_is_a_valid_run_config(path: Path) -> None:
    overrides = parse_config_args([str(path)])
    assert set(overrides) <= set(default_run_config()), "unknown keys would be rejected by the SuperLink"
    cfg = parse_run_config({**default_run_config(), **overrides})
    assert cfg.normalize is False and cfg.drop_last and cfg.aggregation_weight == "batches"
    assert cfg.generic_test == "full" and cfg.method == "fedgela"


def test_authors_mnist_preset_is_their_protocol() -> None:
    cfg = parse_run_config({**default_run_config(), **parse_config_args([str(PRESETS[2])])})
    assert PRESETS[2].stem == "authors-mnist"
    assert (cfg.model, cfg.feature_dim, cfg.pcdd_assignment, cfg.local_epochs) == ("simple-cnn", 84, "sequential", 10)
    assert cfg.method_settings.temperature == 0.2
