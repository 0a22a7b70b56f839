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


#: The test sets of the all-client personal evaluation (run config ``personal-test``).
PERSONAL_TESTS = ("local", "reweighted")


def reweighted_accuracy(y_true: np.ndarray, y_pred: np.ndarray, class_weights: np.ndarray) -> float:
    """``sum_c w_c acc_c / sum_c w_c`` over the classes present in ``y_true``: a test set's per-class accuracy
    weighted by a client's label distribution ``class_weights`` (FedNH's personal evaluation on the global test
    set). NaN when no weighted class has a test sample."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    weights = np.asarray(class_weights, dtype=np.float64)
    support = np.bincount(y_true, minlength=len(weights))[: len(weights)]
    hits = np.bincount(y_true, weights=(y_true == y_pred).astype(np.float64), minlength=len(weights))[: len(weights)]
    present = (support > 0) & (weights > 0)
    if not present.any():
        return float("nan")
    return float(np.sum(weights[present] * hits[present] / support[present]) / np.sum(weights[present]))


def fairness(accuracies: np.ndarray, worst: float = 0.1) -> dict[str, float]:
    """Over clients: the mean, standard deviation (population), mean of the worst ``worst`` share
    (at least one client: ``ceil(worst * n)``) and minimum of their accuracies (NaN for none)."""
    acc = np.sort(np.asarray(accuracies, dtype=np.float64))
    acc = acc[~np.isnan(acc)]
    if not len(acc):
        return {"mean": float("nan"), "std": float("nan"), "worst10": float("nan"), "min": float("nan")}
    k = max(1, int(np.ceil(worst * len(acc) - 1e-9)))
    return {"mean": float(acc.mean()), "std": float(acc.std()), "worst10": float(acc[:k].mean()), "min": float(acc[0])}
