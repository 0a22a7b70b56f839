"""Find methods and server strategies by name or import path, and build a run's strategy.

``method`` in the run config is a built-in name (:data:`METHODS`) or a user's
client class ``"package.module:ClassName"`` (a :class:`fedetf.methods.LocalMethod`
subclass). A built-in method is paired with its server side here, by class
(:data:`SERVERS`); a user's method names its server side in its ``server``
attribute (a Flower strategy name or ``"package.module:ClassName"``), and a
subclass of a built-in method without one inherits the built-in's pairing. The
``server`` run-config key may replace it by any Flower strategy
(:data:`FLOWER_STRATEGIES`) or a user's ``"package.module:ClassName"``; a
method's own server strategy (e.g. SCAFFOLD's control variates) is then
rebased on that class, so its extras compose with any server optimiser.
Modules must be importable where the apps run (installed, or inside the app).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from flwr.serverapp import strategy as flwr_strategies
from flwr.serverapp.strategy import FedAvg, Strategy

from fedetf.methods import (
    ditto,
    fedavg,
    fedbn,
    fedetf,
    fedgela,
    fednh,
    fedprox,
    fedrod,
    local,
    logit_adjust,
    moon,
    personal_heads,
    scaffold,
)
from fedetf.methods.base import LocalMethod
from strategies import fedgela as fedgela_server
from strategies import fednh as fednh_server
from strategies import local as local_server
from strategies import scaffold as scaffold_server
from strategies.base import MethodStrategy

#: Built-in methods, one line each: name -> (client class, server strategy class).
METHODS: dict[str, tuple[type[LocalMethod], type[Strategy]]] = {
    "fedavg": (fedavg.FedAvg, FedAvg),
    "fedgela": (fedgela.FedGELA, fedgela_server.FedGELA),
    "fedprox": (fedprox.FedProx, flwr_strategies.FedProx),
    "fedlc": (logit_adjust.FedLC, FedAvg),
    "fedrs": (logit_adjust.FedRS, FedAvg),
    "scaffold": (scaffold.Scaffold, scaffold_server.Scaffold),
    "moon": (moon.Moon, FedAvg),
    "fedbabu": (personal_heads.FedBABU, FedAvg),
    "fedper": (personal_heads.FedPer, FedAvg),
    "fedrep": (personal_heads.FedRep, FedAvg),
    "fedrod": (fedrod.FedRoD, FedAvg),
    "fedetf": (fedetf.FedETF, FedAvg),
    "local": (local.LocalOnly, local_server.LocalOnly),
    "ditto": (ditto.Ditto, FedAvg),
    "fednh": (fednh.FedNH, fednh_server.FedNH),
    "fedbn": (fedbn.FedBN, FedAvg),
}

#: The server strategy of each built-in client class.
SERVERS: dict[type[LocalMethod], type[Strategy]] = {client: server for client, server in METHODS.values()}

#: Flower's message-based strategies usable as the server side, by lower-case name.
FLOWER_STRATEGIES: dict[str, type[Strategy]] = {
    name.lower(): getattr(flwr_strategies, name)
    for name in (
        "FedAvg",
        "FedProx",
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
}


class StrategyError(ValueError):
    """The ``method`` or ``server`` setting cannot be resolved; the message is one line."""


def _import(path: str, key: str, base: type, what: str) -> type:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StrategyError(f"invalid run config: {key}={path!r}: cannot import {module_name!r} ({exc})") from None
    cls = getattr(module, attr, None)
    if not (inspect.isclass(cls) and issubclass(cls, base)):
        raise StrategyError(f"invalid run config: {key}={path!r}: {attr!r} in {module_name!r} is not {what}")
    return cls


def resolve_method(name: str) -> type[LocalMethod]:
    """The client class of a built-in method name or a ``module:Class`` path."""
    if ":" not in name:
        if name not in METHODS:
            raise StrategyError(
                f"invalid run config: method={name!r}; allowed: one of {sorted(METHODS)} or 'package.module:ClassName'"
            )
        return METHODS[name][0]
    return _import(name, "method", LocalMethod, "a fedetf.methods.LocalMethod subclass")


def resolve_server(name: str, key: str = "server") -> type[Strategy]:
    """A Flower strategy by lower-case name, or a user's strategy class by ``module:Class`` path."""
    if ":" not in name:
        if name.lower() not in FLOWER_STRATEGIES:
            raise StrategyError(
                f"invalid run config: {key}={name!r}; allowed: 'auto', one of {sorted(FLOWER_STRATEGIES)} "
                "or 'package.module:ClassName'"
            )
        return FLOWER_STRATEGIES[name.lower()]
    return _import(name, key, Strategy, "a flwr Strategy subclass")


