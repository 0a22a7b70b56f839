"""Run-config parsing and validation: every bad value fails before training.

``[tool.flwr.app.config]`` in pyproject.toml holds the defaults; ``flwr run
--run-config`` overrides them. :func:`parse_run_config` turns the flat mapping
into a frozen :class:`RunConfig` or raises :class:`ConfigError` with one line
naming the key, the value given and what is allowed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from data_prep.datasets import DATASETS
from data_prep.partition import PARTITIONS
from fedetf.methods import METHODS
from fedetf.models import BACKBONES


class ConfigError(ValueError):
    """A run-config value is invalid; the message is one line."""


@dataclass(frozen=True)
class RunConfig:
    """The validated run config (attribute names are the keys in snake_case)."""

    strategy: str = "fedgela"
    strategy_args: str = "{}"
    client_method: str = "auto"
    dataset: str = "digits"
    data_root: str = ""
    download: bool = False
    partition: str = "pcdd"
    classes_per_client: int = 3
    dirichlet_beta: float = 0.5
    num_clients: int = 10
    fraction_train: float = 1.0
    num_server_rounds: int = 20
    local_epochs: int = 10
    batch_size: int = 64
    drop_last: bool = False
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    clip_grad_norm: float = 20.0
    model: str = "auto"
    pretrained_weights: str = ""
    loss: str = "auto"
    feature_dim: int = 128
    temperature: float = 0.2
    adaptation: str = "proportion"
    prox_mu: float = 0.01
    fedlc_tau: float = 1.0
    fedrs_alpha: float = 0.5
    aggregation_weight: str = "examples"
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    output_dir: str = ""

    @property
    def model_name(self) -> str:
        return DATASETS[self.dataset].info.default_model if self.model == "auto" else self.model

    @property
    def num_classes(self) -> int:
        return DATASETS[self.dataset].info.num_classes

    @property
    def natural(self) -> bool:
        """Whether the dataset brings its own clients (PCDD settings are then ignored)."""
        return DATASETS[self.dataset].info.natural_clients > 0

    @property
    def effective_partition(self) -> str:
        return "natural" if self.natural else self.partition

    @property
    def loss_name(self) -> str:
        return DATASETS[self.dataset].info.default_loss if self.loss == "auto" else self.loss

    @property
    def data_options(self) -> tuple[tuple[str, object], ...]:
        """Options handed to the dataset loader (hashable, for caching)."""
        return (("data-root", self.data_root), ("download", self.download))

    @property
    def strategy_kwargs(self) -> dict[str, Any]:
        return json.loads(self.strategy_args)

    def to_dict(self) -> dict[str, Any]:
        """The config as run-config keys (kebab-case)."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}


def _key(name: str) -> str:
    return name.replace("_", "-")


def _fail(name: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"invalid run config: {_key(name)}={value!r}; allowed: {allowed}")


def _one_of(options: Callable[[], list[str]]) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        opts = options()
        return None if v in opts else "one of " + ", ".join(repr(o) for o in opts)

    return check


