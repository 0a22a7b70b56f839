"""Results writing: metrics.csv, clients.csv, run.json, and the final summary."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

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


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


class RunRecorder:
    """Collects per-round and per-client rows and writes them atomically."""

    def __init__(self, out_dir: Path, config: dict[str, Any]) -> None:
        self.out_dir = out_dir
        self.config = config
        self.rounds: list[dict[str, Any]] = []
        self.clients: list[dict[str, Any]] = []
        self.timings: dict[str, float] = {"start": time.time()}
        self.extra: dict[str, Any] = {}

    def add_clients(self, rows: list[dict[str, Any]]) -> None:
        self.clients.extend(rows)

    def add_round(self, row: dict[str, Any]) -> None:
        self.rounds.append(row)
        self.write()

    @property
    def metrics(self) -> pd.DataFrame:
        return pd.DataFrame(self.rounds, columns=METRIC_COLUMNS)

    def write(self, finished: bool = False) -> None:
        _atomic_write(self.out_dir / "metrics.csv", self.metrics.to_csv(index=False))
        _atomic_write(
            self.out_dir / "clients.csv", pd.DataFrame(self.clients, columns=CLIENT_COLUMNS).to_csv(index=False)
        )
        timings = dict(self.timings)
        if finished:
            timings["end"] = time.time()
            timings["total_seconds"] = timings["end"] - timings["start"]
        info = {
            "config": self.config,
            "seed": self.config.get("seed"),
            "status": "finished" if finished else "running",
            "versions": package_versions(),
            "timings": timings,
            "summary": summarize(self.metrics) if finished and self.rounds else {},
            **self.extra,
        }
        _atomic_write(self.out_dir / "run.json", json.dumps(info, indent=2, default=str))


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
