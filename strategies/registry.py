"""Find strategies by name or import path, and build them from a run config.

``strategy`` in the run config is either a built-in name (``fedavg``,
``fedgela``, the baselines ``fedprox``, ``fedlc``, ``fedrs``, or any
server-only Flower strategy such as ``fedadam``,
``fedyogi``, ``fedmedian``, ``fedavgm``) or a user's class given as
``"package.module:ClassName"``; the module must be importable where the
ServerApp runs (installed, or inside the app directory). A strategy class
may name its client-side method with a ``client_method`` attribute
(``"fedgela"``); otherwise clients run FedAvg's local training.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from flwr.serverapp import strategy as flwr_strategies
from flwr.serverapp.strategy import FedAvg, Strategy

from strategies.baselines import FedLC, FedProx, FedRS
from strategies.fedgela import FedGELA

# Flower strategies that need no client-side counterpart beyond FedAvg's loop.
_FLOWER_SERVER_ONLY = (
    "FedAvg",
    "FedAvgM",
    "FedAdam",
    "FedYogi",
    "FedAdagrad",
    "FedMedian",
    "FedTrimmedAvg",
    "Krum",
    "MultiKrum",
    "Bulyan",
    "QFedAvg",
)

BUILTIN_STRATEGIES: dict[str, type[Strategy]] = {
    **{name.lower(): getattr(flwr_strategies, name) for name in _FLOWER_SERVER_ONLY},
    "fedgela": FedGELA,
    "fedprox": FedProx,
    "fedlc": FedLC,
    "fedrs": FedRS,
}


class StrategyError(ValueError):
    """The ``strategy`` setting cannot be resolved; the message is one line."""


def resolve_strategy(name: str) -> type[Strategy]:
    """Return the strategy class for a built-in name or ``module:Class`` path."""
    if ":" not in name:
        if name.lower() in BUILTIN_STRATEGIES:
            return BUILTIN_STRATEGIES[name.lower()]
        raise StrategyError(
            f"invalid run config: strategy={name!r}; allowed: one of {sorted(BUILTIN_STRATEGIES)} "
            "or 'package.module:ClassName'"
        )
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StrategyError(f"invalid run config: strategy={name!r}: cannot import {module_name!r} ({exc})") from exc
    cls = getattr(module, attr, None)
    if not (inspect.isclass(cls) and issubclass(cls, Strategy)):
        raise StrategyError(
            f"invalid run config: strategy={name!r}: {attr!r} in {module_name!r} is not a flwr Strategy subclass"
        )
    return cls


def client_method_for(cls: type[Strategy], override: str = "auto") -> str:
    """The client-side method paired with a strategy class."""
    return override if override != "auto" else getattr(cls, "client_method", "fedavg")


def build_strategy(
    cls: type[Strategy], *, num_clients: int, fraction_train: float, weighted_by_key: str, extra: dict[str, Any]
) -> Strategy:
    """Instantiate ``cls`` with the sampling settings it accepts, plus ``extra``."""
    params = inspect.signature(cls.__init__).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    base: dict[str, Any] = {
        "fraction_train": fraction_train,
        "fraction_evaluate": 0.0,  # personal accuracy comes with the train replies
        "min_train_nodes": 1,
        "min_evaluate_nodes": 0,
        "min_available_nodes": num_clients,
        "weighted_by_key": weighted_by_key,
    }
    kwargs = {k: v for k, v in base.items() if takes_kwargs or k in params}
    unknown = [k for k in extra if not (takes_kwargs or k in params)]
    if unknown:
        raise StrategyError(f"invalid run config: strategy-args has {unknown}, which {cls.__name__} does not accept")
    try:
        return cls(**{**kwargs, **extra})
    except TypeError as exc:
        raise StrategyError(f"invalid run config: cannot build {cls.__name__} from strategy-args ({exc})") from exc


__all__ = ["BUILTIN_STRATEGIES", "FedAvg", "StrategyError", "build_strategy", "client_method_for", "resolve_strategy"]
