"""End to end: real Flower simulations on the Ray backend (run_simulation)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from simulations.local import SimulationFailed, run_local
from simulations.results import CLIENT_COLUMNS, METRIC_COLUMNS

FAST = {"num-server-rounds": 2, "local-epochs": 2}


def _run(tmp: Path, name: str, **overrides: object) -> Path:
    out = tmp / name
    run_local({**FAST, **overrides, "output-dir": str(out)})
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("runs")
    return {
        "fedgela": _run(tmp, "fedgela", strategy="fedgela"),
        "fedgela-again": _run(tmp, "fedgela-again", strategy="fedgela"),
        "fedavg": _run(tmp, "fedavg", strategy="fedavg"),
    }


@pytest.mark.parametrize("name", ["fedgela", "fedavg"])
def test_results_files(runs: dict[str, Path], name: str) -> None:
    out = runs[name]
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.columns) == METRIC_COLUMNS
    assert metrics["round"].tolist() == [1, 2]
    for col in ("generic_acc", "generic_bacc", "personal_acc", "personal_bacc"):
        assert metrics[col].between(0, 1).all()
    assert (metrics["train_loss"] > 0).all()
    assert (metrics["num_clients"] == 10).all()
    clients = pd.read_csv(out / "clients.csv")
    assert list(clients.columns) == CLIENT_COLUMNS
    assert len(clients) == 20 and sorted(clients["partition_id"].unique()) == list(range(10))
    # The round's personal accuracy is the test-size-weighted mean of the clients'.
    r1 = clients[clients["round"] == 1]
    weighted = (r1["personal_acc"] * r1["test_examples"]).sum() / r1["test_examples"].sum()
    assert weighted == pytest.approx(metrics.loc[0, "personal_acc"])
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "finished" and info["config"]["strategy"] == name and info["method"] == name
    assert info["versions"]["flwr"].startswith("1.42")
    assert set(info["summary"]["generic_acc"]) == {"last", "last_round", "best", "best_round"}


def test_same_seed_gives_identical_metrics(runs: dict[str, Path]) -> None:
    a = pd.read_csv(runs["fedgela"] / "metrics.csv").drop(columns="round_seconds")
    b = pd.read_csv(runs["fedgela-again"] / "metrics.csv").drop(columns="round_seconds")
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_fedavg_and_fedgela_see_identical_splits(runs: dict[str, Path]) -> None:
    cols = ["round", "partition_id", "train_examples", "test_examples"]
    a = pd.read_csv(runs["fedgela"] / "clients.csv")[cols]
    b = pd.read_csv(runs["fedavg"] / "clients.csv")[cols]
    pd.testing.assert_frame_equal(a, b)


def test_user_strategy_by_import_path(tmp_path: Path) -> None:
    from tests.userpkg.trimmed import TrimmedMean

    before = TrimmedMean.calls
    out = _run(tmp_path, "custom", strategy="tests.userpkg.trimmed:TrimmedMean", **{"client-method": "fedgela"})
    assert TrimmedMean.calls - before == 2
    info = json.loads((out / "run.json").read_text())
    assert info["strategy_class"] == "tests.userpkg.trimmed:TrimmedMean" and info["method"] == "fedgela"
    assert len(pd.read_csv(out / "metrics.csv")) == 2


def test_partial_participation_samples_reproducibly(tmp_path: Path) -> None:
    a = _run(tmp_path, "a", **{"fraction-train": 0.3, "local-epochs": 1})
    b = _run(tmp_path, "b", **{"fraction-train": 0.3, "local-epochs": 1})
    ca, cb = pd.read_csv(a / "clients.csv"), pd.read_csv(b / "clients.csv")
    assert (ca.groupby("round").size() == 3).all()
    assert ca["partition_id"].tolist() == cb["partition_id"].tolist()
    assert ca["personal_acc"].tolist() == cb["personal_acc"].tolist()


def test_compare_table_csv_and_plot(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from simulations import compare

    csv, png = tmp_path / "table.csv", tmp_path / "curves.png"
    compare.main(
        [*map(str, runs.values()), "--by", "strategy", "--metric", "bacc", "--csv", str(csv), "--plot", str(png)]
    )
    table = pd.read_csv(csv, index_col="strategy")
    assert table.loc["fedgela", "runs"] == 2 and table.loc["fedavg", "runs"] == 1
    for name in ("fedgela", "fedavg"):
        m = pd.read_csv(runs[name] / "metrics.csv")
        assert table.loc[name, "generic_bacc_last"] == pytest.approx(m["generic_bacc"].iloc[-1])
        assert table.loc[name, "personal_bacc_best"] == pytest.approx(m["personal_bacc"].max())
    assert table.loc["fedgela", "generic_bacc_last_std"] == 0  # two identical seeded runs
    assert "generic_bacc (last round)" in capsys.readouterr().out
    assert png.stat().st_size > 1000


@pytest.mark.parametrize("name", ["fedprox", "fedlc", "fedrs"])
def test_baselines_run_end_to_end(tmp_path: Path, name: str) -> None:
    out = _run(tmp_path, name, strategy=name, **{"num-server-rounds": 2, "local-epochs": 1})
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "finished" and info["method"] == name
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["round"].tolist() == [1, 2] and metrics["generic_acc"].between(0, 1).all()
    assert (metrics["train_loss"] > 0).all()


def test_a_failed_run_raises_and_writes_nothing(tmp_path: Path) -> None:
    # Flower's engine only logs a failed ServerApp; run_local must not pass silently.
    with pytest.raises(SimulationFailed, match="exited with status 2"):
        run_local({"num-server-rounds": 1, "lr": -1.0, "output-dir": str(tmp_path / "bad")})
    assert not (tmp_path / "bad").exists()
