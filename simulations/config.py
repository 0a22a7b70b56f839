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
from fedetf.methods import LocalMethod, make_settings, setting_key, settings_fields
from fedetf.methods.base import check_setting
from fedetf.models import BACKBONES
from strategies.registry import METHODS, StrategyError, resolve_method


class ConfigError(ValueError):
    """A run-config value is invalid; the message is one line."""


@dataclass(frozen=True)
class RunConfig:
    """The validated run config (attribute names are the keys in snake_case).

    Method settings (dotted keys such as ``fedprox.mu``) are declared by each
    method (:func:`fedetf.methods.setting`) and kept in :attr:`method_options`.
    """

    method: str = "fedgela"
    server: str = "auto"
    server_args: str = "{}"
    method_args: str = "{}"
    dataset: str = "digits"
    data_root: str = ""
    download: bool = False
    normalize: bool = True
    partition: str = "pcdd"
    pcdd_assignment: str = "flwr"
    classes_per_client: int = 3
    dirichlet_beta: float = 0.5
    generic_test: str = "full"
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
    aggregation_weight: str = "examples"
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    output_dir: str = ""
    diagnostics: bool = False
    checkpoint_every: int = 1
    resume: bool = False
    fault_rate: float = 0.0
    #: Dotted method settings as given (``(("fedprox.mu", 0.1), ...)``), validated against their declarations.
    method_options: tuple[tuple[str, Any], ...] = ()

    @property
    def method_class(self) -> type[LocalMethod]:
        return resolve_method(self.method)

    @property
    def method_settings(self) -> Any:
        """The active method's ``Settings``: its dotted keys, then ``method-args`` on top."""
        cls = self.method_class
        values = dict(self.method_options)
        values.update({f"{cls.name}.{k}": v for k, v in json.loads(self.method_args).items()})
        return make_settings(cls, values)

    def method_settings_dict(self) -> dict[str, Any]:
        """The active method's settings as run-config keys (for run.json and labels)."""
        cls, settings = self.method_class, self.method_settings
        return {setting_key(cls.name, f): getattr(settings, f.name) for f in settings_fields(cls)}

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
    def server_kwargs(self) -> dict[str, Any]:
        return json.loads(self.server_args)

    def to_dict(self) -> dict[str, Any]:
        """The config as run-config keys (kebab-case general keys, then every dotted method key)."""
        out = {k.replace("_", "-"): v for k, v in asdict(self).items() if k != "method_options"}
        return {**out, **builtin_method_defaults(), **dict(self.method_options)}


def _key(name: str) -> str:
    return name.replace("_", "-")


def _shown(value: Any) -> str:
    """A value as it is written in ``--run-config`` (TOML booleans, Python repr otherwise)."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _fail(name: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"invalid run config: {_key(name)}={_shown(value)}; allowed: {allowed}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _one_of(options: Callable[[], list[str]]) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        opts = options()
        return None if v in opts else "one of " + ", ".join(repr(o) for o in opts)

    return check


def _at_least(lo: float, *, strict: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        ok = v > lo if strict else v >= lo
        kind = "an integer" if isinstance(v, int) and not isinstance(v, bool) else "a number"
        return None if ok else f"{kind} {'>' if strict else '>='} {lo}"

    return check


def _json_object(v: Any) -> str | None:
    try:
        ok = isinstance(json.loads(v), dict)
    except json.JSONDecodeError:
        ok = False
    return None if ok else "a JSON object string, e.g. '{\"eta\": 0.01}'"


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
    "model": _one_of(lambda: ["auto", *sorted(BACKBONES)]),
    "pcdd_assignment": _one_of(lambda: ["flwr", "sequential"]),
    "generic_test": _one_of(lambda: ["balanced", "full"]),
    "aggregation_weight": _one_of(lambda: ["batches", "examples"]),
    "device": _one_of(lambda: ["auto", "cpu", "cuda"]),
    "server_args": _json_object,
    "method_args": _json_object,
    "output_dir": _absolute_or_empty("a fresh runs/<time>-<strategy>-<dataset>"),
    "data_root": _absolute_or_empty("$FEDETF_DATA_ROOT or ~/.cache/fedetf/data"),
    "pretrained_weights": _existing_file_or_empty,
    "loss": _one_of(lambda: ["auto", "ce", "focal"]),
    "num_workers": _at_least(0),
    "checkpoint_every": _at_least(0),
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


def builtin_method_defaults() -> dict[str, Any]:
    """Every built-in method's dotted settings with their defaults (pyproject.toml lists them all)."""
    out: dict[str, Any] = {}
    for name in METHODS:
        cls = resolve_method(name)
        out.update({setting_key(cls.name, f): f.default for f in settings_fields(cls)})
    return out


