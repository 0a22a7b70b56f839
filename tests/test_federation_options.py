import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from data_prep.federated import Federation, load_federation


def _train_images(fed: Federation, cid: int = 0) -> torch.Tensor:
    train, _ = fed.client_loaders(cid, batch_size=64, seed=0)
    return train.dataset.tensors[0]


def test_normalize_false_gives_plain_values_in_unit_range() -> None:
    plain = load_federation("digits", "pcdd", 10, 0, 3, 0.5, normalize=False)
    assert plain.info.mean == (0.0,) and plain.info.std == (1.0,)
    x = torch.cat([_train_images(plain, c) for c in range(10)])
    assert x.min().item() == 0.0 and x.max().item() == 1.0
    test = plain.global_test_loader().dataset.tensors[0]
    assert test.min().item() >= 0.0 and test.max().item() <= 1.0
    # The augmenting (per-sample transform) path follows the info as well.
    tr, _ = plain.parts[0]
    aug = plain.data.dataset("train", tr, True, replace(plain.info, train_augment="crop"))
    sample = torch.stack([aug[i][0] for i in range(len(aug))])
    assert sample.min().item() >= 0.0 and sample.max().item() == 1.0


def test_normalize_true_keeps_todays_values() -> None:
    fed = load_federation("digits", "pcdd", 10, 0, 3, 0.5)
    plain = load_federation("digits", "pcdd", 10, 0, 3, 0.5, normalize=False)
    assert fed.info.mean == (0.305,) and fed.info.std == (0.383,)
    same_data = np.array_equal(fed.data.x_train, plain.data.x_train) and np.array_equal(
        fed.data.y_test, plain.data.y_test
    )
    assert same_data and all(
        np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(fed.parts, plain.parts, strict=True)
    )
    tr, _ = fed.parts[0]
    raw = torch.from_numpy(fed.data.x_train[tr]).float() / 255.0
    torch.testing.assert_close(_train_images(fed), (raw - 0.305) / 0.383)
    torch.testing.assert_close(_train_images(plain), raw)


def test_generic_test_full_and_balanced() -> None:
    full = load_federation("digits", "iid", 5, 0, generic_test="full")
    assert np.array_equal(full.global_test, np.arange(450))
    assert len(full.global_test_loader().dataset) == 450
    balanced = load_federation("digits", "iid", 5, 0, generic_test="balanced")
    counts = np.bincount(balanced.data.y_test[balanced.global_test], minlength=10)
    assert (counts == counts[0]).all() and counts[0] > 0
    assert len(np.unique(balanced.global_test)) == len(balanced.global_test) < 450
    with pytest.raises(ValueError, match=re.escape("generic-test='x' is unknown; allowed: ['balanced', 'full']")):
        load_federation("digits", "iid", 5, 0, generic_test="x")


def test_pcdd_assignment_reaches_the_partition() -> None:
    seq = load_federation("digits", "pcdd", 10, 0, 3, pcdd_assignment="sequential")
    held = [set(np.flatnonzero(seq.label_counts(c)).tolist()) for c in range(10)]
    assert held[:3] == [{0, 1, 2}, {3, 4, 5}, {6, 7, 8}] and 9 in held[3]
    for c in range(10):
        assert set(np.flatnonzero(seq.label_counts(c, "test")).tolist()) == held[c]
    assert load_federation("digits", "pcdd", 10, 0, 3, pcdd_assignment="sequential") is seq
    with pytest.raises(ValueError, match=re.escape("pcdd-assignment='x' is unknown; allowed: ['flwr', 'sequential']")):
        load_federation("digits", "pcdd", 10, 0, 3, pcdd_assignment="x")


def test_thousand_iid_clients_on_digits_partition_without_crashing() -> None:
    fed = load_federation("digits", "iid", 1000, 0)
    assert min(len(tr) for tr, _ in fed.parts) >= 1
    assert sum(len(te) == 0 for _, te in fed.parts) == 550
    with pytest.raises(ValueError, match=r"^num-clients=2000: partition 'iid' leaves client 1347 with no train"):
        load_federation("digits", "iid", 2000, 0)
