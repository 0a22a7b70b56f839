"""Clients multiplexed over fewer SuperNodes: the same results as one node per client, state that follows the
client through the on-disk store, and resume from a checkpoint in either mode.

In-process nodes here; the real Ray engine runs a multiplexed SCAFFOLD run, killed and continued, in test_sweep.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import torch

from simulations import checkpoint
from simulations.results import RunInfo
from simulations.state_store import STORE_FILE, ClientStateStore
from tests.inprocess import assert_same_results, run_in_process

#: Five clients, three sampled per round, every client evaluated in rounds 2 and 3.
BASE = {
    "num-clients": 5,
    "fraction-train": 0.6,
    "num-server-rounds": 3,
    "local-epochs": 1,
    "evaluate-every": 2,
    "checkpoint-every": 0,
}


def _same_evaluations(a: Path, b: Path) -> None:
    pd.testing.assert_frame_equal(pd.read_csv(a / "evaluations.csv"), pd.read_csv(b / "evaluations.csv"))


# SCAFFOLD (c_i), FedPer (a personal head), MOON (the previous local model): each client's state must reach it
# wherever it trains, including in the evaluate phase (FedPer's personal head).
@pytest.mark.parametrize("method", ["scaffold", "fedper", "moon"])
def test_two_nodes_serving_five_clients_equal_one_node_per_client(tmp_path: Path, method: str) -> None:
    nodes, mux = tmp_path / "nodes", tmp_path / "mux"
    assert run_in_process({**BASE, "method": method, "output-dir": str(nodes)}).exit is None
    outcome = run_in_process({**BASE, "method": method, "output-dir": str(mux)}, num_nodes=2)
    assert outcome.exit is None, outcome.lines[-10:]
    assert any("5 clients served in turn by 2 SuperNodes" in line for line in outcome.lines)
    assert_same_results(nodes, mux)
    _same_evaluations(nodes, mux)
    clients = pd.read_csv(mux / "clients.csv")
    assert sorted(clients["partition_id"].unique()) == [0, 1, 2, 3, 4][: clients["partition_id"].nunique()]
    # Without checkpoints only each client's newest state is kept, one row per client that trained.
    with sqlite3.connect(mux / STORE_FILE) as db:
        rows = db.execute("SELECT client, COUNT(*) FROM states GROUP BY client").fetchall()
    assert {c for c, _ in rows} == set(clients["partition_id"]) and {n for _, n in rows} == {1}


RESUME = {**BASE, "method": "scaffold", "num-server-rounds": 4, "checkpoint-every": 2, "evaluate-every": 0}


@pytest.mark.parametrize("resumed_on", [2, 5], ids=["multiplexed", "one-node-per-client"])
def test_a_killed_multiplexed_run_resumes_from_its_checkpoint(tmp_path: Path, resumed_on: int) -> None:
    """Killed after round 3 (the checkpoint is round 2's, the store holds round 3's states too): resumed on two
    nodes, or on one node per client, it equals the uninterrupted run."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run_in_process({**RESUME, "output-dir": str(full)}).exit is None
    assert run_in_process({**RESUME, "output-dir": str(cut)}, num_nodes=2, kill_after=3).exit == "killed"
    payload = checkpoint.load(cut)
    assert payload["round"] == 2 and payload["client_store"] and not payload["client_states"]
    with sqlite3.connect(cut / STORE_FILE) as db:
        assert db.execute("SELECT MAX(round) FROM states").fetchone()[0] == 3
    resumed = run_in_process({**RESUME, "output-dir": str(cut), "resume": True}, num_nodes=resumed_on)
    assert resumed.exit is None, resumed.lines[-10:]
    assert_same_results(full, cut)
    assert [r["from_round"] for r in RunInfo.load(cut).resumes] == [2]


def _state(value: float) -> dict[str, torch.Tensor]:
    return {"c.weight": torch.full((2, 3), value), "c.bias": torch.tensor([value], dtype=torch.float64)}


def test_store_keeps_versions_until_a_checkpoint_and_rolls_back_to_it(tmp_path: Path) -> None:
    store = ClientStateStore(tmp_path / STORE_FILE)
    assert store.get(7) is None and len(store) == 0
    store.put(1, {7: _state(1.0), 8: _state(2.0)})
    store.put(2, {7: _state(3.0)})
    got = store.get(7)
    assert got is not None and torch.equal(got["c.weight"], torch.full((2, 3), 3.0))
    assert got["c.bias"].dtype == torch.float64
    store.checkpointed(1)  # round 1's rows stay (the newest up to 1), round 2's too (after the checkpoint)
    store.put(3, {8: _state(4.0)})
    store.rollback(1)  # resuming from the round-1 checkpoint: rounds 2 and 3 never happened
    assert float(store.get(7)["c.weight"][0, 0]) == 1.0 and float(store.get(8)["c.weight"][0, 0]) == 2.0
    store.put(2, {7: _state(5.0)})
    store.checkpointed(2)  # client 7's round-1 row is superseded by its round-2 row
    rows = store.db.execute("SELECT client, round FROM states ORDER BY client, round").fetchall()
    assert rows == [(7, 2), (8, 1)]
    assert set(store.all()) == {7, 8} and len(store) == 2
    store.close()


WRITER = """
import sys, torch
from pathlib import Path
from simulations.state_store import ClientStateStore
store = ClientStateStore(Path(sys.argv[1]))
for rnd in range(1, 10_000):
    store.put(rnd, {c: {"w": torch.full((256, 256), float(rnd))} for c in range(20)})
    print(rnd, flush=True)
"""


def test_a_kill_during_writes_leaves_whole_rounds(tmp_path: Path) -> None:
    """SIGKILL a process that writes rounds of 20 states (5 MB each round) into the store: every round in the file
    has all its 20 states, each with its round's values."""
    import signal
    import subprocess
    import sys

    path = tmp_path / STORE_FILE
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(3):  # a few rounds committed, then kill mid-way through the next ones
            assert proc.stdout is not None and proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    store = ClientStateStore(path)
    counts = store.db.execute("SELECT round, COUNT(*) FROM states GROUP BY round").fetchall()
    assert len(counts) >= 3 and {n for _, n in counts} == {20}
    last = max(r for r, _ in counts)
    assert all(float(store.get(c)["w"][0, 0]) == last for c in range(20))
    store.close()
