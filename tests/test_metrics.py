"""fedetf.metrics equals scikit-learn's definitions (it avoids importing sklearn in workers)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from fedetf.metrics import accuracy, balanced_accuracy


@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.choice([0, 3, 4, 9], size=50, p=[0.6, 0.2, 0.15, 0.05])  # skewed, classes missing
    p = np.where(rng.random(50) < 0.6, y, rng.integers(0, 10, 50))  # some predictions of absent classes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = balanced_accuracy_score(y, p)
    assert balanced_accuracy(y, p) == pytest.approx(expected, abs=1e-12)
    assert accuracy(y, p) == pytest.approx(accuracy_score(y, p), abs=1e-12)


def test_metrics_of_empty_and_trivial_sets() -> None:
    empty = np.zeros(0, np.int64)
    assert accuracy(empty, empty) == 0.0 and balanced_accuracy(empty, empty) == 0.0
    y = np.array([1, 1, 1, 2])
    assert balanced_accuracy(y, np.array([1, 1, 1, 1])) == pytest.approx(0.5)
    assert balanced_accuracy(y, y) == 1.0


def test_balanced_accuracy_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        balanced_accuracy(np.array([0, 1, 1, 2]), np.array([0]))
