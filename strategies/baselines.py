"""Baselines whose server side is FedAvg: each only names its client-side method.

Their client pieces (losses and logit adjustments) are in :mod:`fedetf.methods`;
their hyperparameters are run-config keys (``prox-mu``, ``fedlc-tau``,
``fedrs-alpha``), read by the clients.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg


class FedProx(FedAvg):
    """FedProx (Li et al., 2020): FedAvg aggregation; clients add ``mu/2 ||w - w_global||^2``."""

    client_method = "fedprox"


class FedLC(FedAvg):
    """FedLC (Zhang et al., ICML 2022): FedAvg aggregation; clients calibrate logits by local counts."""

    client_method = "fedlc"


class FedRS(FedAvg):
    """FedRS (Li & Zhan, KDD 2021): FedAvg aggregation; clients restrict the softmax of absent classes."""

    client_method = "fedrs"
