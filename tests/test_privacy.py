"""Flower's DP wrappers around the run's strategy: the aggregate's noise scale and clipping against the configured
values, their state in checkpoints, methods that cannot be wrapped, and FedAvg and FedGELA end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from simulations.checkpoint import restore_strategy, strategy_state
from simulations.inprocess import _server_process_identity, run_in_process
from strategies.privacy import innermost, with_privacy


@pytest.fixture(autouse=True)
def _server_identity() -> Iterator[None]:
    with _server_process_identity():  # Messages are built as in a ServerApp process
        yield


def _replies(updates: list[np.ndarray]) -> list[Message]:
    out = []
    for i, u in enumerate(updates):
        sent = Message(content=RecordDict(), dst_node_id=i + 1, message_type=MessageType.TRAIN)
        content = RecordDict({"arrays": ArrayRecord({"w": Array(u)}), "metrics": MetricRecord({"num-examples": 1})})
        out.append(Message(content=content, reply_to=sent))
    return out


def test_server_side_noise_has_the_configured_scale() -> None:
    """4 clients send the same small change (norm 0.45, under the clipping norm); the average is that change plus
    Gaussian noise of std multiplier * norm / 4."""
    n = 200_000
    strategy = with_privacy(FedAvg(), "server-fixed", noise_multiplier=1.5, clipping_norm=2.0, sampled=4)
    strategy.current_arrays = ArrayRecord({"w": Array(np.zeros(n, dtype=np.float32))})
    arrays, _ = strategy.aggregate_train(1, _replies([np.full(n, 1e-3, dtype=np.float32)] * 4))
    noise = arrays["w"].numpy() - 1e-3
    assert noise.std() == pytest.approx(1.5 * 2.0 / 4, rel=0.01)
    assert abs(noise.mean()) < 0.01


def test_server_side_clipping_bounds_each_update() -> None:
    """Without noise, updates of norm 10 and 0.5 under clipping norm 1 average to (the first scaled to 1 + the
    second as it is) / 2."""
    strategy = with_privacy(FedAvg(), "server-fixed", noise_multiplier=0.0, clipping_norm=1.0, sampled=2)
    strategy.current_arrays = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    big, small = np.array([6.0, 8.0], dtype=np.float32), np.array([0.3, 0.4], dtype=np.float32)  # norms 10 and 0.5
    arrays, _ = strategy.aggregate_train(1, _replies([big, small]))
    np.testing.assert_allclose(arrays["w"].numpy(), (np.array([0.6, 0.8]) + small) / 2, rtol=1e-5)


def test_wrapped_strategy_state_goes_into_checkpoints() -> None:
    inner = FedAvg(fraction_train=0.5)
    wrapped = with_privacy(inner, "server-adaptive", noise_multiplier=0.05, clipping_norm=0.7, sampled=2)
    assert innermost(wrapped) is inner and innermost(inner) is inner
    wrapped.clipping_norm = 0.42  # adapted during a run
    inner.fraction_train = 0.25
    fresh_inner = FedAvg(fraction_train=0.5)
    fresh = with_privacy(fresh_inner, "server-adaptive", noise_multiplier=0.05, clipping_norm=0.7, sampled=2)
    restore_strategy(fresh, strategy_state(wrapped))
    assert fresh.clipping_norm == 0.42 and fresh.strategy is fresh_inner and fresh_inner.fraction_train == 0.25


def _run(tmp: Path, **overrides: object) -> tuple[object, Path]:
    base = {"dataset": "digits", "model": "cnn", "num-server-rounds": 2, "local-epochs": 1, "output-dir": str(tmp)}
    return run_in_process({**base, **overrides}), tmp


@pytest.mark.parametrize(
    ("method", "mode"), [("fedavg", "server-fixed"), ("fedgela", "client-fixed"), ("fedavg", "server-adaptive")]
)
def test_dp_runs_end_to_end(tmp_path: Path, method: str, mode: str) -> None:
    outcome, out = _run(tmp_path, method=method, dp=mode, **{"dp-noise-multiplier": 0.1, "dp-clipping-norm": 5.0})
    assert outcome.exit is None, outcome.errors  # type: ignore[attr-defined]
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "finished" and info["config"]["dp"] == mode
    assert info["strategy_class"].startswith("flwr.serverapp.strategy.dp_")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"method": "scaffold", "dp": "server-fixed"}, "method='scaffold'"),
        ({"method": "fedavg", "dp": "server-adaptive", "dp-noise-multiplier": 5.0}, "too low"),
    ],
)
def test_dp_refusals_are_one_line_before_training(tmp_path: Path, overrides: dict, expected: str) -> None:
    outcome, out = _run(tmp_path, **overrides)
    assert outcome.exit == 2  # type: ignore[attr-defined]
    (error,) = outcome.errors  # type: ignore[attr-defined]
    assert f"dp={overrides['dp']!r}" in error and expected in error and "\n" not in error
    assert not any(out.iterdir())  # nothing written
