"""Experiment tracking (``tracking``): what each backend's store holds equals the results files; a failing backend
is one WARNING and the run still finishes."""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from simulations.results import RunInfo
from simulations.tracking import RESULT_FILES, RunIdentity, Tracker, Tracking, open_tracking, run_identity
from tests.inprocess import run_in_process

SMALL = {
    "dataset": "digits",
    "model": "cnn",
    "num-clients": 4,
    "num-server-rounds": 2,
    "local-epochs": 1,
    "evaluate-every": 1,
    "checkpoint-every": 0,
}


def _run(out: Path, **overrides: Any) -> list[str]:
    """A small finished run into ``out``; its WARNING lines."""
    outcome = run_in_process({**SMALL, "output-dir": str(out), **overrides})
    assert outcome.exit is None, outcome.errors
    assert RunInfo.load(out).status == "finished"
    return [line for line in outcome.lines if line.startswith("WARNING")]


def _logged(out: Path) -> dict[str, list[tuple[int, float]]]:
    """``metrics.csv`` as (round, value) pairs per column, NaN left out (what the trackers log)."""
    metrics = pd.read_csv(out / "metrics.csv")
    return {
        col: [(int(r), float(v)) for r, v in zip(metrics["round"], metrics[col], strict=True) if not math.isnan(v)]
        for col in metrics.columns
        if metrics[col].notna().any()
    }


def _assert_same(got: dict[str, list[tuple[int, float]]], want: dict[str, list[tuple[int, float]]]) -> None:
    assert set(want) <= set(got), sorted(set(want) - set(got))
    for col, pairs in want.items():
        assert [s for s, _ in got[col]] == [s for s, _ in pairs], col
        assert [v for _, v in got[col]] == pytest.approx([v for _, v in pairs], rel=1e-6), col


@pytest.mark.slow
def test_tensorboard_events_hold_every_metrics_column(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install -e '.[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    assert _run(out, tracking="tensorboard") == []
    acc = EventAccumulator(str(out), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    got = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in tags["scalars"]}
    want = _logged(out)
    assert "generic_acc" in want and "all_personal_acc_std" in want
    _assert_same(got, want)
    evaluations = pd.read_csv(out / "evaluations.csv")
    histograms = acc.Histograms("clients/personal_acc")
    assert [h.step for h in histograms] == [1, 2]
    for h in histograms:
        accs = evaluations.loc[evaluations["round"] == h.step, "personal_acc"]
        assert h.histogram_value.num == len(accs) == 4
        assert h.histogram_value.sum == pytest.approx(accs.sum())
    assert {"params/text_summary", "status/text_summary"} <= set(tags["tensors"])
    status = acc.Tensors("status/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert status == "finished"


@pytest.mark.slow
def test_mlflow_store_holds_the_csv_and_groups_a_sweep(tmp_path: Path) -> None:
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install -e '.[mlflow]')")
    from mlflow.tracking import MlflowClient

    sweep = tmp_path / "sweep-digits"
    (sweep / "runs").mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({"grid": {"lr": [0.01, 0.05]}, "runs": []}))
    out = sweep / "runs" / "fedavg-lr0.05-s0"
    assert _run(out, tracking="mlflow", method="fedavg", lr=0.05) == []
    client = MlflowClient(tracking_uri=f"sqlite:///{sweep / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sweep-digits")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == out.name and run.info.status == "FINISHED"
    assert {"method": "fedavg", "seed": "0", "lr": "0.05", "sweep": "sweep-digits"}.items() <= run.data.tags.items()
    assert run.data.params["lr"] == "0.05" and run.data.params["dataset"] == "digits"
    got = {
        key: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
        for key in run.data.metrics
    }
    _assert_same(got, _logged(out))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert set(RESULT_FILES) | {"evaluations"} <= artifacts
    assert len(client.list_artifacts(run.info.run_id, "evaluations")) == 2  # one table per evaluated round


