"""A federated view of a dataset: decoded once per process, sliced per client."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import DataLoader

from data_prep.datasets import DATASETS, DatasetInfo, Splits
from data_prep.partition import group_by_owner, partition_indices


class Federation(ABC):
    """A dataset's clients and the global test set (generic accuracy), as every process sees them.

    :class:`IndexedFederation` slices a decoded dataset by partition indices; a generated dataset
    (``data_prep.synthetic``) builds each client's data from the seed when it is asked for.
    """

    info: DatasetInfo

    @property
    @abstractmethod
    def num_clients(self) -> int: ...

    @abstractmethod
    def labels(self, cid: int, split: str = "train") -> np.ndarray:
        """Labels of one client's train or test split."""

    @abstractmethod
    def client_loaders(
        self, cid: int, batch_size: int, seed: int, drop_last: bool = False, num_workers: int = 0
    ) -> tuple[DataLoader, DataLoader]:
        """Train (shuffled, seeded, augmented) and test loaders over client ``cid``'s data only."""

    @abstractmethod
    def probe_loader(self, per_class: int = 32, seed: int = 0) -> DataLoader:
        """A small class-balanced subset of the generic test set (at most ``per_class`` per class), for
        diagnostics that need samples of classes a client does not hold."""

    @abstractmethod
    def global_test_loader(self, num_workers: int = 0) -> DataLoader:
        """The global test set (generic accuracy)."""

    def label_counts(self, cid: int, split: str = "train") -> np.ndarray:
        """Per-class sample counts of one client's train or test split."""
        return np.bincount(self.labels(cid, split), minlength=self.info.num_classes)

    def pooled_train_counts(self) -> np.ndarray:
        """Per-class counts of the pooled train split of all clients."""
        return np.sum([self.label_counts(c) for c in range(self.num_clients)], axis=0)


@dataclass(frozen=True)
class IndexedFederation(Federation):
    """A decoded dataset, its per-client partition (indices into its splits), and the global test set."""

    info: DatasetInfo
    data: Splits
    parts: list[tuple[np.ndarray, np.ndarray]]
    global_test: np.ndarray

    @property
    def num_clients(self) -> int:
        return len(self.parts)

    def labels(self, cid: int, split: str = "train") -> np.ndarray:
        tr, te = self.parts[cid]
        return self.data.y_train[tr] if split == "train" else self.data.y_test[te]

    def pooled_train_counts(self) -> np.ndarray:
        labels = np.concatenate([self.data.y_train[tr] for tr, _ in self.parts])
        return np.bincount(labels, minlength=self.info.num_classes)

    def client_loaders(
        self, cid: int, batch_size: int, seed: int, drop_last: bool = False, num_workers: int = 0
    ) -> tuple[DataLoader, DataLoader]:
        tr, te = self.parts[cid]
        gen = torch.Generator().manual_seed(seed)
        train = DataLoader(
            self.data.dataset("train", tr, True, self.info),
            batch_size=batch_size,
            shuffle=True,
            generator=gen,
            drop_last=drop_last and len(tr) >= batch_size,
            num_workers=num_workers,
        )
        return train, self._eval_loader(te, num_workers)

    def _eval_loader(self, idx: np.ndarray, num_workers: int = 0) -> DataLoader:
        return DataLoader(
            self.data.dataset("test", idx, False, self.info),
            batch_size=self.info.eval_batch_size,
            num_workers=num_workers,
        )

    def probe_loader(self, per_class: int = 32, seed: int = 0) -> DataLoader:
        picks = probe_picks(self.data.y_test[self.global_test], self.info.num_classes, per_class, seed)
        return self._eval_loader(np.sort(self.global_test[picks]))

    def global_test_loader(self, num_workers: int = 0) -> DataLoader:
        return self._eval_loader(self.global_test, num_workers)


def probe_picks(labels: np.ndarray, num_classes: int, per_class: int, seed: int) -> np.ndarray:
    """Positions of at most ``per_class`` seeded picks of each class in ``labels`` (the probe set's)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(num_classes)])


def balanced_subset(labels: np.ndarray, seed: int) -> np.ndarray:
    """Indices of an equal number of samples per class (the rarest class's count)."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    per_class = counts.min()
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in classes]
    return np.sort(np.concatenate(picks))


#: Generic (global) test sets of a non-natural federation.
GENERIC_TESTS = ("balanced", "full")


@lru_cache(maxsize=4)
def load_dataset(name: str, seed: int, options: tuple[tuple[str, object], ...] = ()) -> Splits:
    """Decode a registered dataset once per process."""
    return DATASETS[name].load(seed, dict(options))


@lru_cache(maxsize=8)
def load_federation(
    dataset: str,
    partition: str,
    num_clients: int,
    seed: int,
    classes_per_client: int = 3,
    dirichlet_beta: float = 0.5,
    options: tuple[tuple[str, object], ...] = (),
    *,
    pcdd_assignment: str = "flwr",
    normalize: bool = True,
    generic_test: str = "full",
) -> Federation:
    """Decode (cached) and partition a dataset; a pure function of its arguments.

    Parameters
    ----------
    pcdd_assignment
        Class assignment of the ``pcdd`` partition: ``"flwr"`` or ``"sequential"`` (FedGELA's code).
    normalize
        ``False``: inputs stay in [0, 1] (the info's mean/std become 0/1, which every
        transform and the on-device normalisation of uint8 batches follow).
    generic_test
        ``"balanced"``: an equal number of test samples per class; ``"full"``: the whole
        test set. A natural federation always uses its whole pooled test set.
    """
    if generic_test not in GENERIC_TESTS:
        raise ValueError(f"generic-test={generic_test!r} is unknown; allowed: {list(GENERIC_TESTS)}")
    entry = DATASETS[dataset]
    if entry.federation is not None:  # a generated dataset: its clients come from the seed, not a partition
        return entry.federation(num_clients, seed, dict(options))
    data = load_dataset(dataset, seed, options)
    info = entry.info
    if not normalize:
        info = replace(info, mean=(0.0,) * info.in_channels, std=(1.0,) * info.in_channels)
    if partition == "natural":
        parts = natural_parts(data, num_clients)
        # The pooled test set is the generic view of a natural federation.
        global_test = np.arange(len(data.y_test))
    else:
        parts = partition_indices(
            partition,
            data.y_train,
            data.y_test,
            num_clients,
            seed,
            classes_per_client=classes_per_client,
            beta=dirichlet_beta,
            assignment=pcdd_assignment,
        )
        if generic_test == "full":
            global_test = np.arange(len(data.y_test))
        else:
            global_test = balanced_subset(data.y_test, seed)
    return IndexedFederation(info, data, parts, global_test)


def natural_parts(data: Splits, num_clients: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-client indices (ascending) from the dataset's own client ids (e.g. hospitals, writers): the first
    ``num_clients`` clients. Each split is grouped by one stable argsort, not one scan per client."""
    c_train, c_test = data.clients_train, data.clients_test  # type: ignore[attr-defined]
    parts = list(zip(group_by_owner(c_train, num_clients), group_by_owner(c_test, num_clients), strict=True))
    for cid, (tr, _) in enumerate(parts):
        if len(tr) == 0:
            have = int(np.count_nonzero(np.bincount(np.asarray(c_train, dtype=np.int64))))
            raise ValueError(
                f"num-clients={num_clients}: natural client {cid} has no train samples (the dataset has "
                f"{have} clients with train samples); lower num-clients"
            )
    return parts
