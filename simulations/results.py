"""Results writing: metrics.csv, clients.csv, evaluations.csv, run.json (and its one reader, :class:`RunInfo`),
the final summary."""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedetf.io import atomic_write_text
from fedetf.metrics import fairness
from simulations.contracts import ClientEvaluation, ClientMetrics
from simulations.tracking import Tracking

#: The all-client evaluation's columns (NaN in rounds without one): the seen clients' pooled accuracy, client
#: mean, standard deviation, mean of the worst 10% and minimum; how many replied; the held-out clients' pooled,
#: mean and minimum accuracy.
EVALUATION_COLUMNS = [
    "all_personal_acc",
    "all_personal_acc_mean",
    "all_personal_acc_std",
    "all_personal_acc_worst10",
    "all_personal_acc_min",
    "evaluated_clients",
    "unseen_personal_acc",
    "unseen_personal_acc_mean",
    "unseen_personal_acc_min",
]
METRIC_COLUMNS = [
    "round",
    "generic_acc",
    "generic_bacc",
    "generic_loss",
    "personal_acc",
    "personal_bacc",
    "personal_acc_before",
    "personal_bacc_before",
    "personal_acc_client_mean",
    *EVALUATION_COLUMNS,
    "train_loss",
    "num_clients",
    "failed_clients",
    "dropouts",
    "stragglers",
    "stragglers_dropped",
    "train_examples",
    "test_examples",
    "round_seconds",
]
DIAGNOSTIC_METRIC_COLUMNS = [
    "nc1",
    "nc_equinorm",
    "nc_equiangularity",
    "nc_cos_gap",
    "nc_self_duality",
    "angle_missing",
    "angle_present",
    "space_missing_share",
]
CLIENT_COLUMNS = ClientMetrics.columns()
DIAGNOSTIC_CLIENT_COLUMNS = ClientMetrics.diagnostic_columns()
PACKAGES = ("fedetf", "flwr", "flwr-datasets", "ray", "torch", "torchvision", "numpy", "scikit-learn", "pandas")


def project_dir() -> Path:
    """The directory of the user's pyproject.toml.

    ``flwr run`` executes the app from a copy under ``$FLWR_HOME``, so this is
    ``$FEDETF_PROJECT_DIR`` if set, else the source tree of an editable
    install of fedetf, else the current directory.
    """
    if env := os.environ.get("FEDETF_PROJECT_DIR"):
        return Path(env)
    try:
        direct = metadata.distribution("fedetf").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        direct = None
    if direct:
        info = json.loads(direct)
        if info.get("dir_info", {}).get("editable") and info["url"].startswith("file://"):
            return Path(info["url"].removeprefix("file://"))
    return Path.cwd()


def fresh_output_dir(output_dir: str, method: str, dataset: str) -> Path:
    """Create the run's output folder; never reuse one that holds results."""
    if output_dir:
        out = Path(output_dir)
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(
                f"invalid run config: output-dir={output_dir!r} exists and is not empty; "
                "allowed: a new or empty folder, or '' for a fresh runs/ folder"
            )
        out.mkdir(parents=True, exist_ok=True)
        return out
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = method.replace(":", "-").replace("/", "-").replace(".", "-")
    base = project_dir() / "runs" / f"{stamp}-{safe}-{dataset}"
    for i in range(1000):
        out = base if i == 0 else base.with_name(f"{base.name}-{i}")
        try:
            out.mkdir(parents=True)
            return out
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a fresh folder near {base}")


class OutputDirError(ValueError):
    """The output folder cannot take the run's results; the message is one line naming ``output-dir``."""


