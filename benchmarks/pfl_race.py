"""A race with Apple's pfl-research (``pfl``, PyTorch backend): the same cross-device FedAvg in both, on this machine.

The workload (every number a flag): FedAvg, 1,000 Synthetic(1, 1) clients of ``--samples`` (100) samples each
(90 to train, 10 to test), 50 sampled per round, fedetf's ``mlp`` model (60-200-128-10, linear classifier), one
local epoch, batch size 10, plain SGD (lr 0.01, momentum 0, weight decay 0; gradient-norm clipping at 1e6, so
never, on both sides), ``--rounds`` (10) timed rounds after ``--warmup`` (1) rounds that neither side times.

* **fedetf** runs through the real ``flwr run`` (``simulations.local.run_local``: a local SuperLink, Ray simulation
  engine) with ``num-clients=1000`` multiplexed over ``--supernodes`` (50) SuperNodes and
  ``client-resources-num-cpus`` = this machine's cores, so Ray starts **one** ClientApp actor, which trains every
  client in turn. ``evaluate-every=0`` and ``checkpoint-every=0``: a round trains and evaluates the global model.
* **pfl** runs in one process (its ``SimulatedBackend``, no distributed workers): ``FederatedAveraging`` with a
  central SGD of lr 1.0 on the averaged model delta (plain FedAvg), a ``FederatedDataset`` whose per-user
  function builds each user's data with fedetf's own generator (``SyntheticFederation.client``), and the same
  torch model, built by fedetf's own builder (``make_method(...).build_model()``, same seed, same initial weights),
  wrapped with the ``loss``/``metrics`` that pfl's ``PyTorchModel`` needs.

So one process trains every client on each side. Both sides train the *same clients in the same batch order*:
pfl's user sampler draws fedetf's cohorts (Flower's FedAvg ``random.sample`` under fedetf's per-round seed) and each
user's training samples are taken in the order of fedetf's seeded shuffle in that round. Both evaluate each
client's model on that client's 10 test samples before and after local training (fedetf's client round does;
pfl's per-user evaluation, ``evaluation_frequency=1``, is pointed at the same test split) and the global model on
the same global test set after every round (fedetf's ``generic_acc``: the pooled test splits of the first 200
clients, ``SyntheticFederation.generic_test()``; pfl: a ``CentralEvaluationCallback`` on the same arrays). Every
process gets ``--threads`` (1) torch threads (``OMP_NUM_THREADS`` for the whole fedetf tree, which Ray keeps).

Seconds per round: fedetf's ``round_seconds`` (``metrics.csv``: configure, clients, aggregation, global
evaluation) of the timed rounds, and as a check the wall time between two rows appearing in ``metrics.csv``
(which adds the results files written between rounds); pfl's wall time between two ``after_central_iteration``
callbacks (the same rounds). The ratio is fedetf / pfl (below 1: fedetf is faster). Start-up is shown apart:
fedetf from launching ``flwr run`` to the start of round 1 (the local SuperLink is started before, timed apart),
pfl from starting its process to its first iteration. CPU seconds per timed round are read from /proc for every
process of the fedetf run (by kind) and for the pfl process. ``--profile S`` samples fedetf's ClientApp actor, its
``flwr-simulation`` process and the pfl process with py-spy for S seconds from round 2 on (``$PY_SPY`` or PATH).

pfl is not a dependency of the project: installing ``pfl[pytorch]`` into the project's environment would
downgrade ``attrs`` (26 -> 23.2) and ``absl-py`` (2.5 -> 1.4) through ``dp-accounting``. It lives in an
environment of its own that adds only pfl and its pins on top of the project's packages (same torch, numpy)::

    python benchmarks/pfl_race.py --make-pfl-env ~/pflenv      # once (pip, --no-deps pins; no downloads of torch)
    python benchmarks/pfl_race.py --pfl-python ~/pflenv/bin/python [--rounds 10] [--clients 1000]
        [--cohort 50] [--samples 100] [--batch-size 10] [--lr 0.01] [--supernodes 50] [--threads 1]
        [--repeats 1] [--profile 8] [--json out.json] [--keep DIR]

The pfl side runs as ``<pfl-python> benchmarks/pfl_race.py --pfl-worker '<json>'``. Timings on a shared machine
are noisy: the load average is printed with every run; ``--repeats`` interleaves the sides and keeps each side's
fastest run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
#: pfl and the pins it needs that the project's environment lacks or holds at other versions (``pip install
#: --dry-run pfl[pytorch]`` into the project's venv: it would downgrade attrs 26.1 -> 23.2, absl-py 2.5 -> 1.4).
PFL_PINS = (
    "pfl==0.6.0",
    "dp-accounting==0.5.1",
    "prv-accountant==0.2.0",
    "attrs==23.2.0",
    "absl-py==1.4.0",
    "dm-tree==0.1.10",
    "wrapt==2.5.2",
    "wheel==0.45.1",
)
RESULT = "PFL_RACE_RESULT "
ROUND_MARK = "PFL_RACE_ROUND "


@dataclass(frozen=True)
class Workload:
    """The work both sides do (see the module docstring)."""

    clients: int = 1000
    cohort: int = 50
    samples: int = 100
    alpha: float = 1.0
    beta: float = 1.0
    rounds: int = 10
    local_epochs: int = 1
    batch_size: int = 10
    lr: float = 0.01
    clip_grad_norm: float = 1e6
    seed: int = 0
    threads: int = 1
    warmup: int = 1

    @property
    def total_rounds(self) -> int:
        """The warm-up rounds and the timed rounds."""
        return self.warmup + self.rounds

    @property
    def fraction(self) -> float:
        """``fraction-train`` whose Flower FedAvg sample, ``int(clients * fraction)``, is exactly ``cohort``."""
        f = self.cohort / self.clients
        while int(self.clients * f) < self.cohort:
            f = float(f"{f:.12g}") + 1e-12
        return f

    def fedetf_config(self, out: Path) -> dict[str, Any]:
        """fedetf's run-config overrides for this workload."""
        return {
            "method": "fedavg",
            "server": "auto",
            "dataset": "synthetic",
            "model": "mlp",
            "synthetic-alpha": self.alpha,
            "synthetic-beta": self.beta,
            "synthetic-samples": self.samples,
            "num-clients": self.clients,
            "fraction-train": self.fraction,
            "num-server-rounds": self.total_rounds,
            "evaluate-every": 0,
            "checkpoint-every": 0,
            "holdout-clients": 0.0,
            "local-epochs": self.local_epochs,
            "batch-size": self.batch_size,
            "drop-last": False,
            "lr": self.lr,
            "lr-schedule": "constant",
            "optimizer": "sgd",
            "momentum": 0.0,
            "weight-decay": 0.0,
            "clip-grad-norm": self.clip_grad_norm,
            "dp": "none",
            "aggregation-weight": "examples",
            "generic-test": "full",
            "diagnostics": False,
            "straggler-rate": 0.0,
            "dropout-rate": 0.0,
            "fault-rate": 0.0,
            "tracking": "none",
            "device": "cpu",
            "num-workers": 0,
            "seed": self.seed,
            "output-dir": str(out),
        }