def own_server(method: type[LocalMethod]) -> type[Strategy]:
    """The method's own server strategy: the nearest class in its MRO that names one (``server``) or is a
    built-in method (:data:`SERVERS`)."""
    for klass in method.__mro__:
        if "server" in vars(klass):
            return resolve_server(klass.server, key=f"{method.name}.server")  # type: ignore[attr-defined]
        if klass in SERVERS:
            return SERVERS[klass]
    return FedAvg


def server_class(method: type[LocalMethod], override: str = "auto") -> type[Strategy]:
    """The method's server strategy, or ``override``; a method strategy is rebased on ``override``."""
    own = own_server(method)
    if override == "auto":
        return own
    chosen = resolve_server(override)
    if not issubclass(own, MethodStrategy) or issubclass(chosen, own):
        return chosen
    if not issubclass(chosen, FedAvg):
        raise StrategyError(
            f"invalid run config: server={override!r} cannot carry method {method.name!r}'s extra records; "
            "allowed: 'auto' or a FedAvg-based strategy"
        )
    return type(f"{own.__name__}+{chosen.__name__}", (own, chosen), {"__module__": own.__module__})


def accepted_kwargs(cls: type) -> set[str] | None:
    """Keyword arguments ``cls`` takes along its MRO; None if a class takes anything."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        names |= {n for n, p in params.items() if n != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD}
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return names  # the chain of **kwargs ends here
    return None


def build_strategy(
    cls: type[Strategy],
    *,
    num_clients: int,
    fraction_train: float,
    weighted_by_key: str,
    extra: dict[str, Any],
    method_kwargs: dict[str, Any] | None = None,
) -> Strategy:
    """Instantiate ``cls`` with the sampling settings and method arguments it accepts, plus ``extra``
    (``server-args``, which must all be accepted)."""
    ok = accepted_kwargs(cls)
    base: dict[str, Any] = {
        "fraction_train": fraction_train,
        "fraction_evaluate": 1.0,  # every client, in the rounds the run evaluates (evaluate-every)
        "min_train_nodes": 1,
        "min_evaluate_nodes": 0,
        "min_available_nodes": num_clients,  # the training clients (held-out ones are never sampled)
        "weighted_by_key": weighted_by_key,
        "train_loss_key": "train-loss",  # QFedAvg's fairness weights read the clients' training loss
        **(method_kwargs or {}),
    }
    kwargs = {k: v for k, v in base.items() if ok is None or k in ok}
    unknown = [k for k in extra if ok is not None and k not in ok]
    if unknown:
        raise StrategyError(f"invalid run config: server-args has {unknown}, which {cls.__name__} does not accept")
    try:
        return cls(**{**kwargs, **extra})
    except TypeError as exc:
        raise StrategyError(f"invalid run config: cannot build {cls.__name__} from server-args ({exc})") from None


__all__ = [
    "FLOWER_STRATEGIES",
    "METHODS",
    "SERVERS",
    "StrategyError",
    "accepted_kwargs",
    "build_strategy",
    "own_server",
    "resolve_method",
    "resolve_server",
    "server_class",
]
