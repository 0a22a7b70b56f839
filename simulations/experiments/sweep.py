"""Run a sweep of fedetf experiments through ``flwr run``: methods x grid x seeds, with progress, resume and failures.

Usage: ``fedetf-sweep --methods fedavg fedgela --seeds 0 1 2 --out SWEEP_DIR [--set KEY=VALUE ...]
[--grid KEY=V1,V2 ...] [--preset FILE.toml] [--num-supernodes N] [--cpus-per-client 1] [--timeout S]``.

Every combination runs as ``flwr run . --stream`` in the app folder (the path users use), one after
the other on the local SuperLink that the first ``flwr run`` starts and the others reuse, each into
``SWEEP_DIR/runs/<name>/``. ``SWEEP_DIR/sweep.json`` holds the plan and each run's status, error and
timings; rerunning the same command skips finished runs and redoes the others (an unfinished run
folder is moved aside to ``<name>.incomplete-<n>``, never deleted). Each run's log goes to
``SWEEP_DIR/logs/<name>.log``, every line prefixed with the seconds since its ``flwr run`` started.
The exit status is 1 if any run failed, 130 if the sweep was interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import itertools
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fedetf.io import atomic_write_text

Value = bool | int | float | str
#: Keys the sweep sets itself (``--methods``, ``--seeds``, the run folder).
RESERVED = {"method": "--methods", "seed": "--seeds", "output-dir": "the sweep (SWEEP_DIR/runs/<name>)"}
STATE_FILE = "sweep.json"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
ROUND_LINE = re.compile(r":\s+round (\d+)\b")
ERROR_LINE = re.compile(r"^\s*ERROR\s*:\s*(.*\S)")
RUN_ID_LINE = re.compile(r"Successfully started run (\d+)")
SUPERLINK_START = "Starting local SuperLink"
LOCAL_HTTP_PORT = "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"


class SweepError(ValueError):
    """A bad argument or an inconsistent sweep folder; the message is one line."""


class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived: stop the current run and leave the sweep resumable."""


# ----------------------------------------------------------------------------- values and keys


def parse_value(text: str) -> Value:
    """A run-config value typed as TOML, like Flower's ``--run-config`` (``0.1``, ``true``, ``'x'``).

    Text that is not a TOML value (``mnist``, ``/data``) is taken as a string, so quotes are optional.
    """
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    if not isinstance(value, bool | int | float | str):
        raise SweepError(f"value {text!r}: allowed: a bool, int, float or string (no lists or tables)")
    return value


def parse_list(text: str) -> list[tuple[str, Value]]:
    """The comma-separated values of ``--grid KEY=V1,V2`` as ``(text, value)`` pairs (quote a value holding a comma)."""
    try:
        values = tomllib.loads(f"v = [{text}]")["v"]
        parts = [str(v) if isinstance(v, str) else t.strip() for v, t in zip(values, _split_top(text), strict=True)]
    except (tomllib.TOMLDecodeError, ValueError):
        parts = [p.strip() for p in text.split(",")]
        values = [parse_value(p) for p in parts]
    if not parts or any(p == "" for p in parts):
        raise SweepError(f"--grid values {text!r}: allowed: one or more comma-separated values, e.g. 0.2,1e-5")
    seen: list[Value] = []
    for v in values:
        if not isinstance(v, bool | int | float | str):
            raise SweepError(f"--grid value {v!r}: allowed: a bool, int, float or string")
        if any(type(v) is type(u) and v == u for u in seen):
            raise SweepError(f"--grid values {text!r}: {v!r} is given twice")
        seen.append(v)
    return list(zip(parts, values, strict=True))


def _split_top(text: str) -> list[str]:
    """Split on commas outside quotes."""
    parts, cur, quote = [], "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == ",":
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    return [*parts, cur]


def split_assignment(text: str, option: str) -> tuple[str, str]:
    """``KEY=VALUE`` -> (key, value text); a one-line error otherwise."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise SweepError(f"{option} {text!r}: allowed: KEY=VALUE, e.g. {option} local-epochs=1")
    return key.strip(), value.strip()


def toml_value(value: Value) -> str:
    """``value`` as Flower's ``--run-config`` parses it back (TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value and "\\" not in value:
        return f'"{value}"'
    raise SweepError(f"string {value!r} holds both quote kinds (or a quote and a backslash): Flower cannot pass it")


