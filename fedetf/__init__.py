"""fedetf: a torch library for federated learning with simplex-ETF classifiers.

No Flower imports live here: ETF geometry, heads, backbones, methods' client
sides, local training/evaluation loops and metrics are usable on their own.
Names are imported lazily, so light modules (``fedetf.io``) do not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "simplex_etf": "fedetf.etf",
    "ClientRound": "fedetf.methods",
    "LocalMethod": "fedetf.methods",
    "ModelSpec": "fedetf.methods",
    "TrainSettings": "fedetf.methods",
    "FedModel": "fedetf.models",
    "build_model": "fedetf.models",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fedetf' has no attribute {name!r}")
