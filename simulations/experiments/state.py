"""``SWEEP_DIR/sweep.json``: a sweep's plan and each run's status, and what the sweep does with old run folders."""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from fedetf.io import atomic_write_text
from simulations.experiments import runs
from simulations.experiments.plan import PlannedRun, SweepError, Value

STATE_FILE = "sweep.json"


def now() -> str:
    """The local time, ISO 8601 to the second."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


class State:
    """``SWEEP_DIR/sweep.json``: the plan and each run's status, rewritten atomically after every change."""

    def __init__(self, out: Path, header: dict[str, Any], plan: list[PlannedRun]) -> None:
        self.path = out / STATE_FILE
        old = read_state(out) or {}
        old_runs = {r["name"]: r for r in old.get("runs", [])}
        self.data: dict[str, Any] = {**header, "created": old.get("created", now()), "updated": now(), "runs": []}
        for run in plan:
            entry = {"status": "pending", "error": None, **old_runs.get(run.name, {}), **asdict(run)}
            self.data["runs"].append(entry)

    def entry(self, name: str) -> dict[str, Any]:
        return next(r for r in self.data["runs"] if r["name"] == name)

    def update(self, name: str, **fields: Any) -> None:
        self.entry(name).update(fields)
        self.save()

    def save(self) -> None:
        self.data["updated"] = now()
        atomic_write_text(self.path, json.dumps(self.data, indent=2, default=str) + "\n")


def read_state(sweep_dir: Path) -> dict[str, Any] | None:
    """The content of ``sweep_dir/sweep.json``, or None if there is none."""
    path = Path(sweep_dir) / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _same(a: Any, b: Any) -> bool:
    def number(x: Any) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool)

    return float(a) == float(b) if number(a) and number(b) else a == b


def config_mismatch(run_dir: Path, overrides: dict[str, Value]) -> str | None:
    """``KEY=old`` vs ``KEY=new`` for the first planned setting ``run_dir`` ran with differently, or None."""
    recorded = runs.config(run_dir)
    for key, value in overrides.items():
        if key in recorded and not _same(recorded[key], value):
            return f"{key}={recorded[key]!r} but this sweep sets {key}={value!r}"
    return None


def check_finished_config(run_dir: Path, overrides: dict[str, Value]) -> None:
    """A finished run is skipped only if it ran with ``overrides``; a one-line error otherwise."""
    if mismatch := config_mismatch(run_dir, overrides):
        raise SweepError(f"{run_dir} finished with {mismatch}; rerun with the same settings or use another --out")


def resumable(run_dir: Path, overrides: dict[str, Value]) -> bool:
    """Whether the app can continue ``run_dir`` from its checkpoint.

    It did not finish, ran in this folder with ``overrides``, left a checkpoint before its last round,
    and no process on this host still writes it.
    """
    info = runs.run_info(run_dir)
    if info is None or info.status == "finished" or not runs.has_checkpoint(run_dir):
        return False
    if config_mismatch(run_dir, overrides) or runs.config(run_dir).get("output-dir") not in (None, str(run_dir)):
        return False
    pid = runs.writer_pid(run_dir)
    if pid is not None and runs.pid_alive(pid):
        return False
    checkpoint_round = runs.checkpoint_round(run_dir)
    return checkpoint_round is not None and checkpoint_round < int(runs.config(run_dir).get("num-server-rounds", 0))


def move_aside(path: Path) -> Path:
    """Rename ``path`` to ``<path>.incomplete-<n>`` (first free n); return the new path."""
    for n in itertools.count(1):
        target = path.with_name(f"{path.name}.incomplete-{n}")
        if not target.exists():
            path.rename(target)
            return target
    raise AssertionError("unreachable")
