"""PartitionOrderedGrid waits for SuperNodes that register after the ServerApp starts (on a fake clock)."""

from __future__ import annotations

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