@dataclass
class SideResult:
    """One side's measurements (seconds; accuracies in [0, 1])."""

    side: str
    warmup: int  # rounds not timed
    round_seconds: list[float]  # every round, the warm-up first
    accuracy: list[float]  # the global model's accuracy after every round
    startup_seconds: float
    workers: str
    load_before: float
    load_after: float
    wall_between_rounds: list[float] = field(default_factory=list)  # timed rounds: rows of metrics.csv appearing
    cpu_per_round: dict[str, float] = field(default_factory=dict)  # process kind -> CPU seconds per timed round
    profile: dict[str, dict[str, float]] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def timed(self) -> list[float]:
        return self.round_seconds[self.warmup :]

    @property
    def per_round(self) -> float:
        """Mean seconds of the timed rounds (their total over their number)."""
        return statistics.fmean(self.timed)

    @property
    def median(self) -> float:
        return statistics.median(self.timed)


# -- /proc ---------------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads), 0 if it is gone."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICK
    return 0.0


def load_average() -> float:
    return os.getloadavg()[0]


def _py_spy_record(pid: int, seconds: float, path: Path, idle: bool) -> subprocess.Popen[bytes] | None:
    """round_cost's py-spy recording (at least a second), or None without py-spy."""
    from benchmarks.round_cost import _record, py_spy

    return None if py_spy() is None else _record(pid, max(1.0, seconds), path, idle)


