"""Server sides of methods (Flower message-based strategies) and the method/strategy registry."""

from strategies.base import MethodStrategy
from strategies.fedgela import FedGELA
from strategies.registry import METHODS, build_strategy, resolve_method, resolve_server, server_class
from strategies.scaffold import Scaffold

__all__ = [
    "METHODS",
    "FedGELA",
    "MethodStrategy",
    "Scaffold",
    "build_strategy",
    "resolve_method",
    "resolve_server",
    "server_class",
]
