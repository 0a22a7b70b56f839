"""Checkpoint files: every strategy's state round-trips through torch.load(weights_only=True)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import FedAdam, FedAvgM

from simulations import checkpoint
from strategies.fedgela import FedGELA
from strategies.scaffold import Scaffold


@pytest.mark.parametrize("cls", [FedAdam, FedAvgM, Scaffold, FedGELA])
def test_strategy_state_round_trips_exactly(tmp_path: Path, cls: type) -> None:
    strategy = cls()
    rng = np.random.default_rng(0)
    arrays = {"w": rng.normal(size=(3, 2)).astype(np.float32), "n": np.array(7, dtype=np.int64)}
    # The kinds of state Flower's and our strategies keep: arrays, dicts of arrays, numpy scalars, records.
    strategy.current_arrays = dict(arrays)
    strategy.m_t = {k: v * 2 for k, v in arrays.items()}
    strategy.momentum_vector = [arrays["w"] * 3]
    strategy.eta = np.float32(0.1)
    strategy.broadcast = {"scaffold.c": ArrayRecord({"w": Array(arrays["w"])})}
    random.seed(5)
    path = checkpoint.save(
        tmp_path,
        server_round=3,
        arrays=ArrayRecord({"w": Array(arrays["w"])}),
        strategy=strategy,
        client_states={2: {"model.classifier.fc.weight": torch.ones(2, 2)}},
        config={"seed": 0, "method": "fedavg"},
    )
    expected = random.random()
    payload = checkpoint.load(tmp_path)  # weights_only=True inside
    assert payload["round"] == 3 and path.name == "checkpoint.pt"
    fresh = cls()
    checkpoint.restore_strategy(fresh, payload["strategy"])
    assert type(fresh.eta) is np.float32 and fresh.eta == np.float32(0.1)
    assert all(
        np.array_equal(fresh.current_arrays[k], v) and fresh.current_arrays[k].dtype == v.dtype
        for k, v in arrays.items()
    )
    assert np.array_equal(fresh.momentum_vector[0], arrays["w"] * 3)
    assert np.array_equal(fresh.broadcast["scaffold.c"]["w"].numpy(), arrays["w"])
    checkpoint.restore_random(payload)
    assert random.random() == expected
    assert torch.equal(
        checkpoint.client_states(payload, tmp_path, stored=False)[2]["model.classifier.fc.weight"], torch.ones(2, 2)
    )
    assert not list(tmp_path.glob(".*.tmp*"))


def test_unreadable_or_foreign_checkpoints_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match="unreadable") as info:
        checkpoint.load(tmp_path)
    assert "\n" not in str(info.value)
    torch.save({"format": ["other", 1]}, tmp_path / "checkpoint.pt")
    with pytest.raises(checkpoint.CheckpointError, match="not a fedetf checkpoint"):
        checkpoint.load(tmp_path)


def test_checkpoints_come_every_n_rounds_and_at_the_last() -> None:
    assert [r for r in range(1, 8) if checkpoint.due(r, every=3, last=7)] == [3, 6, 7]
    assert [r for r in range(1, 5) if checkpoint.due(r, every=1, last=4)] == [1, 2, 3, 4]
    assert not any(checkpoint.due(r, every=0, last=4) for r in range(1, 5))
