import hashlib
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset
from flwr_datasets.partitioner import PathologicalPartitioner

from data_prep.federated import balanced_subset, load_dataset, load_federation
from data_prep.partition import (
    dirichlet,
    iid,
    partition_indices,
    pcdd,
    sequential_assignment,
)


def _labels(n_per_class: int, k: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(k), n_per_class))


def _check_cover(parts: list[np.ndarray], n: int) -> None:
    allidx = np.concatenate(parts)
    assert len(allidx) == n and len(np.unique(allidx)) == n


def test_pcdd_classes_per_client_and_matching_test_classes() -> None:
    ytr, yte = _labels(100), _labels(30, seed=1)
    parts = pcdd(ytr, yte, num_clients=10, seed=3, classes_per_client=3)
    _check_cover([p[0] for p in parts], len(ytr))
    _check_cover([p[1] for p in parts], len(yte))
    holders = np.zeros(10, int)
    for tr, te in parts:
        classes = set(np.unique(ytr[tr]))
        assert len(classes) == 3
        assert set(np.unique(yte[te])) == classes
        holders[list(classes)] += 1
    assert (holders > 0).all()  # round-robin first class: every class used
    # Each class's samples are split evenly among its holders.
    for c in range(10):
        sizes = [int((ytr[tr] == c).sum()) for tr, _ in parts if (ytr[tr] == c).any()]
        assert max(sizes) - min(sizes) <= 1


def test_partitions_are_pure_functions_of_seed() -> None:
    ytr, yte = _labels(50), _labels(10, seed=1)
    for scheme in ("pcdd", "dirichlet", "iid"):
        a = partition_indices(scheme, ytr, yte, 5, seed=11, classes_per_client=2, beta=0.5)
        b = partition_indices(scheme, ytr, yte, 5, seed=11, classes_per_client=2, beta=0.5)
        c = partition_indices(scheme, ytr, yte, 5, seed=12, classes_per_client=2, beta=0.5)
        assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
        assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, c, strict=True))


def test_dirichlet_uses_the_same_draw_for_train_and_test() -> None:
    ytr, yte = _labels(1000), _labels(500, seed=1)
    parts = dirichlet(ytr, yte, num_clients=5, seed=0, beta=0.3)
    _check_cover([p[0] for p in parts], len(ytr))
    _check_cover([p[1] for p in parts], len(yte))
    for c in range(10):
        share_tr = np.array([(ytr[tr] == c).sum() for tr, _ in parts]) / 1000
        share_te = np.array([(yte[te] == c).sum() for _, te in parts]) / 500
        assert np.abs(share_tr - share_te).max() < 0.01


def test_dirichlet_impossible_request_names_the_settings() -> None:
    with pytest.raises(ValueError, match="dirichlet-beta"):
        dirichlet(_labels(2), _labels(1), num_clients=10, seed=0, beta=0.001, max_tries=5)


def test_iid_is_balanced() -> None:
    ytr, yte = _labels(100), _labels(20)
    parts = iid(ytr, yte, num_clients=7, seed=0)
    sizes = [len(tr) for tr, _ in parts]
    assert max(sizes) - min(sizes) <= 1
    _check_cover([p[0] for p in parts], len(ytr))


def test_digits_federation_and_balanced_global_test() -> None:
    fed = load_federation("digits", "pcdd", 10, 0, 3, 0.5, generic_test="balanced")
    assert fed.data.x_train.shape[1:] == (1, 8, 8) and fed.data.x_train.dtype == np.uint8
    assert len(fed.data.y_train) + len(fed.data.y_test) == 1797
    counts = np.bincount(fed.data.y_test[fed.global_test], minlength=10)
    assert (counts == counts[0]).all() and counts[0] > 0
    assert (fed.label_counts(0) > 0).sum() == 3
    train, test = fed.client_loaders(0, batch_size=64, seed=0)
    assert len(train.dataset) == fed.label_counts(0).sum()
    assert set(test.dataset.tensors[1].tolist()) == set(np.flatnonzero(fed.label_counts(0)))
    assert load_federation("digits", "pcdd", 10, 0, 3, 0.5, generic_test="balanced") is fed  # decoded once per process


