"""The run config: every key declared once, then parsed and validated before any training.

Each general key is a field of :class:`RunConfig` made with
:func:`fedetf.settings.setting` (default, type, range or choices, help line);
each method declares its own dotted keys (``fedprox.mu``) the same way. From
these declarations come the validation below, the ``[tool.flwr.app.config]``
table of pyproject.toml and docs/run-config.md (both written by
``python -m simulations.gendocs --write``; a test fails when they are stale),
and ``run.json``'s config (:meth:`RunConfig.to_dict`). ``flwr run --run-config``
overrides the defaults; :func:`parse_run_config` turns the flat mapping into a
frozen :class:`RunConfig` or raises :class:`ConfigError` with one line naming
the key, the value given and what is allowed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from data_prep.datasets import DATASETS
from data_prep.federated import GENERIC_TESTS
from data_prep.partition import PARTITIONS, PCDD_ASSIGNMENTS
from fedetf.losses import LOSSES
from fedetf.methods import LocalMethod, make_settings, setting_key, settings_fields
from fedetf.methods.base import OPTIMIZERS
from fedetf.metrics import PERSONAL_TESTS
from fedetf.models import BACKBONES
from fedetf.settings import Rule, check_setting, setting
from fedetf.train import LR_SCHEDULES
from simulations.placement import DEVICE_SETTINGS
from simulations.tracking import TRACKING_BACKENDS
from strategies.privacy import DP_MODES
from strategies.registry import FLOWER_STRATEGIES, METHODS, StrategyError, resolve_method


class ConfigError(ValueError):
    """A run-config value is invalid; the message is one line."""


def _json_object(value: str) -> bool:
    try:
        return isinstance(json.loads(value), dict)
    except json.JSONDecodeError:
        return False


def _absolute_or_empty(value: str) -> bool:
    return value == "" or Path(value).is_absolute()


def _existing_file_or_empty(value: str) -> bool:
    return value == "" or Path(value).is_file()


def _import_path_or(names: list[str]) -> Rule:
    """A built-in name or a user's ``package.module:ClassName`` (resolved after the per-key checks)."""
    return Rule(f"one of {', '.join(repr(n) for n in names)}, or 'package.module:ClassName'", lambda v: v != "")


JSON_OBJECT = Rule("a JSON object string, e.g. '{\"eta\": 0.01}'", _json_object)