#: Where the process that runs fedetf's ServerApp (``flwr-simulation``: ServerApp thread and Flower's simulation
#: engine threads) spends its busy samples; the first match against the whole stack wins.
SERVER_CATEGORIES = (
    ("engine: poll every SuperNode for messages, 10x/s (add_messages_to_queue)", ("add_messages_to_queue (",)),
    ("engine: store replies in the link state (put_message_into_state)", ("put_message_into_state (",)),
    ("engine worker: Ray actor call for one message (submit, wait, result)", ("RayBackend.process_message (",)),
    ("engine worker: other (queue, context, ids)", ("worker (flwr/server/superlink/fleet/vce",)),
    ("ServerApp: global-model evaluation", ("GlobalModel.evaluate (",)),
    ("ServerApp: aggregation", ("aggregate_train (",)),
    ("ServerApp: pull replies (pull_messages)", ("pull_messages (",)),
    (
        "ServerApp: configure + push messages",
        ("configure_train (", "push_messages (", "MultiplexGrid.send_and_receive ("),
    ),
    ("ServerApp: results files, logging", ("add_round (", "RunRecorder", "log_round (")),
    ("ServerApp: other", ("ServerApp.__call__ (",)),
    ("Flower log uploader, heartbeats", ("_log_uploader (", "HeartbeatSender")),
)
#: The same for the pfl process.
PFL_CATEGORIES = (
    ("central evaluation (CentralEvaluationCallback)", ("CentralEvaluationCallback",)),
    ("user data (make_dataset_fn: generate, order)", ("make_user (",)),
    ("local training (do_multiple_epochs_of)", ("do_multiple_epochs_of (",)),
    ("per-user evaluation before/after training", ("PyTorchModel.evaluate (",)),
    ("model delta, reset, aggregation (sum)", ("get_model_difference (", "set_parameters (", "accumulate (")),
    ("central update (apply_model_update)", ("apply_model_update (",)),
    ("pfl bookkeeping (metrics, contexts, sampling)", ("pfl/",)),
)


def categorize(path: Path, categories: tuple[tuple[str, tuple[str, ...]], ...], seconds: float) -> dict[str, float]:
    """Share of a py-spy raw profile's samples (taken without ``--idle``: busy samples of every thread) per
    category; ``busy``: busy samples per sampling tick (cores busy on average)."""
    from benchmarks.round_cost import RATE

    if not path.exists():
        return {}
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if n.isdigit() and stack.strip():  # no Python frame (native code, interpreter exit): not attributed
            name = next((c for c, keys in categories if any(k in stack for k in keys)), "other")
            counts[name] += int(n)
    total = sum(counts.values()) or 1
    return {"busy": total / (RATE * seconds), **{k: v / total for k, v in counts.most_common()}}


# -- fedetf ------------------------------------------------------------------------------------------------------


class RoundWatcher(threading.Thread):
    """Watches a run's ``metrics.csv``: when each row appeared (``time.time()``), the CPU seconds of every process
    of ``root_pid``'s tree when row ``warmup`` (the last warm-up round) and the last row appeared, and (``profile``
    > 0) py-spy records of the ClientApp actor and the ``flwr-simulation`` process started at row ``warmup``."""

    def __init__(self, metrics: Path, root_pid: int, rows: int, warmup: int, profile: float, stem: Path) -> None:
        super().__init__(daemon=True)
        self.metrics, self.root_pid, self.rows, self.profile, self.stem = metrics, root_pid, rows, profile, stem
        self.warmup = max(1, warmup)
        self.appeared: list[float] = []
        self.cpu_first: dict[int, float] = {}
        self.cpu_last: dict[int, float] = {}
        self.kinds: dict[int, str] = {}
        self.recordings: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        self._halt = threading.Event()

    def _snapshot(self) -> dict[int, float]:
        from benchmarks.processes import process_tree
        from benchmarks.round_cost import process_kind

        out = {}
        for pid in process_tree([self.root_pid]):
            self.kinds.setdefault(pid, process_kind(pid))
            out[pid] = cpu_seconds(pid)
        return out

    def _count(self) -> int:
        try:
            return max(0, len(self.metrics.read_text().splitlines()) - 1)
        except OSError:
            return 0

    def run(self) -> None:
        while not self._halt.is_set() and len(self.appeared) < self.rows:
            n = self._count()
            if n > len(self.appeared):
                now = time.time()
                first = len(self.appeared) < self.warmup <= n
                self.appeared += [now] * (n - len(self.appeared))
                if first:
                    self.cpu_first = self._snapshot()
                    if self.profile > 0:
                        self._start_profiles()
                if len(self.appeared) >= self.rows:
                    self.cpu_last = self._snapshot()
            self._halt.wait(0.01)

    def _start_profiles(self) -> None:
        for pid, kind in self.kinds.items():
            who = {"ray::ClientAppActor": "actor", "flwr-simulation": "server"}.get(kind)
            if who and who not in self.recordings:
                path = self.stem.with_suffix(f".{who}.pyspy")
                rec = _py_spy_record(pid, self.profile, path, idle=who == "actor")
                if rec is not None:
                    self.recordings[who] = (rec, path)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def timed_walls(self) -> list[float]:
        """Seconds between the rows of the timed rounds appearing (from the last warm-up row's)."""
        rows = self.appeared[self.warmup - 1 :]
        return [b - a for a, b in zip(rows, rows[1:], strict=False)]

    def cpu_per_round(self, rounds: int) -> dict[str, float]:
        """CPU seconds per timed round of each kind of process (the kinds summed over their processes)."""
        per: Counter[str] = Counter()
        for pid, last in self.cpu_last.items():
            per[self.kinds.get(pid, "?")] += (last - self.cpu_first.get(pid, 0.0)) / rounds
        return {k: round(v, 4) for k, v in per.most_common() if v > 0.0005}

    def profiles(self, seconds: float) -> dict[str, dict[str, float]]:
        from benchmarks.round_cost import summarize_profile

        out: dict[str, dict[str, float]] = {}
        for who, (rec, path) in self.recordings.items():
            with contextlib.suppress(subprocess.TimeoutExpired):
                rec.wait(timeout=seconds + 30)
            if who == "actor":
                out["fedetf ClientApp actor, main thread"] = summarize_profile(path)
            else:
                shares = categorize(path, SERVER_CATEGORIES, seconds)
                busy = shares.pop("busy", 0)
                out[f"fedetf flwr-simulation process ({busy:.0%} of a core busy), busy samples"] = shares
        return out


