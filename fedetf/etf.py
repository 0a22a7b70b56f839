"""Simplex equiangular tight frames (ETF)."""

from __future__ import annotations

import math

import torch


def simplex_etf(num_classes: int, dim: int, seed: int) -> torch.Tensor:
    """Return a seeded simplex ETF ``M`` of shape ``(dim, num_classes)``.

    ``M = sqrt(K/(K-1)) * P (I_K - 1 1^T / K)`` with ``P^T P = I``. Columns have
    unit norm, pairwise cosine ``-1/(K-1)``, sum to zero, and ``M`` has rank
    ``K-1``. Works for any ``dim >= K-1``: for ``dim >= K``, ``P`` is the Q factor
    of a random ``dim x K`` Gaussian matrix; for ``dim == K-1`` the frame is
    built in the centred subspace, rotated by a random orthogonal matrix.
    """
    k = num_classes
    if k < 2:
        raise ValueError(f"simplex_etf needs num_classes >= 2, got {k}")
    if dim < k - 1:
        raise ValueError(f"simplex_etf needs dim >= num_classes - 1 = {k - 1}, got {dim}")
    gen = torch.Generator().manual_seed(int(seed))
    centring = torch.eye(k, dtype=torch.float64) - torch.full((k, k), 1.0 / k, dtype=torch.float64)
    if dim >= k:
        p, _ = torch.linalg.qr(torch.randn(dim, k, generator=gen, dtype=torch.float64))
        m = math.sqrt(k / (k - 1)) * p @ centring
    else:
        # Orthonormal basis B (K x K-1) of the centred subspace {x : 1^T x = 0}:
        # the ETF columns are B^T e_c scaled, then rotated by a random orthogonal R.
        basis, _ = torch.linalg.qr(centring[:, : k - 1])
        rot, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
        m = math.sqrt(k / (k - 1)) * rot @ basis.T @ centring
    return m.to(torch.float32).contiguous()


def nearest_etf(class_means: torch.Tensor, previous: torch.Tensor, delta: float = 0.0) -> torch.Tensor:
    """The simplex ETF nearest to the class means (Markou et al., NeurIPS 2024), by orthogonal Procrustes.

    ``class_means`` and ``previous`` are ``d x K``. With the centring ``C = I - 11^T/K``
    and ``A = H C / ||H C||_F + delta * previous / ||previous||_F``, ``U = P V^T`` from the
    SVD ``A = P S V^T`` and the result is ``sqrt(K/(K-1)) U C``: still a simplex ETF
    (unit columns, cosines -1/(K-1)); ``delta`` keeps it close to ``previous``.
    """
    d, k = class_means.shape
    h = class_means.to(torch.float64)
    centring = torch.eye(k, dtype=torch.float64) - torch.full((k, k), 1.0 / k, dtype=torch.float64)
    a = h @ centring
    a = a / a.norm().clamp(min=1e-12)
    prev = previous.to(torch.float64)
    if delta:
        a = a + delta * prev / prev.norm().clamp(min=1e-12)
    p, _, vh = torch.linalg.svd(a, full_matrices=False)
    m = math.sqrt(k / (k - 1)) * (p @ vh) @ centring
    return m.to(previous.dtype).contiguous()
