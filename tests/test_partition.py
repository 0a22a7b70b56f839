import numpy as np
import pytest

from data_prep.federated import balanced_subset, load_federation
from data_prep.partition import dirichlet, iid, partition_indices, pcdd


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
    fed = load_federation("digits", "pcdd", 10, 0, 3, 0.5)
    assert fed.data.x_train.shape[1:] == (1, 8, 8) and fed.data.x_train.dtype == np.uint8
    assert len(fed.data.y_train) + len(fed.data.y_test) == 1797
    counts = np.bincount(fed.data.y_test[fed.global_test], minlength=10)
    assert (counts == counts[0]).all() and counts[0] > 0
    assert (fed.label_counts(0) > 0).sum() == 3
    train, test = fed.client_loaders(0, batch_size=64, seed=0)
    assert len(train.dataset) == fed.label_counts(0).sum()
    assert set(test.dataset.tensors[1].tolist()) == set(np.flatnonzero(fed.label_counts(0)))
    assert load_federation("digits", "pcdd", 10, 0, 3, 0.5) is fed  # decoded once per process


def test_balanced_subset() -> None:
    y = np.array([0] * 10 + [1] * 3 + [2] * 5)
    idx = balanced_subset(y, seed=0)
    assert np.bincount(y[idx]).tolist() == [3, 3, 3]
