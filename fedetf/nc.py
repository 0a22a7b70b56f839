"""Neural-collapse diagnostics: NC1-NC3, angle collapse and space waste.

Pure torch, float64 internally. Everything works from per-class feature
statistics (:class:`ClassStats`), which can be computed in one shot
(:func:`class_statistics`) or accumulated over mini-batches
(:class:`ClassStatsAccumulator`) without keeping the features.

Conventions
-----------
* Classes with ``count == 0`` are *absent*: their mean row is zero and they are
  left out of every NC metric.
* The *global mean* is the unweighted mean of the present classes' means (the
  class-balanced centre used by the NC literature), not the sample mean, so
  that class imbalance does not shift the centre. *Centred means* are class
  means minus this global mean.
* ``S_W`` is averaged over samples; ``S_B`` over present classes.
* Classifiers are given row-wise, shape ``(K, d)``; note that
  :func:`fedetf.etf.simplex_etf` returns ``(d, K)``, so pass its transpose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "ClassStats",
    "ClassStatsAccumulator",
    "angle_collapse",
    "class_statistics",
    "nc_metrics",
    "space_waste",
]

_DTYPE = torch.float64
# Relative cut-off for the pseudo-inverse of S_B (rank <= K_present - 1): directions
# whose between-class variance is below this fraction of the largest count as null.
_PINV_RTOL = 1e-10


@dataclass(frozen=True)
class ClassStats:
    """Per-class first and second moment summaries of a feature set (float64).

    Attributes
    ----------
    counts : Tensor
        ``(K,)`` int64 samples per class.
    means : Tensor
        ``(K, d)`` class means; zero rows for absent classes.
    global_mean : Tensor
        ``(d,)`` unweighted mean of the present classes' means.
    within : Tensor
        ``(d, d)`` within-class scatter ``S_W = 1/N sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T``.
    between : Tensor
        ``(d, d)`` between-class scatter ``S_B = 1/K_p sum_{c present} (mu_c - mu_G)(mu_c - mu_G)^T``.
    """

    counts: Tensor
    means: Tensor
    global_mean: Tensor
    within: Tensor
    between: Tensor

    @property
    def num_classes(self) -> int:
        """Number of classes ``K`` (present or not)."""
        return int(self.counts.shape[0])

    @property
    def present(self) -> Tensor:
        """``(K,)`` bool mask of classes with at least one sample."""
        return self.counts > 0

    @property
    def centred_means(self) -> Tensor:
        """``(K, d)`` class means minus the global mean; zero rows for absent classes."""
        return (self.means - self.global_mean) * self.present.unsqueeze(1).to(_DTYPE)

    @classmethod
    def from_sums(
        cls, counts: Tensor, feature_sums: Tensor, outer_sum: Tensor, shift: Tensor | None = None
    ) -> ClassStats:
        """Build statistics from accumulated sums.

        Parameters
        ----------
        counts : Tensor
            ``(K,)`` samples per class.
        feature_sums : Tensor
            ``(K, d)`` per-class sums of ``h_i - shift``.
        outer_sum : Tensor
            ``(d, d)`` sum over all samples of ``(h_i - shift)(h_i - shift)^T``.
        shift : Tensor, optional
            ``(d,)`` reference point subtracted before summing (defaults to 0). A
            shift near the data reduces cancellation in ``S_W``; ``S_W`` does not
            depend on it.
        """
        counts = counts.to(torch.int64)
        sums = feature_sums.to(_DTYPE)
        total = int(counts.sum())
        if total == 0:
            raise ValueError("ClassStats need at least one sample")
        n = counts.to(_DTYPE).unsqueeze(1)
        present = counts > 0
        shifted_means = torch.where(present.unsqueeze(1), sums / n.clamp_min(1.0), torch.zeros_like(sums))
        # sum_i (h-s)(h-s)^T - sum_c n_c (mu_c-s)(mu_c-s)^T = sum_i (h-mu_y)(h-mu_y)^T
        within = (outer_sum.to(_DTYPE) - shifted_means.T @ (shifted_means * n)) / total
        within = 0.5 * (within + within.T)
        means = shifted_means
        if shift is not None:
            means = torch.where(present.unsqueeze(1), shifted_means + shift.to(_DTYPE), shifted_means)
        return _finish(counts, means, within)


def _finish(counts: Tensor, means: Tensor, within: Tensor) -> ClassStats:
    """Add the global mean and ``S_B`` to counts, means and ``S_W``."""
    present = counts > 0
    global_mean = means[present].mean(dim=0)
    centred = means[present] - global_mean
    between = centred.T @ centred / int(present.sum())
    return ClassStats(counts=counts, means=means, global_mean=global_mean, within=within, between=between)


def _check_batch(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    if features.ndim != 2:
        raise ValueError(f"features must be (N, d), got shape {tuple(features.shape)}")
    if labels.shape != (features.shape[0],):
        raise ValueError(f"labels must be ({features.shape[0]},), got shape {tuple(labels.shape)}")
    labels = labels.to(torch.int64)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]")
    return features, labels


def class_statistics(features: Tensor, labels: Tensor, num_classes: int) -> ClassStats:
    """Per-class statistics of ``features`` ``(N, d)`` with integer ``labels`` ``(N,)``.

    ``S_W`` is computed from explicitly centred features (exact for collapsed
    features). See :class:`ClassStats` for the definitions.
    """
    features, labels = _check_batch(features, labels, num_classes)
    if features.shape[0] == 0:
        raise ValueError("ClassStats need at least one sample")
    h = features.detach().to(_DTYPE)
    labels = labels.to(h.device)
    counts = torch.bincount(labels, minlength=num_classes)
    sums = torch.zeros(num_classes, h.shape[1], dtype=_DTYPE, device=h.device).index_add_(0, labels, h)
    means = sums / counts.to(_DTYPE).clamp_min(1.0).unsqueeze(1)
    resid = h - means[labels]
    within = resid.T @ resid / h.shape[0]
    return _finish(counts, means, within)


class ClassStatsAccumulator:
    """Accumulate :class:`ClassStats` over mini-batches in ``O(K d + d^2)`` memory.

    Keeps per-class counts and feature sums plus one total outer-product sum, all
    taken around a shift (the first batch's mean) to limit cancellation.

    Parameters
    ----------
    num_classes : int
        Number of classes ``K``.
    device : torch.device or str, optional
        Where the float64 sums live (default CPU; use CPU for MPS inputs).
    """

    def __init__(self, num_classes: int, device: torch.device | str | None = None) -> None:
        self.num_classes = int(num_classes)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._counts: Tensor | None = None
        self._sums: Tensor | None = None
        self._outer: Tensor | None = None
        self._shift: Tensor | None = None

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor) -> None:
        """Add a batch of ``features`` ``(n, d)`` with ``labels`` ``(n,)``."""
        features, labels = _check_batch(features, labels, self.num_classes)
        if features.shape[0] == 0:
            return
        h = features.detach().to(device=self.device, dtype=_DTYPE)
        labels = labels.to(self.device)
        if self._shift is None:
            d = h.shape[1]
            self._shift = h.mean(dim=0)
            self._counts = torch.zeros(self.num_classes, dtype=torch.int64, device=self.device)
            self._sums = torch.zeros(self.num_classes, d, dtype=_DTYPE, device=self.device)
            self._outer = torch.zeros(d, d, dtype=_DTYPE, device=self.device)
        assert self._counts is not None and self._sums is not None and self._outer is not None
        if h.shape[1] != self._shift.shape[0]:
            raise ValueError(f"feature dim changed from {self._shift.shape[0]} to {h.shape[1]}")
        x = h - self._shift
        self._counts += torch.bincount(labels, minlength=self.num_classes)
        self._sums.index_add_(0, labels, x)
        self._outer += x.T @ x

    def finish(self) -> ClassStats:
        """Return the statistics of everything seen so far."""
        if self._shift is None:
            raise ValueError("ClassStatsAccumulator.finish() called before any non-empty update()")
        assert self._counts is not None and self._sums is not None and self._outer is not None
        return ClassStats.from_sums(self._counts, self._sums, self._outer, shift=self._shift)


def _pairwise_cosines(vectors: Tensor) -> Tensor:
    """Cosines of all pairs ``i < j`` of the rows of ``vectors`` (NaN for zero rows)."""
    unit = vectors / vectors.norm(dim=1, keepdim=True)
    gram = unit @ unit.T
    iu = torch.triu_indices(gram.shape[0], gram.shape[0], offset=1, device=gram.device)
    return gram[iu[0], iu[1]].clamp(-1.0, 1.0)


def nc_metrics(stats: ClassStats, classifier: Tensor | None = None) -> dict[str, float]:
    """Neural-collapse metrics over the present classes (``count > 0``).

    Parameters
    ----------
    stats : ClassStats
        Feature statistics.
    classifier : Tensor, optional
        ``(K, d)`` classifier vectors, one row per class; enables ``self_duality``.

    Returns
    -------
    dict
        ``nc1`` = ``tr(S_W S_B^+) / K_p``; ``equinorm`` = std/mean of the centred
        class-mean norms; ``equiangularity`` = std of their pairwise cosines;
        ``cos_gap`` = ``|mean cosine + 1/(K_p-1)|``; ``self_duality`` =
        ``||W/||W||_F - M_c/||M_c||_F||_F`` (present rows only); ``num_present``.
        Stds are population stds. All values are NaN with fewer than 2 present
        classes. Every metric is 0 for an exactly collapsed simplex ETF.
    """
    present = stats.present
    k_p = int(present.sum())
    out: dict[str, float] = {"num_present": float(k_p)}
    keys = ["nc1", "equinorm", "equiangularity", "cos_gap"] + (["self_duality"] if classifier is not None else [])
    if k_p < 2:
        return out | dict.fromkeys(keys, math.nan)
    centred = stats.centred_means[present]
    between_pinv = torch.linalg.pinv(stats.between, rtol=_PINV_RTOL, hermitian=True)
    out["nc1"] = float(torch.trace(stats.within @ between_pinv)) / k_p
    norms = centred.norm(dim=1)
    out["equinorm"] = float(norms.std(correction=0) / norms.mean())
    cos = _pairwise_cosines(centred)
    out["equiangularity"] = float(cos.std(correction=0))
    out["cos_gap"] = abs(float(cos.mean()) + 1.0 / (k_p - 1))
    if classifier is not None:
        if classifier.shape != stats.means.shape:
            raise ValueError(f"classifier must be (K, d) = {tuple(stats.means.shape)}, got {tuple(classifier.shape)}")
        w = classifier.detach().to(device=centred.device, dtype=_DTYPE)[present]
        out["self_duality"] = float((w / w.norm() - centred / centred.norm()).norm())
    return out


def _mean_pairwise_angle(vectors: Tensor) -> float:
    if vectors.shape[0] < 2:
        return math.nan
    return float(torch.rad2deg(torch.arccos(_pairwise_cosines(vectors))).mean())


def _check_mask(present: Tensor, k: int) -> Tensor:
    if present.shape != (k,) or present.dtype != torch.bool:
        raise ValueError(f"present must be a ({k},) bool tensor, got {present.dtype} {tuple(present.shape)}")
    return present


def angle_collapse(vectors: Tensor, present: Tensor) -> dict[str, float]:
    """Mean pairwise angle (degrees) within the missing and within the present classes.

    FedGELA's "angle collapse": a learned classifier trained without some classes
    pulls those classes' vectors together, so ``missing_angle`` drops below the
    ETF angle ``arccos(-1/(K-1))``. Pass classifier rows, or (for a fixed ETF
    classifier) per-class feature means, centred or not as the analysis needs.

    Parameters
    ----------
    vectors : Tensor
        ``(K, d)`` one vector per class (used as given, not centred).
    present : Tensor
        ``(K,)`` bool, True for classes present (e.g. in a client's local data).

    Returns
    -------
    dict
        ``missing_angle`` and ``present_angle``; NaN for a group of fewer than 2
        vectors (or one containing a zero vector).
    """
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be (K, d), got shape {tuple(vectors.shape)}")
    present = _check_mask(present, vectors.shape[0]).to(vectors.device)
    v = vectors.detach().to(_DTYPE)
    return {"missing_angle": _mean_pairwise_angle(v[~present]), "present_angle": _mean_pairwise_angle(v[present])}


def _effective_rank(matrix: Tensor) -> float:
    """``exp`` of the entropy of the normalised singular values (Roy & Vetterli, 2007)."""
    s = torch.linalg.svdvals(matrix)
    if s.numel() == 0 or float(s.sum()) == 0.0:
        return math.nan
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def space_waste(stats: ClassStats, present: Tensor) -> dict[str, float]:
    """Share of the class-mean geometry spent on classes missing locally.

    Energy of class ``c`` is ``||mu_c||^2`` around the *origin*: ETF-style
    classifiers are bias-free and centred at the origin (their vectors sum to
    zero), so logits ``w_c^T h`` depend on where features lie relative to the
    origin, and a class whose features sit at the origin occupies no space.
    Absent classes (``count == 0``) have zero means and zero energy.

    Parameters
    ----------
    stats : ClassStats
        Feature statistics (e.g. of a test split covering all classes).
    present : Tensor
        ``(K,)`` bool, True for the locally present classes.

    Returns
    -------
    dict
        ``missing_share`` = energy of missing classes / total energy (NaN if the
        total is 0), ``present_share`` = ``1 - missing_share``;
        ``effective_rank`` of the present classes' means centred on their own
        mean, and ``effective_rank_all`` of all classes with samples, centred
        likewise (a present-class subspace much smaller than the full one means
        space reserved for missing classes).
    """
    present = _check_mask(present, stats.num_classes).to(stats.means.device)
    energy = stats.means.pow(2).sum(dim=1)
    total = float(energy.sum())
    missing = float(energy[~present].sum()) / total if total > 0 else math.nan
    has_samples = stats.present
    local = stats.means[present & has_samples]
    every = stats.means[has_samples]
    return {
        "missing_share": missing,
        "present_share": 1.0 - missing,
        "effective_rank": _effective_rank(local - local.mean(dim=0)) if local.shape[0] else math.nan,
        "effective_rank_all": _effective_rank(every - every.mean(dim=0)),
    }