def run_fedetf(w: Workload, work: Path, supernodes: int, profile: float, actors: int = 1) -> SideResult:
    """fedetf through ``flwr run`` on a local SuperLink (``simulations.local.run_local``), with ``actors`` Ray
    ClientApp actors (``client-resources-num-cpus`` = cores / actors: one actor takes every core Ray sees)."""
    import pandas as pd

    from simulations.local import local_superlink, run_local

    cpus = max(1, (os.cpu_count() or 1) // actors)
    began = time.time()
    link = local_superlink()  # started once per process; its env copies os.environ (OMP_NUM_THREADS)
    link_seconds = time.time() - began
    out = work / f"fedetf-{time.time_ns()}"
    stem = work / f"prof-{out.name}"
    watcher = RoundWatcher(out / "metrics.csv", link.proc.pid, w.total_rounds, w.warmup, profile, stem)
    load_before = load_average()
    watcher.start()
    launched = time.time()
    try:
        run_local(w.fedetf_config(out), num_supernodes=supernodes, num_cpus=cpus, timeout=3600)
    finally:
        watcher.stop()
    load_after = load_average()
    metrics = pd.read_csv(out / "metrics.csv")
    seconds = [float(s) for s in metrics["round_seconds"]]
    round1_start = watcher.appeared[0] - seconds[0] if watcher.appeared else float("nan")
    actors = sum(kind == "ray::ClientAppActor" for kind in watcher.kinds.values())
    timings = json.loads((out / "run.json").read_text()).get("timings", {})
    return SideResult(
        side="fedetf",
        warmup=w.warmup,
        round_seconds=seconds,
        accuracy=[float(a) for a in metrics["generic_acc"]],
        startup_seconds=round1_start - launched,
        workers=f"{actors} Ray ClientApp actor(s) (client-resources-num-cpus={cpus}), {supernodes} SuperNodes",
        load_before=load_before,
        load_after=load_after,
        wall_between_rounds=watcher.timed_walls(),
        cpu_per_round=watcher.cpu_per_round(w.rounds),
        profile=watcher.profiles(profile) if profile > 0 else {},
        extra={
            "superlink_start_seconds": link_seconds,
            "run_total_seconds": float(timings.get("total_seconds", float("nan"))),
            "processes_in_tree": len(watcher.kinds),
        },
    )


def inline_worker(w: Workload, out: Path, supernodes: int) -> None:
    """fedetf's ServerApp and ClientApp in this process: an in-process Grid hands each message straight to the
    ClientApp (``simulations.grid.InProcessGrid``; no Flower transport, no Ray, no serialisation), ``supernodes``
    nodes, so the clients are multiplexed as under ``flwr run``."""
    import torch

    torch.set_num_threads(w.threads)
    from flwr.app import Context, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from simulations import client_app, server_app
    from simulations.grid import InProcessGrid
    from simulations.local import default_run_config

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0  # what Flower sets per process
    run_config = {**default_run_config(), **w.fedetf_config(out)}
    grid = InProcessGrid(client_app.app, run_config, supernodes)
    server_app.main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config))


