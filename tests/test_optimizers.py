"""Local optimizers and lr schedules over rounds: the schedule's values by hand, the optimizer each phase gets,
SCAFFOLD's refusal of Adam, and Adam with a cosine schedule end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from fedetf.methods.base import Phase, TrainSettings
from fedetf.train import round_lr, run_phases
from simulations.config import ConfigError, parse_run_config
from simulations.inprocess import run_in_process
from simulations.local import default_run_config


def test_schedules_by_hand() -> None:
    assert [round_lr(0.1, "constant", 0.5, r, 4) for r in (1, 4)] == [0.1, 0.1]
    assert [round_lr(0.1, "exponential", 0.5, r, 4) for r in (1, 2, 3)] == pytest.approx([0.1, 0.05, 0.025])
    # cosine over R=4 rounds: (1 + cos(pi (r-1)/4)) / 2 -> 1, 0.8536, 0.5, 0.1464
    expected = [0.1, 0.1 * (1 + math.sqrt(0.5)) / 2, 0.05, 0.1 * (1 - math.sqrt(0.5)) / 2]
    assert [round_lr(0.1, "cosine", 1.0, r, 4) for r in (1, 2, 3, 4)] == pytest.approx(expected)


class _Scalar(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([2.0]))

    def forward(self, x: torch.Tensor, personal: bool = True) -> torch.Tensor:
        return self.w * x


def _one_step(settings: TrainSettings, phase_optimizer: str | None) -> float:
    model = _Scalar()
    loader = [(torch.ones(1, 1), torch.zeros(1))]
    loss = lambda m, x, y: 0.5 * (m(x) ** 2).sum()  # noqa: E731 - d/dw = w = 2
    run_phases(model, [Phase([model.w], 1, 0.1, optimizer=phase_optimizer)], loader, settings, loss_fn=loss)  # type: ignore[arg-type]
    return float(model.w.detach())


def test_each_phase_gets_its_optimizer() -> None:
    adam = TrainSettings(epochs=1, lr=0.1, momentum=0.0, weight_decay=0.0, clip_grad_norm=1e9, optimizer="adam")
    # Adam's first step moves by lr (m/sqrt(v) = 1): 2 - 0.1; SGD's by lr * grad: 2 - 0.1 * 2.
    assert _one_step(adam, None) == pytest.approx(1.9, abs=1e-6)
    assert _one_step(adam, "sgd") == pytest.approx(1.8, abs=1e-6)  # a procedure its authors ran with SGD
    sgd = TrainSettings(epochs=1, lr=0.1, momentum=0.0, weight_decay=0.0, clip_grad_norm=1e9)
    assert _one_step(sgd, None) == pytest.approx(1.8, abs=1e-6)


def test_scaffold_refuses_adam_in_one_line() -> None:
    with pytest.raises(ConfigError) as err:
        parse_run_config({**default_run_config(), "method": "scaffold", "optimizer": "adam"})
    message = str(err.value)
    assert "\n" not in message and "optimizer='adam'" in message and "'sgd' for method='scaffold'" in message
    parse_run_config({**default_run_config(), "method": "fedgela", "optimizer": "adamw", "lr-schedule": "cosine"})


def test_adam_with_a_cosine_schedule_runs_end_to_end(tmp_path: Path) -> None:
    outcome = run_in_process(
        {
            "dataset": "digits",
            "model": "cnn",
            "num-server-rounds": 3,
            "local-epochs": 1,
            "method": "fedgela",
            "optimizer": "adam",
            "lr": 0.001,
            "lr-schedule": "cosine",
            "output-dir": str(tmp_path),
        }
    )
    assert outcome.exit is None, outcome.errors
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["status"] == "finished" and info["config"]["optimizer"] == "adam"
    assert info["config"]["lr-schedule"] == "cosine"
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics["train_loss"].notna().all() and (metrics["generic_acc"] > 0.1).any()