@dataclass(frozen=True)
class RunConfig:
    """The validated run config; attribute names are the keys in snake_case.

    Every field but :attr:`method_options` declares one general key. Method
    settings (dotted keys such as ``fedprox.mu``) are declared by each method
    (:func:`fedetf.methods.setting`) and kept in :attr:`method_options`.
    """

    method: str = setting(
        "fedgela",
        "the method: its client side and, unless `server` is set, its server side; your own "
        "`LocalMethod` subclass by import path (docs/methods.md)",
        rule=_import_path_or(list(METHODS)),
    )
    server: str = setting(
        "auto",
        "the server strategy: `auto` (the method's own), a Flower strategy, or your class by import path; "
        "a method's own server logic (SCAFFOLD, FedGELA's rotation) is rebased on it",
        rule=_import_path_or(["auto", *sorted(FLOWER_STRATEGIES)]),
    )
    server_args: str = setting(
        "{}",
        "extra constructor arguments of the server strategy, e.g. `'{\"eta\": 0.01}'` for FedAdam",
        rule=JSON_OBJECT,
    )
    method_args: str = setting(
        "{}",
        "the method's settings (kebab-case names) over its dotted keys: the way to set a user method's settings",
        rule=JSON_OBJECT,
    )
    dataset: str = setting(
        "digits",
        "the dataset (docs/datasets.md); `digits` is scikit-learn's bundled 8x8 digits, no download",
        choices=lambda: sorted(DATASETS),
    )
    data_root: str = setting(
        "",
        "the folder holding the datasets",
        rule=Rule("an absolute path, or '' for $FEDETF_DATA_ROOT, else ~/.cache/fedetf/data", _absolute_or_empty),
    )
    download: bool = setting(
        False, "download a missing dataset into `data-root` (torchvision's vision datasets, FEMNIST from Hugging Face)"
    )
    normalize: bool = setting(
        True, "per-dataset mean/std normalisation of inputs; `false` keeps them in [0, 1] (the FedGELA authors')"
    )
    partition: str = setting(
        "pcdd",
        "the label skew: `pcdd` (`classes-per-client` classes each), `dirichlet` (per class over clients, "
        "`dirichlet-beta`), `dirichlet-per-client` (each client's own class mix, equal shares: any number of "
        "clients) or `iid`; "
        "ignored by a dataset with clients of its own (`fed-isic2019`, `femnist`, `synthetic`)",
        choices=tuple(sorted(PARTITIONS)),
    )
    pcdd_assignment: str = setting(
        "flwr",
        "how `pcdd` assigns classes: `flwr` (flwr-datasets' `PathologicalPartitioner`: the first class "
        "round-robin, the rest at random) or `sequential` (the FedGELA authors': slots filled in class order, "
        "then random classes the client lacks); train and test alike",
        choices=PCDD_ASSIGNMENTS,
    )
    classes_per_client: int = setting(3, "classes per client for `pcdd` (at most the dataset's classes)", ge=1)
    dirichlet_beta: float = setting(
        0.5, "concentration of `dirichlet` (smaller is more skewed; 0.1 and 0.5 are common)", gt=0
    )
    synthetic_alpha: float = setting(
        1.0, "`synthetic`: spread of the clients' models (FedProx's alpha; 0 with beta 0 is Synthetic(0, 0))", ge=0
    )
    synthetic_beta: float = setting(1.0, "`synthetic`: spread of the clients' input means (FedProx's beta)", ge=0)
    synthetic_samples: int = setting(
        0, "`synthetic`: samples per client; 0 draws FedProx's power law, int(lognormal(4, 2)) + 50", ge=0
    )
    generic_test: str = setting(
        "full",
        "the generic view's test set: `full` (the whole global test set, as the FedGELA authors) or `balanced` "
        "(the same number per class: the rarest class's count)",
        choices=GENERIC_TESTS,
    )
    num_clients: int = setting(
        10,
        "number of clients: one per SuperNode when it equals the federation's `num-supernodes`, else the "
        "SuperNodes serve them in turn (docs/scale.md)",
        ge=1,
    )
    fraction_train: float = setting(1.0, "fraction of the clients sampled each round", gt=0, le=1)
    num_server_rounds: int = setting(20, "federated rounds", ge=1)
    evaluate_every: int = setting(
        5,
        "every client (held-out ones too) evaluates its personal model every N rounds and in the last round "
        "(fairness columns, `evaluations.csv`); 0 turns this off",
        ge=0,
    )
    holdout_clients: float = setting(
        0.0,
        "fraction of the partitions kept out of training (a seeded draw), evaluated as unseen clients",
        ge=0,
        lt=1,
    )
    personal_test: str = setting(
        "local",
        "the all-client evaluation's test set: `local` (each client's own test split) or `reweighted` (the "
        "global test set, each class weighted by the client's training label share, as FedNH)",
        choices=PERSONAL_TESTS,
    )
    local_epochs: int = setting(10, "local epochs per round", ge=1)
    batch_size: int = setting(64, "local batch size", ge=1)
    drop_last: bool = setting(False, "drop each client's last incomplete batch (the FedGELA authors' code does)")
    lr: float = setting(0.01, "local SGD learning rate; the optimizer is rebuilt every round", gt=0)
    momentum: float = setting(0.9, "local SGD momentum", ge=0)
    weight_decay: float = setting(1e-4, "local SGD weight decay", ge=0)
    clip_grad_norm: float = setting(20.0, "gradient-norm clipping of every local step", gt=0)
    optimizer: str = setting(
        "sgd",
        "the local optimizer, rebuilt every round: `sgd` (with `momentum`), `adam` or `adamw` (default betas); "
        "methods whose authors fine-tune with SGD keep SGD there, and SCAFFOLD refuses Adam",
        choices=OPTIMIZERS,
    )
    lr_schedule: str = setting(
        "constant",
        "the local lr over rounds: `constant`, `exponential` (`lr * lr-decay^(round-1)`) or `cosine` "
        "(`lr * (1 + cos(pi (round-1) / num-server-rounds)) / 2`)",
        choices=LR_SCHEDULES,
    )
    lr_decay: float = setting(0.99, "the per-round factor of `lr-schedule='exponential'`", gt=0, le=1)
    dp: str = setting(
        "none",
        "Flower's differential privacy around the run's server strategy: `server-fixed` (the server clips each "
        "update and adds Gaussian noise), `client-fixed` (the clients clip, the server adds noise) or "
        "`server-adaptive` (the clipping norm follows the median update norm); docs/methods.md",
        choices=DP_MODES,
    )
    dp_noise_multiplier: float = setting(
        1.0, "the noise's standard deviation over the clipping norm (per round, on the sum of updates)", ge=0
    )
    dp_clipping_norm: float = setting(
        1.0, "the L2 norm each client's update is clipped to (the initial one for `server-adaptive`)", gt=0
    )
    model: str = setting(
        "auto",
        "the network: `auto` (the dataset's default), `cnn` (small CNN with BatchNorm), `simple-cnn` (the "
        "FedGELA/MOON authors': two 5x5 convolutions, 120-84 units; 28x28 and 32x32 only), `resnet18` (CIFAR "
        "variant) or `efficientnet_b0` (torchvision; 3 channels)",
        choices=("auto", *sorted(BACKBONES)),
    )
    pretrained_weights: str = setting(
        "",
        "a torchvision `efficientnet_b0` ImageNet state dict to start from",
        rule=Rule("an existing weights file (absolute path), or '' to train from scratch", _existing_file_or_empty),
    )
    loss: str = setting(
        "auto",
        "the local loss: `auto` (focal for `fed-isic2019`, else cross-entropy), `ce`, or `focal` (gamma 2, "
        "alpha_c = N / n_c from the pooled train counts)",
        choices=("auto", *LOSSES),
    )
    feature_dim: int = setting(
        128,
        "feature dimension d, at least the number of classes - 1 (FedETF always uses d = K; the authors' "
        "`simple-cnn` setting is 84)",
        ge=1,
    )
    aggregation_weight: str = setting(
        "examples",
        "each client's weight in averaging: its train `examples`, or its local `batches` (the FedGELA authors' code)",
        choices=("examples", "batches"),
    )
    seed: int = setting(
        0, "one seed for the data split, partitions, ETF, initialisation, client sampling and shuffling", ge=0
    )
    device: str = setting(
        "auto",
        "`auto` (the GPU Ray assigned to the client, or CUDA when visible outside Ray, else the CPU), `cpu` or `cuda`",
        choices=DEVICE_SETTINGS,
    )
    num_workers: int = setting(
        0, "DataLoader worker processes per client (for heavy augmentation, e.g. Fed-ISIC2019)", ge=0
    )
    output_dir: str = setting(
        "",
        "the results folder, new or empty; `''` makes a fresh `runs/<time>-<method>-<dataset>` beside "
        "pyproject.toml (docs/results.md)",
        rule=Rule("an absolute path, or '' for a fresh folder in runs/", _absolute_or_empty),
    )
    diagnostics: bool = setting(False, "neural-collapse diagnostics every round (docs/results.md)")
    checkpoint_every: int = setting(
        1, "write `checkpoint.pt` every N rounds and after the last; 0 turns checkpoints and resume off", ge=0
    )
    resume: bool = setting(
        False, "continue the interrupted run in `output-dir` from its last checkpoint (docs/troubleshooting.md)"
    )
    straggler_rate: float = setting(
        0.0,
        "fraction of each round's sampled clients that do only part of their local work (1 to local-epochs - 1 "
        "epochs, seeded): methods that use partial work (FedProx) send it, the others drop it, as in the FedProx paper",
        ge=0,
        lt=1,
    )
    dropout_rate: float = setting(
        0.0, "fraction of each round's sampled clients that never reply (seeded by seed, round and client)", ge=0, lt=1
    )
    fault_rate: float = setting(
        0.0,
        "fraction of client train calls that fail on purpose, seeded by (seed, round, client): for robustness tests",
        ge=0,
        lt=1,
    )
    tracking: str = setting(
        "none",
        "experiment tracking beside the results files (docs/tracking.md): `tensorboard`, `mlflow` or `wandb` "
        "(offline), each an optional extra (`pip install -e '.[mlflow]'`); a failing backend turns it off with "
        "one warning, never failing the run",
        choices=TRACKING_BACKENDS,
    )
    tracking_uri: str = setting(
        "",
        "where tracking writes: `''` for a local store beside the run (TensorBoard: the run folder; MLflow: "
        "`sqlite:///<runs folder>/mlflow.db`; W&B: offline files in the run folder), else an MLflow tracking URI, "
        "or a folder for TensorBoard and W&B",
        rule=Rule("'' for the default local store, an MLflow tracking URI, or an absolute folder", lambda v: True),
    )
    #: Dotted method settings as given (``(("fedprox.mu", 0.1), ...)``), validated against their declarations.
    method_options: tuple[tuple[str, Any], ...] = field(default=())

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
        return DATASETS[self.dataset].info.natural

    @property
    def effective_partition(self) -> str:
        return "natural" if self.natural else self.partition

    @property
    def loss_name(self) -> str:
        return DATASETS[self.dataset].info.default_loss if self.loss == "auto" else self.loss

    @property
    def data_options(self) -> tuple[tuple[str, object], ...]:
        """Options handed to the dataset loader (hashable, for caching)."""
        if self.dataset == "synthetic":
            return (
                ("synthetic-alpha", self.synthetic_alpha),
                ("synthetic-beta", self.synthetic_beta),
                ("synthetic-samples", self.synthetic_samples),
            )
        return (("data-root", self.data_root), ("download", self.download))

    @property
    def server_kwargs(self) -> dict[str, Any]:
        return json.loads(self.server_args)

    def to_dict(self) -> dict[str, Any]:
        """The config as run-config keys: the general keys in declaration order, then every dotted method key."""
        out = {config_key(f): getattr(self, f.name) for f in general_fields()}
        return {**out, **builtin_method_defaults(), **dict(self.method_options)}


