"""The registry pairs built-in methods with their server strategies by class; user methods name theirs."""

from __future__ import annotations

import pytest
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedProx

from fedetf.methods.fedgela import FedGELA
from fedetf.methods.fednh import FedNH
from fedetf.methods.local import LocalOnly
from fedetf.methods.scaffold import Scaffold
from strategies.fedgela import FedGELA as FedGELAServer
from strategies.fednh import FedNH as FedNHServer
from strategies.local import LocalOnly as LocalOnlyServer
from strategies.registry import METHODS, StrategyError, resolve_method, server_class
from strategies.scaffold import Scaffold as ScaffoldServer


def test_every_builtin_is_registered_under_its_own_name_and_names_no_server() -> None:
    for name, (client, _) in METHODS.items():
        assert client.name == name and resolve_method(name) is client
        assert name == "fedavg" or "server" not in vars(client)  # paired here, not by a string on the class


@pytest.mark.parametrize(
    ("method", "server"),
    [("fedgela", FedGELAServer), ("scaffold", ScaffoldServer), ("fednh", FedNHServer), ("local", LocalOnlyServer)]
    + [(m, FedAvg) for m in ("fedavg", "ditto", "fedbn", "moon")]
    + [("fedprox", FedProx)],
)
def test_builtin_pairs(method: str, server: type) -> None:
    assert server_class(resolve_method(method)) is server


def test_method_strategies_are_rebased_on_a_chosen_server_optimiser() -> None:
    cls = server_class(FedNH, "fedadam")
    assert issubclass(cls, FedNHServer) and issubclass(cls, FedAdam)
    assert server_class(resolve_method("ditto"), "fedadam") is FedAdam


def test_user_methods_name_their_server_or_inherit_a_builtins() -> None:
    class Inherits(FedGELA):
        name = "mine"

    class Names(LocalOnly):
        name = "mine2"
        server = "fedavgm"

    class ByPath(Scaffold):
        name = "mine3"
        server = "strategies.fednh:FedNH"

    assert server_class(Inherits) is FedGELAServer
    assert server_class(Names) is FedAvgM
    assert server_class(ByPath) is FedNHServer


def test_unknown_server_name_is_one_line() -> None:
    class Bad(FedGELA):
        name = "bad"
        server = "nosuch"

    with pytest.raises(StrategyError, match=r"bad\.server='nosuch'"):
        server_class(Bad)
