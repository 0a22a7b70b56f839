"""Results writing: metrics.csv, clients.csv, run.json, and the final summary."""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from fedetf.io import atomic_write_text

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
    "train_loss",
    "num_clients",
    "failed_clients",
    "train_examples",
    "test_examples",
    "round_seconds",
]
CLIENT_COLUMNS = [
    "round",
    "partition_id",
    "personal_acc",
    "personal_bacc",
    "personal_acc_before",
    "personal_bacc_before",
    "train_loss",
    "train_examples",
    "test_examples",
    "num_batches",
]
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


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


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
DIAGNOSTIC_CLIENT_COLUMNS = ["angle_missing", "angle_present", "space_missing_share"]


class RunRecorder:
    """Collects per-round and per-client rows and writes them atomically after every round.

    ``run.json`` carries a ``heartbeat`` (time of the last write) and the writer's
    ``pid``: a run whose status is ``running`` but whose heartbeat is old was
    killed (see :func:`run_state`).
    """

    def __init__(self, out_dir: Path, config: dict[str, Any], diagnostics: bool = False) -> None:
        self.out_dir = out_dir
        self.config = config
        self.metric_columns = METRIC_COLUMNS + (DIAGNOSTIC_METRIC_COLUMNS if diagnostics else [])
        self.client_columns = CLIENT_COLUMNS + (DIAGNOSTIC_CLIENT_COLUMNS if diagnostics else [])
        self.rounds: list[dict[str, Any]] = []
        self.clients: list[dict[str, Any]] = []
        self.timings: dict[str, float] = {"start": time.time()}
        self.extra: dict[str, Any] = {}

    @classmethod
    def resume(cls, out_dir: Path, config: dict[str, Any], diagnostics: bool, up_to_round: int) -> RunRecorder:
        """The recorder of an interrupted run, with its rows up to ``up_to_round`` (later ones are redone)."""
        rec = cls(out_dir, config, diagnostics)
        info = json.loads((out_dir / "run.json").read_text())
        metrics = pd.read_csv(out_dir / "metrics.csv")
        clients = pd.read_csv(out_dir / "clients.csv")
        rec.rounds = metrics[metrics["round"] <= up_to_round].to_dict("records")
        rec.clients = clients[clients["round"] <= up_to_round].to_dict("records")
        rec.timings = {k: v for k, v in info.get("timings", {}).items() if k == "start"} or rec.timings
        rec.extra["resumes"] = [
            *info.get("resumes", []),
            {"time": time.time(), "from_round": up_to_round, "last_heartbeat": info.get("heartbeat")},
        ]
        return rec

    def add_clients(self, rows: list[dict[str, Any]]) -> None:
        self.clients.extend(rows)

    def add_round(self, row: dict[str, Any]) -> None:
        self.rounds.append(row)
        self.write()

    @property
    def metrics(self) -> pd.DataFrame:
        return pd.DataFrame(self.rounds, columns=self.metric_columns)

    def write(self, status: str = "running", error: str = "") -> None:
        """Write the three files; ``status`` is ``running``, ``finished`` or ``failed`` (with ``error``)."""
        atomic_write_text(self.out_dir / "metrics.csv", self.metrics.to_csv(index=False))
        atomic_write_text(
            self.out_dir / "clients.csv", pd.DataFrame(self.clients, columns=self.client_columns).to_csv(index=False)
        )
        timings = dict(self.timings)
        if status != "running":
            timings["end"] = time.time()
            timings["total_seconds"] = timings["end"] - timings["start"]
        info = {
            "config": self.config,
            "seed": self.config.get("seed"),
            "status": status,
            **({"error": error} if error else {}),
            "heartbeat": time.time(),
            "pid": os.getpid(),
            "host": platform.node(),
            "versions": package_versions(),
            "timings": timings,
            "summary": summarize(self.metrics) if status == "finished" and self.rounds else {},
            **self.extra,
        }
        atomic_write_text(self.out_dir / "run.json", json.dumps(info, indent=2, default=str))


def run_state(run_dir: Path, stale_after: float = 600.0) -> str:
    """``finished``, ``failed``, ``running`` or ``interrupted`` (status running, no heartbeat for ``stale_after``
    seconds, or the writing process is gone on this machine)."""
    info = json.loads((run_dir / "run.json").read_text())
    status = info.get("status", "running")
    if status != "running":
        return status
    pid, beat = info.get("pid"), info.get("heartbeat", 0)
    if pid and platform.node() == info.get("host", platform.node()):
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return "interrupted"
        except PermissionError:
            pass
    return "interrupted" if time.time() - float(beat) > stale_after else "running"


def summarize(metrics: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Last-round and best-round values of the personal and generic views."""
    out: dict[str, dict[str, float]] = {}
    last = metrics.iloc[-1]
    for view in ("generic", "personal", "personal_before"):
        for m in ("acc", "bacc"):
            col = f"{view}_{m}" if view != "personal_before" else f"personal_{m}_before"
            best = int(metrics[col].idxmax())
            out[col] = {
                "last": float(last[col]),
                "last_round": int(last["round"]),
                "best": float(metrics.loc[best, col]),
                "best_round": int(metrics.loc[best, "round"]),
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
