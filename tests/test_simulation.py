"""End to end on in-process nodes: the real ServerApp and ClientApp, each client with its own Context (the Ray
engine gives the same files: test_flwr_cli, test_sweep)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simulations.contracts import ClientEvaluation
from simulations.results import CLIENT_COLUMNS, METRIC_COLUMNS, RunInfo
from strategies.registry import METHODS, resolve_method
from tests.inprocess import run_in_process

FAST = {"num-server-rounds": 2, "local-epochs": 2}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three default 10-client runs on in-process nodes (the Ray engine gives the same files: test_flwr_cli)."""
    tmp = tmp_path_factory.mktemp("runs")
    return {
        name: _run_in_process(tmp, name, method=name.split("-")[0]) for name in ("fedgela", "fedgela-again", "fedavg")
    }


@pytest.mark.parametrize("name", ["fedgela", "fedavg"])
def test_results_files(runs: dict[str, Path], name: str) -> None:
    out = runs[name]
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.columns) == METRIC_COLUMNS
    assert metrics["round"].tolist() == [1, 2]
    for col in ("generic_acc", "generic_bacc", "personal_acc", "personal_bacc", "personal_acc_before"):
        assert metrics[col].between(0, 1).all()
    assert (metrics["train_loss"] > 0).all() and (metrics["failed_clients"] == 0).all()
    assert (metrics["num_clients"] == 10).all()
    clients = pd.read_csv(out / "clients.csv")
    assert list(clients.columns) == CLIENT_COLUMNS
    assert len(clients) == 20 and sorted(clients["partition_id"].unique()) == list(range(10))
    for r, row in metrics.set_index("round").iterrows():
        c = clients[clients["round"] == r]
        # Pooled (test-size-weighted) and plain client means of the clients' personal accuracy.
        pooled = (c["personal_acc"] * c["test_examples"]).sum() / c["test_examples"].sum()
        assert pooled == pytest.approx(row["personal_acc"])
        assert c["personal_acc"].mean() == pytest.approx(row["personal_acc_client_mean"])
        before = (c["personal_acc_before"] * c["test_examples"]).sum() / c["test_examples"].sum()
        assert before == pytest.approx(row["personal_acc_before"])
    # The all-client evaluation runs in the last round (evaluate-every=5 > 2 rounds): one row per client.
    evaluations = pd.read_csv(out / "evaluations.csv")
    assert list(evaluations.columns) == ClientEvaluation.columns()
    assert evaluations["round"].tolist() == [2] * 10 and sorted(evaluations["partition_id"]) == list(range(10))
    assert metrics["all_personal_acc"].isna().tolist() == [True, False]
    last = metrics.set_index("round").loc[2]
    assert last["all_personal_acc"] == pytest.approx(
        evaluations["personal_correct"].sum() / evaluations["test_examples"].sum()
    )
    assert last["all_personal_acc_min"] == pytest.approx(evaluations["personal_acc"].min())
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "finished" and info["config"]["method"] == name and info["method"] == name
    assert info["versions"]["flwr"].startswith("1.42")
    assert set(info["summary"]["generic_acc"]) == {"last", "last_round", "best", "best_round"}
    expected = {"fedgela.temperature": 0.2} if name == "fedgela" else {}
    assert {k: v for k, v in info["method_settings"].items() if k in expected} == expected
    assert name == "fedgela" or info["method_settings"] == {}
    assert info["personal_view"].startswith("no personal model") == (name == "fedavg")


def test_fedgela_beats_its_untrained_start_in_the_personal_view(runs: dict[str, Path]) -> None:
    m = pd.read_csv(runs["fedgela"] / "metrics.csv")
    # Round 1's "before" is the initial model plus each client's adaptation; training must improve on it.
    assert m.loc[0, "personal_acc"] > m.loc[0, "personal_acc_before"] + 0.2
    # From round 2 the received global model with local adaptation already does far better than chance.
    assert m.loc[1, "personal_acc_before"] > 0.5


def test_same_seed_gives_identical_metrics(runs: dict[str, Path]) -> None:
    a = pd.read_csv(runs["fedgela"] / "metrics.csv").drop(columns="round_seconds")
    b = pd.read_csv(runs["fedgela-again"] / "metrics.csv").drop(columns="round_seconds")
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_fedavg_and_fedgela_see_identical_splits(runs: dict[str, Path]) -> None:
    cols = ["round", "partition_id", "train_examples", "test_examples"]
    a = pd.read_csv(runs["fedgela"] / "clients.csv")[cols]
    b = pd.read_csv(runs["fedavg"] / "clients.csv")[cols]
    pd.testing.assert_frame_equal(a, b)


def test_user_server_strategy_by_import_path(tmp_path: Path) -> None:
    from tests.userpkg.trimmed import TrimmedMean

    before = TrimmedMean.calls
    out = tmp_path / "custom"
    outcome = run_in_process(
        {**FAST, "num-clients": 4, "server": "tests.userpkg.trimmed:TrimmedMean", "output-dir": str(out)}
    )
    assert outcome.exit is None and TrimmedMean.calls - before == 2
    info = RunInfo.load(out)
    # FedGELA's own server logic (its optional ETF rotation) is rebased on the user's class.
    assert info.strategy_class == "strategies.fedgela:FedGELA+TrimmedMean" and info.method == "fedgela"
    assert len(pd.read_csv(out / "metrics.csv")) == 2


