"""FedGELA vs FedAvg on digits, PCDD 10 clients x 3 classes, 30 rounds.

Runs every (strategy, local-epochs, seed) as a real Flower simulation on the
Ray backend with identical settings otherwise, then prints mean +- std over
seeds of the last-round and best-round personal and generic accuracy.

    python benchmarks/digits_pcdd.py [--rounds 30] [--seeds 0 1 2] [--epochs 1 10] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from simulations.compare import format_table, load_runs, plot_curves, summary_table
from simulations.local import run_local


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--strategies", nargs="+", default=["fedavg", "fedgela"])
    parser.add_argument("--out", type=Path, default=None, help="folder for the runs (default: a temp folder)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="fedetf-bench-"))
    dirs = []
    for epochs in args.epochs:
        for strategy in args.strategies:
            for seed in args.seeds:
                d = out / f"{strategy}-e{epochs}-s{seed}"
                run_local(
                    {
                        "strategy": strategy,
                        "dataset": "digits",
                        "partition": "pcdd",
                        "classes-per-client": 3,
                        "num-clients": 10,
                        "num-server-rounds": args.rounds,
                        "local-epochs": epochs,
                        "seed": seed,
                        "output-dir": str(d),
                    }
                )
                dirs.append(d)
    table = summary_table(load_runs(dirs), ["local-epochs", "strategy"])
    print(f"\ndigits PCDD 10x3, {args.rounds} rounds, seeds {args.seeds}; runs in {out}")
    print("accuracy in %, mean ± std over seeds; 'last' = final round, 'best' = best round of the run\n")
    print(format_table(table))
    plot_curves(dirs, ["local-epochs", "strategy"], out / "curves.png")
    print(f"\ncurves: {out / 'curves.png'}")


if __name__ == "__main__":
    main()