def test_balanced_subset() -> None:
    y = np.array([0] * 10 + [1] * 3 + [2] * 5)
    idx = balanced_subset(y, seed=0)
    assert np.bincount(y[idx]).tolist() == [3, 3, 3]


def _same(a: list[tuple[np.ndarray, np.ndarray]], b: list[tuple[np.ndarray, np.ndarray]]) -> bool:
    return all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))


def test_sequential_assignment_follows_the_authors_order() -> None:
    held = sequential_assignment(np.arange(10), 10, 3, seed=0)
    assert held[:3] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert held[3][0] == 9
    assert all(len(set(h)) == 3 for h in held)
    assert set().union(*held) == set(range(10))


def test_pcdd_sequential_split() -> None:
    ytr, yte = _labels(100), _labels(30, seed=1)
    parts = pcdd(ytr, yte, num_clients=10, seed=3, classes_per_client=3, assignment="sequential")
    _check_cover([p[0] for p in parts], len(ytr))
    _check_cover([p[1] for p in parts], len(yte))
    held = [set(np.unique(ytr[tr]).tolist()) for tr, _ in parts]
    expected = sequential_assignment(np.arange(10), 10, 3, seed=3)
    assert held == [set(h) for h in expected]
    assert held[:3] == [{0, 1, 2}, {3, 4, 5}, {6, 7, 8}] and 9 in held[3]
    assert all(len(h) == 3 for h in held)
    for tr, te in parts:
        assert set(np.unique(yte[te]).tolist()) == set(np.unique(ytr[tr]).tolist())
    for c in range(10):
        holders = [cid for cid, h in enumerate(held) if c in h]
        assert holders
        for y, split in ((ytr, 0), (yte, 1)):
            chunks = [parts[cid][split][y[parts[cid][split]] == c] for cid in holders]
            sizes = [len(ch) for ch in chunks]
            assert max(sizes) - min(sizes) <= 1
            together = np.concatenate(chunks)
            assert len(np.unique(together)) == len(together)  # disjoint
            assert np.array_equal(np.sort(together), np.flatnonzero(y == c))  # covers class c


def test_pcdd_sequential_is_a_pure_function_of_seed() -> None:
    ytr, yte = _labels(100), _labels(30, seed=1)
    a = partition_indices("pcdd", ytr, yte, 10, seed=5, classes_per_client=3, assignment="sequential")
    b = partition_indices("pcdd", ytr, yte, 10, seed=5, classes_per_client=3, assignment="sequential")
    c = partition_indices("pcdd", ytr, yte, 10, seed=6, classes_per_client=3, assignment="sequential")
    assert _same(a, b)
    assert not _same(a, c)


#: MNIST's samples per class (train, test).
MNIST_TRAIN = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
MNIST_TEST = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
FEDGELA_SPLIT = Path(__file__).parent / "data" / "fedgela_split_mnist_counts.json"


def _sha256(idx: np.ndarray) -> str:
    return hashlib.sha256(np.sort(idx).astype("<i8").tobytes()).hexdigest()


@pytest.mark.parametrize("seed", [0, 1])
def test_pcdd_sequential_equals_the_authors_split(seed: int) -> None:
    """The FedGELA authors' ``partition_class_per`` output (10 clients, 3 classes each, MNIST's
    class counts sorted by class), as stored in the fixture; tests/data/README.md says how it
    was produced from their repository."""
    want = json.loads(FEDGELA_SPLIT.read_text())[str(seed)]
    ytr = np.repeat(np.arange(10), MNIST_TRAIN)
    yte = np.repeat(np.arange(10), MNIST_TEST)
    assert sequential_assignment(np.arange(10), 10, 3, seed) == want["assignment"]
    parts = partition_indices("pcdd", ytr, yte, 10, seed, classes_per_client=3, assignment="sequential")
    assert len(parts) == len(want["clients"]) == 10
    for cid, ((tr, te), ref) in enumerate(zip(parts, want["clients"], strict=True)):
        assert np.bincount(ytr[tr], minlength=10).tolist() == ref["train_counts"], cid
        assert np.bincount(yte[te], minlength=10).tolist() == ref["test_counts"], cid
        assert tr[:5].tolist() == ref["train_head"] and te[:5].tolist() == ref["test_head"], cid
        assert (_sha256(tr), _sha256(te)) == (ref["train_sha256"], ref["test_sha256"]), cid


