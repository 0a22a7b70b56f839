"""Experiment tracking (run-config key ``tracking``): TensorBoard, MLflow or Weights & Biases, optional and offline.

The ServerApp opens a :class:`Tracking` once the run's results folder is open (:func:`open_tracking`); the
:class:`~simulations.results.RunRecorder` calls it after each round's row is written and when the run ends.
What is logged: the resolved config and the method's settings as params, every ``metrics.csv`` column per round
(step = round; NaN values are left out), the personal accuracy of every client of the all-client evaluation
(a histogram, and the round's ``evaluations.csv`` rows as a table where the backend has tables), the run's
status, and the results files as artifacts at the end.

The results files stay the source of truth: any failure of a backend (package missing, store unwritable, an
exception in a logger call) logs one WARNING naming the backend and the reason, and tracking is off for the
rest of the run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from logging import WARNING
from pathlib import Path
from typing import Any

import numpy as np
from flwr.common import log

#: The ``tracking`` choices.
TRACKING_BACKENDS = ("none", "tensorboard", "mlflow", "wandb")
#: The results files logged as artifacts at the end of a run.
RESULT_FILES = ("metrics.csv", "clients.csv", "evaluations.csv", "run.json")
#: The MLflow experiment (W&B project) of a run outside a sweep.
DEFAULT_EXPERIMENT = "fedetf"
#: MLflow's default store, in the folder that holds the run folder.
MLFLOW_DB = "mlflow.db"


@dataclass(frozen=True)
class RunIdentity:
    """What names a run in a tracking store: its folder, experiment (the sweep folder's name, or ``fedetf``),
    tags (method, seed, a sweep's grid values) and params (the resolved config and method settings)."""

    out_dir: Path
    experiment: str = DEFAULT_EXPERIMENT
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.out_dir.name


def run_identity(out_dir: Path, config: Mapping[str, Any], about: Mapping[str, Any]) -> RunIdentity:
    """The identity of the run in ``out_dir``; a run of a sweep (``SWEEP/runs/NAME`` beside ``SWEEP/sweep.json``)
    is in the sweep's experiment, tagged with its grid values."""
    method_settings = dict(about.get("method_settings", {}))
    params: dict[str, Any] = {k: v for k, v in config.items() if "." not in k}
    params |= method_settings
    params["strategy_class"] = about.get("strategy_class", "")
    tags = {"method": str(about.get("method") or config.get("method", "")), "seed": str(config.get("seed", ""))}
    experiment = DEFAULT_EXPERIMENT
    sweep_dir = out_dir.parent.parent
    if out_dir.parent.name == "runs" and (sweep_dir / "sweep.json").is_file():
        experiment = sweep_dir.name
        tags["sweep"] = sweep_dir.name
        try:
            grid = json.loads((sweep_dir / "sweep.json").read_text()).get("grid", {})
        except (OSError, ValueError):
            grid = {}
        for key in grid:
            if key in config:
                tags[key] = str(config[key])
    return RunIdentity(out_dir, experiment, tags, params)


class Tracker(ABC):
    """One tracking backend: called at the start, after every round, and at the end of a run. Any exception
    turns tracking off for the run (:class:`Tracking`)."""

    #: The ``tracking`` value that selects this backend.
    backend: str = ""

    @abstractmethod
    def start(self, run: RunIdentity) -> None:
        """Open the run in the store and log its params and tags."""

    @abstractmethod
    def log_round(self, step: int, metrics: dict[str, float], evaluations: list[dict[str, Any]]) -> None:
        """Log a round's finite ``metrics.csv`` values and its ``evaluations.csv`` rows (empty: none this round)."""

    @abstractmethod
    def end(self, status: str, files: list[Path]) -> None:
        """Log the run's status (``finished`` or ``failed``) and the results ``files``; close the run."""

    def close(self) -> None:  # noqa: B027 - optional: release what the backend holds after a failure
        """Release what the backend holds (after a failure; :meth:`end` closes a run that ends normally)."""


def _client_accuracies(evaluations: list[dict[str, Any]]) -> np.ndarray:
    return np.array([float(e["personal_acc"]) for e in evaluations], dtype=np.float64)


class TensorBoardTracker(Tracker):
    """TensorBoard event files: in the run folder (``tracking-uri=''``), else in ``tracking-uri/<run name>``.

    Params and status are text summaries, metrics scalars, the clients' personal accuracy a histogram
    (``clients/personal_acc``); the results files lie beside the event file (copied there when it is elsewhere).
    """

    backend = "tensorboard"

    def __init__(self, uri: str, out_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # raises ImportError without the tensorboard package

        self.out_dir = out_dir
        self.logdir = Path(uri) / out_dir.name if uri else out_dir
        self.writer_class = SummaryWriter
        self.writer: Any = None
        self.step = 0

    def start(self, run: RunIdentity) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.writer = self.writer_class(log_dir=str(self.logdir))
        self.writer.add_text("params", _markdown_table(run.params), 0)
        self.writer.add_text("tags", _markdown_table({"experiment": run.experiment, **run.tags}), 0)
        self.writer.flush()

    def log_round(self, step: int, metrics: dict[str, float], evaluations: list[dict[str, Any]]) -> None:
        self.step = step
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        if evaluations:
            self.writer.add_histogram("clients/personal_acc", _client_accuracies(evaluations), step)
        self.writer.flush()

    def end(self, status: str, files: list[Path]) -> None:
        self.writer.add_text("status", status, self.step)
        if self.logdir.resolve() != self.out_dir.resolve():
            for f in files:
                shutil.copy2(f, self.logdir / f.name)
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MlflowTracker(Tracker):
    """MLflow through ``MlflowClient`` (no global active run): ``tracking-uri``, or by default the SQLite store
    ``mlflow.db`` in the folder that holds the run folder (artifacts in ``mlartifacts/`` beside it)."""

    backend = "mlflow"

    def __init__(self, uri: str, out_dir: Path) -> None:
        from mlflow.tracking import MlflowClient  # raises ImportError without the mlflow package

        # An unreachable tracking server must not hold the run up (MLflow retries for minutes by default).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        store = out_dir.parent
        self.uri = uri or f"sqlite:///{store / MLFLOW_DB}"
        self.artifact_root = "" if uri else (store / "mlartifacts").as_uri()
        self.client = MlflowClient(tracking_uri=self.uri)
        self.run_id = ""

    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = f"{self.artifact_root}/{name}" if self.artifact_root else None
        try:
            return str(self.client.create_experiment(name, artifact_location=location))
        except MlflowException:  # created meanwhile by another run of the sweep
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    def start(self, run: RunIdentity) -> None:
        from mlflow.entities import Param

        experiment = self._experiment_id(run.experiment)
        self.run_id = self.client.create_run(experiment, run_name=run.name, tags=run.tags).info.run_id
        params = [Param(k, str(v)) for k, v in run.params.items()]
        for i in range(0, len(params), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def log_round(self, step: int, metrics: dict[str, float], evaluations: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])
        if evaluations:
            self.client.log_table(self.run_id, _frame(evaluations), artifact_file=f"evaluations/round_{step:04d}.json")

    def end(self, status: str, files: list[Path]) -> None:
        for f in files:
            self.client.log_artifact(self.run_id, str(f))
        self.client.set_terminated(self.run_id, "FINISHED" if status == "finished" else "FAILED")
        self.run_id = ""

    def close(self) -> None:
        if self.run_id:
            run_id, self.run_id = self.run_id, ""
            self.client.set_terminated(run_id, "FAILED")


class WandbTracker(Tracker):
    """Weights & Biases in offline mode (``WANDB_MODE=offline``): the run's files go to ``wandb/`` in the run
    folder (``tracking-uri=''``) or in ``tracking-uri``; ``wandb sync`` uploads them later. The project is
    ``fedetf``, a sweep's runs share a group named after the sweep folder."""

    backend = "wandb"

    def __init__(self, uri: str, out_dir: Path) -> None:
        import wandb  # raises ImportError without the wandb package

        self.wandb = wandb
        self.dir = Path(uri) if uri else out_dir
        self.run: Any = None

    def start(self, run: RunIdentity) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run = self.wandb.init(
            project=DEFAULT_EXPERIMENT,
            group=run.experiment if run.experiment != DEFAULT_EXPERIMENT else None,
            name=run.name,
            tags=[f"{k}={v}"[:64] for k, v in run.tags.items()],
            config=run.params,
            dir=str(self.dir),
            mode="offline",
            reinit="create_new",
            settings=self.wandb.Settings(console="off", x_disable_stats=True, silent=True),
        )

    def log_round(self, step: int, metrics: dict[str, float], evaluations: list[dict[str, Any]]) -> None:
        data: dict[str, Any] = dict(metrics)
        if evaluations:
            data["clients/personal_acc"] = self.wandb.Histogram(_client_accuracies(evaluations).tolist())
            data["clients/evaluations"] = self.wandb.Table(dataframe=_frame(evaluations))
        self.run.log(data, step=step)

    def end(self, status: str, files: list[Path]) -> None:
        artifact = self.wandb.Artifact(f"results-{self.run.id}", type="results")
        for f in files:
            artifact.add_file(str(f))
        self.run.log_artifact(artifact)
        self.run.summary["status"] = status
        run, self.run = self.run, None
        run.finish(exit_code=0 if status == "finished" else 1)

    def close(self) -> None:
        if self.run is not None:
            run, self.run = self.run, None
            run.finish(exit_code=1)


BACKENDS: dict[str, Callable[[str, Path], Tracker]] = {
    "tensorboard": TensorBoardTracker,
    "mlflow": MlflowTracker,
    "wandb": WandbTracker,
}


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else 'no message'}"


class Tracking:
    """A run's tracking, never fatal: each call to the backend is guarded; the first failure logs one WARNING
    and turns tracking off for the rest of the run. ``Tracking()`` is off."""

    def __init__(self, tracker: Tracker | None = None) -> None:
        self.tracker = tracker

    @property
    def active(self) -> bool:
        return self.tracker is not None

    def _guard(self, what: str, call: Callable[[Tracker], None]) -> None:
        tracker = self.tracker
        if tracker is None:
            return
        try:
            call(tracker)
        except Exception as exc:  # noqa: BLE001 - tracking must never fail the run
            self.tracker = None
            log(
                WARNING,
                "tracking off for this run: %s failed at %s (%s); the results files are unaffected",
                tracker.backend,
                what,
                _reason(exc),
            )
            try:
                tracker.close()
            except Exception:  # noqa: BLE001, S110 - already reported; nothing more to do
                pass

    def start(self, run: RunIdentity) -> None:
        self._guard("start", lambda t: t.start(run))

    def log_round(self, row: Mapping[str, Any], evaluations: Sequence[Mapping[str, Any]] = ()) -> None:
        """Log a ``metrics.csv`` row (its finite numbers; step = its ``round``) and the round's
        ``evaluations.csv`` rows."""
        step = int(row["round"])
        metrics = {k: float(v) for k, v in row.items() if _number(v) and math.isfinite(float(v))}
        self._guard(f"round {step}", lambda t: t.log_round(step, metrics, [dict(e) for e in evaluations]))

    def end(self, status: str, out_dir: Path) -> None:
        """Log the status and the results files present in ``out_dir``; close the run (once)."""
        files = [out_dir / name for name in RESULT_FILES if (out_dir / name).is_file()]
        self._guard("end", lambda t: t.end(status, files))
        self.tracker = None


def _number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _markdown_table(values: Mapping[str, Any]) -> str:
    return "| key | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in values.items())


def open_tracking(
    backend: str, uri: str, out_dir: Path, config: Mapping[str, Any], about: Mapping[str, Any]
) -> Tracking:
    """Start tracking the run in ``out_dir`` with ``backend`` (``none``: off); a failure is one WARNING and
    tracking off."""
    if backend == "none":
        return Tracking()
    try:
        tracker = BACKENDS[backend](uri, out_dir)
    except Exception as exc:  # noqa: BLE001 - e.g. the package is not installed
        hint = f"; install it with pip install 'fedetf[{backend}]'" if isinstance(exc, ImportError) else ""
        log(
            WARNING,
            "tracking off for this run: %s unavailable (%s%s); the results files are unaffected",
            backend,
            _reason(exc),
            hint,
        )
        return Tracking()
    tracking = Tracking(tracker)
    tracking.start(run_identity(out_dir, config, about))
    return tracking


def _frame(rows: Sequence[Mapping[str, Any]]) -> Any:
    """``rows`` as a pandas DataFrame (pandas is imported here: the ClientApp imports this module's choices)."""
    import pandas as pd

    return pd.DataFrame(rows)