@pytest.mark.slow
def test_mlflow_holds_a_cut_run_and_its_continuation(tmp_path: Path) -> None:
    """A run killed after round 2 (its checkpoint: round 1's) and continued with ``resume=true``: the sweep's
    experiment holds the cut attempt (rounds up to the kill) and the continued run (the rounds after the
    checkpoint), whose metrics together are metrics.csv's; the continued run ended FINISHED."""
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install -e '.[mlflow]')")
    from mlflow.tracking import MlflowClient

    sweep = tmp_path / "sweep-cut"
    (sweep / "runs").mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({"grid": {}, "runs": []}))
    out = sweep / "runs" / "scaffold_seed0"
    run = {**SMALL, "method": "scaffold", "num-server-rounds": 3, "checkpoint-every": 1, "output-dir": str(out)}
    run["tracking"] = "mlflow"
    assert run_in_process(run, kill_after=2).exit == "killed"
    assert run_in_process({**run, "resume": True}).exit is None
    client = MlflowClient(tracking_uri=f"sqlite:///{sweep / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(sweep.name)
    assert experiment is not None
    tracked = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert len(tracked) == 2 and tracked[-1].info.status == "FINISHED"
    assert all(r.data.tags.get("method") == "scaffold" and r.data.tags.get("seed") == "0" for r in tracked)
    metrics = pd.read_csv(out / "metrics.csv").set_index("round")
    assert list(metrics.index) == [1, 2, 3]
    for column in ("generic_acc", "personal_acc", "train_loss"):
        logged = {m.step: m.value for r in tracked for m in client.get_metric_history(r.info.run_id, column)}
        assert logged == pytest.approx(metrics[column].to_dict()), column


def _wandb_records(path: Path) -> list[Any]:
    """The records of a W&B ``.wandb`` file (a LevelDB-style log of protobuf records in 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, records, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL/FIRST start a record, MIDDLE/LAST extend it
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


@pytest.mark.slow
def test_wandb_offline_run_holds_the_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb", reason="wandb is not installed (pip install -e '.[wandb]')")
    for var, sub in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "wb"
    assert _run(out, tracking="wandb") == []
    (offline,) = (out / "wandb").glob("offline-run-*")
    (log_file,) = offline.glob("run-*.wandb")
    history: dict[str, list[tuple[int, float]]] = {}
    for record in _wandb_records(log_file):
        if record.WhichOneof("record_type") != "history":
            continue
        items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
        step = int(items["_step"])
        for key, value in items.items():
            if not key.startswith("_") and isinstance(value, int | float):
                history.setdefault(key, []).append((step, float(value)))
            elif key == "clients/personal_acc":
                assert value["_type"] == "histogram"
    _assert_same(history, _logged(out))


@pytest.mark.slow
def test_unwritable_store_is_one_warning_and_the_run_finishes(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install -e '.[tensorboard]')")
    out = tmp_path / "run"
    warnings = _run(out, tracking="tensorboard", **{"tracking-uri": "/proc/fedetf-not-writable"})
    assert len(warnings) == 1 and "tensorboard" in warnings[0] and "tracking off" in warnings[0]
    assert len(pd.read_csv(out / "metrics.csv")) == 2 and (out / "partition.png").is_file()


# -- without training ----------------------------------------------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_missing_package_is_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    tracking = open_tracking("mlflow", "", tmp_path, {"method": "fedavg", "seed": 0}, {})
    assert not tracking.active
    (warning,) = _warnings(caplog)
    assert warning.startswith("tracking off for this run: mlflow unavailable (ModuleNotFoundError: import of mlflow")
    assert "pip install 'fedetf[mlflow]'" in warning
    tracking.log_round({"round": 1, "generic_acc": 0.5})  # a no-op
    tracking.end("finished", tmp_path)


class _Failing(Tracker):
    backend = "fake"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self, run: RunIdentity) -> None:
        self.calls.append("start")

    def log_round(self, step: int, metrics: dict[str, float], evaluations: list[dict[str, Any]]) -> None:
        self.calls.append(f"round {step}")
        raise RuntimeError("disk full\nsecond line")

    def end(self, status: str, files: list[Path]) -> None:
        self.calls.append("end")

    def close(self) -> None:
        self.calls.append("close")


def test_an_exception_in_a_logger_call_turns_tracking_off(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    fake = _Failing()
    tracking = Tracking(fake)
    tracking.start(RunIdentity(tmp_path))
    tracking.log_round({"round": 1, "generic_acc": math.nan, "personal_acc": 0.9})
    tracking.log_round({"round": 2, "personal_acc": 0.95})
    tracking.end("finished", tmp_path)
    assert fake.calls == ["start", "round 1", "close"]
    (warning,) = _warnings(caplog)
    assert warning == (
        "tracking off for this run: fake failed at round 1 (RuntimeError: disk full); the results files are unaffected"
    )


def test_run_identity_single_run_and_sweep(tmp_path: Path) -> None:
    config = {"method": "fedgela", "seed": 3, "lr": 0.01, "fedgela.temperature": 0.2, "fedprox.mu": 0.01}
    about = {"method": "fedgela", "method_settings": {"fedgela.temperature": 0.2}, "strategy_class": "x:Y"}
    single = run_identity(tmp_path / "runs" / "r", config, about)
    assert single.experiment == "fedetf" and single.tags == {"method": "fedgela", "seed": "3"}
    assert single.params == {
        "method": "fedgela",
        "seed": 3,
        "lr": 0.01,
        "fedgela.temperature": 0.2,
        "strategy_class": "x:Y",
    }
    (tmp_path / "sw" / "runs").mkdir(parents=True)
    (tmp_path / "sw" / "sweep.json").write_text(json.dumps({"grid": {"fedgela.temperature": [0.2, 1.0]}}))
    swept = run_identity(tmp_path / "sw" / "runs" / "r", config, about)
    assert swept.experiment == "sw"
    assert swept.tags == {"method": "fedgela", "seed": "3", "sweep": "sw", "fedgela.temperature": "0.2"}


def test_tracking_uri_must_be_a_folder_for_tensorboard_and_wandb() -> None:
    from simulations.config import ConfigError, parse_run_config
    from simulations.local import default_run_config

    with pytest.raises(ConfigError, match=r"^invalid run config: tracking-uri='tb'; allowed: an absolute folder"):
        parse_run_config({**default_run_config(), "tracking": "tensorboard", "tracking-uri": "tb"})
    cfg = parse_run_config({**default_run_config(), "tracking": "mlflow", "tracking-uri": "http://localhost:5000"})
    assert (cfg.tracking, cfg.tracking_uri) == ("mlflow", "http://localhost:5000")
