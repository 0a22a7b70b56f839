"""PartitionOrderedGrid waits for SuperNodes that register after the ServerApp starts."""

from __future__ import annotations

import time

from simulations.grid import PartitionOrderedGrid


class _LateNodes:
    """A grid whose nodes appear only after ``delay`` seconds."""

    def __init__(self, nodes: list[int], delay: float) -> None:
        self.nodes, self.ready_at = nodes, time.monotonic() + delay

    def get_node_ids(self) -> list[int]:
        return self.nodes if time.monotonic() >= self.ready_at else []


def test_waits_for_late_nodes() -> None:
    grid = PartitionOrderedGrid(_LateNodes([7, 3, 5], delay=0.3))  # type: ignore[arg-type]
    assert sorted(grid.wait_for_nodes(expected=3)) == [3, 5, 7]


def test_a_short_federation_is_reported_after_settling_not_after_the_timeout() -> None:
    grid = PartitionOrderedGrid(_LateNodes([1, 2], delay=0.1))  # type: ignore[arg-type]
    start = time.monotonic()
    assert len(grid.wait_for_nodes(expected=10, settle=0.3, timeout=30)) == 2
    assert time.monotonic() - start < 5


def test_gives_up_after_the_timeout_when_no_node_comes() -> None:
    grid = PartitionOrderedGrid(_LateNodes([1], delay=60))  # type: ignore[arg-type]
    assert grid.wait_for_nodes(expected=1, timeout=0.3) == []
