"""A federated view of a dataset: decoded once per process, sliced per client."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from data_prep.datasets import DATASETS, ArraySplits, DatasetInfo
from data_prep.partition import partition_indices


@dataclass(frozen=True)
class Federation:
    """A dataset, its per-client partition, and a balanced global test set."""

    info: DatasetInfo
    data: ArraySplits
    parts: list[tuple[np.ndarray, np.ndarray]]
    global_test: np.ndarray

    @property
    def num_clients(self) -> int:
        return len(self.parts)

    def label_counts(self, cid: int, split: str = "train") -> np.ndarray:
        """Per-class sample counts of one client's train or test split."""
        tr, te = self.parts[cid]
        labels = self.data.y_train[tr] if split == "train" else self.data.y_test[te]
        return np.bincount(labels, minlength=self.info.num_classes)

    def _tensors(self, x: np.ndarray, y: np.ndarray) -> TensorDataset:
        mean = torch.tensor(self.info.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.info.std).view(1, -1, 1, 1)
        images = (torch.from_numpy(x).float().div_(255.0) - mean) / std
        return TensorDataset(images, torch.from_numpy(y))

    def client_loaders(
        self, cid: int, batch_size: int, seed: int, drop_last: bool = False
    ) -> tuple[DataLoader, DataLoader]:
        """Train (shuffled, seeded) and test loaders over client ``cid``'s data only."""
        tr, te = self.parts[cid]
        d = self.data
        gen = torch.Generator().manual_seed(seed)
        train = DataLoader(
            self._tensors(d.x_train[tr], d.y_train[tr]),
            batch_size=batch_size,
            shuffle=True,
            generator=gen,
            drop_last=drop_last and len(tr) >= batch_size,
        )
        test = DataLoader(self._tensors(d.x_test[te], d.y_test[te]), batch_size=512)
        return train, test

    def global_test_loader(self, batch_size: int = 512) -> DataLoader:
        d = self.data
        return DataLoader(self._tensors(d.x_test[self.global_test], d.y_test[self.global_test]), batch_size=batch_size)


def balanced_subset(labels: np.ndarray, seed: int) -> np.ndarray:
    """Indices of an equal number of samples per class (the rarest class's count)."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    per_class = counts.min()
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in classes]
    return np.sort(np.concatenate(picks))


@lru_cache(maxsize=4)
def load_dataset(name: str, seed: int, options: tuple[tuple[str, object], ...] = ()) -> ArraySplits:
    """Decode a registered dataset once per process."""
    return DATASETS[name].load(seed, dict(options))


@lru_cache(maxsize=8)
def load_federation(
    dataset: str,
    partition: str,
    num_clients: int,
    seed: int,
    classes_per_client: int = 2,
    dirichlet_beta: float = 0.5,
    options: tuple[tuple[str, object], ...] = (),
) -> Federation:
    """Decode (cached) and partition a dataset; a pure function of its arguments."""
    data = load_dataset(dataset, seed, options)
    parts = partition_indices(
        partition,
        data.y_train,
        data.y_test,
        num_clients,
        seed,
        classes_per_client=classes_per_client,
        beta=dirichlet_beta,
    )
    return Federation(DATASETS[dataset].info, data, parts, balanced_subset(data.y_test, seed))
