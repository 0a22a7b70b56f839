"""Reading one run folder: ``run.json``, ``metrics.csv`` and the checkpoint the app writes there.

Every read of ``run.json`` by the experiment tools goes through :func:`run_info` (the app's own reader,
:class:`simulations.results.RunInfo`).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import pandas as pd

from simulations.results import RunInfo, RunInfoError


def run_info(run_dir: Path) -> RunInfo | None:
    """``run_dir/run.json``, or None when there is none (or it cannot be read)."""
    try:
        return RunInfo.load(Path(run_dir) / "run.json")
    except RunInfoError:
        return None


def status(run_dir: Path) -> str | None:
    """``run.json``'s status (``running``, ``finished``, ``failed``), None without run.json."""
    info = run_info(run_dir)
    return None if info is None else info.status


def finished(run_dir: Path) -> bool:
    """Whether ``run.json`` says the run finished."""
    return status(run_dir) == "finished"


def config(run_dir: Path) -> dict[str, Any]:
    """The run config ``run.json`` records (empty without one)."""
    info = run_info(run_dir)
    return dict(info.config) if info else {}


def recorded_error(run_dir: Path) -> str | None:
    """The first line of the error the app wrote into ``run.json`` (when training itself failed)."""
    info = run_info(run_dir)
    error = str(info.error).strip() if info else ""
    return error.splitlines()[0] if error else None


def total_seconds(run_dir: Path) -> float | None:
    """The ServerApp's own wall time (``timings.total_seconds``), once the run ended."""
    info = run_info(run_dir)
    try:
        return round(float(info.timings["total_seconds"]), 2) if info else None
    except (KeyError, TypeError, ValueError):
        return None


def writer_pid(run_dir: Path) -> int | None:
    """The pid of the process that last wrote ``run.json`` (the ServerApp's), if on this host."""
    info = run_info(run_dir)
    if info is None or not info.pid or (info.host or platform.node()) != platform.node():
        return None
    return int(info.pid)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state != "Z"


def last_summary(run_dir: Path) -> str:
    """`` (personal_acc 0.93, generic_acc 0.70 last round)`` from ``run.json``'s summary, or ``""``."""
    info = run_info(run_dir)
    summary: dict[str, Any] = info.summary if info else {}
    parts = []
    for view in ("personal_acc", "generic_acc"):
        last = summary.get(view, {}).get("last")
        if isinstance(last, int | float):
            parts.append(f"{view} {last:.4f}")
    return f" ({', '.join(parts)} last round)" if parts else ""


def rounds_done(run_dir: Path) -> int:
    """The last round in ``metrics.csv`` (0 when none is written yet)."""
    try:
        rounds = pd.read_csv(Path(run_dir) / "metrics.csv", usecols=["round"])["round"]
    except (OSError, ValueError, KeyError, pd.errors.EmptyDataError):
        return 0
    return int(rounds.max()) if len(rounds) else 0


def has_checkpoint(run_dir: Path) -> bool:
    """Whether the app left a checkpoint in ``run_dir`` (a cut run can continue from it)."""
    from simulations.checkpoint import CHECKPOINT  # torch comes with it: only when asked

    return (Path(run_dir) / CHECKPOINT).is_file()


def checkpoint_round(run_dir: Path) -> int | None:
    """The round of ``run_dir``'s checkpoint, None when it has none or it cannot be read."""
    from simulations import checkpoint

    try:
        return int(checkpoint.load(Path(run_dir))["round"])
    except (checkpoint.CheckpointError, KeyError, TypeError, ValueError):
        return None
