"""Run an experiment in-process with Flower's simulation engine (Ray backend).

``flwr run .`` is the user's entry point; this helper runs the same ServerApp
and ClientApp handlers through ``flwr.simulation.run_simulation`` for tests
and benchmarks, with run-config overrides applied on top of pyproject.toml's
``[tool.flwr.app.config]``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.common.config import flatten_dict
from flwr.serverapp import Grid, ServerApp

from simulations import client_app, server_app
from simulations.faults import fault_injection_mod

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def default_run_config() -> dict[str, Any]:
    """``[tool.flwr.app.config]`` from the project's pyproject.toml, nested tables flattened to dotted keys."""
    with PYPROJECT.open("rb") as f:
        return dict(flatten_dict(tomllib.load(f)["tool"]["flwr"]["app"]["config"]))


class SimulationFailed(RuntimeError):
    """The ServerApp of a :func:`run_local` run did not finish."""


class Killed(SystemExit):
    """Raised inside the ServerApp by ``stop_after_round``: like a kill, it leaves the run's files as they are."""


def make_apps(
    overrides: dict[str, Any], stop_after_round: int | None = None
) -> tuple[ServerApp, ClientApp, dict[str, Any]]:
    """ServerApp and ClientApp that see the defaults plus ``overrides`` as run config.

    The third item records the ServerApp's outcome (``finished``, ``error``),
    since Flower's simulation engine logs a failed ServerApp instead of raising.
    ``stop_after_round`` stops the ServerApp abruptly after that round's results
    (for tests of resume).
    """
    run_config = {**default_run_config(), **overrides}
    outcome: dict[str, Any] = {"finished": False, "error": None}

    def inject(fn: Callable[[Message, Context], Message]) -> Callable[[Message, Context], Message]:
        def handler(msg: Message, context: Context) -> Message:
            # The node's Context may not be modified; hand the handler a view
            # that shares its state but carries the overridden run config.
            return fn(msg, dataclasses.replace(context, run_config=dict(run_config)))

        return handler

    def faults(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        return fault_injection_mod(msg, dataclasses.replace(context, run_config=dict(run_config)), call_next)

    client = ClientApp(mods=[faults])
    client.train()(inject(client_app.train))
    client.evaluate()(inject(client_app.evaluate_local))
    client.query()(inject(client_app.query))

    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        context.run_config = dict(run_config)

        def on_round(r: int) -> None:
            if stop_after_round is not None and r >= stop_after_round:
                raise Killed(f"stopped after round {r}")

        try:
            server_app.main(grid, context, on_round)
        except BaseException as e:
            outcome["error"] = e
            raise
        outcome["finished"] = True

    return server, client, outcome


def run_local(
    overrides: dict[str, Any],
    num_supernodes: int | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0.0,
    stop_after_round: int | None = None,
) -> None:
    """Run one experiment on the Ray backend; ``num_supernodes`` defaults to ``num-clients``.

    Raises :class:`SimulationFailed` (chained to the ServerApp's exception, if
    any) when the run does not finish, unless it was stopped on purpose by
    ``stop_after_round``.
    """
    from flwr.simulation import run_simulation

    server, client, outcome = make_apps(overrides, stop_after_round)
    nodes = num_supernodes or int({**default_run_config(), **overrides}["num-clients"])
    try:
        run_simulation(
            server_app=server,
            client_app=client,
            num_supernodes=nodes,
            backend_config={"client_resources": {"num_cpus": num_cpus, "num_gpus": num_gpus}},
        )
    except Exception as exc:  # the engine re-raises some ServerApp errors itself
        outcome["error"] = outcome["error"] or exc
    if not outcome["finished"] and not isinstance(outcome["error"], Killed):
        error = outcome["error"]
        if isinstance(error, SystemExit):
            reason = f"the ServerApp exited with status {error.code} (its error is in the log above)"
        else:
            reason = f"{type(error).__name__}: {error}" if error else "the ServerApp never ran to completion"
        raise SimulationFailed(f"simulation with run config {overrides} failed: {reason}") from error
