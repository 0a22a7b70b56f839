"""What ServerApp and ClientApp both derive from a run config."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from data_prep.federated import Federation, load_federation
from fedetf.losses import inverse_frequency_weights
from fedetf.methods import LocalMethod, ModelSpec
from fedetf.models import FedModel
from fedetf.train import initial_state
from simulations.config import RunConfig
from simulations.placement import client_device


def federation(cfg: RunConfig) -> Federation:
    """The run's partitioned dataset (decoded once per process)."""
    return load_federation(
        cfg.dataset,
        cfg.effective_partition,
        cfg.num_clients,
        cfg.seed,
        cfg.classes_per_client,
        cfg.dirichlet_beta,
        cfg.data_options,
        pcdd_assignment=cfg.pcdd_assignment,
        normalize=cfg.normalize,
        generic_test=cfg.generic_test,
    )


def model_spec(cfg: RunConfig) -> ModelSpec:
    """The data- and model-facts every process builds the run's model from."""
    fed = federation(cfg)
    info = fed.info
    weights: tuple[float, ...] = ()
    if cfg.loss_name == "focal":
        weights = tuple(inverse_frequency_weights(torch.from_numpy(fed.pooled_train_counts())).tolist())
    return ModelSpec(
        backbone=cfg.model_name,
        in_channels=info.in_channels,
        num_classes=info.num_classes,
        feature_dim=cfg.feature_dim,
        seed=cfg.seed,
        image_size=info.image_size,
        input_features=info.input_features or info.in_channels * info.image_size**2,
        loss=cfg.loss_name,
        class_weights=weights,
        weights_path=cfg.pretrained_weights,
        input_norm=(info.mean, info.std) if info.uint8_batches else None,
    )


def make_method(cfg: RunConfig) -> LocalMethod:
    """A fresh client-side method for this run (built per call: it keeps nothing between rounds)."""
    return cfg.method_class(model_spec(cfg), cfg.method_settings)


_MODELS: OrderedDict[tuple, tuple[FedModel, dict[str, torch.Tensor]]] = OrderedDict()


def model_buffer(method: LocalMethod) -> tuple[FedModel, dict[str, torch.Tensor]]:
    """A model to train in, reused by every client of this process, and its seeded initial state.

    Not client state: every call reloads all weights (shared from the server,
    personal from the client's ``context.state``, fixed from the initial state).
    """
    key = method.cache_key()
    if key not in _MODELS:
        model = method.build_model()
        _MODELS[key] = (model, initial_state(model))
        while len(_MODELS) > 4:
            _MODELS.popitem(last=False)
    return _MODELS[key]


def device(cfg: RunConfig) -> torch.device:
    """The torch device of this process for the run (the GPU Ray assigned to a client; see ``placement``)."""
    return client_device(cfg.device)


def round_seed(seed: int, server_round: int, partition_id: int) -> int:
    """A seed unique to (run seed, round, client) for shuffling and dropout (``partition_id=-1``: the server)."""
    return int(np.random.SeedSequence([seed, server_round, partition_id + 1]).generate_state(1)[0])


def holdout_partitions(cfg: RunConfig) -> frozenset[int]:
    """The partitions kept out of training (``holdout-clients``): a draw seeded by the run's seed, at least one
    when the fraction is above 0, and never every client."""
    if cfg.holdout_clients <= 0:
        return frozenset()
    n = min(cfg.num_clients - 1, max(1, round(cfg.holdout_clients * cfg.num_clients)))
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x4F1D]))
    return frozenset(int(p) for p in rng.choice(cfg.num_clients, size=n, replace=False))


def systems_draw(cfg: RunConfig, server_round: int, partition_id: int) -> tuple[bool, int]:
    """Whether this client drops out of ``server_round`` (``dropout-rate``), and the local epochs it completes:
    ``local-epochs``, or for a straggler (``straggler-rate``) a uniform draw from 1 to ``local-epochs - 1`` (none
    with one local epoch). Seeded by (seed, round, client), so every engine draws the same."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, server_round, partition_id + 1, 0x5735]))
    gone = bool(rng.random() < cfg.dropout_rate)
    slow = bool(rng.random() < cfg.straggler_rate) and cfg.local_epochs > 1
    return gone, int(rng.integers(1, cfg.local_epochs)) if slow else cfg.local_epochs