def run_inline(w: Workload, work: Path, supernodes: int) -> SideResult:
    """:func:`inline_worker` in a fresh process of this Python: fedetf's own work per round without Flower's
    transport and Ray (what the ``flwr run`` round adds on top of it is theirs)."""
    import pandas as pd

    out = work / f"inline-{time.time_ns()}"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--inline-worker", json.dumps(asdict(w))]
    cmd += ["--inline-out", str(out), "--supernodes", str(supernodes)]
    load_before = load_average()
    launched = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watcher = RoundWatcher(out / "metrics.csv", proc.pid, w.total_rounds, w.warmup, 0.0, work / "unused")
    watcher.start()
    log = proc.communicate()[0]
    watcher.stop()
    if proc.returncode:
        raise RuntimeError(f"the inline fedetf run failed (exit {proc.returncode}):\n{log[-3000:]}")
    metrics = pd.read_csv(out / "metrics.csv")
    seconds = [float(x) for x in metrics["round_seconds"]]
    return SideResult(
        side="fedetf-inline",
        warmup=w.warmup,
        round_seconds=seconds,
        accuracy=[float(a) for a in metrics["generic_acc"]],
        startup_seconds=watcher.appeared[0] - seconds[0] - launched if watcher.appeared else float("nan"),
        workers=f"1 process (ServerApp + ClientApp, in-process grid, {supernodes} nodes)",
        load_before=load_before,
        load_after=load_average(),
        wall_between_rounds=watcher.timed_walls(),
        cpu_per_round=watcher.cpu_per_round(w.rounds),
    )


# -- pfl (runs in the pfl environment) ---------------------------------------------------------------------


