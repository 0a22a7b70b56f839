"""Run an experiment from Python through ``flwr run``, on a local SuperLink shared by this process.

Flower 1.42 marks its in-process entry point (``flwr.simulation.run_simulation``) deprecated in favour
of ``flwr run``, and its simulation engine is otherwise reached only through a SuperLink. So tests and
benchmarks take the users' path: :func:`run_local` runs ``flwr run <project> --stream`` with
``--run-config`` overrides on top of pyproject.toml's ``[tool.flwr.app.config]``, against one local
SuperLink per Python process (started on first use on free ports, stopped when the process exits).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

from flwr.common.config import flatten_dict

from simulations.checkpoint import CHECKPOINT
from simulations.experiments import runs
from simulations.experiments.plan import run_config_string
from simulations.experiments.runner import (
    ANSI,
    RUN_ID_LINE,
    environment,
    fallback_error,
    first_error,
    flwr_executable,
)

PROJECT = Path(__file__).resolve().parent.parent
PYPROJECT = PROJECT / "pyproject.toml"


def default_run_config() -> dict[str, Any]:
    """``[tool.flwr.app.config]`` from the project's pyproject.toml, nested tables flattened to dotted keys."""
    with PYPROJECT.open("rb") as f:
        return dict(flatten_dict(tomllib.load(f)["tool"]["flwr"]["app"]["config"]))


class SimulationFailed(RuntimeError):
    """A :func:`run_local` run did not finish; ``log`` is its ``flwr run`` output."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when this process dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _ancestors(pid: int) -> list[int]:
    """``pid``'s parent, its parent, ... (from /proc)."""
    out = []
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            break
        out.append(pid)
    return out


class LocalSuperLink:
    """A SuperLink in simulation mode on 127.0.0.1, started as ``flwr run`` starts its local one, on a free port.

    ``env`` points ``flwr`` at it (``FLWR_LOCAL_*_PORT``) and runs the app in this environment. Its
    SuperExec and simulation processes end with it.
    """

    def __init__(self, startup_timeout: float = 120.0) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="fedetf-superlink-"))
        http, control = _free_port(), _free_port()
        self.env = {
            **environment(),
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http),
            "FLWR_LOCAL_CONTROL_API_PORT": str(control),  # unused by this SuperLink; keeps flwr off the defaults
        }
        self.health = f"http://127.0.0.1:{http}/health"
        log = self.folder / "superlink.log"
        command = ["flower-superlink", "--insecure", "--simulation", "--isolation", "subprocess"]
        command += ["--host", "127.0.0.1", "--port", str(http), "--log-file", str(log)]  # one port serves every API
        self.proc = subprocess.Popen(
            command,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        deadline = time.monotonic() + startup_timeout
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = log.read_text()[-2000:] if log.exists() else "(no log)"
                raise SimulationFailed(f"the local SuperLink did not start: {tail}")
            time.sleep(0.2)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.health, timeout=1) as r:
                return 200 <= r.status < 300
        except OSError:
            return False

    def owns(self, pid: int) -> bool:
        """Whether ``pid`` descends from this SuperLink (its SuperExec's simulation process, say)."""
        return self.proc.pid in _ancestors(pid)

    def stop(self, grace: float = 10.0) -> None:
        """Terminate the SuperLink (its SuperExec and simulation processes follow it)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


_LINK: LocalSuperLink | None = None


def local_superlink() -> LocalSuperLink:
    """This process's local SuperLink, started on first use and stopped at exit."""
    global _LINK
    if _LINK is None or _LINK.proc.poll() is not None:
        _LINK = LocalSuperLink()
        atexit.register(_LINK.stop)
    return _LINK


