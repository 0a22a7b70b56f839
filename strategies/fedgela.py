"""FedGELA's server side: FedAvg of everything clients send (the ETF never leaves a client), plus the
optional nearest-ETF rotation (variant 5 of shared/spec/etf-variants.md)."""

from __future__ import annotations

from logging import INFO
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from flwr.common import log

from fedetf.etf import nearest_etf
from fedetf.methods.fedgela import CLASS_STATS_KEY, ETF_KEY
from strategies.base import Extras, MethodStrategy


class FedGELA(MethodStrategy):
    """FedGELA (Fan et al., NeurIPS 2023), server side.

    Clients never send the fixed ETF, so aggregation is FedAvg's (BatchNorm
    statistics included), and any Flower server optimiser composes with it.
    With ``initial_etf`` given, clients send per-class feature sums and counts
    (:data:`~fedetf.methods.fedgela.CLASS_STATS_KEY`); from round ``warmup`` on, the server rotates the
    ETF to the one nearest the pooled class means and broadcasts it as
    :data:`~fedetf.methods.fedgela.ETF_KEY`.

    Parameters
    ----------
    initial_etf : np.ndarray or None (default: None)
        The run's seeded ETF (d x K); None disables the rotation.
    delta : float (default: 0.1)
        Weight of the previous ETF in the rotation target.
    warmup : int (default: 1)
        First round after which the ETF is rotated.
    **kwargs
        Passed on to :class:`flwr.serverapp.strategy.FedAvg`.
    """

    def __init__(
        self, *, initial_etf: np.ndarray | None = None, delta: float = 0.1, warmup: int = 1, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.etf = None if initial_etf is None else np.asarray(initial_etf, dtype=np.float32)
        self.delta, self.warmup = float(delta), int(warmup)

    def summary(self) -> None:
        rotation = "off" if self.etf is None else f"nearest ETF from round {self.warmup} (delta {self.delta})"
        log(INFO, "\t├──> FedGELA: the ETF stays on the clients; rotation %s", rotation)
        super().summary()

    def aggregate_extras(self, server_round: int, extras: list[Extras], weights: list[float]) -> None:
        if self.etf is None or server_round < self.warmup:
            return
        stats = [e[CLASS_STATS_KEY] for e in extras]
        sums = np.sum([s["sums"].numpy() for s in stats], axis=0)  # K x d
        counts = np.sum([s["counts"].numpy() for s in stats], axis=0)
        prev = torch.from_numpy(self.etf)
        means = torch.from_numpy(sums / np.maximum(counts, 1)[:, None]).T  # d x K
        # A class nobody holds this round keeps its current vertex as its "mean".
        means[:, torch.from_numpy(counts == 0)] = prev[:, torch.from_numpy(counts == 0)].to(means)
        self.etf = nearest_etf(means, prev, self.delta).numpy()
        self.broadcast[ETF_KEY] = ArrayRecord({"etf": Array(self.etf)})
