"""Client sides of federated methods: FedAvg's local round and the hooks each method overrides.

The method registry (name -> class) is :data:`strategies.registry.METHODS`;
this package has no Flower imports.
"""

from fedetf.methods.base import (
    ClientRound,
    LocalMethod,
    ModelSpec,
    NoSettings,
    Phase,
    TrainSettings,
    make_settings,
    setting,
    setting_key,
    settings_fields,
)
from fedetf.methods.fedgela import FedGELA, adaptation_vector

__all__ = [
    "ClientRound",
    "FedGELA",
    "LocalMethod",
    "ModelSpec",
    "NoSettings",
    "Phase",
    "TrainSettings",
    "adaptation_vector",
    "make_settings",
    "setting",
    "setting_key",
    "settings_fields",
]
