import tomllib
from pathlib import Path

import pytest
from flwr.common.config import flatten_dict

from simulations.config import ConfigError, RunConfig, parse_run_config
from strategies.base import MethodStrategy
from strategies.fedgela import FedGELA
from strategies.registry import StrategyError, build_strategy, resolve_method, resolve_server, server_class

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_defaults_match_runconfig_and_method_declarations() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        table = tomllib.load(f)["tool"]["flwr"]["app"]["config"]
    flat = flatten_dict(table)  # as Flower does: nested tables become dotted keys
    cfg = parse_run_config(flat)
    assert cfg.to_dict() == RunConfig().to_dict()
    assert set(flat) == set(RunConfig().to_dict())
    assert flat["fedprox.mu"] == 0.01 and flat["fedgela.temperature"] == 0.2


@pytest.mark.parametrize(
    "key,value,allowed",
    [
        ("lr", -0.1, "> 0"),
        ("partition", "shards", "'dirichlet', 'dirichlet-per-client', 'iid', 'pcdd'"),
        ("dataset", "imagenet", "'digits'"),
        ("num-clients", 0, ">= 1"),
        ("num-clients", 2.5, "an integer"),
        ("fraction-train", 1.5, "(0, 1]"),
        ("classes-per-client", 11, "[1, 10]"),
        ("feature-dim", 5, ">= num_classes - 1 = 9"),
        ("output-dir", "relative/dir", "absolute path"),
        ("server-args", "{not json", "JSON object"),
        ("drop-last", "yes", "true or false"),
        ("fedprox.mu", -0.1, "a number >= 0"),
        ("fedlc.tau", -1.0, "a number >= 0"),
        ("fedrs.alpha", 1.5, "a number in [0, 1]"),
        ("fedgela.temperature", 0.0, "a number > 0"),
        ("fedgela.prior", "both", "one of 'multiplicative', 'additive'"),
        ("moon.tau", "x", "a number > 0"),
        ("fedrep.body-epochs", 1.5, "an integer >= 0"),
        ("method", "fedfoo", "allowed: one of"),
        ("method-args", '{"nope": 1}', "settings"),
        ("pcdd-assignment", "random", "'flwr', 'sequential'"),
        ("generic-test", "half", "'balanced', 'full'"),
        ("fault-rate", 1.0, "a number in [0, 1)"),
        ("fault-rate", -0.1, "a number in [0, 1)"),
        ("aggregation-weight", "clients", "one of 'examples', 'batches'"),
        ("device", "tpu", "one of 'auto', 'cpu', 'cuda'"),
        ("loss", "mse", "one of 'auto', 'ce', 'focal'"),
        ("model", "vit", "one of 'auto', 'cnn'"),
        ("data-root", "data", "an absolute path, or ''"),
        ("pretrained-weights", "/no/such/weights.pt", "an existing weights file"),
        ("method", "", "'fedgela'"),
        ("server", "", "'package.module:ClassName'"),
        ("lr", float("nan"), "a number > 0"),
        ("resume", True, "true only with output-dir"),
        ("model", "simple-cnn", "28x28 or 32x32"),
    ],
)
def test_bad_values_fail_with_one_line_naming_key_and_allowed(key: str, value: object, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_run_config({key: value})
    msg = str(info.value)
    assert "\n" not in msg
    assert f"{key}=" in msg and allowed in msg


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        parse_run_config({"learning-rate": 0.1})


def test_method_settings_reach_the_method() -> None:
    cfg = parse_run_config({"method": "fedprox", "fedprox.mu": 0.3, "fedrs.alpha": 0.9})
    assert cfg.method_settings.mu == 0.3
    assert cfg.method_settings_dict() == {"fedprox.mu": 0.3}
    assert parse_run_config({"method": "fedrs", "fedrs.alpha": 0.9}).method_settings.alpha == 0.9
    cfg = parse_run_config({"method": "fedlc", "method-args": '{"tau": 0.25}'})
    assert cfg.method_settings.tau == 0.25
    assert cfg.to_dict()["fedgela.temperature"] == 0.2  # every declared key is recorded


def test_registry_resolves_methods_servers_and_user_classes() -> None:
    from flwr.serverapp.strategy import FedAdam, FedProx

    from fedetf.methods.scaffold import Scaffold as ScaffoldClient
    from strategies.scaffold import Scaffold

    assert resolve_method("fedgela").name == "fedgela"
    assert server_class(resolve_method("fedgela")) is FedGELA
    assert server_class(resolve_method("fedprox")) is FedProx
    assert server_class(resolve_method("fedavg"), "FedAdam") is FedAdam
    composed = server_class(ScaffoldClient, "fedadam")
    assert composed.__mro__[1:3] == (Scaffold, MethodStrategy) and issubclass(composed, FedAdam)
    assert resolve_server("tests.userpkg.trimmed:TrimmedMean").__name__ == "TrimmedMean"
    strategy = build_strategy(
        composed, num_clients=5, fraction_train=0.4, weighted_by_key="num-batches", extra={"eta": 0.5}
    )
    assert strategy.fraction_train == 0.4 and strategy.weighted_by_key == "num-batches" and strategy.eta == 0.5
    prox = build_strategy(
        FedProx,
        num_clients=2,
        fraction_train=1.0,
        weighted_by_key="num-examples",
        extra={},
        method_kwargs={"proximal_mu": 0.2},
    )
    assert prox.proximal_mu == 0.2


@pytest.mark.parametrize(
    "name,match",
    [
        ("fedfoo", "allowed: 'auto', one of"),
        ("no.such.module:X", "cannot import"),
        ("tests.userpkg.trimmed:np", "not a flwr"),
    ],
)
def test_registry_errors_are_one_line(name: str, match: str) -> None:
    with pytest.raises(StrategyError, match=match) as info:
        resolve_server(name)
    assert "\n" not in str(info.value)


def test_server_args_that_do_not_fit_are_rejected() -> None:
    with pytest.raises(StrategyError, match="does not accept"):
        build_strategy(
            resolve_server("fedadam"),
            num_clients=2,
            fraction_train=1.0,
            weighted_by_key="num-examples",
            extra={"nonsense": 1},
        )


def test_values_take_the_declared_type_and_bounds_are_as_declared() -> None:
    cfg = parse_run_config({"lr": 1, "fraction-train": 1, "fault-rate": 0, "dirichlet-beta": 2})
    assert (cfg.lr, cfg.fraction_train, cfg.fault_rate, cfg.dirichlet_beta) == (1.0, 1.0, 0.0, 2.0)
    assert all(isinstance(v, float) for v in (cfg.lr, cfg.fraction_train, cfg.fault_rate, cfg.dirichlet_beta))
    assert parse_run_config({"fault-rate": 0.99, "checkpoint-every": 0}).fault_rate == 0.99  # [0, 1): 0.99 is in
    assert parse_run_config({"output-dir": "/abs/run", "resume": True}).resume
    assert parse_run_config({}).to_dict() == RunConfig().to_dict()
