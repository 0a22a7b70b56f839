"""fedetf: a torch library for federated learning with simplex-ETF classifiers.

No Flower imports live here: ETF geometry, heads, backbones, losses, local
training/evaluation loops and metrics are usable on their own.
"""

from fedetf.etf import simplex_etf
from fedetf.methods import METHODS, FedAvgMethod, FedGELAMethod, LocalMethod, get_method
from fedetf.models import FedModel, build_model

__all__ = [
    "METHODS",
    "FedAvgMethod",
    "FedGELAMethod",
    "FedModel",
    "LocalMethod",
    "build_model",
    "get_method",
    "simplex_etf",
]