def pfl_worker(w: Workload, profile_marker: bool) -> dict[str, Any]:
    """The pfl side, in this process; returns its measurements (printed as one JSON line by ``main``)."""
    started = time.time()
    import numpy as np
    import torch
    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
    from pfl.callback.base import TrainingProcessCallback
    from pfl.callback.central_evaluation import CentralEvaluationCallback
    from pfl.data.dataset import Dataset
    from pfl.data.federated_dataset import FederatedDataset
    from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
    from pfl.metrics import Metrics, Weighted
    from pfl.model.pytorch import PyTorchModel
    from torch import nn
    from torch.utils.data import DataLoader

    from simulations.config import parse_run_config
    from simulations.local import default_run_config
    from simulations.task import federation, make_method, round_seed

    torch.set_num_threads(w.threads)
    cfg = parse_run_config({**default_run_config(), **w.fedetf_config(Path(tempfile.gettempdir()) / "unused")})
    fed = federation(cfg)  # SyntheticFederation: the same generator, seed and options as fedetf's clients

    class PflModule(nn.Module):
        """fedetf's model with the ``loss`` and ``metrics`` pfl's ``PyTorchModel`` calls."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)

        def loss(self, x: torch.Tensor, y: torch.Tensor, **_: Any) -> torch.Tensor:
            self.train()
            return nn.functional.cross_entropy(self.model(x, personal=True), y)

        @torch.no_grad()
        def metrics(
            self, x: torch.Tensor, y: torch.Tensor, test: tuple[torch.Tensor, torch.Tensor] | None = None
        ) -> dict[str, Weighted]:
            """Loss and accuracy on the batch, or for a user (``test`` given) on its test split, as fedetf's client
            evaluates before and after training."""
            self.eval()
            if test is not None:
                x, y = test
            logits = self.model(x, personal=test is not None)
            loss = float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct = int((logits.argmax(1) == y).sum())
            return {"loss": Weighted(loss, len(y)), "accuracy": Weighted(correct, len(y))}

    class FlowerCohorts:
        """pfl user sampler that draws fedetf's cohorts: Flower FedAvg's ``random.sample`` of the clients under
        ``random.seed(round_seed(seed, round, -1))`` (``simulations/rounds.py``), one user per call."""

        def __init__(self) -> None:
            self.round = 0
            self.queue: list[int] = []

        def __call__(self) -> int:
            if not self.queue:
                self.round += 1
                rng = random.Random(round_seed(w.seed, self.round, -1))
                self.queue = list(reversed(rng.sample(range(w.clients), int(w.clients * w.fraction))))
            return self.queue.pop()

    sampler = FlowerCohorts()

    def fedetf_order(uid: int, n: int) -> torch.Tensor:
        """The order fedetf's train loader yields client ``uid``'s samples in this round (its seeded shuffle)."""
        gen = torch.Generator().manual_seed(round_seed(w.seed, sampler.round, uid))
        return torch.cat(list(DataLoader(range(n), batch_size=w.batch_size, shuffle=True, generator=gen)))

    def make_user(uid: int) -> Dataset:
        x, y, xt, yt = fed.client(uid)
        order = fedetf_order(uid, len(y))
        x_t, y_t = torch.from_numpy(x)[order], torch.from_numpy(y)[order]
        test = (torch.from_numpy(xt), torch.from_numpy(yt))
        return Dataset(raw_data=[x_t, y_t], user_id=uid, eval_kwargs={"test": test})

    users = FederatedDataset(make_user, sampler)
    method = make_method(cfg)
    module = PflModule(method.build_model())  # fedetf's builder: the same seeded initial weights
    model = PyTorchModel(
        module,
        local_optimizer_create=torch.optim.SGD,  # SGD(params, lr=local lr): momentum 0, weight decay 0
        central_optimizer=torch.optim.SGD(module.parameters(), lr=1.0),  # w += mean(delta): FedAvg
    )
    xg, yg = fed.generic_test()
    central = CentralEvaluationCallback(
        Dataset(raw_data=[torch.from_numpy(xg), torch.from_numpy(yg)]),
        model_eval_params=NNEvalHyperParams(local_batch_size=None),
        frequency=1,
    )

    class Clock(TrainingProcessCallback):
        """Wall and CPU time at the start and after every central iteration, and the global accuracy."""

        def __init__(self) -> None:
            self.wall: list[float] = []
            self.cpu: list[float] = []
            self.accuracy: list[float] = []

        def on_train_begin(self, *, model: Any) -> Metrics:
            self.wall.append(time.perf_counter())
            self.cpu.append(time.process_time())
            return Metrics()

        def after_central_iteration(
            self, aggregate_metrics: Metrics, model: Any, *, central_iteration: int
        ) -> tuple[bool, Metrics]:
            self.wall.append(time.perf_counter())
            self.cpu.append(time.process_time())
            # CentralEvaluationCallback evaluates the initial model before iteration 0 (its value is in iteration
            # 0's metrics) and the model after every later iteration: the model after round 1 is not evaluated.
            acc = [v for k, v in aggregate_metrics if str(k) == "Central val | accuracy"]
            value = float(acc[-1].overall_value) if acc and central_iteration > 0 else float("nan")
            self.accuracy.append(value)
            if profile_marker:
                print(f"{ROUND_MARK}{central_iteration}", flush=True)
            return False, Metrics()

    clock = Clock()
    ready = time.time()
    FederatedAveraging().run(
        algorithm_params=NNAlgorithmParams(
            central_num_iterations=w.total_rounds,
            evaluation_frequency=1,  # per-user evaluation before and after training, as fedetf's clients
            train_cohort_size=w.cohort,
            val_cohort_size=0,
        ),
        backend=SimulatedBackend(training_data=users, val_data=users),
        model=model,
        model_train_params=NNTrainHyperParams(
            local_learning_rate=w.lr,
            local_num_epochs=w.local_epochs,
            local_batch_size=w.batch_size,
            local_max_grad_norm=w.clip_grad_norm,  # clip_grad_norm_ every step, as fedetf's (never reached)
        ),
        model_eval_params=NNEvalHyperParams(local_batch_size=None),
        callbacks=[central, clock],
    )
    timed_cpu = clock.cpu[w.warmup :]  # from the end of the last warm-up iteration
    cpu = [b - a for a, b in zip(timed_cpu, timed_cpu[1:], strict=False)]
    return {
        "round_seconds": [b - a for a, b in zip(clock.wall, clock.wall[1:], strict=False)],
        "accuracy": clock.accuracy,
        "startup_in_process": ready - started,
        "cpu_per_round": statistics.fmean(cpu) if cpu else float("nan"),
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "torch": torch.__version__,
    }


def run_pfl(w: Workload, python: str, profile: float, work: Path) -> SideResult:
    """The pfl side in a subprocess of ``python`` (the pfl environment)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(":")}
    cmd = [python, str(Path(__file__).resolve()), "--pfl-worker", json.dumps(asdict(w))]
    cmd += ["--profile-marker"] if profile > 0 else []
    load_before = load_average()
    launched = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines, recording = [], None
    path = work / f"prof-pfl-{time.time_ns()}.pyspy"
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(ROUND_MARK) and recording is None and profile > 0:
            recording = _py_spy_record(proc.pid, profile, path, idle=False) or False
    proc.wait()
    load_after = load_average()
    found = [json.loads(line[len(RESULT) :]) for line in lines if line.startswith(RESULT)]
    if proc.returncode or not found:
        raise RuntimeError(f"the pfl side failed (exit {proc.returncode}):\n{''.join(lines[-40:])}")
    res = found[0]
    profiles: dict[str, dict[str, float]] = {}
    if recording:
        recording.wait(timeout=profile + 30)
        shares = categorize(path, PFL_CATEGORIES, profile)
        shares.pop("busy", 0)  # the recording may outlast the process: its CPU time is in cpu_per_round
        profiles["pfl process, Python samples"] = shares
    return SideResult(
        side="pfl",
        warmup=w.warmup,
        round_seconds=res["round_seconds"],
        accuracy=res["accuracy"],
        startup_seconds=res["startup_in_process"],
        workers=f"1 process (SimulatedBackend, {res['torch_threads']} torch thread(s))",
        load_before=load_before,
        load_after=load_after,
        cpu_per_round={"pfl process": round(res["cpu_per_round"], 4)},
        profile=profiles,
        extra={"process_seconds": time.time() - launched},
    )


