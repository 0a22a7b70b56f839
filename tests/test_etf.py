import pytest
import torch

from fedetf.etf import simplex_etf


@pytest.mark.parametrize("k,d", [(10, 9), (10, 10), (10, 128), (2, 1), (3, 2), (100, 99), (100, 512)])
def test_simplex_etf_geometry(k: int, d: int) -> None:
    m = simplex_etf(k, d, seed=7).double()
    assert m.shape == (d, k)
    gram = m.T @ m
    assert torch.allclose(gram.diagonal(), torch.ones(k, dtype=torch.float64), atol=1e-5)
    off = gram[~torch.eye(k, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, -1.0 / (k - 1)), atol=1e-5)
    assert torch.allclose(m.sum(dim=1), torch.zeros(d, dtype=torch.float64), atol=1e-5)
    assert torch.linalg.matrix_rank(m, atol=1e-4) == k - 1


def test_simplex_etf_is_seeded() -> None:
    assert torch.equal(simplex_etf(10, 32, seed=3), simplex_etf(10, 32, seed=3))
    assert not torch.allclose(simplex_etf(10, 32, seed=3), simplex_etf(10, 32, seed=4))
    assert not torch.allclose(simplex_etf(10, 9, seed=3), simplex_etf(10, 9, seed=4))


def test_simplex_etf_rejects_small_dim() -> None:
    with pytest.raises(ValueError, match="dim >= num_classes - 1"):
        simplex_etf(10, 8, seed=0)
    with pytest.raises(ValueError, match="num_classes >= 2"):
        simplex_etf(1, 8, seed=0)
