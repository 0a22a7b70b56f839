"""``fedetf-sweep``: run methods x grid x seeds through ``flwr run``, with progress, resume and failures.

Usage: ``fedetf-sweep --methods fedavg fedgela --seeds 0-2 --out SWEEP_DIR [--set KEY=VALUE ...]
[--grid KEY=V1,V2 ...] [--preset FILE.toml] [--num-supernodes N] [--cpus-per-client 1] [--timeout S]``.

Every combination runs as ``flwr run . --stream`` in the app folder, staged once per sweep without its virtual
environment (:func:`~simulations.experiments.runner.stage_app`; the path users use), one after
the other on the local SuperLink that the first ``flwr run`` starts and the others reuse, each into
``SWEEP_DIR/runs/<name>/``. ``SWEEP_DIR/sweep.json`` holds the plan and each run's status, error and
timings. Rerunning the same command skips finished runs, continues a cut run from its checkpoint
(``resume=true`` into the same folder), and redoes the others (an unfinished folder that cannot be
continued is moved aside to ``<name>.incomplete-<n>``, never deleted). Each run's log goes to
``SWEEP_DIR/logs/<name>.log``, every line prefixed with the seconds since its ``flwr run`` started.
The exit status is 1 if any run failed, 130 if the sweep was interrupted.
"""

from __future__ import annotations

import argparse
import itertools
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulations.experiments import runs
from simulations.experiments.plan import (
    RESERVED,
    PlannedRun,
    SweepError,
    Value,
    app_defaults,
    build_plan,
    flatten,
    namespace,
    parse_list,
    parse_value,
    resolve_key,
    split_assignment,
    toml_value,
)
from simulations.experiments.progress import Progress
from simulations.experiments.runner import Runner, environment, flwr_executable, stage_app, superlink_running
from simulations.experiments.state import State, check_finished_config, move_aside, now, resumable

#: Seconds to wait for a cut run's ServerApp process to end before its folder is touched.
WRITER_GRACE = 60.0


class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived: stop the current run and leave the sweep resumable."""


def _default_app() -> Path:
    """This project's folder (the source tree of an editable install), else the current folder."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def parse_seeds(texts: Sequence[str]) -> list[int]:
    """``0 1 2``, ``0-4`` or a mix, as a list of seeds; a one-line error for anything else."""
    seeds: list[int] = []
    for text in texts:
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", text.strip())
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise SweepError(f"--seeds {text}: allowed: integers >= 0 or ranges such as 0-4")
        seeds += range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1)
    return seeds


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedetf-sweep", description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", help="methods to compare (default: the preset's, else the app's default)")
    p.add_argument("--seeds", nargs="+", default=["0-2"], help="seeds, e.g. 0 1 2 or 0-4 (default: 0-2)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="run-config override (repeatable)")
    p.add_argument(
        "--grid", action="append", default=[], metavar="KEY=V1,V2", help="values to sweep (repeatable; all combined)"
    )
    p.add_argument("--preset", type=Path, help="a run-config TOML file (e.g. presets/authors-mnist.toml) as the base")
    p.add_argument("--out", type=Path, required=True, help="sweep folder (created; reused to resume)")
    p.add_argument(
        "--num-supernodes",
        type=int,
        help="supernodes per run, at most its num-clients (fewer serve the clients in turn; default: one per client)",
    )
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
    seeds = parse_seeds(args.seeds)
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"--seeds {' '.join(args.seeds)}: a seed is given twice")
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
    plan = build_plan(methods, seeds, base, grid, defaults, args.num_supernodes)
    header = {
        "version": 1,
        "command": ["fedetf-sweep", *args.argv],
        "app": str(app),
        "methods": methods,
        "seeds": seeds,
        "set": base,
        "grid": {k: [v for _, v in vs] for k, vs in grid.items()},
        "preset": str(args.preset) if args.preset else None,
        "report_by": ["method", *grid],
    }
    return app, plan, header


