"""What ServerApp and ClientApp both derive from a run config."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from data_prep.federated import Federation, load_federation
from fedetf.losses import inverse_frequency_weights
from fedetf.methods import LocalMethod, ModelSpec, get_method
from simulations.config import RunConfig
from strategies.registry import client_method_for, resolve_strategy


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
    )


def method_name(cfg: RunConfig) -> str:
    """The client-side method paired with the run's strategy (resolved on the server)."""
    return client_method_for(resolve_strategy(cfg.strategy), cfg.client_method)


@lru_cache(maxsize=8)
def local_method(cfg: RunConfig, name: str) -> LocalMethod:
    """Build the client-side method ``name`` for this run's dataset and model."""
    fed = federation(cfg)
    info = fed.info
    weights = ()
    if cfg.loss_name == "focal":
        weights = tuple(inverse_frequency_weights(torch.from_numpy(fed.pooled_train_counts())).tolist())
    spec = ModelSpec(
        backbone=cfg.model_name,
        in_channels=info.in_channels,
        num_classes=info.num_classes,
        feature_dim=cfg.feature_dim,
        seed=cfg.seed,
        temperature=cfg.temperature,
        adaptation=cfg.adaptation,
        loss=cfg.loss_name,
        class_weights=weights,
        weights_path=cfg.pretrained_weights,
        input_norm=(info.mean, info.std) if info.uint8_batches else None,
        prox_mu=cfg.prox_mu,
        fedlc_tau=cfg.fedlc_tau,
        fedrs_alpha=cfg.fedrs_alpha,
    )
    return get_method(name, spec)


def device(cfg: RunConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but torch sees no GPU; use device='auto' or 'cpu'")
    return torch.device(cfg.device)


def round_seed(seed: int, server_round: int, partition_id: int) -> int:
    """A seed unique to (run seed, round, client) for shuffling and dropout."""
    return int(np.random.SeedSequence([seed, server_round, partition_id]).generate_state(1)[0])
