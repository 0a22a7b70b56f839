"""Synthetic(alpha, beta): the FedProx paper's generated cross-device data, for any number of clients.

Each client's data follows the generator of the FedProx authors (litian96/FedProx,
``data/synthetic_1_1/generate_synthetic.py``, commit 3eed82e): a client ``k`` draws
``u_k ~ N(0, alpha)`` and ``B_k ~ N(0, beta)`` (``alpha``/``beta`` as the standard deviation,
as in their ``np.random.normal``), its model ``W_k ~ N(u_k, 1)`` (60 x 10) and ``b_k ~ N(u_k, 1)``,
its input mean ``v_k ~ N(B_k, 1)``; samples ``x ~ N(v_k, diag(j^-1.2))`` are labelled
``argmax(x W_k + b_k)``. Sizes follow their power law, ``int(lognormal(4, 2)) + 50`` samples, or a
fixed size (``synthetic-samples``); a seeded 90 % of each client's samples are its train split, the
rest its test split, as in their script.

Nothing is stored: client ``k``'s data is a pure function of (seed, k, alpha, beta, size), generated
when a process first asks for it (a few clients are cached), so 100,000 clients cost what 100 do. The
generic test set is the pooled test split of the first ``GENERIC_CLIENTS`` clients (all of them when
there are fewer); client ids are exchangeable, so these are a fair sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from data_prep.datasets import DatasetInfo, register_dataset
from data_prep.federated import Federation, probe_picks

DIMENSION = 60
NUM_CLASSES = 10
#: Clients whose test splits make the generic test set.
GENERIC_CLIENTS = 200
#: Train share of each client's samples (their ``int(0.9 * num_samples)``).
TRAIN_SHARE = 0.9
_STREAM = 0x5E7  # separates these draws from every other use of the run's seed

INFO = DatasetInfo(
    name="synthetic",
    num_classes=NUM_CLASSES,
    in_channels=1,
    image_size=0,
    default_model="mlp",
    mean=(0.0,),
    std=(1.0,),
    class_names=tuple(str(c) for c in range(NUM_CLASSES)),
    client_count="any",
    input_features=DIMENSION,
    eval_batch_size=4096,
)


def client_size(seed: int, cid: int, samples: int) -> int:
    """Number of samples of client ``cid``: ``samples``, or (0) the FedProx power law."""
    if samples > 0:
        return samples
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM, cid, 1]))
    return int(rng.lognormal(4, 2)) + 50


def generate_client(
    seed: int, cid: int, alpha: float, beta: float, samples: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Client ``cid``'s ``(x_train, y_train, x_test, y_test)``: float32 features and int64 labels."""
    n = client_size(seed, cid, samples)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM, cid]))
    u, b_mean = rng.normal(0, alpha), rng.normal(0, beta)
    v = rng.normal(b_mean, 1, DIMENSION)
    w = rng.normal(u, 1, (DIMENSION, NUM_CLASSES))
    b = rng.normal(u, 1, NUM_CLASSES)
    std = np.power(np.arange(1, DIMENSION + 1, dtype=np.float64), -0.6)  # sqrt of the diagonal j^-1.2
    x = v + rng.standard_normal((n, DIMENSION)) * std
    y = np.argmax(x @ w + b, axis=1)
    order = rng.permutation(n)
    x, y = x[order].astype(np.float32), y[order].astype(np.int64)
    cut = int(TRAIN_SHARE * n)
    return x[:cut], y[:cut], x[cut:], y[cut:]


@dataclass(frozen=True)
class SyntheticFederation(Federation):
    """``num_clients`` Synthetic(alpha, beta) clients, generated on demand."""

    count: int
    seed: int
    alpha: float = 1.0
    beta: float = 1.0
    samples: int = 0
    info: DatasetInfo = field(default=INFO)

    @property
    def num_clients(self) -> int:
        return self.count

    def client(self, cid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if not 0 <= cid < self.count:
            raise IndexError(f"client {cid} is not one of the {self.count} Synthetic clients")
        return _client(self.seed, cid, self.alpha, self.beta, self.samples)

    def labels(self, cid: int, split: str = "train") -> np.ndarray:
        _, y_train, _, y_test = self.client(cid)
        return y_train if split == "train" else y_test

    def client_loaders(
        self, cid: int, batch_size: int, seed: int, drop_last: bool = False, num_workers: int = 0
    ) -> tuple[DataLoader, DataLoader]:
        x_train, y_train, x_test, y_test = self.client(cid)
        train = DataLoader(
            TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train)),
            batch_size=batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
            drop_last=drop_last and len(y_train) >= batch_size,
            num_workers=num_workers,
        )
        return train, self._loader(x_test, y_test, num_workers)

    def _loader(self, x: np.ndarray, y: np.ndarray, num_workers: int = 0) -> DataLoader:
        dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
        return DataLoader(dataset, batch_size=self.info.eval_batch_size, num_workers=num_workers)

    def generic_test(self) -> tuple[np.ndarray, np.ndarray]:
        return _generic_test(self.seed, min(self.count, GENERIC_CLIENTS), self.alpha, self.beta, self.samples)

    def global_test_loader(self, num_workers: int = 0) -> DataLoader:
        return self._loader(*self.generic_test(), num_workers)

    def probe_loader(self, per_class: int = 32, seed: int = 0) -> DataLoader:
        x, y = self.generic_test()
        picks = np.sort(probe_picks(y, self.info.num_classes, per_class, seed))
        return self._loader(x[picks], y[picks])


@lru_cache(maxsize=256)
def _client(seed: int, cid: int, alpha: float, beta: float, samples: int) -> tuple[np.ndarray, ...]:
    return generate_client(seed, cid, alpha, beta, samples)


@lru_cache(maxsize=2)
def _generic_test(seed: int, clients: int, alpha: float, beta: float, samples: int) -> tuple[np.ndarray, np.ndarray]:
    parts = [_client(seed, c, alpha, beta, samples) for c in range(clients)]
    return np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts])


def synthetic_federation(num_clients: int, seed: int, options: dict[str, Any]) -> SyntheticFederation:
    """The registry's builder: ``options`` carry ``synthetic-alpha``, ``synthetic-beta``, ``synthetic-samples``."""
    return SyntheticFederation(
        num_clients,
        seed,
        float(options.get("synthetic-alpha", 1.0)),
        float(options.get("synthetic-beta", 1.0)),
        int(options.get("synthetic-samples", 0)),
    )


def _no_splits(seed: int, options: dict[str, Any]) -> Any:
    raise ValueError("dataset='synthetic' is generated per client; use load_federation")


register_dataset(INFO, _no_splits, synthetic_federation)
