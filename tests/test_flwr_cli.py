"""The README's path: `flwr run .` on a local SuperLink with the Ray simulation engine."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
FLWR = shutil.which("flwr", path=str(Path(sys.executable).parent)) or shutil.which("flwr")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def flwr_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("flwr-home")
    env = {
        **{k: v for k, v in os.environ.items() if k != "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"},  # the app sets it
        "FLWR_HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(_free_port()),
        "FLWR_LOCAL_CONTROL_API_PORT": str(_free_port()),
    }
    yield env
    # `flwr run` leaves its local SuperLink running: stop the one this test started.
    out = subprocess.run(
        ["pgrep", "-f", f"flower-superlink.*{env['FLWR_LOCAL_CONTROL_API_PORT']}"], capture_output=True, text=True
    )
    for pid in out.stdout.split():
        os.kill(int(pid), signal.SIGTERM)
    time.sleep(1)


def _flwr_run(env: dict[str, str], run_config: str) -> str:
    cmd = [
        FLWR,
        "run",
        ".",
        "--stream",
        "--federation-config",
        "num-supernodes=10 client-resources-num-cpus=1",
        "--run-config",
        run_config,
    ]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return res.stdout + res.stderr


@pytest.mark.skipif(FLWR is None, reason="flwr CLI not on PATH")
def test_flwr_run_writes_results_and_rejects_bad_config(flwr_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    log = _flwr_run(flwr_env, f"num-server-rounds=2 local-epochs=1 output-dir='{out}'")
    assert (out / "run.json").exists(), log[-3000:]
    assert len(pd.read_csv(out / "metrics.csv")) == 2
    assert "last round (2)" in log and "best round" in log
    assert "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO" not in log  # Ray's accelerator FutureWarning is silenced

    bad = tmp_path / "bad"
    log = _flwr_run(flwr_env, f"lr=-1.0 output-dir='{bad}'")
    lines = [line for line in log.splitlines() if "invalid run config" in line]
    assert lines and "lr=-1.0; allowed: a number > 0" in lines[0], log[-3000:]
    assert not bad.exists()
