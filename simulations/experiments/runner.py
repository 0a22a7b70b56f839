"""One run of a sweep: ``flwr run . --stream`` in the (staged) app folder, its log, its outcome, and stopping it."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulations.experiments import runs
from simulations.experiments.plan import PlannedRun, SweepError, run_config_string
from simulations.experiments.progress import Progress

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
ERROR_LINE = re.compile(r"^\s*ERROR\s*:\s*(.*\S)")
RUN_ID_LINE = re.compile(r"Successfully started run (\d+)")
SUPERLINK_START = "Starting local SuperLink"
LOCAL_HTTP_PORT = "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"
#: Seconds between two reads of the current run's results files.
POLL_SECONDS = 1.0


@dataclass
class Outcome:
    """What one ``flwr run`` did."""

    finished: bool
    error: str | None
    seconds: float
    run_id: str | None = None
    started_superlink: bool = False
    submit_seconds: float | None = None
    first_round_seconds: float | None = None
    returncode: int | None = None
    lines: list[str] = field(default_factory=list)


def first_error(lines: Sequence[str]) -> str | None:
    """The message of the first ``ERROR`` log line."""
    for line in lines:
        m = ERROR_LINE.match(line)
        if m:
            return m.group(1)
    return None


def fallback_error(lines: Sequence[str], returncode: int | None) -> str:
    """The exit code and the last telling line, for a run that left no better reason."""
    text = [line.strip() for line in lines if line.strip()]
    flagged = [t for t in text if "❌" in t or "Error" in t or "error" in t]
    last = (flagged or text or ["(no output)"])[-1]
    return f"flwr run exited with code {returncode} without finished results; last line: {last[:300]}"


def superlink_running(env: dict[str, str]) -> bool:
    """Whether a local SuperLink answers on this environment's port."""
    port = env.get(LOCAL_HTTP_PORT, "39091")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
            return 200 <= r.status < 300
    except OSError:
        return False


def flwr_executable() -> str:
    """The ``flwr`` command of this environment."""
    found = shutil.which("flwr", path=str(Path(sys.executable).parent)) or shutil.which("flwr")
    if not found:
        raise SweepError("the flwr command is not installed here (pip install 'flwr[simulation]')")
    return found


def environment() -> dict[str, str]:
    """This environment, with the app run in it (no ``uv sync`` per run) and this Python's ``bin`` first."""
    bindir = str(Path(sys.executable).parent)
    env = dict(os.environ)
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"  # flwr starts flower-superlink from PATH
    return env


def stage_app(app: Path, dest: Path, skip: Sequence[Path] = ()) -> Path:
    """Copy the files of the Flower app ``app`` that ``flwr run`` may package into ``dest`` (created), leaving out
    the folders in ``skip``; return ``dest``.

    ``flwr run`` lists every file under the app folder before it applies the app's ``.gitignore`` and Flower's own
    exclusions: a virtual environment inside the checkout (``.venv``, about 60,000 files) costs each run about 8 s
    of CPU. This copy skips the folders those rules exclude without listing them, and the files the ``.gitignore``
    excludes; a FAB built from it equals one built from ``app``. A sweep stages its app once: every
    run then reads a few hundred files, and all of them run the same code even if the checkout changes meanwhile.
    """
    import pathspec
    from flwr.common.constant import FAB_EXCLUDE_PATTERNS

    ignore = app / ".gitignore"
    ignored = pathspec.GitIgnoreSpec.from_lines(ignore.read_text().splitlines() if ignore.is_file() else [])
    # Flower's folder exclusions (``build/**``: anchored at the app's root, ``**/__pycache__/**``: anywhere).
    folders = [p[:-2] if p.startswith("**/") else f"/{p[:-2]}" for p in FAB_EXCLUDE_PATTERNS if p.endswith("/**")]
    pruned = pathspec.GitIgnoreSpec.from_lines(folders)
    skipped = {Path(p).resolve() for p in skip}
    for root, dirs, files in os.walk(app):
        rel = Path(root).relative_to(app)
        dirs[:] = [
            d
            for d in dirs
            if not Path(root, d).is_symlink()
            and Path(root, d).resolve() not in skipped
            and not pruned.match_file(f"{(rel / d).as_posix()}/")
            and not ignored.match_file(f"{(rel / d).as_posix()}/")
        ]
        for name in files:
            src, path = Path(root, name), (rel / name).as_posix()
            if src.is_symlink() or ignored.match_file(path):
                continue
            (dest / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / path)
    return dest


def _dead_writer(run_dir: Path, stale_pid: int | None) -> int | None:
    """The pid of this run's ServerApp process if it died with ``run.json`` still saying ``running``."""
    pid = runs.writer_pid(run_dir)
    if pid is None or pid == stale_pid or runs.status(run_dir) != "running" or runs.pid_alive(pid):
        return None
    return pid if runs.status(run_dir) == "running" else None  # read again: it may have finished meanwhile