def run_config_string(overrides: dict[str, Value]) -> str:
    """The ``--run-config`` argument of ``flwr run``."""
    return " ".join(f"{k}={toml_value(v)}" for k, v in overrides.items())


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested TOML tables as dotted keys, as Flower flattens a run config."""
    out: dict[str, Any] = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def app_defaults(app: Path) -> dict[str, Value]:
    """The app's run config defaults: ``[tool.flwr.app.config]`` of ``app/pyproject.toml``, flattened."""
    try:
        project = tomllib.loads((app / "pyproject.toml").read_text())
        config = project["tool"]["flwr"]["app"]["config"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as e:
        raise SweepError(f"--app {app}: no Flower app (pyproject.toml with [tool.flwr.app.config]): {e}") from None
    return flatten(config)


def resolve_key(key: str, known: dict[str, Value], methods: Sequence[str], option: str) -> list[str]:
    """The run-config key(s) ``key`` names.

    A key of the app's config names itself. A bare method setting (``temperature``) names
    ``<method>.temperature`` for each method in ``methods`` that has it.
    """
    if key in RESERVED:
        raise SweepError(f"{option} {key}=...: {key!r} is set by {RESERVED[key]}")
    if key in known:
        return [key]
    if "." not in key:
        found = [f"{m}.{key}" for m in methods if f"{m}.{key}" in known]
        if found:
            return found
    close = difflib.get_close_matches(key, list(known), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see [tool.flwr.app.config] in pyproject.toml"
    raise SweepError(f"{option} {key}=...: unknown run-config key {key!r}{hint}")


def namespace(key: str) -> str | None:
    """The method a dotted setting belongs to (``fedgela`` for ``fedgela.temperature``)."""
    return key.split(".", 1)[0] if "." in key else None


def safe(text: str) -> str:
    """A file-name-safe form of ``text``."""
    return re.sub(r"[^A-Za-z0-9._+=-]+", "-", text).rstrip("-") or "x"


# ----------------------------------------------------------------------------- the plan


@dataclass
class PlannedRun:
    """One run of the sweep."""

    name: str
    method: str
    seed: int
    grid: dict[str, Value]
    overrides: dict[str, Value]
    num_supernodes: int
    rounds: int


def build_plan(
    methods: Sequence[str],
    seeds: Sequence[int],
    base: dict[str, Value],
    grid: dict[str, list[tuple[str, Value]]],
    defaults: dict[str, Value],
    num_supernodes: int | None = None,
) -> list[PlannedRun]:
    """Every (seed, method, grid values) combination, seed-major, so that paired results come first.

    Parameters
    ----------
    methods, seeds
        The methods and seeds.
    base
        Run-config overrides shared by all runs (preset, then ``--set``).
    grid
        Full key -> ``(text, value)`` pairs. A dotted key ``m.x`` varies only the runs of method ``m``.
    defaults
        The app's run-config defaults (for ``num-clients`` and ``num-server-rounds``).
    num_supernodes
        Fixed supernode count; ``None`` uses each run's ``num-clients``.
    """
    plan: list[PlannedRun] = []
    for seed in seeds:
        for method in methods:
            keys = [k for k in grid if namespace(k) in (None, method)]
            for combo in itertools.product(*(grid[k] for k in keys)):
                values = {k: v for k, (_, v) in zip(keys, combo, strict=True)}
                parts = [safe(method.replace(":", "-"))]
                for k, (text, v) in zip(keys, combo, strict=True):
                    short = k.removeprefix(f"{method}.")
                    parts.append(f"{safe(short)}={safe(v if isinstance(v, str) else text)}")
                parts.append(f"seed{seed}")
                overrides = {**base, **values, "method": method, "seed": seed}
                merged = {**defaults, **overrides}
                plan.append(
                    PlannedRun(
                        name="_".join(parts),
                        method=method,
                        seed=seed,
                        grid=values,
                        overrides=overrides,
                        num_supernodes=num_supernodes or int(merged.get("num-clients", 10)),
                        rounds=int(merged.get("num-server-rounds", 1)),
                    )
                )
    seen: dict[str, PlannedRun] = {}
    for run in plan:
        if run.name in seen:
            raise SweepError(
                f"runs {seen[run.name].grid} and {run.grid} get the same folder name {run.name!r}; give distinct values"
            )
        seen[run.name] = run
    return plan


# ----------------------------------------------------------------------------- sweep.json


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


class State:
    """``SWEEP_DIR/sweep.json``: the plan and each run's status, rewritten atomically after every change."""

    def __init__(self, out: Path, header: dict[str, Any], plan: list[PlannedRun]) -> None:
        self.path = out / STATE_FILE
        old = read_state(out) or {}
        old_runs = {r["name"]: r for r in old.get("runs", [])}
        self.data: dict[str, Any] = {**header, "created": old.get("created", _now()), "updated": _now(), "runs": []}
        for run in plan:
            entry = {"status": "pending", "error": None, **old_runs.get(run.name, {}), **asdict(run)}
            self.data["runs"].append(entry)

    def entry(self, name: str) -> dict[str, Any]:
        return next(r for r in self.data["runs"] if r["name"] == name)

    def update(self, name: str, **fields: Any) -> None:
        self.entry(name).update(fields)
        self.save()

    def save(self) -> None:
        self.data["updated"] = _now()
        atomic_write_text(self.path, json.dumps(self.data, indent=2, default=str) + "\n")


def read_state(sweep_dir: Path) -> dict[str, Any] | None:
    """The content of ``sweep_dir/sweep.json``, or None if there is none."""
    path = Path(sweep_dir) / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _same(a: Any, b: Any) -> bool:
    def number(x: Any) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool)

    return float(a) == float(b) if number(a) and number(b) else a == b


def check_finished_config(run_dir: Path, overrides: dict[str, Value]) -> None:
    """A finished run is skipped only if it ran with ``overrides``; a one-line error otherwise."""
    config = json.loads((run_dir / "run.json").read_text()).get("config", {})
    for key, value in overrides.items():
        if key in config and not _same(config[key], value):
            raise SweepError(
                f"{run_dir} finished with {key}={config[key]!r} but this sweep sets {key}={value!r}; "
                "rerun with the same settings or use another --out"
            )


def run_finished(run_dir: Path) -> bool:
    """Whether ``run_dir/run.json`` says the run finished."""
    try:
        return json.loads((run_dir / "run.json").read_text()).get("status") == "finished"
    except (OSError, ValueError):
        return False


def move_aside(path: Path) -> Path:
    """Rename ``path`` to ``<path>.incomplete-<n>`` (first free n); return the new path."""
    for n in itertools.count(1):
        target = path.with_name(f"{path.name}.incomplete-{n}")
        if not target.exists():
            path.rename(target)
            return target
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------- progress


@dataclass
class Progress:
    """A tqdm bar of runs done / total, with the current run's round, elapsed time and ETA in the postfix.

    The ETA adds, for the current and the remaining runs, the measured start-up (``flwr run`` to the
    first round), seconds per round, and wind-down; it reads ``?`` until one run has shown them.
    """

    total: int
    done: int
    disable: bool = False
    t0: float = field(default_factory=time.monotonic)
    setups: list[float] = field(default_factory=list)
    per_round: list[float] = field(default_factory=list)
    teardowns: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bar = tqdm(
            total=self.total,
            initial=self.done,
            unit="run",
            bar_format="{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} runs{postfix}",
            desc="sweep ",
            disable=self.disable,
            mininterval=0.5,
            dynamic_ncols=True,
        )
        self.name, self.rounds, self.round = "", 0, 0
        self.run_t0 = self.last_round_t = self.first_round_t = 0.0
        self.queued: list[int] = []
        self.live = sys.stderr.isatty()  # in a log file, redraw on events only, not every second

    def start(self, name: str, rounds: int, queued: list[int]) -> None:
        """A run starts; ``queued`` are the round counts of the runs after it."""
        self.name, self.rounds, self.round, self.queued = name, rounds, 0, queued
        self.run_t0 = time.monotonic()
        self.first_round_t = self.last_round_t = 0.0
        self.refresh()

    def on_round(self, rnd: int) -> None:
        now = time.monotonic()
        if rnd == 0 or not self.first_round_t:
            if not self.first_round_t:
                self.setups.append(now - self.run_t0)
            self.first_round_t = now
        elif rnd > self.round:
            self.per_round.append((now - self.last_round_t) / (rnd - self.round))
        self.round, self.last_round_t = rnd, now
        self.refresh()

    def end(self) -> None:
        if self.last_round_t and self.round >= self.rounds:
            self.teardowns.append(time.monotonic() - self.last_round_t)
        self.bar.update(1)
        self.name = ""
        self.refresh()

    def eta(self) -> float | None:
        if not (self.setups and self.per_round):
            return None
        setup = sum(self.setups) / len(self.setups)
        rnd = sum(self.per_round) / len(self.per_round)
        down = sum(self.teardowns) / len(self.teardowns) if self.teardowns else 0.0
        left = sum(setup + r * rnd + down for r in self.queued)
        if self.name:
            since = time.monotonic() - self.run_t0
            left += max(setup - since, 0.0) if not self.first_round_t else 0.0
            left += (self.rounds - self.round) * rnd + down
        return left

    def tick(self) -> None:
        """Called about once a second while a run is quiet."""
        if self.live:
            self.refresh()

    def refresh(self) -> None:
        elapsed = tqdm.format_interval(time.monotonic() - self.t0)
        eta = self.eta()
        parts = [f"{self.name} round {self.round}/{self.rounds}"] if self.name else []
        parts += [f"elapsed {elapsed}", f"ETA {tqdm.format_interval(eta) if eta is not None else '?'}"]
        self.bar.set_postfix_str(" | ".join(parts), refresh=True)

    def write(self, text: str) -> None:
        if self.disable:
            print(text, flush=True)
        else:
            self.bar.write(text)

    def close(self) -> None:
        self.bar.close()


# ----------------------------------------------------------------------------- one run


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


def _recorded_error(run_dir: Path) -> str | None:
    """The one-line error the app wrote into ``run.json`` (when training itself failed)."""
    try:
        error = json.loads((run_dir / "run.json").read_text()).get("error")
    except (OSError, ValueError):
        return None
    return str(error).strip().splitlines()[0] if error and str(error).strip() else None


def _fallback_error(lines: Sequence[str], returncode: int | None) -> str:
    text = [line.strip() for line in lines if line.strip()]
    flagged = [t for t in text if "❌" in t or "Error" in t or "error" in t]
    last = (flagged or text or ["(no output)"])[-1]
    return f"flwr run exited with code {returncode} without finished results; last line: {last[:300]}"


class Runner:
    """Runs ``flwr run . --stream`` in ``app`` with ``env``; stops a cut run through ``flwr stop``."""

    def __init__(self, flwr: str, app: Path, env: dict[str, str], cpus: int, gpus: float, verbose: bool) -> None:
        self.flwr, self.app, self.env, self.cpus, self.gpus, self.verbose = flwr, app, env, cpus, gpus, verbose
        self.on_run_id: Callable[[str], None] | None = None

    def federation(self, num_supernodes: int) -> str:
        fed = f"num-supernodes={num_supernodes} client-resources-num-cpus={self.cpus}"
        return fed + (f" client-resources-num-gpus={self.gpus}" if self.gpus else "")

    def command(self, run: PlannedRun, run_dir: Path) -> list[str]:
        overrides = {**run.overrides, "output-dir": str(run_dir)}
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
    ) -> Outcome:
        """Run one combination, streaming its log to ``log_path`` and its rounds to ``progress``.

        ``on_run_id`` receives Flower's run id as soon as ``flwr run`` prints it.
        """
        self.on_run_id = on_run_id
        t0 = time.monotonic()
        out = Outcome(finished=False, error=None, seconds=0.0)
        proc = subprocess.Popen(
            self.command(run, run_dir),
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
        timed_out = False
        with open(log_path, "w", encoding="utf-8") as log:
            try:
                while True:
                    try:
                        raw = lines.get(timeout=1.0)
                    except queue.Empty:
                        raw = ""
                    if raw is None:
                        break
                    if raw:
                        self._consume(ANSI.sub("", raw).rstrip("\n"), out, log, progress, t0)
                    else:
                        progress.tick()
                    if timeout is not None and time.monotonic() - t0 > timeout:
                        timed_out = True
                        break
            except BaseException:
                self._cut(proc, reader, lines, out, log, progress, t0)
                raise
            if timed_out:
                self._cut(proc, reader, lines, out, log, progress, t0)
            out.returncode = proc.wait()
        out.seconds = time.monotonic() - t0
        out.finished = not timed_out and run_finished(run_dir)
        if timed_out:
            out.error = f"timed out after {timeout:g} s (--timeout); the run was stopped"
        elif not out.finished:
            out.error = _recorded_error(run_dir) or first_error(out.lines) or _fallback_error(out.lines, out.returncode)
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
        if m := ROUND_LINE.search(line):
            if out.first_round_seconds is None:
                out.first_round_seconds = time.monotonic() - t0
            progress.on_round(int(m.group(1)))

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


# ----------------------------------------------------------------------------- the command


def superlink_running(env: dict[str, str]) -> bool:
    """Whether a local SuperLink answers on this environment's port."""
    port = env.get(LOCAL_HTTP_PORT, "39091")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
            return 200 <= r.status < 300
    except OSError:
        return False


def _flwr_executable() -> str:
    found = shutil.which("flwr", path=str(Path(sys.executable).parent)) or shutil.which("flwr")
    if not found:
        raise SweepError("the flwr command is not installed here (pip install 'flwr[simulation]')")
    return found


def _default_app() -> Path:
    """This project's folder (the source tree of an editable install), else the current folder."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedetf-sweep", description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", help="methods to compare (default: the preset's, else the app's default)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (default: 0 1 2)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="run-config override (repeatable)")
    p.add_argument(
        "--grid", action="append", default=[], metavar="KEY=V1,V2", help="values to sweep (repeatable; all combined)"
    )
    p.add_argument("--preset", type=Path, help="a run-config TOML file (e.g. presets/authors-mnist.toml) as the base")
    p.add_argument("--out", type=Path, required=True, help="sweep folder (created; reused to resume)")
    p.add_argument("--num-supernodes", type=int, help="supernodes per run (default: each run's num-clients)")
    p.add_argument("--cpus-per-client", type=int, default=1, help="client-resources-num-cpus (default: 1)")
    p.add_argument("--gpus-per-client", type=float, default=0.0, help="client-resources-num-gpus (default: 0)")
    p.add_argument("--timeout", type=float, help="seconds per run before it is stopped and recorded failed")
    p.add_argument("--app", type=Path, help="the Flower app folder (default: this fedetf project)")
    p.add_argument("--dry-run", action="store_true", help="print the runs and their run configs; run nothing")
    p.add_argument("--verbose", action="store_true", help="echo every run's log")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per run)")
    p.add_argument("--report", action="store_true", help="build the report (fedetf-report) at the end")
    return p


def prepare(args: argparse.Namespace) -> tuple[Path, list[PlannedRun], dict[str, Any]]:
    """Validate the arguments; return the app folder, the plan and sweep.json's header."""
    if args.cpus_per_client < 1:
        raise SweepError(f"--cpus-per-client {args.cpus_per_client}: allowed: an integer >= 1")
    if args.gpus_per_client < 0:
        raise SweepError(f"--gpus-per-client {args.gpus_per_client:g}: allowed: a number >= 0")
    if args.num_supernodes is not None and args.num_supernodes < 1:
        raise SweepError(f"--num-supernodes {args.num_supernodes}: allowed: an integer >= 1")
    if args.timeout is not None and args.timeout <= 0:
        raise SweepError(f"--timeout {args.timeout:g}: allowed: seconds > 0")
    app = (args.app or _default_app()).resolve()
    defaults = app_defaults(app)
    preset: dict[str, Any] = {}
    if args.preset:
        try:
            preset = flatten(tomllib.loads(args.preset.read_text()))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise SweepError(f"--preset {args.preset}: cannot read it as TOML: {e}") from None
        unknown = [k for k in preset if k not in defaults]
        if unknown:
            raise SweepError(f"--preset {args.preset}: unknown run-config key(s) {unknown}")
    methods = list(args.methods or [str(preset.get("method", defaults.get("method", "fedavg")))])
    if len(set(methods)) != len(methods):
        raise SweepError(f"--methods {' '.join(methods)}: a method is given twice")
    if len(set(args.seeds)) != len(args.seeds):
        raise SweepError(f"--seeds {' '.join(map(str, args.seeds))}: a seed is given twice")
    base: dict[str, Value] = {k: v for k, v in preset.items() if k not in RESERVED}
    for text in args.set:
        key, value = split_assignment(text, "--set")
        for k in resolve_key(key, defaults, methods, "--set"):
            base[k] = parse_value(value)
    grid: dict[str, list[tuple[str, Value]]] = {}
    for text in args.grid:
        key, values = split_assignment(text, "--grid")
        parsed = parse_list(values)
        for k in resolve_key(key, defaults, methods, "--grid"):
            if k in grid:
                raise SweepError(f"--grid {key}=...: {k!r} is gridded twice")
            if namespace(k) is not None and namespace(k) not in methods:
                raise SweepError(f"--grid {k}=...: a setting of {namespace(k)!r}, which is not among --methods")
            grid[k] = parsed
            base.pop(k, None)
    for value in [*base.values(), *(v for vs in grid.values() for _, v in vs)]:
        toml_value(value)  # fails early on a string Flower cannot carry
    plan = build_plan(methods, args.seeds, base, grid, defaults, args.num_supernodes)
    header = {
        "version": 1,
        "command": ["fedetf-sweep", *args.argv],
        "app": str(app),
        "methods": methods,
        "seeds": list(args.seeds),
        "set": base,
        "grid": {k: [v for _, v in vs] for k, vs in grid.items()},
        "preset": str(args.preset) if args.preset else None,
        "report_by": ["method", *grid],
    }
    return app, plan, header


def _environment() -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    env = dict(os.environ)
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"  # run the app in this environment (no uv sync)
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"  # flwr starts flower-superlink from PATH
    return env


def _install_signals() -> None:
    def handler(signum: int, _frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def _summary(run_dir: Path) -> str:
    try:
        summary = json.loads((run_dir / "run.json").read_text()).get("summary", {})
    except (OSError, ValueError):
        return ""
    parts = []
    for view in ("personal_acc", "generic_acc"):
        last = summary.get(view, {}).get("last")
        if isinstance(last, int | float):
            parts.append(f"{view} {last:.4f}")
    return f" ({', '.join(parts)} last round)" if parts else ""


def _warn_if_packaged(out: Path, app: Path, write: Any) -> None:
    """Flower packs the app folder's .json/.md files (10 MB at most) for every run: warn if the sweep is among them."""
    try:
        out.resolve().relative_to(app)
    except ValueError:
        return
    try:
        res = subprocess.run(["git", "check-ignore", "-q", str(out)], cwd=app, capture_output=True, check=False)
    except OSError:  # no git: say nothing
        return
    if res.returncode == 1:
        write(
            f"warning: {out} is inside the app folder and not git-ignored: Flower packs its .json/.md files into "
            "every run (10 MB limit); prefer runs/<name> (ignored) or a folder outside the app"
        )


def _free_log(logs: Path, stem: str) -> Path:
    for n in itertools.count(1):
        path = logs / f"{stem}.{n}.log"
        if not path.exists():
            return path
    raise AssertionError("unreachable")


def _plan_runs(state: State, plan: list[PlannedRun], out: Path, runner: Runner) -> list[PlannedRun]:
    """The runs still to do; finished ones must have run with the planned settings."""
    # A sweep killed by SIGKILL leaves its run going on the SuperLink: stop it before its folder is redone.
    for entry in state.data["runs"]:
        if entry["status"] == "running" and entry.get("run_id") and not run_finished(out / "runs" / entry["name"]):
            runner.stop(str(entry["run_id"]))
    todo = []
    for run in plan:
        run_dir = out / "runs" / run.name
        if run_finished(run_dir):
            check_finished_config(run_dir, run.overrides)
            if state.entry(run.name)["status"] != "finished":
                state.entry(run.name).update(status="finished", error=None)
        else:
            state.entry(run.name).update(status="pending")
            todo.append(run)
    state.save()
    return todo


def run_sweep(args: argparse.Namespace) -> int:
    """Run the sweep; return the exit status."""
    app, plan, header = prepare(args)
    out: Path = args.out.resolve()
    if args.dry_run:
        runner = Runner("flwr", app, {}, args.cpus_per_client, args.gpus_per_client, False)
        for run in plan:
            cmd = runner.command(run, out / "runs" / run.name)
            print(f"{run.name}\n  {' '.join(_shell(a) for a in ['flwr', *cmd[1:]])}")
        print(f"{len(plan)} runs")
        return 0
    env = _environment()
    runner = Runner(_flwr_executable(), app, env, args.cpus_per_client, args.gpus_per_client, args.verbose)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    state = State(out, header, plan)
    todo = _plan_runs(state, plan, out, runner)
    progress = Progress(total=len(plan), done=len(plan) - len(todo), disable=args.no_progress)
    write = progress.write
    _warn_if_packaged(out, app, write)
    if len(todo) < len(plan):
        write(f"resuming {out}: {len(plan) - len(todo)} of {len(plan)} runs finished earlier are skipped")
    if todo and not superlink_running(env):
        write("flwr run starts a local SuperLink with the first run; the later runs reuse it")
    _install_signals()
    try:
        for i, run in enumerate(todo):
            run_dir = out / "runs" / run.name
            log_path = out / "logs" / f"{run.name}.log"
            if log_path.exists():
                log_path.rename(_free_log(out / "logs", run.name))
            if run_dir.exists():
                moved = move_aside(run_dir)
                write(f"{run.name}: unfinished folder moved aside to runs/{moved.name}")
            progress.start(run.name, run.rounds, [r.rounds for r in todo[i + 1 :]])
            state.update(run.name, status="running", started=_now(), error=None, run_id=None)
            try:
                result = runner.execute(
                    run, run_dir, log_path, progress, args.timeout, lambda rid, n=run.name: state.update(n, run_id=rid)
                )
            except (KeyboardInterrupt, Interrupted):
                state.update(run.name, status="pending", error="interrupted (the sweep was stopped)")
                raise
            state.update(
                run.name,
                status="finished" if result.finished else "failed",
                error=result.error,
                seconds=_round(result.seconds),
                submit_seconds=_round(result.submit_seconds),
                first_round_seconds=_round(result.first_round_seconds),
                run_seconds=_run_seconds(run_dir),
                started_superlink=result.started_superlink,
                ended=_now(),
                log=str(log_path.relative_to(out)),
            )
            progress.end()
            if result.finished:
                write(f"finished {run.name} in {result.seconds:.0f} s{_summary(run_dir)}")
            else:
                write(f"FAILED {run.name}: {result.error}")
    except (KeyboardInterrupt, Interrupted) as e:
        progress.close()
        print(f"interrupted ({e or 'SIGINT'}): rerun the same command to resume", file=sys.stderr)
        return 130
    progress.close()
    failed = [r for r in state.data["runs"] if r["status"] != "finished"]
    print(f"{len(plan) - len(failed)} of {len(plan)} runs finished; plan and status in {state.path}")
    for r in failed:
        print(f"  failed: {r['name']}: {r['error']}")
    if args.report:
        from simulations import report

        try:
            report.main([str(out)])
        except SystemExit as e:  # the report's one-line error is printed; the sweep's status stands
            if e.code:
                print("fedetf-report failed; the sweep's results are complete", file=sys.stderr)
    else:
        print(f"report: fedetf-report {out}")
    return 1 if failed else 0


def _shell(arg: str) -> str:
    """``arg`` quoted for a POSIX shell, in double quotes where that is enough (readable run configs)."""
    if re.fullmatch(r"[\w@%+=:,./-]+", arg):
        return arg
    return f'"{arg}"' if not any(c in arg for c in '"$`\\!') else shlex.quote(arg)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def _run_seconds(run_dir: Path) -> float | None:
    try:
        total = json.loads((run_dir / "run.json").read_text())["timings"]["total_seconds"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return round(float(total), 2)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point ``fedetf-sweep``."""
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        code = run_sweep(args)
    except SweepError as e:
        print(f"fedetf-sweep: error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)


if __name__ == "__main__":
    main()