def general_fields() -> list[Field]:
    """The declared general keys, in declaration order (every :class:`RunConfig` field but ``method_options``)."""
    return [f for f in fields(RunConfig) if "help" in f.metadata]


def config_key(f: Field) -> str:
    """The run-config key of a general field (``num_clients`` -> ``num-clients``)."""
    return f.name.replace("_", "-")


def _shown(value: Any) -> str:
    """A value as it is written in ``--run-config`` (TOML booleans, Python repr otherwise)."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _fail(key: str, value: Any, allowed_values: str) -> ConfigError:
    return ConfigError(f"invalid run config: {key}={_shown(value)}; allowed: {allowed_values}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def builtin_method_defaults() -> dict[str, Any]:
    """Every built-in method's dotted settings with their defaults (pyproject.toml lists them all)."""
    return {key: f.default for key, f in _method_fields().items()}


def _method_fields() -> dict[str, Field]:
    return {setting_key(cls.name, f): f for cls in map(resolve_method, METHODS) for f in settings_fields(cls)}


def parse_run_config(raw: Mapping[str, Any]) -> RunConfig:
    """Validate a flat run config (kebab-case and dotted keys) into a :class:`RunConfig`.

    Each value is checked against its declaration, then the keys against each other.
    """
    general = {config_key(f): f for f in general_fields()}
    method_fields = _method_fields()
    unknown = sorted(k for k in raw if k not in general and k not in method_fields)
    if unknown:
        raise ConfigError(
            f"invalid run config: unknown key(s) {unknown}; allowed: {sorted(general)} and the method settings "
            f"{sorted(method_fields)}"
        )
    values: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in raw.items():
        f = general.get(key) or method_fields[key]
        try:
            checked = check_setting(f, value)
        except ValueError as exc:
            raise _fail(key, value, str(exc)) from None
        if key in general:
            values[f.name] = checked
        else:
            options[key] = checked
    cfg = RunConfig(**values, method_options=tuple(sorted(options.items())))
    _check_combinations(cfg)
    return cfg


