import math

import pytest
import torch

from fedetf.nc import ClassStats, ClassStatsAccumulator, angle_collapse, class_statistics, nc_metrics, space_waste

K, D, REPS = 5, 8, 4
ETF_ANGLE = math.degrees(math.acos(-1.0 / (K - 1)))


def etf_rows(k: int = K, d: int = D, seed: int = 0) -> torch.Tensor:
    """``(k, d)`` simplex-ETF vectors: rows of ``sqrt(k/(k-1)) P (I - 11^T/k)``."""
    gen = torch.Generator().manual_seed(seed)
    p, _ = torch.linalg.qr(torch.randn(d, k, generator=gen, dtype=torch.float64))
    centring = torch.eye(k, dtype=torch.float64) - torch.full((k, k), 1.0 / k, dtype=torch.float64)
    return (math.sqrt(k / (k - 1)) * p @ centring).T


def collapsed(means: torch.Tensor, reps: int = REPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample equals its class mean, ``reps`` samples per class."""
    labels = torch.arange(means.shape[0]).repeat(reps)
    return means[labels].clone(), labels


def test_etf_is_fully_collapsed() -> None:
    offset = 3.0 * torch.randn(D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    feats, labels = collapsed(etf_rows() + offset)
    stats = class_statistics(feats, labels, K)
    assert torch.equal(stats.counts, torch.full((K,), REPS))
    assert torch.allclose(stats.global_mean, offset, atol=1e-12)
    m = nc_metrics(stats)
    assert m["num_present"] == K
    assert m["nc1"] == pytest.approx(0.0, abs=1e-10)
    assert m["cos_gap"] == pytest.approx(0.0, abs=1e-10)
    assert m["equiangularity"] == pytest.approx(0.0, abs=1e-10)
    assert m["equinorm"] == pytest.approx(0.0, abs=1e-10)
    assert "self_duality" not in m


def test_random_gaussian_features_are_not_collapsed() -> None:
    gen = torch.Generator().manual_seed(2)
    feats = torch.randn(200, D, generator=gen)
    labels = torch.randint(0, K, (200,), generator=gen)
    m = nc_metrics(class_statistics(feats, labels, K))
    assert m["nc1"] > 1.0
    assert m["cos_gap"] > 1e-3 or m["equiangularity"] > 0.05
    assert m["equinorm"] > 0.01


def test_self_duality() -> None:
    gen = torch.Generator().manual_seed(3)
    feats = torch.randn(100, D, generator=gen, dtype=torch.float64) + 5.0
    labels = torch.arange(100) % K
    stats = class_statistics(feats, labels, K)
    assert nc_metrics(stats, stats.centred_means)["self_duality"] == pytest.approx(0.0, abs=1e-10)
    assert nc_metrics(stats, 2.5 * stats.centred_means)["self_duality"] == pytest.approx(0.0, abs=1e-10)
    assert nc_metrics(stats, torch.randn(K, D, generator=gen))["self_duality"] > 0.1
    # ETF features with the matching ETF classifier (as simplex_etf(...).T would give).
    etf = etf_rows()
    assert nc_metrics(class_statistics(*collapsed(etf + 1.0), K), etf)["self_duality"] == pytest.approx(0.0, abs=1e-10)


def test_metrics_use_only_present_classes() -> None:
    etf = etf_rows(k=4)
    means = torch.zeros(K + 2, D, dtype=torch.float64)
    present_idx = torch.tensor([0, 2, 3, 6])
    means[present_idx] = etf
    labels = present_idx.repeat(3)
    stats = class_statistics(means[labels], labels, K + 2)
    assert stats.present.tolist() == [True, False, True, True, False, False, True]
    assert torch.equal(stats.means[1], torch.zeros(D, dtype=torch.float64))
    w = torch.randn(K + 2, D, dtype=torch.float64)
    w[present_idx] = etf
    m = nc_metrics(stats, w)
    assert m["num_present"] == 4
    for key in ("nc1", "cos_gap", "equiangularity", "equinorm", "self_duality"):
        assert m[key] == pytest.approx(0.0, abs=1e-10), key


def test_fewer_than_two_present_classes_gives_nan() -> None:
    stats = class_statistics(torch.randn(6, D), torch.zeros(6, dtype=torch.long), K)
    m = nc_metrics(stats, torch.randn(K, D))
    assert m["num_present"] == 1
    assert all(math.isnan(m[k]) for k in ("nc1", "equinorm", "equiangularity", "cos_gap", "self_duality"))


def test_angle_collapse() -> None:
    etf = etf_rows()
    present = torch.tensor([True, True, True, False, False])
    missing_idx = torch.tensor([3, 4])
    a = angle_collapse(etf, present)
    assert a["missing_angle"] == pytest.approx(ETF_ANGLE, abs=1e-9)
    assert a["present_angle"] == pytest.approx(ETF_ANGLE, abs=1e-9)
    squeezed = etf.clone()
    squeezed[missing_idx] = 0.2 * etf[missing_idx] + 0.8 * etf[missing_idx].mean(dim=0)
    b = angle_collapse(squeezed, present)
    assert b["missing_angle"] < a["missing_angle"] - 30.0
    assert b["present_angle"] == pytest.approx(ETF_ANGLE, abs=1e-9)
    c = angle_collapse(etf, torch.tensor([True, True, True, True, False]))
    assert math.isnan(c["missing_angle"]) and c["present_angle"] == pytest.approx(ETF_ANGLE, abs=1e-9)


def test_accumulator_matches_one_shot() -> None:
    gen = torch.Generator().manual_seed(4)
    k = K + 1  # the last class never appears
    feats = 10.0 + torch.randn(301, D, generator=gen)
    labels = torch.randint(0, K, (301,), generator=gen)
    ref = class_statistics(feats, labels, k)
    acc = ClassStatsAccumulator(k)
    for chunk_f, chunk_l in zip(feats.split(37), labels.split(37), strict=True):
        acc.update(chunk_f, chunk_l)
    acc.update(feats[:0], labels[:0])
    got = acc.finish()
    assert torch.equal(got.counts, ref.counts) and int(got.counts[-1]) == 0
    for name in ("means", "global_mean", "within", "between"):
        assert torch.allclose(getattr(got, name), getattr(ref, name), atol=1e-10), name
    assert nc_metrics(got)["nc1"] == pytest.approx(nc_metrics(ref)["nc1"], rel=1e-9)
    # from_sums without a shift gives the same statistics too.
    sums = torch.zeros(k, D, dtype=torch.float64).index_add_(0, labels, feats.double())
    direct = ClassStats.from_sums(torch.bincount(labels, minlength=k), sums, feats.double().T @ feats.double())
    assert torch.allclose(direct.within, ref.within, atol=1e-9)
    with pytest.raises(ValueError, match="before any"):
        ClassStatsAccumulator(k).finish()


def test_space_waste() -> None:
    etf = etf_rows()
    present = torch.tensor([True, True, True, False, False])
    # Only the present classes have samples; missing class means stay at zero.
    labels = torch.tensor([0, 1, 2]).repeat(REPS)
    w = space_waste(class_statistics(etf[labels], labels, K), present)
    assert w["missing_share"] == pytest.approx(0.0, abs=1e-12)
    assert w["present_share"] == pytest.approx(1.0, abs=1e-12)
    assert 1.0 < w["effective_rank"] <= 2.0 + 1e-9
    # All classes equally far from the origin: the missing share is their fraction.
    full = space_waste(class_statistics(*collapsed(etf), K), present)
    assert full["missing_share"] == pytest.approx(2 / K, abs=1e-12)
    assert full["effective_rank_all"] == pytest.approx(K - 1, abs=1e-6)
    assert full["effective_rank"] < full["effective_rank_all"]


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="labels must lie"):
        class_statistics(torch.randn(3, D), torch.tensor([0, 1, K]), K)
    with pytest.raises(ValueError, match="bool"):
        angle_collapse(etf_rows(), torch.ones(K))
    stats = class_statistics(*collapsed(etf_rows()), K)
    with pytest.raises(ValueError, match="classifier"):
        nc_metrics(stats, torch.randn(D, K))