def _kill_after_round(
    link: LocalSuperLink, out: Path, rnd: int, checkpointed: bool, flwr: subprocess.Popen[str]
) -> bool:
    """Once ``metrics.csv`` holds round ``rnd`` (and, if ``checkpointed``, the checkpoint the app writes just
    after that row is there), SIGKILL the ServerApp's process, as a crash would; True if done."""
    metrics, saved = out / "metrics.csv", out / CHECKPOINT
    while flwr.poll() is None:
        if runs.rounds_done(out) >= rnd and (
            not checkpointed or (saved.exists() and saved.stat().st_mtime_ns >= metrics.stat().st_mtime_ns)
        ):
            pid = runs.writer_pid(out)
            if pid is not None and link.owns(pid):
                os.kill(pid, signal.SIGKILL)
                while runs.pid_alive(pid):
                    time.sleep(0.05)
                return True
        time.sleep(0.02)
    return False


def run_local(
    overrides: dict[str, Any],
    num_supernodes: int | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0.0,
    stop_after_round: int | None = None,
    timeout: float = 1800.0,
) -> str:
    """Run one experiment with ``flwr run`` on the Ray backend; return its log (colour codes removed).

    Parameters
    ----------
    overrides
        Run-config overrides; ``output-dir`` is required (made absolute: Flower runs the app elsewhere).
    num_supernodes
        Simulated nodes; default ``num-clients``.
    num_cpus, num_gpus
        ``client-resources-num-cpus`` (an integer for Flower) and ``client-resources-num-gpus``.
    stop_after_round
        Kill the ServerApp's process once that round is in ``metrics.csv`` and its checkpoint, if one is
        due, is written (for tests of resume), as a crash would: the run's files stay as they are and no
        error is raised. The kill is not synchronised with the rounds: the next one may have begun.
    timeout
        Seconds before the run counts as failed.

    Raises
    ------
    SimulationFailed
        The run did not finish (its message carries the app's one-line error), unless stopped on purpose.
    """
    if not overrides.get("output-dir"):
        raise ValueError("run_local needs an output-dir in overrides (where it reads the run's results)")
    overrides = {**overrides, "output-dir": str(Path(str(overrides["output-dir"])).resolve())}
    out = Path(overrides["output-dir"])
    config = {**default_run_config(), **overrides}
    nodes = num_supernodes or int(config["num-clients"])
    federation = f"num-supernodes={nodes} client-resources-num-cpus={max(int(num_cpus), 1)}"
    federation += f" client-resources-num-gpus={num_gpus}" if num_gpus else ""
    link = local_superlink()
    cmd = [flwr_executable(), "run", str(PROJECT), "--stream", "--federation-config", federation]
    cmd += ["--run-config", run_config_string(overrides)]
    with tempfile.TemporaryFile("w+") as log:
        flwr = subprocess.Popen(cmd, cwd=PROJECT, env=link.env, stdout=log, stderr=subprocess.STDOUT, text=True)
        killed = timed_out = False
        try:
            if stop_after_round is not None:
                every = int(config["checkpoint-every"])
                due = every > 0 and (
                    stop_after_round % every == 0 or stop_after_round == int(config["num-server-rounds"])
                )
                killed = _kill_after_round(link, out, stop_after_round, due, flwr)
            if killed:  # `flwr run --stream` would wait for the SuperLink to notice; the run is over
                flwr.terminate()
            flwr.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            if flwr.poll() is None:
                flwr.kill()
                flwr.wait()
        log.seek(0)
        text = ANSI.sub("", log.read())
    if (killed or timed_out) and (m := RUN_ID_LINE.search(text)):  # free the SuperLink for the next run
        subprocess.run([flwr_executable(), "stop", m.group(1)], env=link.env, capture_output=True, timeout=120)
    if killed or runs.finished(out):
        return text
    lines = text.splitlines()
    reason = (
        f"timed out after {timeout:g} s"
        if timed_out
        else runs.recorded_error(out) or first_error(lines) or fallback_error(lines, flwr.returncode)
    )
    raised = [line.strip() for line in lines if re.match(r"^\s*[\w.]+(Error|Exception): ", line)]
    if raised and raised[-1] not in reason:  # Flower's "... raised an exception" names no cause
        reason += f" ({raised[-1]})"
    raise SimulationFailed(f"run with run config {overrides} failed: {reason}", text)