def _check_combinations(cfg: RunConfig) -> None:
    """The checks that need more than one key (each key's own range was checked against its declaration)."""
    k = cfg.num_classes
    if cfg.resume and not cfg.output_dir:
        raise _fail("resume", cfg.resume, "true only with output-dir set to the run folder to continue")
    info = DATASETS[cfg.dataset].info
    if info.natural_clients and info.client_count == "exact" and cfg.num_clients != info.natural_clients:
        raise _fail(
            "num-clients", cfg.num_clients, f"{info.natural_clients} for dataset={cfg.dataset!r} (one per centre)"
        )
    if info.natural_clients and info.client_count == "at-most" and cfg.num_clients > info.natural_clients:
        raise _fail(
            "num-clients", cfg.num_clients, f"at most the {info.natural_clients} clients of dataset={cfg.dataset!r}"
        )
    if info.input_features and cfg.model_name != "mlp":
        raise _fail("model", cfg.model, f"'mlp' or 'auto' for the feature-vector dataset={cfg.dataset!r}")
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
    if cfg.tracking_uri and cfg.tracking in ("tensorboard", "wandb") and not Path(cfg.tracking_uri).is_absolute():
        raise _fail("tracking-uri", cfg.tracking_uri, f"an absolute folder or '' for tracking={cfg.tracking!r}")
    if cfg.pretrained_weights and cfg.model_name != "efficientnet_b0":
        raise _fail("pretrained-weights", cfg.pretrained_weights, "'' unless model='efficientnet_b0'")
    if not cfg.natural and cfg.partition == "pcdd" and cfg.classes_per_client > k:
        raise _fail("classes-per-client", cfg.classes_per_client, f"an integer in [1, {k}] for dataset={cfg.dataset!r}")
    if cfg.feature_dim < k - 1:
        raise _fail("feature-dim", cfg.feature_dim, f"an integer >= num_classes - 1 = {k - 1} (simplex ETF)")
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
    if cfg.optimizer != "sgd" and cls.sgd_only:
        raise _fail("optimizer", cfg.optimizer, f"'sgd' for method={cls.name!r}: {cls.sgd_only}")
    declared = [f.name.replace("_", "-") for f in settings_fields(cls)]
    if extra := sorted(set(json.loads(cfg.method_args)) - set(declared)):
        raise _fail("method-args", cfg.method_args, f"a JSON object of {cls.name!r}'s settings {declared}, not {extra}")