def check_output_dir(output_dir: str, resume: bool = False) -> None:
    """Check, writing nothing that stays, that the run's results can go to ``output_dir``.

    The folder (``runs/`` under :func:`project_dir` for ``''``) must be a folder or creatable in
    a writable one; a fresh run also needs it empty or absent. Raises :class:`OutputDirError`.
    """
    out = Path(output_dir) if output_dir else project_dir() / "runs"

    def fail(reason: str) -> OutputDirError:
        return OutputDirError(f"invalid run config: output-dir={output_dir!r} {reason}")

    if out.exists() and not out.is_dir():
        raise fail("is a file; allowed: a new or empty folder")
    if output_dir and not resume and out.is_dir() and any(out.iterdir()):
        raise fail("exists and is not empty; allowed: a new or empty folder, or '' for a fresh runs/ folder")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise fail(f"is below the file {existing}; allowed: a folder path")
    try:
        with tempfile.TemporaryDirectory(dir=existing, prefix=".fedetf-write-check-"):
            pass
    except OSError as exc:
        raise fail(
            f"cannot be written: creating a folder in {existing} failed ({exc.strerror or type(exc).__name__}); "
            "allowed: a folder this user can create and write"
        ) from None


def package_versions() -> dict[str, str]:
    return dict(_package_versions())


@functools.cache
def _package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


class RunInfoError(ValueError):
    """``run.json`` is missing or unreadable; the message is one line."""


@dataclass(frozen=True)
class RunInfo:
    """``run.json``: what the ServerApp records about a run, written and read only through this class.

    ``status`` is ``running``, ``finished`` or ``failed`` (with ``error``, one line);
    ``heartbeat`` (time of the last write), ``pid`` and ``host`` tell a killed run from
    a running one (:meth:`state`). Keys this version does not know are kept in ``other``.
    """

    config: dict[str, Any] = field(default_factory=dict)
    status: str = "running"
    error: str = ""
    seed: int | None = None
    heartbeat: float = 0.0
    pid: int | None = None
    host: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    method: str = ""
    method_settings: dict[str, Any] = field(default_factory=dict)
    strategy_class: str = ""
    personal_view: str = ""
    resumes: list[dict[str, Any]] = field(default_factory=list)
    other: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | str) -> RunInfo:
        """Read ``path`` (a run folder, or its ``run.json``); raise :class:`RunInfoError` with one line."""
        path = Path(path)
        file = path / "run.json" if path.is_dir() else path
        try:
            raw = json.loads(file.read_text())
        except FileNotFoundError:
            raise RunInfoError(f"{file} does not exist") from None
        except (OSError, ValueError) as exc:
            raise RunInfoError(f"{file} is unreadable ({type(exc).__name__})") from None
        if not isinstance(raw, dict):
            raise RunInfoError(f"{file} is not a JSON object")
        known = {f.name for f in fields(cls)} - {"other"}
        return cls(
            **{k: v for k, v in raw.items() if k in known},
            other={k: v for k, v in raw.items() if k not in known},
        )

    def to_json(self) -> str:
        info = {k: v for k, v in asdict(self).items() if k != "other" and (k != "error" or v)}
        return json.dumps({**info, **self.other}, indent=2, default=str)

    def state(self, stale_after: float = 600.0) -> str:
        """``finished``, ``failed``, ``running`` or ``interrupted`` (status running, but no heartbeat for
        ``stale_after`` seconds, or the writing process is gone on this machine)."""
        if self.status != "running":
            return self.status
        if self.pid and platform.node() == (self.host or platform.node()):
            try:
                os.kill(int(self.pid), 0)
            except ProcessLookupError:
                return "interrupted"
            except PermissionError:
                pass
        return "interrupted" if time.time() - float(self.heartbeat) > stale_after else "running"


def run_state(run_dir: Path, stale_after: float = 600.0) -> str:
    """The state of the run in ``run_dir`` (see :meth:`RunInfo.state`)."""
    return RunInfo.load(run_dir).state(stale_after)


def pooled(evaluations: list[ClientEvaluation]) -> float:
    """Correct over test examples (``personal-test=local``), or the train-size-weighted mean of the clients'
    reweighted accuracies (``reweighted``, whose test set is the global one)."""
    if not evaluations:
        return math.nan
    if any(e.personal_correct < 0 for e in evaluations):
        weights = np.array([e.train_examples for e in evaluations], dtype=np.float64)
        return float(np.average([e.personal_acc for e in evaluations], weights=weights)) if weights.sum() else math.nan
    n = sum(e.test_examples for e in evaluations)
    return sum(e.personal_correct for e in evaluations) / n if n else math.nan


