"""SCAFFOLD's server side (Karimireddy et al., ICML 2020)."""

from __future__ import annotations

from logging import INFO

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.common import log

from fedetf.methods.scaffold import C_KEY, DELTA_C_KEY
from strategies.base import Extras, MethodStrategy


class Scaffold(MethodStrategy):
    """SCAFFOLD's server: FedAvg on the weights; the global control variate
    ``c <- c + |S| / N * mean_i(delta_c_i)``, broadcast to clients as
    :data:`~fedetf.methods.scaffold.C_KEY`.

    ``c`` starts at zero (clients read a missing record as zeros). It is the
    strategy's own state (:attr:`c`).
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.c: dict[str, np.ndarray] = {}

    def summary(self) -> None:
        log(INFO, "\t├──> SCAFFOLD: global control variate broadcast as %r", C_KEY)
        super().summary()

    def aggregate_extras(self, server_round: int, extras: list[Extras], weights: list[float]) -> None:
        deltas = [e[DELTA_C_KEY] for e in extras]
        share = len(deltas) / max(self.num_nodes, len(deltas))
        for key in deltas[0].keys():
            mean = np.mean([d[key].numpy() for d in deltas], axis=0)
            self.c[key] = self.c.get(key, np.zeros_like(mean)) + share * mean
        self.broadcast[C_KEY] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in self.c.items()})
