import tomllib
from dataclasses import asdict
from pathlib import Path

import pytest

from simulations.config import ConfigError, RunConfig, parse_run_config
from strategies.fedgela import FedGELA
from strategies.registry import StrategyError, build_strategy, client_method_for, resolve_strategy

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_defaults_match_runconfig() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        toml = tomllib.load(f)["tool"]["flwr"]["app"]["config"]
    assert parse_run_config(toml) == RunConfig()
    assert set(toml) == {k.replace("_", "-") for k in asdict(RunConfig())}


@pytest.mark.parametrize(
    "key,value,allowed",
    [
        ("lr", -0.1, "> 0"),
        ("partition", "shards", "'dirichlet', 'iid', 'pcdd'"),
        ("dataset", "imagenet", "'digits'"),
        ("num-clients", 0, ">= 1"),
        ("num-clients", 2.5, "an integer"),
        ("fraction-train", 1.5, "(0, 1]"),
        ("classes-per-client", 11, "[1, 10]"),
        ("feature-dim", 5, ">= num_classes - 1 = 9"),
        ("output-dir", "relative/dir", "absolute path"),
        ("strategy-args", "{not json", "JSON object"),
        ("drop-last", "yes", "true or false"),
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


def test_registry_resolves_builtins_and_user_classes() -> None:
    assert resolve_strategy("fedgela") is FedGELA
    assert resolve_strategy("FedAdam").__name__ == "FedAdam"
    cls = resolve_strategy("tests.userpkg.trimmed:TrimmedMean")
    assert cls.__name__ == "TrimmedMean"
    assert client_method_for(FedGELA) == "fedgela" and client_method_for(cls) == "fedavg"
    assert client_method_for(cls, "fedgela") == "fedgela"
    strategy = build_strategy(
        FedGELA, num_clients=5, fraction_train=0.4, weighted_by_key="num-batches", extra={"fixed_keys": ["x"]}
    )
    assert strategy.fraction_train == 0.4 and strategy.weighted_by_key == "num-batches"
    assert strategy.fixed_keys == ("x",)


@pytest.mark.parametrize(
    "name,match",
    [("fedfoo", "allowed: one of"), ("no.such.module:X", "cannot import"), ("tests.userpkg.trimmed:np", "not a flwr")],
)
def test_registry_errors_are_one_line(name: str, match: str) -> None:
    with pytest.raises(StrategyError, match=match) as info:
        resolve_strategy(name)
    assert "\n" not in str(info.value)


def test_strategy_args_that_do_not_fit_are_rejected() -> None:
    with pytest.raises(StrategyError, match="does not accept"):
        build_strategy(
            resolve_strategy("fedadam"),
            num_clients=2,
            fraction_train=1.0,
            weighted_by_key="num-examples",
            extra={"nonsense": 1},
        )
