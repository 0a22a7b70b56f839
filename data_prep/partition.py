"""Label-skew partitioners: PCDD (n classes per client), Dirichlet, IID.

Every partition is a pure function of (labels, scheme, parameters, seed) and
returns, per client, indices into the train split and into the test split.
Test splits follow the train split's label distribution:

* ``pcdd``: flwr-datasets' ``PathologicalPartitioner`` (first class round-robin,
  the rest random; each class's samples split evenly among its holders), run
  on train and test with the same seed, so each client's test split holds
  exactly its train classes (checked).
* ``dirichlet``: per class, one Dirichlet(beta) draw over clients splits both
  the train and the test samples of that class.
* ``iid``: flwr-datasets' ``IidPartitioner`` on train and on test.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from datasets import Dataset
from flwr_datasets.partitioner import IidPartitioner, Partitioner, PathologicalPartitioner

Parts = list[tuple[np.ndarray, np.ndarray]]


def _run_partitioner(partitioner: Partitioner, labels: np.ndarray) -> list[np.ndarray]:
    partitioner.dataset = Dataset.from_dict({"label": labels, "idx": np.arange(len(labels))})
    return [
        np.sort(np.asarray(partitioner.load_partition(i)["idx"], dtype=np.int64))
        for i in range(partitioner.num_partitions)
    ]


def pcdd(y_train: np.ndarray, y_test: np.ndarray, num_clients: int, seed: int, classes_per_client: int) -> Parts:
    """Each client holds ``classes_per_client`` classes, in train and test alike."""

    def split(labels: np.ndarray) -> list[np.ndarray]:
        part = PathologicalPartitioner(
            num_partitions=num_clients,
            partition_by="label",
            num_classes_per_partition=classes_per_client,
            class_assignment_mode="first-deterministic",
            shuffle=True,
            seed=seed,
        )
        return _run_partitioner(part, labels)

    train, test = split(y_train), split(y_test)
    for cid, (tr, te) in enumerate(zip(train, test, strict=True)):
        if not set(np.unique(y_test[te])) <= set(np.unique(y_train[tr])):
            raise RuntimeError(f"pcdd: client {cid}'s test classes differ from its train classes")
    return list(zip(train, test, strict=True))


def iid(y_train: np.ndarray, y_test: np.ndarray, num_clients: int, seed: int) -> Parts:
    """Uniformly random, equal-size client splits (IidPartitioner over a seeded shuffle)."""

    def split(labels: np.ndarray, s: int) -> list[np.ndarray]:
        perm = np.random.default_rng(s).permutation(len(labels))
        return [np.sort(perm[i]) for i in _run_partitioner(IidPartitioner(num_clients), labels[perm])]

    return list(zip(split(y_train, seed), split(y_test, seed + 1), strict=True))


def dirichlet(
    y_train: np.ndarray,
    y_test: np.ndarray,
    num_clients: int,
    seed: int,
    beta: float,
    min_size: int = 10,
    max_tries: int = 1000,
) -> Parts:
    """Per class c, ``p_c ~ Dir(beta)`` over clients splits train and test of c alike.

    The draw is repeated until every client holds at least ``min_size`` train
    samples (or ``len(y_train) // num_clients`` when that is smaller).
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(y_train)
    need = min(min_size, len(y_train) // num_clients)
    for _ in range(max_tries):
        props = rng.dirichlet(np.full(num_clients, beta), size=len(classes))
        train = _split_by_props(y_train, classes, props, rng)
        if min(len(t) for t in train) >= need:
            test = _split_by_props(y_test, classes, props, rng)
            return list(zip(train, test, strict=True))
    raise ValueError(
        f"dirichlet-beta={beta} with num-clients={num_clients}: no draw in {max_tries} gave every client "
        f">= {need} train samples; raise dirichlet-beta or lower num-clients"
    )


def _split_by_props(
    labels: np.ndarray, classes: np.ndarray, props: np.ndarray, rng: np.random.Generator
) -> list[np.ndarray]:
    out: list[list[np.ndarray]] = [[] for _ in range(props.shape[1])]
    for c, p in zip(classes, props, strict=True):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = (np.cumsum(p)[:-1] * len(idx)).round().astype(int)
        for cid, chunk in enumerate(np.split(idx, cuts)):
            out[cid].append(chunk)
    return [np.sort(np.concatenate(chunks)).astype(np.int64) for chunks in out]


PARTITIONS: dict[str, Callable[..., Parts]] = {"pcdd": pcdd, "dirichlet": dirichlet, "iid": iid}


def partition_indices(
    scheme: str,
    y_train: np.ndarray,
    y_test: np.ndarray,
    num_clients: int,
    seed: int,
    classes_per_client: int = 2,
    beta: float = 0.5,
) -> Parts:
    """Per-client (train indices, test indices) for a named scheme."""
    if scheme == "pcdd":
        return pcdd(y_train, y_test, num_clients, seed, classes_per_client)
    if scheme == "dirichlet":
        return dirichlet(y_train, y_test, num_clients, seed, beta)
    if scheme == "iid":
        return iid(y_train, y_test, num_clients, seed)
    raise ValueError(f"partition={scheme!r} is unknown; allowed: {sorted(PARTITIONS)}")