def evaluation_row(evaluations: list[ClientEvaluation]) -> dict[str, Any]:
    """A round's all-client evaluation columns (:data:`EVALUATION_COLUMNS`; NaN without an evaluation)."""
    if not evaluations:
        return dict.fromkeys(EVALUATION_COLUMNS, math.nan)
    seen = [e for e in evaluations if not e.unseen]
    unseen = [e for e in evaluations if e.unseen]
    fair = fairness(np.array([e.personal_acc for e in seen]))
    away = fairness(np.array([e.personal_acc for e in unseen]))
    return {
        "all_personal_acc": pooled(seen),
        "all_personal_acc_mean": fair["mean"],
        "all_personal_acc_std": fair["std"],
        "all_personal_acc_worst10": fair["worst10"],
        "all_personal_acc_min": fair["min"],
        "evaluated_clients": len(evaluations),
        "unseen_personal_acc": pooled(unseen),
        "unseen_personal_acc_mean": away["mean"],
        "unseen_personal_acc_min": away["min"],
    }


def round_row(clients: list[ClientMetrics]) -> dict[str, Any]:
    """A round's personal view over its clients: pooled by test examples, and the plain client mean."""
    n_test = sum(c.test_examples for c in clients)
    n_train = sum(c.train_examples for c in clients)

    def mean(values: list[float], weights: list[int] | None = None) -> float:
        total = sum(weights) if weights is not None else len(values)
        return (
            sum(v * w for v, w in zip(values, weights or [1] * len(values), strict=True)) / total if total else math.nan
        )

    tests = [c.test_examples for c in clients]
    row: dict[str, Any] = {
        "personal_acc": sum(c.personal_correct for c in clients) / n_test if n_test else math.nan,
        "personal_bacc": mean([c.personal_bacc for c in clients], tests),
        "personal_acc_before": sum(c.personal_correct_before for c in clients) / n_test if n_test else math.nan,
        "personal_bacc_before": mean([c.personal_bacc_before for c in clients], tests),
        "personal_acc_client_mean": mean([c.personal_acc for c in clients]),
        "train_loss": mean([c.train_loss for c in clients], [c.train_examples for c in clients]),
        "num_clients": len(clients),
        "train_examples": n_train,
        "test_examples": n_test,
    }
    for col in DIAGNOSTIC_CLIENT_COLUMNS:
        values = [getattr(c, col) for c in clients]
        if values and not all(math.isnan(v) for v in values):
            row[col] = float(np.nanmean(values))
    return row


