"""Synthetic(alpha, beta): FedProx's generative process, per client from the seed, at any number of clients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_prep.federated import load_federation
from data_prep.synthetic import DIMENSION, GENERIC_CLIENTS, client_size, generate_client
from simulations.config import ConfigError, parse_run_config
from tests.inprocess import run_in_process

OPTIONS = (("synthetic-alpha", 1.0), ("synthetic-beta", 1.0), ("synthetic-samples", 0))


def test_a_client_is_the_same_whatever_the_number_of_clients() -> None:
    small = load_federation("synthetic", "natural", 10, 5, options=OPTIONS)
    huge = load_federation("synthetic", "natural", 1_000_000, 5, options=OPTIONS)
    for cid in (0, 7):
        for a, b in zip(small.client(cid), huge.client(cid), strict=True):
            assert np.array_equal(a, b)
    other_seed = load_federation("synthetic", "natural", 10, 6, options=OPTIONS)
    assert not np.array_equal(small.client(0)[1], other_seed.client(0)[1][: len(small.client(0)[1])])
    with pytest.raises(IndexError, match="not one of the 10"):
        small.client(10)


def test_sizes_follow_fedprox_power_law_and_the_split_is_theirs() -> None:
    """Sizes are int(lognormal(4, 2)) + 50: at least 50, median about e^4 + 50 = 105; 90 % train (their
    ``int(0.9 * num_samples)``); a fixed size when synthetic-samples > 0."""
    sizes = np.array([client_size(0, c, 0) for c in range(4000)])
    assert sizes.min() >= 50 and 90 < np.median(sizes) < 120 and sizes.max() > 2000
    x_train, y_train, x_test, y_test = generate_client(0, 3, 1.0, 1.0)
    n = client_size(0, 3, 0)
    assert len(y_train) == int(0.9 * n) and len(y_train) + len(y_test) == n
    assert x_train.shape == (len(y_train), DIMENSION) and x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert [len(generate_client(0, c, 1.0, 1.0, samples=40)[1]) for c in range(3)] == [36, 36, 36]


def test_generative_process_feature_covariance_and_linear_labels() -> None:
    """Within a client, feature j has variance j^-1.2 around the client's mean, and the labels are a linear
    classifier's (a multinomial logistic regression separates one client's data almost perfectly)."""
    from sklearn.linear_model import LogisticRegression

    x, y, _, _ = generate_client(1, 0, 1.0, 1.0, samples=20_000)
    var = x.var(axis=0)
    expected = np.arange(1, DIMENSION + 1) ** -1.2
    assert np.allclose(var, expected, rtol=0.1)
    fit = LogisticRegression(max_iter=2000, C=100.0).fit(x, y)
    assert fit.score(x, y) > 0.97
    # alpha and beta spread the clients: with 0 the clients' input means share one centre (B_k = 0).
    means0 = np.stack([generate_client(2, c, 0.0, 0.0, 2000)[0].mean(0) for c in range(30)])
    means1 = np.stack([generate_client(2, c, 5.0, 5.0, 2000)[0].mean(0) for c in range(30)])
    assert abs(means0.mean()) < 0.3 and means1.mean(axis=1).std() > 2.0


def test_generic_test_set_is_the_first_clients_test_splits() -> None:
    fed = load_federation("synthetic", "natural", 100_000, 0, options=OPTIONS)
    x, y = fed.generic_test()
    assert len(y) == sum(len(fed.labels(c, "test")) for c in range(GENERIC_CLIENTS))
    assert len(fed.global_test_loader().dataset) == len(y)
    assert np.array_equal(fed.label_counts(4, "test"), np.bincount(fed.client(4)[3], minlength=10))


def test_config_allows_any_number_of_clients_and_only_the_mlp() -> None:
    cfg = parse_run_config({"dataset": "synthetic", "num-clients": 100_000, "partition": "pcdd"})
    assert cfg.natural and cfg.effective_partition == "natural" and cfg.model_name == "mlp"
    with pytest.raises(ConfigError, match="model='cnn'; allowed: 'mlp' or 'auto'"):
        parse_run_config({"dataset": "synthetic", "model": "cnn"})
    with pytest.raises(ConfigError, match="synthetic-samples=-1"):
        parse_run_config({"dataset": "synthetic", "synthetic-samples": -1})


def test_ten_thousand_clients_on_two_nodes_end_to_end(tmp_path: Path) -> None:
    """SCAFFOLD on 10,000 Synthetic clients served by two in-process nodes, 20 per round."""
    out = tmp_path / "run"
    overrides = {
        "dataset": "synthetic",
        "synthetic-samples": 50,
        "method": "scaffold",
        "num-clients": 10_000,
        "fraction-train": 0.002,
        "num-server-rounds": 2,
        "local-epochs": 1,
        "batch-size": 10,
        "evaluate-every": 0,
        "output-dir": str(out),
    }
    outcome = run_in_process(overrides, num_nodes=2)
    assert outcome.exit is None, outcome.lines[-10:]
    clients = pd.read_csv(out / "clients.csv")
    assert len(clients) == 40 and clients["partition_id"].max() < 10_000
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["num_clients"].tolist() == [20, 20] and np.isfinite(metrics["generic_acc"]).all()
    assert (out / "partition.png").stat().st_size > 0