# -- the environment for pfl ----------------------------------------------------------------------------------


def make_pfl_env(folder: Path) -> Path:
    """A venv with pfl and its pins only, which sees the project's packages (torch, numpy, flwr, fedetf) behind its
    own through a ``.pth`` file; returns its Python. The project's environment is not touched."""
    base = Path(getattr(sys, "_base_executable", sys.executable))
    subprocess.run([str(base), "-m", "venv", str(folder)], check=True)
    python = folder / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", *PFL_PINS], check=True)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = subprocess.run(
        [sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "zz_fedetf_project.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", "setuptools"], check=False)  # use the project's
    subprocess.run([str(python), "-c", "import pfl, torch, simulations.task"], check=True, cwd=ROOT)
    return python


# -- report -----------------------------------------------------------------------------------------------------


def best(results: list[SideResult]) -> SideResult:
    return min(results, key=lambda r: r.per_round)


def markdown(w: Workload, pfl: SideResult, fedetf: SideResult, command: str, inline: SideResult | None = None) -> str:
    """The race as a Markdown table (``inline``: a column for fedetf without Flower's transport) and the verdict."""
    ratio = fedetf.per_round / pfl.per_round
    cols = [pfl, fedetf, *([inline] if inline else [])]
    names = ["pfl 0.6.0 (PyTorch)", "fedetf (`flwr run`)"]
    names += ["fedetf in one process (no Flower/Ray)"] if inline else []

    def row(label: str, cells: list[str], last: str = "") -> str:
        return f"| {label} | " + " | ".join(cells) + f" | {last} |"

    def wall(r: SideResult) -> str:
        return f"{statistics.fmean(r.wall_between_rounds):.3f}" if r.wall_between_rounds else "-"

    rows = [
        "| | " + " | ".join(names) + " | fedetf / pfl |",
        "|---|" + "---:|" * (len(cols) + 1),
        row(
            f"s/round, rounds {w.warmup + 1}-{w.total_rounds} (mean; median)",
            [f"{pfl.per_round:.3f} ({pfl.median:.3f})", f"{fedetf.per_round:.3f} ({fedetf.median:.3f})"]
            + (
                [f"{inline.per_round:.3f} ({inline.median:.3f}); {inline.per_round / pfl.per_round:.2f}x pfl"]
                if inline
                else []
            ),
            f"**{ratio:.2f}x**",
        ),
        row(
            "wall between rounds' ends (fedetf: adds the results files)",
            [f"{pfl.per_round:.3f}"] + [wall(r) for r in cols[1:]],
        ),
        row(
            f"warm-up round{'s' if w.warmup > 1 else ''} (not timed)",
            [" + ".join(f"{x:.2f}" for x in r.round_seconds[: w.warmup]) for r in cols],
        ),
        row(
            "start-up to round 1",
            [f"{pfl.startup_seconds:.1f} s (process start, imports, data, model)"]
            + [
                f"{fedetf.startup_seconds:.1f} s from `flwr run` (+ {fedetf.extra['superlink_start_seconds']:.1f} s "
                "SuperLink start)"
            ]
            + ([f"{inline.startup_seconds:.1f} s"] if inline else []),
        ),
        row("global accuracy after round 2", [f"{r.accuracy[1]:.4f}" for r in cols]),
        row(f"global accuracy after round {w.total_rounds}", [f"{r.accuracy[-1]:.4f}" for r in cols]),
        row("worker processes that train", [r.workers for r in cols]),
        row("CPU s per timed round, all processes", [f"{sum(r.cpu_per_round.values()):.3f}" for r in cols]),
        row("load average (1 min) before / after", [f"{r.load_before:.2f} / {r.load_after:.2f}" for r in cols]),
    ]
    met = "met" if ratio <= 1.0 else "not met"
    cpu = ", ".join(f"{k} {v:.3f}" for k, v in fedetf.cpu_per_round.items())
    return "\n".join(
        [
            f"```bash\n{command}\n```",
            "",
            *rows,
            "",
            f"Goal, fedetf's round at or below pfl's with the same number of worker processes: **{met}** "
            f"({ratio:.2f}x).",
            "",
            f"fedetf (`flwr run`) CPU seconds per timed round by process: {cpu}.",
        ]
    )


