"""What method strategies share: extra named records in replies (received) and in train messages (broadcast).

A method's server side subclasses :class:`MethodStrategy` (itself Flower's
FedAvg) and overrides only :meth:`MethodStrategy.aggregate_extras`. The
registry can rebase it on any FedAvg-family Flower strategy (FedAdam,
FedAvgM, FedMedian, ...), so the method's extras compose with any server
optimiser: ``type("Scaffold+FedAdam", (Scaffold, FedAdam), {})``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

Extras = dict[str, ArrayRecord]


class MethodStrategy(FedAvg):
    """FedAvg that also takes extra ArrayRecords from replies and broadcasts records to clients.

    Replies may carry ArrayRecords besides ``arrays`` (e.g. ``scaffold.delta_c``,
    ``fedgela.class_stats``); they are removed before Flower's aggregation (which
    expects exactly one ArrayRecord) and handed to :meth:`aggregate_extras`.
    Records in :attr:`broadcast` (e.g. ``scaffold.c``) travel with every train
    message; the ServerApp's generic evaluation sees them too.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.broadcast: Extras = {}
        self.num_nodes = 0

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.num_nodes = len(list(grid.get_node_ids()))
        messages = list(super().configure_train(server_round, arrays, config, grid))
        for msg in messages:
            for key, record in self.broadcast.items():
                msg.content[key] = record
        return messages

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(super().configure_evaluate(server_round, arrays, config, grid))
        for msg in messages:  # a personal model needs what training received (e.g. FedGELA's ETF, FedNH's prototypes)
            for key, record in self.broadcast.items():
                msg.content[key] = record
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        extras: list[Extras] = []
        weights: list[float] = []
        for msg in replies:
            if msg.has_error():
                continue
            content = msg.content
            names = [k for k in content.array_records if k != self.arrayrecord_key]
            extras.append({k: content.array_records[k] for k in names})
            for k in names:
                del content[k]
            weights.append(float(next(iter(content.metric_records.values()))[self.weighted_by_key]))
        arrays, metrics = super().aggregate_train(server_round, replies)
        if extras:
            self.aggregate_extras(server_round, extras, weights)
        return arrays, metrics

    def aggregate_extras(self, server_round: int, extras: list[Extras], weights: list[float]) -> None:
        """Use the successful replies' extra records (same order as ``weights``); update :attr:`broadcast`."""