def _method_fields() -> dict[str, Any]:
    return {setting_key(cls.name, f): f for cls in map(resolve_method, METHODS) for f in settings_fields(cls)}


def parse_run_config(raw: Mapping[str, Any]) -> RunConfig:
    """Validate a flat run config (kebab-case and dotted keys) into a :class:`RunConfig`."""
    defaults = RunConfig()
    known = {_key(f.name): f.name for f in fields(RunConfig) if f.name != "method_options"}
    method_fields = _method_fields()
    unknown = sorted(k for k in raw if k not in known and k not in method_fields)
    if unknown:
        raise ConfigError(
            f"invalid run config: unknown key(s) {unknown}; allowed: {sorted(known)} and the method settings "
            f"{sorted(method_fields)}"
        )
    values: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in raw.items():
        if key in method_fields:
            try:
                options[key] = check_setting(method_fields[key], value)
            except ValueError as exc:
                raise ConfigError(f"invalid run config: {key}={value!r}; allowed: {exc}") from None
            continue
        name = known[key]
        v = _coerce(name, value, getattr(defaults, name))
        check = CHECKS.get(name)
        if check and (allowed := check(v)):
            raise _fail(name, v, allowed)
        values[name] = v
    cfg = RunConfig(**values, method_options=tuple(sorted(options.items())))
    _check_combinations(cfg)
    return cfg


def _check_combinations(cfg: RunConfig) -> None:
    k = cfg.num_classes
    if not 0 <= cfg.fault_rate < 1:
        raise _fail("fault_rate", cfg.fault_rate, "a number in [0, 1)")
    if cfg.resume and not cfg.output_dir:
        raise _fail("resume", cfg.resume, "true only with output-dir set to the run folder to continue")
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
    if cfg.model_name == "simple-cnn" and info.image_size not in (28, 32):
        raise _fail(
            "model",
            cfg.model,
            f"not 'simple-cnn' (28x28 or 32x32 only) for the {info.image_size}x{info.image_size} "
            f"dataset={cfg.dataset!r}; use 'cnn'",
        )
    if cfg.pretrained_weights and cfg.model_name != "efficientnet_b0":
        raise _fail("pretrained_weights", cfg.pretrained_weights, "'' unless model='efficientnet_b0'")
    if not cfg.natural and cfg.partition == "pcdd" and cfg.classes_per_client > k:
        raise _fail("classes_per_client", cfg.classes_per_client, f"an integer in [1, {k}] for dataset={cfg.dataset!r}")
    if cfg.feature_dim < k - 1:
        raise _fail("feature_dim", cfg.feature_dim, f"an integer >= num_classes - 1 = {k - 1} (simplex ETF)")
    try:
        cls = cfg.method_class
    except StrategyError as exc:
        raise ConfigError(str(exc)) from None
    except Exception as exc:  # a user module that raises while it is imported
        raised = f"{type(exc).__name__}: {_first_line(exc)}"
        raise _fail(
            "method", cfg.method, f"an importable 'package.module:ClassName' (importing it raised {raised})"
        ) from None
    try:
        cfg.method_settings  # noqa: B018 - validates method-args against the declaration
    except ValueError as exc:
        raise ConfigError(_first_line(exc)) from None
    declared = [f.name.replace("_", "-") for f in settings_fields(cls)]
    if extra := sorted(set(json.loads(cfg.method_args)) - set(declared)):
        raise _fail("method_args", cfg.method_args, f"a JSON object of {cls.name!r}'s settings {declared}, not {extra}")