def show_profiles(results: list[SideResult]) -> None:
    for r in results:
        for title, shares in r.profile.items():
            print(f"\n{title}:")
            for name, share in shares.items():
                print(f"  {share:6.1%}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    d = Workload()
    parser.add_argument("--clients", type=int, default=d.clients)
    parser.add_argument("--cohort", type=int, default=d.cohort, help="clients sampled per round")
    parser.add_argument("--samples", type=int, default=d.samples, help="samples per client (synthetic-samples)")
    parser.add_argument("--alpha", type=float, default=d.alpha)
    parser.add_argument("--beta", type=float, default=d.beta)
    parser.add_argument("--rounds", type=int, default=d.rounds, help="timed rounds (after the warm-up rounds)")
    parser.add_argument("--warmup", type=int, default=d.warmup, help="rounds not timed on either side (at least 1)")
    parser.add_argument("--local-epochs", type=int, default=d.local_epochs)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--clip-grad-norm", type=float, default=d.clip_grad_norm)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--threads", type=int, default=d.threads, help="torch threads of every process")
    parser.add_argument("--supernodes", type=int, default=0, help="fedetf's SuperNodes (default: --cohort)")
    parser.add_argument("--pfl-python", default=os.environ.get("PFL_PYTHON", sys.executable))
    parser.add_argument(
        "--sides",
        nargs="+",
        choices=("pfl", "fedetf", "fedetf-inline"),
        default=["pfl", "fedetf"],
        help="fedetf-inline: fedetf's ServerApp and ClientApp in one process, without Flower's transport or Ray",
    )
    parser.add_argument("--actors", type=int, default=1, help="fedetf's Ray ClientApp actors (pfl has 1 process)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per side, interleaved; the fastest is kept")
    parser.add_argument("--profile", type=float, default=0.0, help="py-spy both sides for this many seconds")
    parser.add_argument("--json", type=Path, help="write every run's measurements here")
    parser.add_argument("--keep", type=Path, help="keep the fedetf runs and profiles in this folder")
    parser.add_argument("--make-pfl-env", type=Path, metavar="DIR", help="create the pfl environment and exit")
    parser.add_argument("--pfl-worker", help=argparse.SUPPRESS)
    parser.add_argument("--inline-worker", help=argparse.SUPPRESS)
    parser.add_argument("--inline-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-marker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.make_pfl_env:
        print(f"pfl environment ready: --pfl-python {make_pfl_env(args.make_pfl_env)}")
        return 0
    if args.inline_worker:
        inline_worker(Workload(**json.loads(args.inline_worker)), args.inline_out, args.supernodes)
        return 0
    if args.pfl_worker:
        res = pfl_worker(Workload(**json.loads(args.pfl_worker)), args.profile_marker)
        print(RESULT + json.dumps(res), flush=True)
        return 0

    w = Workload(
        clients=args.clients,
        cohort=args.cohort,
        samples=args.samples,
        alpha=args.alpha,
        beta=args.beta,
        rounds=args.rounds,
        local_epochs=args.local_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        clip_grad_norm=args.clip_grad_norm,
        seed=args.seed,
        threads=args.threads,
        warmup=max(1, args.warmup),
    )
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before the SuperLink starts: its whole tree inherits it
        os.environ[var] = str(w.threads)
    supernodes = args.supernodes or w.cohort
    work = args.keep or Path(tempfile.mkdtemp(prefix="pfl-race-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[SideResult]] = {s: [] for s in args.sides}
    print(f"workload: {w}; fraction-train={w.fraction}; {supernodes} SuperNodes; {os.cpu_count()} cores")
    try:
        for rep in range(args.repeats):
            for side in args.sides:
                if side == "pfl":
                    r = run_pfl(w, args.pfl_python, args.profile, work)
                elif side == "fedetf":
                    r = run_fedetf(w, work, supernodes, args.profile, args.actors)
                else:
                    r = run_inline(w, work, supernodes)
                results[side].append(r)
                print(
                    f"[{rep + 1}/{args.repeats}] {side}: {r.per_round:.3f} s/round (median {r.median:.3f}, "
                    f"warm-up {r.round_seconds[: w.warmup]}), start-up {r.startup_seconds:.1f} s, accuracy "
                    f"{r.accuracy[-1]:.4f}, load {r.load_before:.2f}->{r.load_after:.2f}, CPU/round {r.cpu_per_round}",
                    flush=True,
                )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        payload = {"workload": asdict(w), "runs": {s: [asdict(r) for r in rs] for s, rs in results.items()}}
        args.json.write_text(json.dumps(payload, indent=1))
    show_profiles([r for rs in results.values() for r in rs])
    if results.get("fedetf"):  # the SuperLink starts with the first run only
        link_start = max(r.extra["superlink_start_seconds"] for r in results["fedetf"])
        for r in results["fedetf"]:
            r.extra["superlink_start_seconds"] = link_start
    if "pfl" in results and "fedetf" in results:
        command = "python benchmarks/pfl_race.py " + " ".join(argv if argv is not None else sys.argv[1:])
        inline = best(results["fedetf-inline"]) if results.get("fedetf-inline") else None
        print("\n" + markdown(w, best(results["pfl"]), best(results["fedetf"]), command.strip(), inline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
