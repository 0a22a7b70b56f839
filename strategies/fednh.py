"""FedNH's server side (Dai et al., AAAI 2023): prototypes smoothed towards the pooled class means."""

from __future__ import annotations

from logging import INFO
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.common import log

from fedetf.methods.fednh import CLASS_STATS_KEY, PROTOTYPES_KEY
from strategies.base import Extras, MethodStrategy


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; zero rows stay zero (torch's ``F.normalize``, eps 1e-12)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def smoothed_prototypes(prototypes: np.ndarray, scaled: np.ndarray, counts: np.ndarray, rho: float) -> np.ndarray:
    """The authors' update: ``W <- normalize(rho W + (1 - rho) normalize(sum_i n_ic mu_ic / sum_i n_ic))``.

    ``scaled`` (K x d) and ``counts`` (K) are summed over the clients; a class
    nobody holds has a zero mean and keeps its prototype.
    """
    mean = scaled / np.where(counts > 0, counts, 1.0)[:, None]
    return _unit_rows(rho * prototypes + (1 - rho) * _unit_rows(mean))


class FedNH(MethodStrategy):
    """FedNH's server: FedAvg of the weights (the logit scale included; the prototypes never leave the
    server as weights), and the prototype update from the clients' class statistics, broadcast to every
    client and to the generic evaluation as :data:`fedetf.methods.fednh.PROTOTYPES_KEY`.

    The authors average the weights uniformly over the sampled clients; fedetf
    weights them as every other method (``aggregation-weight``).

    Parameters
    ----------
    initial_prototypes : np.ndarray
        The run's seeded prototypes, K x d with unit rows.
    rho : float (default: 0.9)
        Weight of the previous prototypes in the update (the authors' ``FedNH_smoothing``).
    **kwargs
        Passed on to :class:`flwr.serverapp.strategy.FedAvg`.
    """

    def __init__(self, *, initial_prototypes: np.ndarray, rho: float = 0.9, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prototypes = np.asarray(initial_prototypes, dtype=np.float32)
        self.rho = float(rho)
        self.broadcast[PROTOTYPES_KEY] = ArrayRecord({"prototypes": Array(self.prototypes)})

    def summary(self) -> None:
        log(INFO, "\t├──> FedNH: %d class prototypes, smoothing rho %s", len(self.prototypes), self.rho)
        super().summary()

    def aggregate_extras(self, server_round: int, extras: list[Extras], weights: list[float]) -> None:
        stats = [e[CLASS_STATS_KEY] for e in extras]
        scaled = np.sum([s["scaled"].numpy().astype(np.float64) for s in stats], axis=0)
        counts = np.sum([s["counts"].numpy().astype(np.float64) for s in stats], axis=0)
        new = smoothed_prototypes(self.prototypes.astype(np.float64), scaled, counts, self.rho)
        self.prototypes = new.astype(np.float32)
        self.broadcast[PROTOTYPES_KEY] = ArrayRecord({"prototypes": Array(self.prototypes)})
