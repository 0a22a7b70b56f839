"""Server sides of methods (Flower message-based strategies) and the method/strategy registry."""

from strategies.base import MethodStrategy
from strategies.fedgela import FedGELA
from strategies.fednh import FedNH
from strategies.local import LocalOnly
from strategies.registry import METHODS, SERVERS, build_strategy, resolve_method, resolve_server, server_class
from strategies.scaffold import Scaffold

__all__ = [
    "METHODS",
    "SERVERS",
    "FedGELA",
    "FedNH",
    "LocalOnly",
    "MethodStrategy",
    "Scaffold",
    "build_strategy",
    "resolve_method",
    "resolve_server",
    "server_class",
]