def test_pcdd_sequential_depends_on_class_order_not_label_values() -> None:
    ytr, yte = _labels(40), _labels(12, seed=1)
    a = pcdd(ytr, yte, num_clients=8, seed=2, classes_per_client=3, assignment="sequential")
    b = pcdd(7 * ytr - 5, 7 * yte - 5, num_clients=8, seed=2, classes_per_client=3, assignment="sequential")
    assert _same(a, b)


def _run_partitioner(partitioner: PathologicalPartitioner, labels: np.ndarray) -> list[np.ndarray]:
    partitioner.dataset = Dataset.from_dict({"label": labels, "idx": np.arange(len(labels))})
    return [
        np.sort(np.asarray(partitioner.load_partition(i)["idx"], dtype=np.int64))
        for i in range(partitioner.num_partitions)
    ]


@pytest.mark.parametrize(
    ("num_clients", "per_client", "seed", "num_classes"),
    [
        (12, 3, 4, 10),
        (10, 2, 0, 10),
        (100, 5, 7, 10),
        (30, 1, 2, 10),
        (7, 9, 1, 10),
        (50, 3, 3, 8),
        (12, 10, 1, 10),
        (3, 1, 1, 10),
        (15, 2, 5, 2),
    ],
)
@pytest.mark.parametrize("values", ["0..K-1", "sparse"])
def test_pcdd_flwr_is_pathological_partitioner_on_train(
    num_clients: int, per_client: int, seed: int, num_classes: int, values: str
) -> None:
    rng = np.random.default_rng(seed)
    ytr = rng.choice(num_classes, size=60 * num_clients, p=rng.dirichlet(np.full(num_classes, 2.0)))
    yte = rng.integers(0, num_classes, 9 * num_classes)
    if values == "sparse":  # class labels that are not 0..K-1
        ytr, yte = 7 * ytr - 5, 7 * yte - 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # classes no client holds
        parts = pcdd(ytr, yte, num_clients=num_clients, seed=seed, classes_per_client=per_client)
        ref = PathologicalPartitioner(
            num_partitions=num_clients,
            partition_by="label",
            num_classes_per_partition=per_client,
            class_assignment_mode="first-deterministic",
            shuffle=True,
            seed=seed,
        )
        expected = _run_partitioner(ref, ytr)
    for (tr, _), expect in zip(parts, expected, strict=True):
        assert np.array_equal(tr, expect)


def test_unknown_pcdd_assignment() -> None:
    msg = "pcdd-assignment='x' is unknown; allowed: ['flwr', 'sequential']"
    with pytest.raises(ValueError, match=re.escape(msg)):
        partition_indices("pcdd", _labels(5), _labels(2), 2, seed=0, assignment="x")


