"""Local-only training's server side: no aggregation at all."""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.common import log

from strategies.base import MethodStrategy


class LocalOnly(MethodStrategy):
    """The server of local-only training: it samples clients and averages their metrics,
    but never aggregates arrays (clients send none), so the global arrays stay as they are.

    Rebased on a server optimiser (``server=fedadam``), it still aggregates nothing.
    """

    def summary(self) -> None:
        log(INFO, "\t├──> Local-only: clients train alone; nothing is aggregated")
        super().summary()

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(list(replies), is_train=True, validate=False)
        if not valid:
            return None, None
        return None, self.train_metrics_aggr_fn([msg.content for msg in valid], self.weighted_by_key)
