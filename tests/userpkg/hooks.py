"""A user's strategy that logs every call of its hooks: FedAvg plus a record of (hook, round) per call."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg


class HookLog(FedAvg):
    """FedAvg whose four round hooks append ``(hook, server_round)`` to :attr:`calls`; every instance is kept."""

    calls: ClassVar[list[tuple[str, int]]] = []
    instances: ClassVar[list[HookLog]] = []

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        HookLog.instances.append(self)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        HookLog.calls.append(("configure_train", server_round))
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        HookLog.calls.append(("aggregate_train", server_round))
        return super().aggregate_train(server_round, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        HookLog.calls.append(("configure_evaluate", server_round))
        return super().configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        HookLog.calls.append(("aggregate_evaluate", server_round))
        return super().aggregate_evaluate(server_round, replies)
