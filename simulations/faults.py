"""Fault injection, as a Flower mod: a seeded fraction of client train calls fails.

For tests and for users who study robustness. ``fault-rate`` in the run config
is the probability that a client's train call raises; whether it does is a
pure function of (seed, round, partition), so a run with faults is as
reproducible as one without.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable


class InjectedFault(RuntimeError):
    """A failure made on purpose by ``fault-rate``."""


def fails(seed: int, server_round: int, partition_id: int, rate: float) -> bool:
    """Whether the call of (round, partition) fails at this rate (seeded, independent of other settings)."""
    if rate <= 0:
        return False
    u = np.random.default_rng([seed, server_round, partition_id, 0xFA17]).random()
    return bool(u < rate)


def fault_injection_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Raise :class:`InjectedFault` for the calls chosen by ``fault-rate``; pass the others on."""
    rate = float(context.run_config.get("fault-rate", 0.0))
    if rate > 0 and msg.metadata.message_type == MessageType.TRAIN:
        server_round = int(msg.content["config"]["server-round"])
        pid = int(context.node_config["partition-id"])
        if fails(int(context.run_config.get("seed", 0)), server_round, pid, rate):
            raise InjectedFault(f"injected fault (fault-rate={rate}) in round {server_round} at partition {pid}")
    return call_next(msg, context)
