"""Helpers for tests that drive the real `flwr` CLI: an isolated FLWR_HOME with its own local-SuperLink ports."""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.processes import free_port, stop_tree, superlink_pids
from simulations.experiments.runner import stage_app

ROOT = Path(__file__).resolve().parent.parent
FLWR = shutil.which("flwr", path=str(Path(sys.executable).parent)) or shutil.which("flwr")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@functools.cache
def app_copy() -> Path:
    """This project's app files, staged once per test process as fedetf-sweep stages an app
    (:func:`simulations.experiments.runner.stage_app`: without .venv, .git and the git-ignored folders).

    `flwr run .` lists every file under the app folder before it applies .gitignore: in this checkout, the 60,000
    files of .venv cost about 8 s of CPU per run. Tests whose subject is not the README's command itself run the
    same app from this copy (the FAB holds the same files); test_flwr_cli's README run uses the checkout.
    """
    dest = Path(tempfile.mkdtemp(prefix="fedetf-app-"))
    atexit.register(shutil.rmtree, dest, ignore_errors=True)
    return stage_app(ROOT, dest / "app")


def isolated_env(home: Path, **extra: str) -> dict[str, str]:
    """This environment with its own FLWR_HOME and local-SuperLink ports, the app run in place."""
    return {
        **os.environ,
        "FLWR_HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
        "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
        **extra,
    }


def stop_local_superlink(env: dict[str, str]) -> None:
    """`flwr run` leaves its local SuperLink running: stop the one started with this env (by its port) and its
    children."""
    stop_tree(superlink_pids(env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"]))


def flwr_run_args(env: dict[str, str], *args: str, timeout: float = 300, app: Path = ROOT) -> str:
    """`flwr run . ARGS` in ``app`` (this project; or :func:`app_copy`); its output (stdout, then stderr)."""
    res = subprocess.run([FLWR, "run", ".", *args], cwd=app, env=env, capture_output=True, text=True, timeout=timeout)
    return res.stdout + res.stderr


def flwr_run(
    env: dict[str, str], run_config: str, supernodes: int, timeout: float = 300, app: Path = ROOT, federation: str = ""
) -> str:
    """`flwr run . --stream` in ``app`` with ``supernodes`` simulated nodes (one CPU each, and ``federation``'s
    further settings); its output without colour codes."""
    federation = f"num-supernodes={supernodes} client-resources-num-cpus=1 {federation}".strip()
    log = flwr_run_args(
        env, "--stream", "--federation-config", federation, "--run-config", run_config, timeout=timeout, app=app
    )
    return ANSI.sub("", log)


def die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the test process dies, even if it is killed (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_process(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``cmd`` in a session of its own (its process group is stopped as a whole); it ends with this process."""
    with log.open("w") as f:
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
        )
