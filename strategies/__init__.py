"""Server-side strategies (Flower message-based) and the strategy registry."""

from strategies.baselines import FedLC, FedProx, FedRS
from strategies.fedgela import FedGELA
from strategies.registry import BUILTIN_STRATEGIES, build_strategy, client_method_for, resolve_strategy

__all__ = [
    "BUILTIN_STRATEGIES",
    "FedGELA",
    "FedLC",
    "FedProx",
    "FedRS",
    "build_strategy",
    "client_method_for",
    "resolve_strategy",
]
