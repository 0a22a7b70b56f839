"""Runs that survive: checkpoints and bit-identical resume, injected faults, diverging clients."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from simulations import checkpoint
from simulations.faults import fails
from simulations.local import SimulationFailed, run_local
from simulations.results import run_state

pytestmark = pytest.mark.slow

BASE = {"num-server-rounds": 4, "local-epochs": 1, "num-clients": 4, "fraction-train": 0.75, "checkpoint-every": 2}


@pytest.mark.parametrize(
    "name,overrides",
    [
        # FedAvg's client with a server optimiser (FedAdam's moments and bias correction by round).
        ("fedavg+fedadam", {"method": "fedavg", "server": "fedadam", "server-args": '{"eta": 0.01}'}),
        # FedGELA with the server-side ETF rotation (a broadcast record in the strategy's state).
        ("fedgela", {"method": "fedgela", "fedgela.nearest-etf": True}),
        # A stateful client method (each client's c_i) with server state (the global c).
        ("scaffold", {"method": "scaffold"}),
    ],
)
def test_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path: Path, name: str, overrides: dict) -> None:
    full, cut = tmp_path / "full", tmp_path / "cut"
    run_local({**BASE, **overrides, "output-dir": str(full)})
    # Killed after round 3: results of rounds 1-3 are written, the last checkpoint is round 2's.
    run_local({**BASE, **overrides, "output-dir": str(cut)}, stop_after_round=3)
    assert json.loads((cut / "run.json").read_text())["status"] == "running"
    assert run_state(cut, stale_after=0) == "interrupted"  # no heartbeat since (in-process here: its pid lives)
    assert checkpoint.load(cut)["round"] == 2 and len(pd.read_csv(cut / "metrics.csv")) == 3
    run_local({**BASE, **overrides, "output-dir": str(cut), "resume": True})
    a = pd.read_csv(full / "metrics.csv").drop(columns="round_seconds")
    b = pd.read_csv(cut / "metrics.csv").drop(columns="round_seconds")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    pd.testing.assert_frame_equal(pd.read_csv(full / "clients.csv"), pd.read_csv(cut / "clients.csv"), check_exact=True)
    info = json.loads((cut / "run.json").read_text())
    assert info["status"] == "finished" and [r["from_round"] for r in info["resumes"]] == [2]
    assert "resume" not in info["config"]


def test_resume_is_refused_for_finished_or_changed_runs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_local({**BASE, "num-server-rounds": 1, "output-dir": str(out)})
    with pytest.raises(SimulationFailed, match="exited with status 2"):
        run_local({**BASE, "num-server-rounds": 1, "output-dir": str(out), "resume": True})
    before = (out / "metrics.csv").read_bytes()
    with pytest.raises(SimulationFailed):
        run_local({**BASE, "num-server-rounds": 1, "output-dir": str(out), "resume": True, "lr": 0.5})
    assert (out / "metrics.csv").read_bytes() == before


def test_injected_faults_are_counted_and_skipped(tmp_path: Path) -> None:
    out = tmp_path / "faults"
    run_local({**BASE, "num-clients": 10, "fraction-train": 1.0, "fault-rate": 0.2, "output-dir": str(out)})
    metrics = pd.read_csv(out / "metrics.csv")
    expected = [sum(fails(0, r, pid, 0.2) for pid in range(10)) for r in range(1, 5)]
    assert metrics["failed_clients"].tolist() == expected and sum(expected) > 0
    assert (metrics["num_clients"] == 10 - metrics["failed_clients"]).all()
    clients = pd.read_csv(out / "clients.csv")
    for r in range(1, 5):
        ok = sorted(pid for pid in range(10) if not fails(0, r, pid, 0.2))
        assert sorted(clients[clients["round"] == r]["partition_id"]) == ok
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


def test_a_round_where_every_client_fails_stops_the_run_with_the_first_error(tmp_path: Path) -> None:
    out = tmp_path / "allfail"
    with pytest.raises(SimulationFailed, match="all 4 sampled clients failed"):
        run_local({**BASE, "fraction-train": 1.0, "fault-rate": 0.999, "output-dir": str(out)})
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "failed" and "injected fault" in info["error"]


def test_a_diverging_client_is_a_failed_client_not_nan_weights(tmp_path: Path) -> None:
    out = tmp_path / "nan"
    with pytest.raises(SimulationFailed, match="non-finite"):
        run_local({**BASE, "num-server-rounds": 1, "lr": 1e6, "output-dir": str(out)})
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "failed" and "non-finite" in info["error"]
