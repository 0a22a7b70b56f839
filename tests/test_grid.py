"""PartitionOrderedGrid waits for SuperNodes that register after the ServerApp starts (on a fake clock)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from simulations.grid import PartitionOrderedGrid


class _FakeClock:
    """Time that advances only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class _LateNodes:
    """A grid whose nodes appear at ``ready_at`` on ``clock``, one more each ``step`` seconds after that."""

    def __init__(self, nodes: list[int], clock: _FakeClock, ready_at: float, step: float = 0.0) -> None:
        self.nodes, self.clock, self.ready_at, self.step = nodes, clock, ready_at, step

    def get_node_ids(self) -> list[int]:
        if self.clock.now < self.ready_at:
            return []
        if self.step == 0:
            return self.nodes
        return self.nodes[: 1 + int((self.clock.now - self.ready_at) / self.step)]


def _wait(grid: PartitionOrderedGrid, clock: _FakeClock, **kwargs: float) -> list[int]:
    return grid.wait_for_nodes(clock=clock, sleep=clock.sleep, **kwargs)  # type: ignore[arg-type]


def test_waits_for_late_nodes() -> None:
    clock = _FakeClock()
    grid = PartitionOrderedGrid(_LateNodes([7, 3, 5], clock, ready_at=10.0))  # type: ignore[arg-type]
    assert sorted(_wait(grid, clock, expected=3, settle=3.0, timeout=120.0, poll=0.5)) == [3, 5, 7]
    assert clock.now == 10.0 and set(clock.sleeps) == {0.5}  # returned on the first poll that saw all three


def test_returns_as_soon_as_the_expected_nodes_are_there() -> None:
    clock = _FakeClock()
    grid = PartitionOrderedGrid(_LateNodes([1, 2], clock, ready_at=0.0))  # type: ignore[arg-type]
    assert _wait(grid, clock, expected=2) == [1, 2]
    assert clock.sleeps == []


def test_a_short_federation_is_reported_after_settling_not_after_the_timeout() -> None:
    clock = _FakeClock()
    grid = PartitionOrderedGrid(_LateNodes([1, 2], clock, ready_at=1.0))  # type: ignore[arg-type]
    assert len(_wait(grid, clock, expected=10, settle=3.0, timeout=120.0, poll=0.5)) == 2
    assert clock.now == 1.0 + 3.0  # steady for `settle` seconds after the nodes appeared


def test_settling_restarts_while_nodes_keep_arriving() -> None:
    clock = _FakeClock()
    grid = PartitionOrderedGrid(_LateNodes([1, 2, 3, 4], clock, ready_at=0.0, step=2.0))  # type: ignore[arg-type]
    assert len(_wait(grid, clock, expected=10, settle=3.0, timeout=120.0, poll=1.0)) == 4
    assert clock.now == 6.0 + 3.0  # the 4th node came at t=6; the count was steady from then on


def test_gives_up_after_the_timeout_when_no_node_comes() -> None:
    clock = _FakeClock()
    grid = PartitionOrderedGrid(_LateNodes([1], clock, ready_at=60.0))  # type: ignore[arg-type]
    assert _wait(grid, clock, expected=1, settle=3.0, timeout=30.0, poll=0.5) == []
    assert clock.now == 30.0


def test_defaults_to_the_real_clock() -> None:
    grid = PartitionOrderedGrid(_LateNodes([4], _FakeClock(), ready_at=0.0))  # type: ignore[arg-type]
    assert grid.wait_for_nodes(expected=1) == [4]


class _AnsweringNodes:
    """A grid whose nodes answer a QUERY with their partition (node id 1000 + p), recording batch sizes."""

    def __init__(self, n: int) -> None:
        self.nodes = [1000 + p for p in reversed(range(n))]
        self.batches: list[int] = []

    def get_node_ids(self) -> list[int]:
        return self.nodes

    def send_and_receive(self, msgs: list, timeout: float | None = None) -> list:
        self.batches.append(len(msgs))
        return [_Reply(m.metadata.dst_node_id, len(self.nodes)) for m in msgs]


class _Reply:
    """The parts of a reply Message that the handshake reads."""

    def __init__(self, node: int, n: int) -> None:
        self.metadata = SimpleNamespace(src_node_id=node)
        self.content = {"node": {"partition-id": node - 1000, "num-partitions": n}}

    def has_error(self) -> bool:
        return False


def test_handshake_queries_in_chunks_and_maps_every_node(monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)  # what a ServerApp process has
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    inner = _AnsweringNodes(1000)
    grid = PartitionOrderedGrid(inner)  # type: ignore[arg-type]
    mapping = grid.handshake(expected=1000, chunk=256)
    assert inner.batches == [256, 256, 256, 232]
    assert mapping == {1000 + p: p for p in range(1000)}
    assert grid.num_partitions == {1000}
    assert list(grid.get_node_ids())[:3] == [1000, 1001, 1002]  # partition order
