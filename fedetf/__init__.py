"""fedetf: a torch library for federated learning with simplex-ETF classifiers.

No Flower imports live here: ETF geometry, heads, backbones, methods' client
sides, local training/evaluation loops and metrics are usable on their own.
"""

from fedetf.etf import simplex_etf
from fedetf.methods import ClientRound, LocalMethod, ModelSpec, TrainSettings
from fedetf.models import FedModel, build_model

__all__ = ["ClientRound", "FedModel", "LocalMethod", "ModelSpec", "TrainSettings", "build_model", "simplex_etf"]