def _install_signals() -> None:
    def handler(signum: int, _frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def _free_log(logs: Path, stem: str) -> Path:
    for n in itertools.count(1):
        path = logs / f"{stem}.{n}.log"
        if not path.exists():
            return path
    raise AssertionError("unreachable")


def _wait_for_writer(run_dir: Path, grace: float = WRITER_GRACE) -> None:
    """Wait until no process on this host writes ``run_dir`` any more (a cut run's ServerApp winding down)."""
    deadline = time.monotonic() + grace
    while runs.status(run_dir) == "running" and time.monotonic() < deadline:
        pid = runs.writer_pid(run_dir)
        if pid is None or not runs.pid_alive(pid):
            return
        time.sleep(0.5)


def _plan_runs(state: State, plan: list[PlannedRun], out: Path, runner: Runner) -> tuple[list[PlannedRun], set[str]]:
    """The runs still to do and, among them, those to continue from their checkpoint.

    Finished runs must have run with the planned settings.
    """
    # A sweep killed by SIGKILL leaves its run going on the SuperLink: stop it before its folder is touched.
    for entry in state.data["runs"]:
        run_dir = out / "runs" / entry["name"]
        if entry["status"] == "running" and entry.get("run_id") and not runs.finished(run_dir):
            runner.stop(str(entry["run_id"]))
    todo, resume = [], set()
    for run in plan:
        run_dir = out / "runs" / run.name
        _wait_for_writer(run_dir)
        if runs.finished(run_dir):
            check_finished_config(run_dir, run.overrides)
            if state.entry(run.name)["status"] != "finished":
                state.entry(run.name).update(status="finished", error=None)
            continue
        state.entry(run.name).update(status="pending")
        todo.append(run)
        if resumable(run_dir, run.overrides):
            resume.add(run.name)
    state.save()
    return todo, resume


def _dry_run(app: Path, plan: list[PlannedRun], out: Path, args: argparse.Namespace) -> int:
    runner = Runner("flwr", app, {}, args.cpus_per_client, args.gpus_per_client, False)
    for run in plan:
        cmd = runner.command(run, out / "runs" / run.name)
        print(f"{run.name}\n  {' '.join(_shell(a) for a in ['flwr', *cmd[1:]])}")
    print(f"{len(plan)} runs")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    """Run the sweep; return the exit status."""
    app, plan, header = prepare(args)
    out: Path = args.out.resolve()
    if args.dry_run:
        return _dry_run(app, plan, out, args)
    env = environment()
    staged = Path(tempfile.mkdtemp(prefix="fedetf-app-"))
    try:
        try:
            copy = stage_app(app, staged / "app", skip=[out])  # the sweep's own folder is no part of the app
        except OSError as e:
            raise SweepError(f"--app {app}: cannot copy its files for the runs: {e}") from None
        runner = Runner(flwr_executable(), copy, env, args.cpus_per_client, args.gpus_per_client, args.verbose)
        return _run_plan(args, plan, header, out, env, runner)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _run_plan(
    args: argparse.Namespace,
    plan: list[PlannedRun],
    header: dict[str, Any],
    out: Path,
    env: dict[str, str],
    runner: Runner,
) -> int:
    """Run the plan's unfinished runs with ``runner`` (the app staged once); return the exit status."""
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    state = State(out, header, plan)
    todo, resume = _plan_runs(state, plan, out, runner)
    progress = Progress(total=len(plan), done=len(plan) - len(todo), disable=args.no_progress)
    write = progress.write
    if len(todo) < len(plan):
        write(f"resuming {out}: {len(plan) - len(todo)} of {len(plan)} runs finished earlier are skipped")
    if todo and not superlink_running(env):
        write("flwr run starts a local SuperLink with the first run; the later runs reuse it")
    _install_signals()
    try:
        for i, run in enumerate(todo):
            _execute(
                run, out, runner, state, progress, args.timeout, run.name in resume, [r.rounds for r in todo[i + 1 :]]
            )
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
        from simulations.experiments import report

        try:
            report.main([str(out)])
        except SystemExit as e:  # the report's one-line error is printed; the sweep's status stands
            if e.code:
                print("fedetf-report failed; the sweep's results are complete", file=sys.stderr)
    else:
        print(f"report: fedetf-report {out}")
    return 1 if failed else 0


def _execute(
    run: PlannedRun,
    out: Path,
    runner: Runner,
    state: State,
    progress: Progress,
    timeout: float | None,
    resume: bool,
    queued: list[int],
) -> None:
    """Run (or continue) one planned run and record how it ended."""
    run_dir = out / "runs" / run.name
    log_path = out / "logs" / f"{run.name}.log"
    if log_path.exists():
        log_path.rename(_free_log(out / "logs", run.name))
    if resume:
        progress.write(f"{run.name}: continuing from its checkpoint (rounds 1-{runs.rounds_done(run_dir)} written)")
    elif run_dir.exists():
        moved = move_aside(run_dir)
        progress.write(f"{run.name}: unfinished folder moved aside to runs/{moved.name}")
    progress.start(run.name, run_dir, run.rounds, queued)
    state.update(run.name, status="running", started=now(), error=None, run_id=None, resumed=resume)
    try:
        result = runner.execute(
            run, run_dir, log_path, progress, timeout, lambda rid: state.update(run.name, run_id=rid), resume
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
        run_seconds=runs.total_seconds(run_dir),
        started_superlink=result.started_superlink,
        ended=now(),
        log=str(log_path.relative_to(out)),
    )
    progress.end()
    if result.finished:
        progress.write(f"finished {run.name} in {result.seconds:.0f} s{runs.last_summary(run_dir)}")
    else:
        progress.write(f"FAILED {run.name}: {result.error}")


def _shell(arg: str) -> str:
    """``arg`` quoted for a POSIX shell, in double quotes where that is enough (readable run configs)."""
    if re.fullmatch(r"[\w@%+=:,./-]+", arg):
        return arg
    return f'"{arg}"' if not any(c in arg for c in '"$`\\!') else shlex.quote(arg)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


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
