"""The all-client evaluation: fairness statistics and the reweighted view on hand-worked cases, and runs where every
client (held-out ones too) is evaluated while held-out clients never receive a train message."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import Context, MessageType, RecordDict

from fedetf.metrics import fairness, reweighted_accuracy
from simulations import client_app, server_app
from simulations.config import parse_run_config
from simulations.contracts import ClientEvaluation
from simulations.grid import InProcessGrid
from simulations.inprocess import _server_process_identity
from simulations.local import default_run_config
from simulations.results import evaluation_row
from simulations.rounds import evaluation_due
from simulations.task import holdout_partitions


def _eval(pid: int, correct: int, tests: int, unseen: int = 0, train: int = 100) -> ClientEvaluation:
    return ClientEvaluation(pid, unseen, correct / tests, correct / tests, correct, tests, train, 1)


def test_pooled_mean_worst10_and_min_by_hand() -> None:
    # Ten seen clients: nine score 9/10, one 1/10 on 10 test images each; a client with 90 images scores 0/90.
    seen = [_eval(p, 9, 10) for p in range(9)] + [_eval(9, 1, 10)]
    row = evaluation_row(seen)
    assert row["all_personal_acc"] == pytest.approx(82 / 100)  # pooled: 81 + 1 correct of 100
    assert row["all_personal_acc_mean"] == pytest.approx((9 * 0.9 + 0.1) / 10)
    assert row["all_personal_acc_worst10"] == pytest.approx(0.1)  # the worst 1 of 10
    assert row["all_personal_acc_min"] == pytest.approx(0.1)
    assert row["all_personal_acc_std"] == pytest.approx(np.std([0.9] * 9 + [0.1]))
    # Pooled weighs clients by test size, the mean does not.
    skewed = evaluation_row([_eval(0, 10, 10), _eval(1, 0, 90)])
    assert skewed["all_personal_acc"] == pytest.approx(0.1) and skewed["all_personal_acc_mean"] == pytest.approx(0.5)
    # 20 clients: the worst 10% is the mean of the lowest two.
    many = fairness(np.array([1.0] * 18 + [0.2, 0.4]))
    assert many["worst10"] == pytest.approx(0.3) and many["min"] == pytest.approx(0.2)


def test_unseen_clients_are_reported_apart_from_the_seen() -> None:
    row = evaluation_row([_eval(0, 5, 10), _eval(1, 1, 10, unseen=1), _eval(2, 3, 10, unseen=1)])
    assert row["all_personal_acc"] == pytest.approx(0.5) and row["all_personal_acc_min"] == pytest.approx(0.5)
    assert row["unseen_personal_acc"] == pytest.approx(0.2) and row["unseen_personal_acc_min"] == pytest.approx(0.1)
    assert row["evaluated_clients"] == 3
    assert all(math.isnan(v) for v in evaluation_row([]).values())


def test_reweighted_accuracy_by_hand() -> None:
    # Global test set: class 0 (4 images, 3 right), class 1 (2 images, 0 right), class 2 (4 images, 4 right).
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    p = np.array([0, 0, 0, 1, 0, 0, 2, 2, 2, 2])
    # A client holding 30 images of class 0, 10 of class 2 and none of class 1: 0.75 * 3/4 + 0.25 * 4/4.
    assert reweighted_accuracy(y, p, np.array([30, 0, 10])) == pytest.approx(0.75 * 0.75 + 0.25 * 1.0)
    # Equal weights give the balanced accuracy; a class without test images is left out and the rest renormalised.
    assert reweighted_accuracy(y, p, np.array([1, 1, 1])) == pytest.approx((0.75 + 0 + 1) / 3)
    assert reweighted_accuracy(y, p, np.array([1, 0, 1, 5])) == pytest.approx((0.75 + 1) / 2)
    # With a reweighted view the pooled figure is the train-size-weighted mean of the clients' accuracies.
    a = ClientEvaluation(0, 0, 0.5, 0.5, -1, 10, 300, 1)
    b = ClientEvaluation(1, 0, 0.9, 0.9, -1, 10, 100, 1)
    assert evaluation_row([a, b])["all_personal_acc"] == pytest.approx(0.6)


def test_evaluation_rounds() -> None:
    assert [r for r in range(1, 11) if evaluation_due(r, 3, 10)] == [3, 6, 9, 10]
    assert [r for r in range(1, 5) if evaluation_due(r, 1, 4)] == [1, 2, 3, 4]
    assert not any(evaluation_due(r, 0, 4) for r in range(1, 5))


def test_holdout_draw_is_seeded_and_never_takes_every_client() -> None:
    cfg = parse_run_config({**default_run_config(), "num-clients": 10, "holdout-clients": 0.2, "seed": 3})
    assert holdout_partitions(cfg) == holdout_partitions(cfg) and len(holdout_partitions(cfg)) == 2
    tiny = parse_run_config({**default_run_config(), "num-clients": 2, "holdout-clients": 0.9})
    assert len(holdout_partitions(tiny)) == 1
    none = parse_run_config({**default_run_config(), "holdout-clients": 0.0})
    assert holdout_partitions(none) == frozenset()


class RecordingGrid(InProcessGrid):
    """Notes every message's type and destination partition."""

    sent: list[tuple[str, int]]

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        messages = list(messages)
        self.sent = getattr(self, "sent", []) + [
            (m.metadata.message_type, int(self.contexts[m.metadata.dst_node_id].node_config["partition-id"]))
            for m in messages
        ]
        return super().send_and_receive(messages, timeout=timeout)


