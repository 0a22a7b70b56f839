"""Classification metrics (sklearn-backed)."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import balanced_accuracy_score


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of correct predictions (0.0 for an empty set)."""
    return float(np.mean(y_true == y_pred)) if len(y_true) else 0.0


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``y_true``."""
    if len(y_true) == 0:
        return 0.0
    with warnings.catch_warnings():
        # Predictions of classes absent from y_true are expected under PCDD.
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y_true, y_pred))
