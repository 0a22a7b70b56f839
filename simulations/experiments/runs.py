"""Reading one run folder: ``run.json``, ``metrics.csv`` and the checkpoint the app writes there.

Every read of ``run.json`` by the experiment tools goes through :func:`run_info`.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import pandas as pd


def run_info(run_dir: Path) -> dict[str, Any] | None:
    """The content of ``run_dir/run.json``, or None when there is none (or it cannot be read)."""
    try:
        info = json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def status(run_dir: Path) -> str | None:
    """``run.json``'s status (``running``, ``finished``, ``failed``), None without run.json."""
    info = run_info(run_dir)
    return None if info is None else str(info.get("status", "running"))


def finished(run_dir: Path) -> bool:
    """Whether ``run.json`` says the run finished."""
    return status(run_dir) == "finished"


def config(run_dir: Path) -> dict[str, Any]:
    """The run config ``run.json`` records (empty without one)."""
    return dict((run_info(run_dir) or {}).get("config", {}))


def recorded_error(run_dir: Path) -> str | None:
    """The first line of the error the app wrote into ``run.json`` (when training itself failed)."""
    error = (run_info(run_dir) or {}).get("error")
    return str(error).strip().splitlines()[0] if error and str(error).strip() else None


def total_seconds(run_dir: Path) -> float | None:
    """The ServerApp's own wall time (``timings.total_seconds``), once the run ended."""
    try:
        return round(float((run_info(run_dir) or {})["timings"]["total_seconds"]), 2)
    except (KeyError, TypeError, ValueError):
        return None


def writer_pid(run_dir: Path) -> int | None:
    """The pid of the process that last wrote ``run.json`` (the ServerApp's), if on this host."""
    info = run_info(run_dir) or {}
    pid = info.get("pid")
    if not pid or info.get("host", platform.node()) != platform.node():
        return None
    return int(pid)


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
    summary = (run_info(run_dir) or {}).get("summary", {})
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
