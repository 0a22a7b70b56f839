"""The real-engine scenarios (Ray simulations, a deployment, a Ray cluster) run in background processes.

Each scenario is a chain of process starts that keeps less than one core busy for minutes. Started when the
session has collected its tests (tests/conftest.py), each in a process of its own (``python -m tests.background
NAME DIR``), they run while the test processes go through the other tests; the engine test files come last and
read the scenario's result (:func:`result`). With pytest-xdist, scenario i runs beside worker i mod n, and every
worker finds every result in one folder of the test run.
"""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Scenario -> (test file, function returning the picklable facts its tests check), longest first.
SCENARIOS = {
    "sweep": ("test_sweep.py", "tests.test_sweep:sweep_scenario"),
    "deployment": ("test_deployment.py", "tests.test_deployment:deployment_scenario"),
    "cluster": ("test_scale.py", "tests.test_scale:cluster_scenario"),
    "flwr_cli": ("test_flwr_cli.py", "tests.test_flwr_cli:flwr_cli_scenario"),
}
FILES = {file: name for name, (file, _) in SCENARIOS.items()}
#: The environment variable naming the test run's scenario folder.
DIR_VAR = "FEDETF_ENGINE_SCENARIOS"
TIMEOUT = 1800.0


def start(names: list[str], folder: Path) -> threading.Thread:
    """Run the scenarios ``names`` one after another in background processes; results go to ``folder/<name>``."""

    def run() -> None:
        for name in names:
            out = folder / name
            out.mkdir(parents=True, exist_ok=True)
            with (out / "log.txt").open("w") as log:
                try:
                    subprocess.run(
                        [sys.executable, "-m", "tests.background", name, str(out)],
                        cwd=ROOT,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        timeout=TIMEOUT,
                    )
                except subprocess.TimeoutExpired:
                    (out / "error.txt").write_text(f"the scenario ran past {TIMEOUT:g} s")

    thread = threading.Thread(target=run, name="engine-scenarios", daemon=True)
    thread.start()
    return thread


def result(name: str) -> dict[str, Any]:
    """The scenario's facts, once its process has written them (a failed scenario fails the test with its log)."""
    folder = Path(os.environ[DIR_VAR]) / name
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if (folder / "result.pkl").exists():
            with (folder / "result.pkl").open("rb") as f:
                facts = pickle.load(f)
            if "skip" in facts:
                pytest.skip(facts["skip"])
            return facts
        if (folder / "error.txt").exists():
            log = (folder / "log.txt").read_text()[-4000:] if (folder / "log.txt").exists() else ""
            raise AssertionError(f"scenario {name} failed: {(folder / 'error.txt').read_text()}\n{log}")
        time.sleep(0.5)
    raise AssertionError(f"scenario {name} wrote no result in {TIMEOUT:g} s")


def main(argv: list[str]) -> int:
    name, out = argv[0], Path(argv[1])
    module, func = SCENARIOS[name][1].split(":")
    try:
        facts = getattr(importlib.import_module(module), func)(out / "tmp")
    except BaseException:  # noqa: BLE001 - every failure is reported to the waiting test
        (out / "error.txt").write_text(traceback.format_exc())
        return 1
    tmp = out / "result.pkl.tmp"
    with tmp.open("wb") as f:
        pickle.dump(facts, f)
    tmp.replace(out / "result.pkl")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