class RunRecorder:
    """Collects per-round and per-client rows and writes the results files atomically after every round."""

    def __init__(self, out_dir: Path, config: dict[str, Any], diagnostics: bool = False) -> None:
        self.out_dir = out_dir
        self.config = config
        self.metric_columns = METRIC_COLUMNS + (DIAGNOSTIC_METRIC_COLUMNS if diagnostics else [])
        self.client_columns = ClientMetrics.columns(diagnostics)
        self.rounds: list[dict[str, Any]] = []
        self.clients: list[dict[str, Any]] = []
        self.evaluations: list[dict[str, Any]] = []
        self.timings: dict[str, float] = {"start": time.time()}
        #: What run.json says about the run besides its results (method, strategy class, notes, ...).
        self.about: dict[str, Any] = {}
        self.resumes: list[dict[str, Any]] = []
        #: Experiment tracking (off unless the ServerApp opens it): after each round and at the end.
        self.tracking = Tracking()

    @classmethod
    def resume(cls, out_dir: Path, config: dict[str, Any], diagnostics: bool, up_to_round: int) -> RunRecorder:
        """The recorder of an interrupted run, with its rows up to ``up_to_round`` (later ones are redone)."""
        rec = cls(out_dir, config, diagnostics)
        info = RunInfo.load(out_dir)
        metrics = pd.read_csv(out_dir / "metrics.csv")
        clients = pd.read_csv(out_dir / "clients.csv")
        rec.rounds = metrics[metrics["round"] <= up_to_round].to_dict("records")
        rec.clients = clients[clients["round"] <= up_to_round].to_dict("records")
        if (out_dir / "evaluations.csv").exists():
            evaluations = pd.read_csv(out_dir / "evaluations.csv")
            rec.evaluations = evaluations[evaluations["round"] <= up_to_round].to_dict("records")
        rec.timings = {k: v for k, v in info.timings.items() if k == "start"} or rec.timings
        rec.resumes = [
            *info.resumes,
            {"time": time.time(), "from_round": up_to_round, "last_heartbeat": info.heartbeat},
        ]
        return rec

    def add_round(
        self,
        server_round: int,
        generic: dict[str, float],
        clients: list[ClientMetrics],
        counts: dict[str, int],
        seconds: float,
        evaluations: list[ClientEvaluation] | None = None,
    ) -> dict[str, Any]:
        """Record a round (its generic metrics, its clients' metrics, ``counts``: failed clients, dropouts and
        stragglers, the all-client evaluation); write; return its row."""
        self.clients.extend(c.row(server_round) for c in clients)
        evaluation_rows = [e.row(server_round) for e in evaluations or []]
        self.evaluations.extend(evaluation_rows)
        row = {
            "round": server_round,
            **generic,
            **round_row(clients),
            **evaluation_row(evaluations or []),
            **counts,
            "round_seconds": seconds,
        }
        self.rounds.append(row)
        self.write()
        self.tracking.log_round({c: row[c] for c in self.metric_columns if c in row}, evaluation_rows)
        return row

    @property
    def metrics(self) -> pd.DataFrame:
        return pd.DataFrame(self.rounds, columns=self.metric_columns)

    def write(self, status: str = "running", error: str = "") -> None:
        """Write the three files; ``status`` is ``running``, ``finished`` or ``failed`` (with ``error``)."""
        atomic_write_text(self.out_dir / "metrics.csv", self.metrics.to_csv(index=False))
        atomic_write_text(
            self.out_dir / "clients.csv", pd.DataFrame(self.clients, columns=self.client_columns).to_csv(index=False)
        )
        atomic_write_text(
            self.out_dir / "evaluations.csv",
            pd.DataFrame(self.evaluations, columns=ClientEvaluation.columns()).to_csv(index=False),
        )
        timings = dict(self.timings)
        if status != "running":
            timings["end"] = time.time()
            timings["total_seconds"] = timings["end"] - timings["start"]
        info = RunInfo(
            config=self.config,
            status=status,
            error=error,
            seed=self.config.get("seed"),
            heartbeat=time.time(),
            pid=os.getpid(),
            host=platform.node(),
            versions=package_versions(),
            timings=timings,
            summary=summarize(self.metrics) if status == "finished" and self.rounds else {},
            resumes=self.resumes,
            **self.about,
        )
        atomic_write_text(self.out_dir / "run.json", info.to_json())
        if status != "running":
            self.tracking.end(status, self.out_dir)


def summarize(metrics: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Last-round and best-round values of the personal and generic views (NaN throughout: no best round)."""
    out: dict[str, dict[str, float]] = {}
    last = metrics.iloc[-1]
    columns = ["generic_acc", "generic_bacc", "personal_acc", "personal_bacc", "personal_acc_before"]
    columns += ["personal_bacc_before", "all_personal_acc", "all_personal_acc_worst10", "unseen_personal_acc"]
    for col in columns:
        if col.startswith(("all_", "unseen_")) and (col not in metrics or metrics[col].isna().all()):
            continue  # no all-client evaluation (or no held-out client) in this run
        values = metrics[col].astype(float)
        best = int(values.idxmax()) if values.notna().any() else None
        out[col] = {
            "last": float(last[col]),
            "last_round": int(last["round"]),
            "best": float(metrics.loc[best, col]) if best is not None else math.nan,
            "best_round": int(metrics.loc[best, "round"]) if best is not None else None,
        }
    return out


def format_summary(metrics: pd.DataFrame) -> str:
    """Human-readable last/best lines for both views."""
    lines = []
    for col, s in summarize(metrics).items():
        lines.append(
            f"{col:<14} last round ({s['last_round']}): {s['last']:.4f} | "
            f"best round ({s['best_round']}): {s['best']:.4f}"
        )
    return "\n".join(lines)
