"""Cross-device scale: 100, 10,000 and 100,000 Synthetic(1, 1) clients on a few SuperNodes, 100 sampled per round.

Every client holds ``--samples`` (100) samples (``synthetic-samples``), so each round trains 100 x 90 = 9,000
samples whatever the number of clients; clients are generated from the seed when a node serves them. The
SuperNodes (``--supernodes``, 4) serve the clients in turn, and a stateful method keeps its clients' states in the
run's on-disk store (``client_states.sqlite``). Each run goes through ``flwr run`` with the Ray simulation engine,
one CPU per ClientApp, no all-client evaluation (``evaluate-every=0``).

Printed per method and client count: seconds per round (median from round 2 on, and its ratio to the smallest
count), start-up to round 1 (``flwr run`` to the first round's start), peak memory of all the run's processes (summed
PSS: flwr CLI, SuperLink, simulation process, Ray's processes and workers) and its ratio, and the size of the state
store at the end. Goals: round time and peak memory at 100,000 within 1.2x of 100; start-up under 30 s at any count.

    python benchmarks/scale.py [--clients 100 10000 100000] [--methods fedavg scaffold] [--rounds 5]
        [--supernodes 4] [--samples 100] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLED = 100


def config(method: str, clients: int, rounds: int, samples: int) -> dict[str, object]:
    return {
        "method": method,
        "dataset": "synthetic",
        "synthetic-samples": samples,
        "num-clients": clients,
        "fraction-train": SAMPLED / clients,
        "num-server-rounds": rounds,
        "local-epochs": 1,
        "batch-size": 10,
        "lr": 0.01,
        "evaluate-every": 0,
        "checkpoint-every": 0,
        "seed": 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", nargs="+", type=int, default=[100, 10_000, 100_000])
    parser.add_argument("--methods", nargs="+", default=["fedavg", "scaffold"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--supernodes", type=int, default=4)
    parser.add_argument("--samples", type=int, default=100, help="samples per client")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    if min(args.clients) < SAMPLED:
        parser.error(f"--clients: at least {SAMPLED} (the clients sampled per round)")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks.round_cost import launch

    work = args.work or Path(tempfile.mkdtemp(prefix="scale-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"# scale on {os.cpu_count()} cores: Synthetic(1, 1), {SAMPLED} clients per round, {args.samples} samples "
        f"each, {args.supernodes} SuperNodes; {work}"
    )
    table = []
    for method in args.methods:
        base = None
        for n in args.clients:
            label = f"{method}-{n}"
            res = launch("flwr", config(method, n, args.rounds, args.samples), work, label, supernodes=args.supernodes)
            store = res.out / "client_states.sqlite"
            size = store.stat().st_size / 2**20 if store.exists() else 0.0
            base = base or res
            row = (method, n, res.steady, res.steady / base.steady, res.startup, res.peak_pss_mib)
            table.append((*row, res.peak_pss_mib / base.peak_pss_mib, size))
            print(
                f"{label}: rounds {', '.join(f'{r:.2f}' for r in res.rounds)} s; start-up {res.startup:.1f} s; "
                f"peak PSS {res.peak_pss_mib:.0f} MiB; store {size:.1f} MiB; load {res.load[0]:.1f}->{res.load[1]:.1f}"
            )
    print(
        "\n| method | clients | s/round (median r2..) | vs smallest | start-up to round 1 s | peak PSS MiB "
        "| vs smallest | state store MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for method, n, steady, ratio, startup, pss, pss_ratio, size in table:
        print(
            f"| {method} | {n:,} | {steady:.2f} | {ratio:.2f}x | {startup:.1f} | {pss:.0f} | {pss_ratio:.2f}x "
            f"| {size:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
