"""FedAvg (McMahan et al., AISTATS 2017): the base client, unchanged."""

from fedetf.methods.base import LocalMethod

FedAvg = LocalMethod

__all__ = ["FedAvg"]