def _at_least(lo: float, *, strict: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        ok = v > lo if strict else v >= lo
        return None if ok else f"a number {'>' if strict else '>='} {lo}"

    return check


def _json_object(v: Any) -> str | None:
    try:
        ok = isinstance(json.loads(v), dict)
    except json.JSONDecodeError:
        ok = False
    return None if ok else "a JSON object string, e.g. '{\"eta\": 0.01}'"


def _in_unit_interval(v: Any) -> str | None:
    return None if 0 <= v <= 1 else "a number in [0, 1]"


def _absolute_or_empty(what: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v == "" or Path(v).is_absolute() else f"an absolute path, or '' for {what}"

    return check


def _existing_file_or_empty(v: Any) -> str | None:
    if v == "":
        return None
    return None if Path(v).is_file() else "an existing weights file (absolute path), or '' to train from scratch"


CHECKS: dict[str, Callable[[Any], str | None]] = {
    "dataset": _one_of(lambda: sorted(DATASETS)),
    "partition": _one_of(lambda: sorted(PARTITIONS)),
    "client_method": _one_of(lambda: ["auto", *sorted(METHODS)]),
    "model": _one_of(lambda: ["auto", *sorted(BACKBONES)]),
    "adaptation": _one_of(lambda: ["none", "proportion"]),
    "aggregation_weight": _one_of(lambda: ["batches", "examples"]),
    "device": _one_of(lambda: ["auto", "cpu", "cuda"]),
    "strategy_args": _json_object,
    "output_dir": _absolute_or_empty("a fresh runs/<time>-<strategy>-<dataset>"),
    "data_root": _absolute_or_empty("$FEDETF_DATA_ROOT or ~/.cache/fedetf/data"),
    "pretrained_weights": _existing_file_or_empty,
    "loss": _one_of(lambda: ["auto", "ce", "focal"]),
    "num_workers": _at_least(0),
    "classes_per_client": _at_least(1),
    "dirichlet_beta": _at_least(0, strict=True),
    "num_clients": _at_least(1),
    "num_server_rounds": _at_least(1),
    "local_epochs": _at_least(1),
    "batch_size": _at_least(1),
    "lr": _at_least(0, strict=True),
    "momentum": _at_least(0),
    "weight_decay": _at_least(0),
    "clip_grad_norm": _at_least(0, strict=True),
    "feature_dim": _at_least(1),
    "temperature": _at_least(0, strict=True),
    "prox_mu": _at_least(0),
    "fedlc_tau": _at_least(0),
    "fedrs_alpha": _in_unit_interval,
    "seed": _at_least(0),
}


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Check the TOML type against the default's type (ints pass as floats)."""
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise _fail(name, value, "true or false")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _fail(name, value, "an integer")
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _fail(name, value, "a number")
    if isinstance(value, str):
        return value
    raise _fail(name, value, "a string")


def parse_run_config(raw: Mapping[str, Any]) -> RunConfig:
    """Validate a flat run config (kebab-case keys) into a :class:`RunConfig`."""
    defaults = RunConfig()
    known = {_key(f.name): f.name for f in fields(RunConfig)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"invalid run config: unknown key(s) {unknown}; allowed: {sorted(known)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = known[key]
        v = _coerce(name, value, getattr(defaults, name))
        check = CHECKS.get(name)
        if check and (allowed := check(v)):
            raise _fail(name, v, allowed)
        values[name] = v
    cfg = RunConfig(**values)
    _check_combinations(cfg)
    return cfg


def _check_combinations(cfg: RunConfig) -> None:
    k = cfg.num_classes
    if not 0 < cfg.fraction_train <= 1:
        raise _fail("fraction_train", cfg.fraction_train, "a number in (0, 1]")
    info = DATASETS[cfg.dataset].info
    if cfg.natural and cfg.num_clients != info.natural_clients:
        raise _fail(
            "num_clients",
            cfg.num_clients,
            f"{info.natural_clients} for dataset={cfg.dataset!r} (one client per centre; set num-supernodes alike)",
        )
    if cfg.model_name == "efficientnet_b0" and info.in_channels != 3:
        raise _fail(
            "model", cfg.model, f"'cnn' or 'resnet18' for the {info.in_channels}-channel dataset={cfg.dataset!r}"
        )
    if cfg.pretrained_weights and cfg.model_name != "efficientnet_b0":
        raise _fail("pretrained_weights", cfg.pretrained_weights, "'' unless model='efficientnet_b0'")
    if not cfg.natural and cfg.partition == "pcdd" and cfg.classes_per_client > k:
        raise _fail("classes_per_client", cfg.classes_per_client, f"an integer in [1, {k}] for dataset={cfg.dataset!r}")
    if cfg.feature_dim < k - 1:
        raise _fail("feature_dim", cfg.feature_dim, f"an integer >= num_classes - 1 = {k - 1} (simplex ETF)")
    if cfg.strategy.strip() == "":
        raise _fail("strategy", cfg.strategy, "a built-in name or 'package.module:ClassName'")
