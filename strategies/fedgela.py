"""FedGELA's server side: FedAvg over everything except the fixed ETF."""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg


class FedGELA(FedAvg):
    """FedGELA (Fan et al., NeurIPS 2023), server side.

    Averages the backbone and feature head (BatchNorm statistics included),
    weighted by ``weighted_by_key``. The fixed keys (the simplex ETF) are never
    averaged: they are removed from every reply, checked to be unchanged, and
    the global values are put back, so the ETF is bitwise identical all run.

    Parameters
    ----------
    fixed_keys : tuple[str, ...] (default: ("classifier.etf",))
        State-dict keys that stay fixed for the whole run.
    **kwargs
        Passed on to :class:`flwr.serverapp.strategy.FedAvg`.
    """

    client_method = "fedgela"

    def __init__(self, *, fixed_keys: tuple[str, ...] = ("classifier.etf",), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fixed_keys = tuple(fixed_keys)
        self._fixed: dict[str, np.ndarray] = {}
        self._order: list[str] = []

    def summary(self) -> None:
        log(INFO, "\t├──> FedGELA: fixed (never averaged) keys: %s", list(self.fixed_keys))
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if not self._fixed:
            missing = [k for k in self.fixed_keys if k not in arrays]
            if missing:
                raise KeyError(f"FedGELA: fixed keys {missing} not in the global arrays")
            self._fixed = {k: arrays[k].numpy().copy() for k in self.fixed_keys}
            self._order = list(arrays.keys())
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        for msg in replies:
            if msg.has_error():
                continue
            record = msg.content[self.arrayrecord_key]
            for key, value in self._fixed.items():
                if not np.array_equal(record[key].numpy(), value):
                    raise ValueError(f"FedGELA: node {msg.metadata.src_node_id} changed the fixed array {key!r}")
                del record[key]
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is not None:
            fixed = {k: Array(v) for k, v in self._fixed.items()}
            arrays = ArrayRecord({k: fixed[k] if k in fixed else arrays[k] for k in self._order})
        return arrays, metrics