def test_a_method_without_a_global_model_has_nan_generic_metrics(tmp_path: Path) -> None:
    out = tmp_path / "noglobal"
    overrides = {**FAST, "local-epochs": 1, "num-clients": 2, "method": "tests.userpkg.noglobal:NoGlobalModel"}
    outcome = run_in_process({**overrides, "output-dir": str(out)})
    assert outcome.exit is None
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics[["generic_acc", "generic_bacc", "generic_loss"]].isna().all().all()
    assert metrics["personal_acc"].between(0, 1).all()
    info = RunInfo.load(out)
    assert info.status == "finished" and any("no global model" in note for note in info.notes)
    assert info.summary["generic_acc"]["best_round"] is None


def test_report_table_and_curves(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from simulations.experiments import report

    out = tmp_path / "report"
    report.main([*map(str, runs.values()), "--by", "method", "--metric", "bacc", "--out", str(out)])
    table = pd.read_csv(out / "table.csv", index_col="method")
    assert table.loc["fedgela", "runs"] == 2 and table.loc["fedavg", "runs"] == 1
    for name in ("fedgela", "fedavg"):
        m = pd.read_csv(runs[name] / "metrics.csv")
        assert table.loc[name, "generic_bacc_last"] == pytest.approx(m["generic_bacc"].iloc[-1])
        assert table.loc[name, "personal_bacc_best"] == pytest.approx(m["personal_bacc"].max())
    assert table.loc["fedgela", "generic_bacc_last_std"] == 0  # two identical seeded runs
    assert "generic_bacc" in capsys.readouterr().out
    assert (out / "curves_bacc.png").stat().st_size > 1000
    # The distribution of every client's personal accuracy: one point per (run, client), from evaluations.csv.
    spread = pd.read_csv(out / "clients.csv")
    fedavg = spread[spread["group"] == "fedavg"].set_index("partition_id")["personal_acc"].sort_index()
    evaluated = pd.read_csv(runs["fedavg"] / "evaluations.csv").set_index("partition_id")["personal_acc"]
    assert fedavg.tolist() == pytest.approx(evaluated.sort_index().tolist())
    assert len(spread[spread["group"] == "fedgela"]) == 20  # two runs of ten clients
    assert (out / "clients.png").stat().st_size > 1000


METHOD_RUNS = {
    "fedavg": {},
    "fedprox": {"fedprox.mu": 0.1},
    "fedlc": {},
    "fedrs": {},
    "scaffold": {},
    "moon": {},
    "fedbabu": {"fedbabu.finetune-epochs": 1},
    "fedper": {},
    "fedrep": {},
    "fedrod": {"diagnostics": True},
    "fedetf": {"fedetf.scale": 10.0, "fedetf.finetune-cycles": 1},
    "fedgela-normalized-nearest": {"fedgela.features": "normalized", "fedgela.nearest-etf": True},
    "fedgela-softmask-distill-dK": {"fedgela.missing-alpha": 0.5, "fedgela.distill": 0.1, "feature-dim": 10},
    "fedgela-additive": {"fedgela.prior": "additive", "diagnostics": True},
    "scaffold-fedadam": {"server": "fedadam", "server-args": '{"eta": 0.01}'},
    "local": {},
    "ditto": {"ditto.lam": 0.5},
    "fednh": {"fednh.rho": 0.8},
    "fedbn": {},
}


def _run_in_process(tmp: Path, name: str, **overrides: object) -> Path:
    out = tmp / name
    outcome = run_in_process({**FAST, **overrides, "output-dir": str(out)})
    assert outcome.exit is None, outcome.errors
    return out


def test_every_registered_method_has_an_end_to_end_run() -> None:
    assert {name.split("-")[0] for name in METHOD_RUNS} >= set(METHODS)


@pytest.mark.parametrize("name", list(METHOD_RUNS))
def test_every_method_runs_end_to_end(tmp_path: Path, name: str) -> None:
    """The real ServerApp and ClientApp, each client with its own Context, in this process (the Ray engine's
    runs are above and in test_resume_faults); one of the 4 clients is held out and evaluated as unseen."""
    method = name.split("-")[0]
    setup = {"local-epochs": 1, "num-clients": 4, "holdout-clients": 0.25}
    out = _run_in_process(tmp_path, name, method=method, **setup, **METHOD_RUNS[name])
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "finished" and info["method"] == method
    for key, value in METHOD_RUNS[name].items():
        assert info["config"][key] == value and (
            key not in info["method_settings"] or info["method_settings"][key] == value
        )
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["round"].tolist() == [1, 2] and (metrics["failed_clients"] == 0).all()
    assert metrics[["personal_acc", "personal_acc_before"]].stack().between(0, 1).all()
    if resolve_method(method).generic_model:
        assert metrics["generic_acc"].between(0, 1).all()
    else:  # local-only training: no global model to evaluate
        assert metrics["generic_acc"].isna().all()
    assert np.isfinite(metrics["train_loss"]).all() and (metrics["train_loss"] > 0).all()
    # Every method reports its held-out client (never trained) next to the three that trained.
    evaluations = pd.read_csv(out / "evaluations.csv")
    assert evaluations["round"].tolist() == [2] * 4 and evaluations["unseen"].sum() == 1
    unseen = int(evaluations.loc[evaluations["unseen"] == 1, "partition_id"].iloc[0])
    assert unseen not in set(pd.read_csv(out / "clients.csv")["partition_id"])
    assert metrics["unseen_personal_acc"].iloc[-1] == pytest.approx(
        evaluations.loc[evaluations["unseen"] == 1, "personal_acc"].iloc[0]
    )
    if name == "scaffold-fedadam":
        assert info["strategy_class"].endswith("Scaffold+FedAdam")
    if METHOD_RUNS[name].get("diagnostics"):
        _check_diagnostics(out)


def test_per_client_state_is_isolated_and_persists(tmp_path: Path) -> None:
    """6 clients, half sampled per round, 4 rounds: a client sampled again sees exactly the state it wrote in its own
    last round, and never another client's. (On Ray, two workers serve the clients: the killed-and-continued SCAFFOLD
    run of test_sweep equals the in-process run, so its c_i followed each partition there too.)"""
    from data_prep.federated import load_federation

    log = tmp_path / "log"
    log.mkdir()
    _run_in_process(
        tmp_path,
        "probe",
        method="tests.userpkg.probe:StateProbe",
        **{
            "method-args": json.dumps({"log-dir": str(log)}),
            "num-clients": 6,
            "fraction-train": 0.5,
            "num-server-rounds": 4,
            "local-epochs": 1,
            "evaluate-every": 0,  # the probe logs every begin(); the all-client evaluation would add its own
        },
    )
    fed = load_federation("digits", "pcdd", 6, 0, 3, 0.5, (("data-root", ""), ("download", False)))
    fingerprints = [tuple(fed.label_counts(c).tolist()) for c in range(6)]
    assert len(set(fingerprints)) == 6  # label counts identify each client
    lines = [json.loads(x) for f in log.glob("*.jsonl") for x in f.read_text().splitlines()]
    assert len(lines) == 4 * 3
    visits: dict[tuple, list[dict]] = defaultdict(list)
    for x in sorted(lines, key=lambda x: x["round"]):
        visits[tuple(x["counts"])].append(x)
    assert any(len(v) >= 2 for v in visits.values())  # some client was sampled again
    for client, seen in visits.items():
        previous = -1
        for x in seen:
            assert x["seen_round"] == previous  # exactly its own last round
            assert x["seen_counts"] == (None if previous == -1 else list(client))  # never another client's
            assert x["keys"] == ([] if previous == -1 else ["probe.counts", "probe.round"])
            previous = x["round"]


def test_documented_method_example_runs_by_import_path(tmp_path: Path) -> None:
    from tests.userpkg import feddecorr

    page = (Path(__file__).resolve().parent.parent / "docs" / "methods.md").read_text()
    source = Path(feddecorr.__file__).read_text()
    assert f"```python\n{source}```" in page  # the methods page shows exactly the tested file
    out = _run_in_process(
        tmp_path,
        "decorr",
        method="tests.userpkg.feddecorr:FedDecorr",
        **{"method-args": '{"beta": 0.5}', "local-epochs": 1, "num-clients": 4},
    )
    info = json.loads((out / "run.json").read_text())
    assert info["method"] == "feddecorr" and info["method_settings"] == {"feddecorr.beta": 0.5, "feddecorr.eps": 1e-8}
    assert info["strategy_class"] == "flwr.serverapp.strategy.fedavgm:FedAvgM"
    assert math.isfinite(pd.read_csv(out / "metrics.csv")["train_loss"].iloc[-1])


def _check_diagnostics(out: Path) -> None:
    """Neural-collapse columns per round and per client (a fixed ETF: fedgela; a learned head: fedrod)."""
    from simulations.results import DIAGNOSTIC_CLIENT_COLUMNS, DIAGNOSTIC_METRIC_COLUMNS

    metrics = pd.read_csv(out / "metrics.csv")
    assert set(DIAGNOSTIC_METRIC_COLUMNS) <= set(metrics.columns)
    assert (metrics["nc1"] > 0).all() and metrics["nc_cos_gap"].between(0, 2).all()
    assert metrics["nc_self_duality"].between(0, 2).all()
    clients = pd.read_csv(out / "clients.csv")
    assert set(DIAGNOSTIC_CLIENT_COLUMNS) <= set(clients.columns)
    # 4 clients x 3 of 10 classes: every client misses classes, so both angles are defined.
    assert clients["angle_missing"].between(0, 180).all() and clients["angle_present"].between(0, 180).all()
    assert clients["space_missing_share"].between(0, 1).all()
    r1 = clients[clients["round"] == 1]
    assert metrics.loc[0, "angle_missing"] == pytest.approx(r1["angle_missing"].mean())
