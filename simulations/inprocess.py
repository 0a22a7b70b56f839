"""Run the real ServerApp entry point in this process, on nodes that are ClientApp calls in this process.

No Ray and no SuperLink: the same ServerApp, ClientApp, results files, checkpoints and resume as
``flwr run``, one client at a time in this process. A small run takes seconds, its log lines are
captured, and the strategy object stays inspectable. Tests use it, and ``benchmarks/comparison.py
--jobs N`` runs many such runs side by side (one process each). ``kill_after`` stops the ServerApp
after that round as a kill would (:class:`simulations.faults.KillAfterRound`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from flwr.app import Context, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from simulations import client_app, server_app
from simulations.faults import KillAfterRound, Killed
from simulations.grid import InProcessGrid
from simulations.local import default_run_config


@dataclass
class Outcome:
    """How a run ended: ``exit`` is None when it finished, else its SystemExit status (``"killed"`` when
    killed on purpose); ``lines`` its log, ``"LEVEL message"`` each."""

    exit: int | str | None
    lines: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return [line for line in self.lines if line.startswith("ERROR")]


@contextlib.contextmanager
def _server_process_identity() -> Iterator[None]:
    """What Flower sets in a ServerApp process (Messages read it)."""
    saved = TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def run_in_process(overrides: dict[str, Any], num_nodes: int | None = None, kill_after: int | None = None) -> Outcome:
    """Run ``server_app.main`` on the defaults plus ``overrides``, with ``num_nodes`` (default num-clients) nodes."""
    run_config = {**default_run_config(), **overrides}
    grid: Any = InProcessGrid(client_app.app, run_config, num_nodes or int(run_config["num-clients"]))
    if kill_after is not None:
        grid = KillAfterRound(grid, kill_after)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda rec: lines.append(f"{rec.levelname} {rec.getMessage()}")  # type: ignore[method-assign]
    logger = logging.getLogger("flwr")
    logger.addHandler(handler)
    try:
        with _server_process_identity():
            server_app.main(grid, context)
    except Killed:
        return Outcome("killed", lines)
    except SystemExit as exc:
        return Outcome(exc.code, lines)
    finally:
        logger.removeHandler(handler)
    return Outcome(None, lines)
