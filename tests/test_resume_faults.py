"""Runs that survive: checkpoints and bit-identical resume, injected faults, failures that end in one line.

Every run here is the ServerApp's real entry point in this process on in-process nodes (:mod:`tests.inprocess`),
in seconds. Through the real engines: a SCAFFOLD run killed on Ray and continued by the sweep equals the
uninterrupted run (test_sweep); a run where every client fails ends `flwr run` in one line (test_flwr_cli).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

from simulations import checkpoint
from simulations.faults import fails
from simulations.local import default_run_config
from simulations.results import RunInfo
from simulations.rounds import evaluation_due
from tests.inprocess import assert_same_results, run_in_process
from tests.userpkg.hooks import HookLog

BASE = {"num-server-rounds": 4, "local-epochs": 1, "num-clients": 4, "fraction-train": 0.75, "checkpoint-every": 2}
HOOKS = ("configure_train", "aggregate_train", "configure_evaluate", "aggregate_evaluate")


KILL_RESUME = [
    # FedAvg's client with a server optimiser (FedAdam's moments and bias correction by round).
    ("fedavg+fedadam", {"method": "fedavg", "server": "fedadam", "server-args": '{"eta": 0.01}'}),
    # FedGELA with the server-side ETF rotation (a broadcast record in the strategy's state).
    ("fedgela", {"method": "fedgela", "fedgela.nearest-etf": True}),
    # A stateful client method (each client's c_i) with server state (the global c).
    ("scaffold", {"method": "scaffold"}),
    # Methods whose clients keep models (their whole model; a personal model; BatchNorm layers) or whose
    # server keeps prototypes.
    ("local", {"method": "local"}),
    ("ditto", {"method": "ditto"}),
    ("fednh", {"method": "fednh"}),
    ("fedbn", {"method": "fedbn"}),
]


def _same_results(full: Path, cut: Path) -> None:
    assert_same_results(full, cut)
    info = RunInfo.load(cut)
    assert info.status == "finished" and [r["from_round"] for r in info.resumes] == [2]
    assert "resume" not in info.config


@pytest.mark.parametrize("name,overrides", KILL_RESUME, ids=[n for n, _ in KILL_RESUME])
def test_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path: Path, name: str, overrides: dict) -> None:
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run_in_process({**BASE, **overrides, "output-dir": str(full)}).exit is None
    # Killed after round 3: results of rounds 1-3 are written, the last checkpoint is round 2's.
    assert run_in_process({**BASE, **overrides, "output-dir": str(cut)}, kill_after=3).exit == "killed"
    assert RunInfo.load(cut).status == "running"
    assert checkpoint.load(cut)["round"] == 2 and len(pd.read_csv(cut / "metrics.csv")) == 3
    assert run_in_process({**BASE, **overrides, "output-dir": str(cut), "resume": True}).exit is None
    _same_results(full, cut)


#: A stateful client method (each client's c_i) on a user's strategy; 3 of 4 clients per round, so a resumed
#: client may first be sampled rounds after the resume.
RESUME = {
    "method": "scaffold",
    "server": "tests.userpkg.hooks:HookLog",
    "num-server-rounds": 3,
    "local-epochs": 1,
    "num-clients": 4,
    "fraction-train": 0.75,
    "checkpoint-every": 1,
}


def test_a_resumed_run_starts_after_its_checkpoint_and_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run_in_process({**RESUME, "output-dir": str(full)}).exit is None
    assert run_in_process({**RESUME, "output-dir": str(cut)}, kill_after=1).exit == "killed"
    assert checkpoint.load(cut)["round"] == 1 and RunInfo.load(cut).status == "running"
    before = (cut / "metrics.csv").read_bytes()

    # A changed config is refused by the config check itself (the run is unfinished, its checkpoint readable).
    changed = run_in_process({**RESUME, "output-dir": str(cut), "resume": True, "lr": 0.5})
    assert changed.exit == 2 and len(changed.errors) == 1, changed.lines
    assert f"cannot resume {cut}: its config differs in lr=0.01 (now 0.5)" in changed.errors[0]
    assert (cut / "metrics.csv").read_bytes() == before

    HookLog.calls.clear()
    assert run_in_process({**RESUME, "output-dir": str(cut), "resume": True}).exit is None
    # Every hook sees the true round numbers, from the round after the checkpoint on: nothing is replayed (the
    # evaluate hooks run in the all-client evaluation's rounds: evaluate-every, and the last).
    every = int(default_run_config()["evaluate-every"])
    expected = [(h, r) for r in (2, 3) for h in HOOKS if "train" in h or evaluation_due(r, every, 3)]
    assert ("configure_evaluate", 3) in expected and HookLog.calls == expected
    assert_same_results(full, cut)
    info = RunInfo.load(cut)
    assert info.status == "finished" and [r["from_round"] for r in info.resumes] == [1]

    again = run_in_process({**RESUME, "output-dir": str(cut), "resume": True})
    assert again.exit == 2 and len(again.errors) == 1 and f"the run in {cut} finished" in again.errors[0]


def test_no_strategy_hook_is_replaced_at_run_time(tmp_path: Path) -> None:
    HookLog.instances.clear()
    HookLog.calls.clear()
    own = {hook: HookLog.__dict__[hook] for hook in HOOKS}
    outcome = run_in_process(
        {
            "method": "fedavg",
            "server": "tests.userpkg.hooks:HookLog",
            "num-server-rounds": 2,
            "local-epochs": 1,
            "num-clients": 2,
            "evaluate-every": 1,  # the evaluate hooks every round too
            "output-dir": str(tmp_path / "run"),
        }
    )
    assert outcome.exit is None
    [strategy] = HookLog.instances
    assert type(strategy) is HookLog
    for hook in HOOKS + ("summary",):
        assert hook not in vars(strategy)  # no instance attribute shadows a method
    for hook, function in own.items():
        assert HookLog.__dict__[hook] is function and getattr(strategy, hook).__func__ is function
    assert HookLog.calls == [(hook, r) for r in (1, 2) for hook in HOOKS]


def test_every_client_failing_stops_the_run_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "allfail"
    outcome = run_in_process({**BASE, "fraction-train": 1.0, "fault-rate": 0.999, "output-dir": str(out)})
    assert outcome.exit == 1 and len(outcome.errors) == 1, outcome.lines
    info = RunInfo.load(out)
    assert info.status == "failed" and info.error.startswith("all 4 sampled clients failed in round 1; first error:")
    assert "injected fault" in info.error and info.error in outcome.errors[0]
    assert len(pd.read_csv(out / "metrics.csv")) == 0


def test_a_diverging_client_is_a_failed_client_not_nan_weights(tmp_path: Path) -> None:
    out = tmp_path / "nan"
    outcome = run_in_process({**BASE, "num-server-rounds": 1, "lr": 1e6, "output-dir": str(out)})
    assert outcome.exit == 1 and len(outcome.errors) == 1, outcome.lines
    assert "non-finite" in outcome.errors[0]
    info = RunInfo.load(out)
    assert info.status == "failed" and "non-finite" in info.error and "\n" not in info.error


def _train_message(arrays: ArrayRecord) -> Message:
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})})
    return Message(content=content, dst_node_id=7, message_type=MessageType.TRAIN)


@pytest.mark.parametrize("case", ["diverges", "no-data"])
def test_a_client_failure_is_an_error_reply_with_one_line(tmp_path: Path, case: str) -> None:
    """The ClientApp answers its own failure instead of raising (no traceback per client in the log)."""
    from flwr.app import Context

    from simulations import client_app
    from simulations.config import parse_run_config
    from simulations.task import make_method, model_buffer

    overrides = {"lr": 1e6, "local-epochs": 1, "num-clients": 2}
    if case == "no-data":
        overrides |= {"dataset": "cifar10", "data-root": str(tmp_path), "download": False}
    run_config = {**default_run_config(), **overrides}
    arrays = ArrayRecord({"w": torch.zeros(1)})
    if case == "diverges":
        method = make_method(parse_run_config(run_config))
        arrays = ArrayRecord(method.shared_state(model_buffer(method)[1]))
    context = Context(1, 7, {"partition-id": 0, "num-partitions": 2}, RecordDict(), run_config)
    reply = client_app.app(_train_message(arrays), context)
    assert reply.has_error()
    reason = reply.error.reason
    assert "\n" not in reason and "Traceback" not in reason
    expected = "local training diverged" if case == "diverges" else f"dataset 'cifar10' not found in {tmp_path}"
    assert expected in reason, reason
    assert "fedetf.method-state" not in context.state  # a failed round leaves the client's state as it was


def test_injected_faults_are_counted_and_skipped(tmp_path: Path) -> None:
    out = tmp_path / "faults"
    outcome = run_in_process(
        {**BASE, "num-clients": 10, "fraction-train": 1.0, "fault-rate": 0.2, "output-dir": str(out)}
    )
    assert outcome.exit is None and not any("Traceback" in line for line in outcome.lines)
    metrics = pd.read_csv(out / "metrics.csv")
    expected = [sum(fails(0, r, pid, 0.2) for pid in range(10)) for r in range(1, 5)]
    assert metrics["failed_clients"].tolist() == expected and sum(expected) > 0
    assert (metrics["num_clients"] == 10 - metrics["failed_clients"]).all()
    clients = pd.read_csv(out / "clients.csv")
    for r in range(1, 5):
        ok = sorted(pid for pid in range(10) if not fails(0, r, pid, 0.2))
        assert sorted(clients[clients["round"] == r]["partition_id"]) == ok
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