@pytest.mark.parametrize("method", ["fedper", "fedbabu"])
def test_every_client_is_evaluated_and_held_out_ones_never_train(tmp_path: Path, method: str) -> None:
    """fraction-train=0.3 of 10 clients, 2 held out, evaluated every 2 rounds and in the last of 3."""
    overrides = {
        "dataset": "digits",
        "model": "cnn",
        "num-clients": 10,
        "num-server-rounds": 3,
        "local-epochs": 1,
        "fraction-train": 0.3,
        "holdout-clients": 0.2,
        "evaluate-every": 2,
        "method": method,
        "output-dir": str(tmp_path),
    }
    run_config = {**default_run_config(), **overrides}
    held_out = holdout_partitions(parse_run_config(run_config))
    grid = RecordingGrid(client_app.app, run_config, 10)
    with _server_process_identity():
        server_app.main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config))
    trained = {p for kind, p in grid.sent if kind == MessageType.TRAIN}
    assert trained and not trained & held_out
    evaluations = pd.read_csv(tmp_path / "evaluations.csv")
    assert sorted(evaluations["round"].unique()) == [2, 3]
    for _, group in evaluations.groupby("round"):
        assert sorted(group["partition_id"]) == list(range(10))  # every client, sampled or not
        assert set(group.loc[group["unseen"] == 1, "partition_id"]) == held_out
    metrics = pd.read_csv(tmp_path / "metrics.csv").set_index("round")
    assert metrics.loc[1, ["all_personal_acc", "all_personal_acc_worst10"]].isna().all()
    for r in (2, 3):
        seen = evaluations[(evaluations["round"] == r) & (evaluations["unseen"] == 0)]
        unseen = evaluations[(evaluations["round"] == r) & (evaluations["unseen"] == 1)]
        assert metrics.loc[r, "all_personal_acc"] == pytest.approx(
            seen["personal_correct"].sum() / seen["test_examples"].sum()
        )
        assert metrics.loc[r, "all_personal_acc_min"] == pytest.approx(seen["personal_acc"].min())
        assert metrics.loc[r, "unseen_personal_acc_mean"] == pytest.approx(unseen["personal_acc"].mean())
        assert metrics.loc[r, "num_clients"] == 2  # int(0.3 * 8) training clients sampled