class Runner:
    """Runs ``flwr run . --stream`` in ``app`` with ``env``; stops a cut run through ``flwr stop``."""

    def __init__(self, flwr: str, app: Path, env: dict[str, str], cpus: int, gpus: float, verbose: bool) -> None:
        self.flwr, self.app, self.env, self.cpus, self.gpus, self.verbose = flwr, app, env, cpus, gpus, verbose
        self.on_run_id: Callable[[str], None] | None = None

    def federation(self, num_supernodes: int) -> str:
        fed = f"num-supernodes={num_supernodes} client-resources-num-cpus={self.cpus}"
        return fed + (f" client-resources-num-gpus={self.gpus}" if self.gpus else "")

    def command(self, run: PlannedRun, run_dir: Path, resume: bool = False) -> list[str]:
        """The ``flwr run`` command of ``run`` into ``run_dir`` (``resume``: continue it from its checkpoint)."""
        overrides = {**run.overrides, "output-dir": str(run_dir), **({"resume": True} if resume else {})}
        return [
            self.flwr,
            "run",
            ".",
            "--stream",
            "--federation-config",
            self.federation(run.num_supernodes),
            "--run-config",
            run_config_string(overrides),
        ]

    def stop(self, run_id: str) -> None:
        """``flwr stop RUN_ID`` (best effort: the run may have ended already)."""
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [self.flwr, "stop", run_id], cwd=self.app, env=self.env, capture_output=True, timeout=60, check=False
            )

    def execute(
        self,
        run: PlannedRun,
        run_dir: Path,
        log_path: Path,
        progress: Progress,
        timeout: float | None,
        on_run_id: Callable[[str], None] | None = None,
        resume: bool = False,
    ) -> Outcome:
        """Run one combination, its log streamed to ``log_path``, its rounds read from ``run_dir`` by ``progress``.

        ``on_run_id`` receives Flower's run id as soon as ``flwr run`` prints it. The run is cut (and
        recorded failed) past ``timeout`` seconds, or when its ServerApp's process dies without finishing.
        """
        self.on_run_id = on_run_id
        stale_pid = runs.writer_pid(run_dir)  # a resumed run's earlier process
        t0 = time.monotonic()
        out = Outcome(finished=False, error=None, seconds=0.0)
        proc = subprocess.Popen(
            self.command(run, run_dir, resume),
            cwd=self.app,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,  # Ctrl-C reaches the sweep only, which stops the run in order
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        cut: str | None = None
        last_poll = 0.0
        with open(log_path, "w", encoding="utf-8") as log:
            try:
                while True:
                    try:
                        raw = lines.get(timeout=POLL_SECONDS)
                    except queue.Empty:
                        raw = ""
                    if raw is None:
                        break
                    if raw:
                        self._consume(ANSI.sub("", raw).rstrip("\n"), out, log, progress, t0)
                    if time.monotonic() - last_poll >= POLL_SECONDS:
                        last_poll = time.monotonic()
                        progress.poll()
                        if progress.first_new_round_t is not None and out.first_round_seconds is None:
                            out.first_round_seconds = progress.first_new_round_t - t0
                        if (pid := _dead_writer(run_dir, stale_pid)) is not None:
                            cut = (
                                f"its ServerApp's process (pid {pid}) ended after round {runs.rounds_done(run_dir)} "
                                "without finishing; rerun the sweep to resume it from its checkpoint"
                            )
                            break
                    if timeout is not None and time.monotonic() - t0 > timeout:
                        cut = f"timed out after {timeout:g} s (--timeout); the run was stopped"
                        break
            except BaseException:
                self._cut(proc, reader, lines, out, log, progress, t0)
                self._end_writer(run_dir, stale_pid)
                raise
            if cut:
                self._cut(proc, reader, lines, out, log, progress, t0)
                self._end_writer(run_dir, stale_pid)
            out.returncode = proc.wait()
        out.seconds = time.monotonic() - t0
        out.finished = cut is None and runs.finished(run_dir)
        if cut:
            out.error = cut
        elif not out.finished:
            out.error = (
                runs.recorded_error(run_dir) or first_error(out.lines) or fallback_error(out.lines, out.returncode)
            )
        return out

    def _consume(self, line: str, out: Outcome, log: Any, progress: Progress, t0: float) -> None:
        out.lines.append(line)
        log.write(f"{time.monotonic() - t0:8.2f}s | {line}\n")  # seconds since `flwr run` started
        if self.verbose:
            progress.write(line)
        if SUPERLINK_START in line:
            out.started_superlink = True
        if out.run_id is None and (m := RUN_ID_LINE.search(line)):
            out.run_id = m.group(1)
            out.submit_seconds = time.monotonic() - t0
            if self.on_run_id:
                self.on_run_id(out.run_id)

    def _cut(
        self,
        proc: subprocess.Popen[str],
        reader: threading.Thread,
        lines: queue.Queue[str | None],
        out: Outcome,
        log: Any,
        progress: Progress,
        t0: float,
    ) -> None:
        """End ``flwr run`` and stop its run on the SuperLink (which ``flwr run`` leaves running)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reader.join(timeout=5)
        while True:
            try:
                raw = lines.get_nowait()
            except queue.Empty:
                break
            if raw:
                self._consume(ANSI.sub("", raw).rstrip("\n"), out, log, progress, t0)
        if out.run_id:
            self.stop(out.run_id)

    @staticmethod
    def _end_writer(run_dir: Path, stale_pid: int | None, grace: float = 30.0) -> None:
        """Wait for the stopped run's ServerApp process (the pid in ``run.json``) to end; terminate it if it
        is still writing after ``grace`` seconds, so that no process writes the folder once the sweep moves on."""
        pid = runs.writer_pid(run_dir)
        if pid is None or pid == stale_pid:
            return
        deadline = time.monotonic() + grace
        while runs.pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        try:
            ours = b"flwr-simulation" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if ours and runs.pid_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
