"""Classification metrics.

Plain numpy on purpose: these run in every Ray worker, and importing scikit-learn
there (scipy, pandas, pyarrow) costs ~1 s and ~100 MB per process. The test suite
checks them against ``sklearn.metrics``.
"""

from __future__ import annotations

import numpy as np


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of correct predictions (0.0 for an empty set)."""
    return float(np.mean(y_true == y_pred)) if len(y_true) else 0.0


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (``sklearn``'s definition).

    Predictions of classes absent from ``y_true`` count as errors and are expected under PCDD.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {y_true.shape} vs {y_pred.shape}")
    if len(y_true) == 0:
        return 0.0
    classes, inverse, support = np.unique(y_true, return_inverse=True, return_counts=True)
    hits = np.bincount(inverse, weights=(y_true == y_pred).astype(np.float64), minlength=len(classes))
    return float(np.mean(hits / support))
