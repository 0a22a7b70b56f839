"""Fault injection: failing clients (a Flower mod) and a ServerApp that dies after a given round (a Grid).

For tests and for users who study robustness. ``fault-rate`` in the run config
is the probability that a client's train call fails; whether it does is a pure
function of (seed, round, partition), so a run with faults is as reproducible
as one without. :class:`KillAfterRound` wraps the ServerApp's Grid and stops the
ServerApp as a kill would (results files left as they are), for tests of resume.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable
from flwr.serverapp import Grid

from simulations.contracts import CONFIG, error_reply


class InjectedFault(RuntimeError):
    """A failure made on purpose by ``fault-rate``."""


def fails(seed: int, server_round: int, partition_id: int, rate: float) -> bool:
    """Whether the call of (round, partition) fails at this rate (seeded, independent of other settings)."""
    if rate <= 0:
        return False
    u = np.random.default_rng([seed, server_round, partition_id, 0xFA17]).random()
    return bool(u < rate)


def fault_injection_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Answer the train calls chosen by ``fault-rate`` with an :class:`InjectedFault` error reply."""
    rate = float(context.run_config.get("fault-rate", 0.0))
    if rate > 0 and msg.metadata.message_type == MessageType.TRAIN:
        server_round = int(msg.content[CONFIG]["server-round"])
        pid = int(context.node_config["partition-id"])
        if fails(int(context.run_config.get("seed", 0)), server_round, pid, rate):
            fault = InjectedFault(f"injected fault (fault-rate={rate}) in round {server_round} at partition {pid}")
            return error_reply(msg, fault)
    return call_next(msg, context)


class Killed(SystemExit):
    """The ServerApp was stopped by :class:`KillAfterRound`; like a kill, it leaves the run's files as they are."""


class KillAfterRound(Grid):
    """Delegates to ``inner``, but raises :class:`Killed` when asked to send training for a round after ``after``.

    Round ``after``'s results and checkpoint are written by then, as when a
    process is killed during the next round.
    """

    def __init__(self, inner: Grid, after: int) -> None:
        self.inner, self.after = inner, after
        if hasattr(inner, "settle_seconds"):
            self.settle_seconds = inner.settle_seconds

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        for msg in messages:
            if msg.metadata.message_type == MessageType.TRAIN and msg.content[CONFIG]["server-round"] > self.after:
                raise Killed(f"killed after round {self.after}")
        return self.inner.send_and_receive(messages, timeout=timeout)

    def set_run(self, run: Any) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Any:
        return self.inner.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self.inner.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)