def test_iid_too_many_clients_is_one_line_value_error() -> None:
    data = load_dataset("digits", 0)
    assert (len(data.y_train), len(data.y_test)) == (1347, 450)
    msg = (
        "num-clients=2000: partition 'iid' leaves client 1347 with no train samples "
        "(the train split has 1347 samples); lower num-clients"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        partition_indices("iid", data.y_train, data.y_test, 2000, seed=0)


def test_iid_more_clients_than_test_samples_leaves_empty_test_splits() -> None:
    data = load_dataset("digits", 0)
    parts = partition_indices("iid", data.y_train, data.y_test, 1000, seed=0)  # used to raise IndexError
    assert min(len(tr) for tr, _ in parts) == 1
    assert sum(len(te) == 0 for _, te in parts) == 550
    _check_cover([p[0] for p in parts], 1347)
    _check_cover([p[1] for p in parts], 450)


def test_pcdd_and_dirichlet_too_many_clients() -> None:
    ytr, yte = _labels(3), _labels(1, seed=1)
    for assignment in ("flwr", "sequential"):
        with pytest.raises(ValueError, match=r"^num-clients=40: partition 'pcdd' leaves client \d+ without class \d+ "):
            pcdd(ytr, yte, num_clients=40, seed=0, classes_per_client=2, assignment=assignment)
    with pytest.raises(ValueError, match=r"^num-clients=40: partition 'dirichlet' leaves client \d+ with no train"):
        dirichlet(ytr, yte, num_clients=40, seed=0, beta=0.5)


def test_pcdd_allows_empty_test_splits() -> None:
    ytr, yte = _labels(50), _labels(2, seed=1)
    for assignment in ("flwr", "sequential"):
        parts = pcdd(ytr, yte, num_clients=30, seed=0, classes_per_client=2, assignment=assignment)
        assert min(len(tr) for tr, _ in parts) > 0
        _check_cover([p[1] for p in parts], len(yte))
        for tr, te in parts:
            assert set(np.unique(yte[te])) <= set(np.unique(ytr[tr]))


@pytest.mark.parametrize(("n", "k"), [(600, 10), (5003, 7), (1347, 10), (6000, 1000)])
def test_iid_shards_equal_flwr_datasets_iid_partitioner(n: int, k: int) -> None:
    from datasets import Dataset
    from flwr_datasets.partitioner import IidPartitioner

    labels = np.random.default_rng(1).integers(0, 10, n)
    perm = np.random.default_rng(3).permutation(n)
    part = IidPartitioner(k)
    part.dataset = Dataset.from_dict({"idx": perm})
    expected = [np.sort(np.asarray(part.load_partition(i)["idx"])) for i in range(k)]
    got = [tr for tr, _ in iid(labels, labels[:50], num_clients=k, seed=3)]
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def test_dirichlet_per_client_gives_equal_shares_at_cross_device_scale() -> None:
    """10,000 clients over MNIST-size labels (60,000 train, 10,000 test): every client holds 6 train samples and
    1 test sample, no sample twice; a small beta concentrates each client on few classes, a large one does not."""
    rng = np.random.default_rng(0)
    y_train, y_test = rng.integers(0, 10, 60_000), rng.integers(0, 10, 10_000)
    parts = partition_indices("dirichlet-per-client", y_train, y_test, 10_000, seed=3, beta=0.1)
    train = np.concatenate([tr for tr, _ in parts])
    assert {len(tr) for tr, _ in parts} == {6} and {len(te) for _, te in parts} == {1}
    assert np.array_equal(np.sort(train), np.arange(60_000))
    assert len(np.unique(np.concatenate([te for _, te in parts]))) == 10_000

    def top_share(beta: float) -> float:
        parts = partition_indices("dirichlet-per-client", y_train[:6000], y_test[:1000], 100, seed=1, beta=beta)
        return float(np.mean([np.bincount(y_train[tr]).max() / len(tr) for tr, _ in parts]))

    assert top_share(0.1) > 0.6 and top_share(100.0) < 0.3
    again = partition_indices("dirichlet-per-client", y_train, y_test, 10_000, seed=3, beta=0.1)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(parts, again, strict=True))


def test_dirichlet_per_client_test_split_follows_the_client_mix() -> None:
    rng = np.random.default_rng(1)
    y_train, y_test = rng.integers(0, 10, 20_000), rng.integers(0, 10, 20_000)
    parts = partition_indices("dirichlet-per-client", y_train, y_test, 100, seed=0, beta=0.05)
    same = [np.bincount(y_train[tr], minlength=10).argmax() == np.bincount(y_test[te], minlength=10).argmax()
            for tr, te in parts]  # fmt: skip
    assert np.mean(same) > 0.9


def test_per_class_dirichlet_that_cannot_fill_every_client_fails_fast_naming_the_alternative() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="partition='dirichlet-per-client'"):
        partition_indices("dirichlet", rng.integers(0, 10, 6000), rng.integers(0, 10, 1000), 1000, seed=0, beta=0.5)
