"""The client side of a federated method: FedAvg's local round, and the hooks a method overrides.

A method is a :class:`LocalMethod` subclass. It declares its hyperparameters
once, as a frozen dataclass ``Settings`` whose fields are made with
:func:`fedetf.settings.setting` (default, help text, allowed range); validation, the
run-config keys (``<name>.<field>``), docs/methods.md's table and ``run.json`` all derive from it.

One client round, as run by :func:`fedetf.train.client_round`:

1. :meth:`LocalMethod.load` puts the received shared weights, the client's own
   personal weights (from its per-client state) and the fixed weights into the model;
2. :meth:`LocalMethod.begin` adapts the model to the client (label counts,
   anchors, copies of the received model);
3. the personal view before training is evaluated on :meth:`LocalMethod.before_view`;
   training runs :meth:`LocalMethod.phases` (each with its own parameters, epochs
   and lr), calling :meth:`LocalMethod.loss` and :meth:`LocalMethod.before_step`;
4. :meth:`LocalMethod.end` returns extra named records for the server
   (control variates, class statistics) and updates the per-client state;
5. :meth:`LocalMethod.personalize` may fine-tune a personal model before the
   personal evaluation.

Per-client state is a flat ``dict[str, Tensor]`` that the caller persists
between rounds (Flower's per-node ``context.state``); a method instance itself
is built afresh for every round and keeps nothing between rounds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import nn

from fedetf.losses import build_criterion
from fedetf.models import FedModel, build_model
from fedetf.settings import allowed, check_setting, setting  # noqa: F401 - re-exported here

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ModelSpec:
    """Everything about the data and model that every process must build alike."""

    backbone: str
    in_channels: int
    num_classes: int
    feature_dim: int
    seed: int
    image_size: int = 0
    #: Length of one flattened sample (the ``mlp`` backbone's input).
    input_features: int = 0
    loss: str = "ce"
    class_weights: tuple[float, ...] = ()
    weights_path: str = ""
    #: (mean, std) when the loaders yield uint8 NHWC batches the model normalises.
    input_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None


@dataclass(frozen=True)
class NoSettings:
    """A method without hyperparameters."""


@dataclass(frozen=True)
class Phase:
    """One stage of local training: which parameters train, for how many epochs, with which SGD settings.

    ``momentum`` and ``weight_decay`` default to the run's (None); ``plain`` parameters
    train in the same steps with plain SGD at ``lr`` (no momentum, no weight decay,
    no gradient clipping), e.g. FedRoD's personal head.
    """

    params: list[nn.Parameter]
    epochs: int
    lr: float
    name: str = "train"
    momentum: float | None = None
    weight_decay: float | None = None
    plain: list[nn.Parameter] = field(default_factory=list)
    #: None: the run's optimizer; ``"sgd"`` for a procedure its authors ran with SGD (e.g. FedBABU's fine-tuning).
    optimizer: str | None = None


@dataclass(frozen=True)
class TrainSettings:
    """Local optimisation settings (the FedGELA authors' defaults)."""

    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    clip_grad_norm: float = 20.0
    #: One of :data:`OPTIMIZERS`; ``momentum`` is SGD's (Adam and AdamW keep their default betas).
    optimizer: str = "sgd"


#: The local optimizers (run config ``optimizer``); each is rebuilt every phase and round.
OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass
class ClientRound:
    """What a method sees of one client's round.

    ``state`` is the client's own persistent state (read it in :meth:`LocalMethod.begin`,
    write it in :meth:`LocalMethod.end`); ``received`` holds the extra records the
    server broadcast this round; ``config`` the round's train config.
    """

    label_counts: torch.Tensor
    state: Tensors = field(default_factory=dict)
    received: Mapping[str, Tensors] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    server_round: int = 0
    #: The run's number of rounds (0 if unknown): methods that personalise once, after the last round, need it.
    num_rounds: int = 0
    #: The client's train loader and the training device (for methods that pass over local data in ``end``).
    train_loader: Any = None
    device: torch.device | str = "cpu"

    @property
    def last(self) -> bool:
        """Whether this is the run's last round (known only when ``num_rounds`` is set)."""
        return 0 < self.num_rounds == self.server_round


class LocalMethod:
    """FedAvg's client (McMahan et al., 2017): the run's loss on a learned linear head; every weight is shared.

    Subclasses override only what differs. Class attributes document the method
    (docs/methods.md's table is generated from them) and tell the client app what to
    send and keep:

    * ``local_prefixes``: state-dict key prefixes that are never sent (fixed
      weights such as an ETF, or personal weights);
    * ``personal_prefixes``: the subset of those kept in the client's state
      between rounds (a personal head); the rest are restored from the seeded
      initial model every round;
    * ``server``: for a user's method, its server strategy (a Flower strategy name or
      ``"package.module:ClassName"``); built-in methods are paired with their server
      classes in :mod:`strategies.registry`.
    """

    name: ClassVar[str] = "fedavg"
    Settings: ClassVar[type] = NoSettings
    paper: ClassVar[str] = "McMahan et al., AISTATS 2017"
    shares: ClassVar[str] = "all weights"
    keeps: ClassVar[str] = "nothing"
    objective: ClassVar[str] = "cross-entropy"
    #: Whether the personal view is a model of its own; if not, it is the global model on the local test split.
    personal_model: ClassVar[bool] = False
    #: Whether the shared weights form a global model (False for local-only training: generic metrics are NaN).
    generic_model: ClassVar[bool] = True
    server: ClassVar[str] = "fedavg"
    head: ClassVar[str] = "linear"
    feature_norm: ClassVar[str] = "none"
    projection: ClassVar[str] = "mlp"
    local_prefixes: ClassVar[tuple[str, ...]] = ()
    personal_prefixes: ClassVar[tuple[str, ...]] = ()
    #: Whether a straggler's partial work is sent (FedProx) rather than dropped (FedAvg), as in the FedProx paper.
    keeps_partial_work: ClassVar[bool] = False
    #: Why the method is correct only under SGD (it then refuses ``optimizer='adam'`` and ``'adamw'``), or ``""``.
    sgd_only: ClassVar[str] = ""

    def __init__(self, spec: ModelSpec, settings: Any = None) -> None:
        self.spec = spec
        self.settings = settings if settings is not None else self.Settings()
        self.criterion = build_criterion(spec.loss, spec.class_weights)

    # -- model ---------------------------------------------------------------
    def head_options(self) -> dict[str, Any]:
        """Keyword options of the classifier head (see :func:`fedetf.models.build_model`)."""
        return {}

    def feature_dim(self) -> int:
        return self.spec.feature_dim

    def build_model(self) -> FedModel:
        """The method's model, seeded by the run's seed (identical in every process)."""
        s = self.spec
        return build_model(
            s.backbone,
            s.in_channels,
            s.num_classes,
            self.feature_dim(),
            head=self.head,
            seed=s.seed,
            weights_path=s.weights_path,
            input_norm=s.input_norm,
            image_size=s.image_size,
            input_features=s.input_features,
            feature_norm=self.feature_norm,
            projection=self.projection,
            **self.head_options(),
        )

    def cache_key(self) -> tuple[Any, ...]:
        """Models are reusable between rounds of any client with the same key (every weight is reloaded)."""
        return (type(self), self.spec, self.settings)

    def is_local(self, key: str) -> bool:
        return key.startswith(self.local_prefixes) if self.local_prefixes else False

    def is_personal(self, key: str) -> bool:
        return key.startswith(self.personal_prefixes) if self.personal_prefixes else False

    def shared_state(self, model: nn.Module | Mapping[str, torch.Tensor]) -> Tensors:
        """The weights the client sends (and the server averages): all but the local ones.

        Takes a model or a state dict (e.g. the seeded initial state).
        """
        state = model.state_dict() if isinstance(model, nn.Module) else model
        return {k: v for k, v in state.items() if not self.is_local(k)}

    def personal_state(self, model: nn.Module) -> Tensors:
        return {k: v for k, v in model.state_dict().items() if self.is_personal(k)}

    def load(
        self,
        model: nn.Module,
        shared: Mapping[str, torch.Tensor],
        initial: Mapping[str, torch.Tensor],
        state: Mapping[str, torch.Tensor],
        received: Mapping[str, Tensors] | None = None,
    ) -> None:
        """Load the received shared weights, the client's personal weights (``state``, else
        ``initial``) and the fixed weights (``initial``) into ``model``.

        ``received`` holds the server's broadcast records (e.g. a rotated ETF), for
        methods whose fixed weights the server may replace; the server's generic
        evaluation calls this too.
        """
        own = model.state_dict()
        expected = {k for k in own if not self.is_local(k)}
        if set(shared) != expected:
            raise ValueError(
                f"received arrays do not fit method {self.name!r}: missing {sorted(expected - set(shared))[:5]}, "
                f"unexpected {sorted(set(shared) - expected)[:5]}"
            )
        merged = dict(shared)
        for k in own:
            if self.is_local(k):
                merged[k] = state.get(f"model.{k}", initial[k]) if self.is_personal(k) else initial[k]
        model.load_state_dict(merged)

    # -- the round's hooks ---------------------------------------------------
    def begin(self, model: FedModel, rnd: ClientRound) -> None:
        """Adapt the loaded model to this client before local training (no-op for FedAvg)."""

    def before_view(self, model: FedModel, rnd: ClientRound) -> FedModel:
        """The client's personal model before local training (its personal view of the received model):
        ``model`` itself, or a model of the client's own kept in its state (e.g. Ditto's)."""
        return model

    def trainable_parameters(self, model: nn.Module) -> Iterable[nn.Parameter]:
        return (p for p in model.parameters() if p.requires_grad)

    def phases(self, model: FedModel, base: TrainSettings) -> list[Phase]:
        """Local training stages; FedAvg trains every trainable parameter for ``base.epochs``."""
        return [Phase(list(self.trainable_parameters(model)), base.epochs, base.lr)]

    def loss(self, model: FedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The local objective on one batch (train mode)."""
        return self.criterion(model(x, personal=True), y)

    def before_step(self, model: FedModel) -> None:
        """Called after ``backward()`` and before clipping and the optimizer step (gradient corrections)."""

    def end(self, model: FedModel, rnd: ClientRound, steps: int) -> dict[str, Tensors]:
        """After local training: update ``rnd.state`` and return extra named records for the server."""
        return {}

    def personalize(self, model: FedModel, loader: Any, base: TrainSettings, device: torch.device | str) -> FedModel:
        """The personal model to evaluate: ``model`` itself, or a locally fine-tuned copy (never ``model``
        changed in place, since its shared weights are already sent)."""
        return model

    def adapt_unseen(self, model: FedModel, loader: Any, base: TrainSettings, device: torch.device | str) -> FedModel:
        """The personal model of a client that never trained in the federation (``holdout-clients``), from the
        received model as :meth:`begin` adapted it: what the method allows without federated training. By
        default its personalisation step (FedBABU's and FedETF's fine-tuning; none for FedAvg)."""
        return self.personalize(model, loader, base, device)

    # -- the server side's view ---------------------------------------------
    def sends_records(self) -> bool:
        """Whether train replies carry ArrayRecords besides the shared weights (:meth:`end`'s extras)."""
        return False

    def server_kwargs(self) -> dict[str, Any]:
        """Constructor arguments for the method's server strategy."""
        return {}


def settings_fields(cls: type[LocalMethod]) -> list[Field]:
    """The declared settings of a method, in declaration order."""
    return [f for f in fields(cls.Settings) if f.default is not MISSING]


def setting_key(method: str, f: Field) -> str:
    """The run-config key of a setting, e.g. ``fedprox.mu`` or ``fedgela.missing-alpha``."""
    return f"{method}.{f.name.replace('_', '-')}"


def make_settings(cls: type[LocalMethod], values: Mapping[str, Any]) -> Any:
    """Build ``cls.Settings`` from run-config values keyed ``<name>.<field>``; raise ``ValueError`` with one line."""
    kwargs = {}
    for f in settings_fields(cls):
        key = setting_key(cls.name, f)
        if key in values:
            try:
                kwargs[f.name] = check_setting(f, values[key])
            except ValueError as exc:
                raise ValueError(f"invalid run config: {key}={values[key]!r}; allowed: {exc}") from None
    return cls.Settings(**kwargs)


def count_vector(label_counts: torch.Tensor) -> torch.Tensor:
    """Label counts as float32 (helper for the logit adjustments)."""
    return label_counts.to(torch.float32)
