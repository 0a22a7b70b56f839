"""FedGELA ablations on digits PCDD 10x3 (10 local epochs): temperature, adaptation, aggregation weights.

python benchmarks/fedgela_ablation.py [--rounds 30] [--seeds 0 1 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from simulations.compare import format_table, load_runs, summary_table
from simulations.local import run_local

VARIANTS = {
    "T0.2": {},
    "T1": {"temperature": 1.0},
    "T1e-5": {"temperature": 1e-5},
    "noadapt": {"adaptation": "none"},
    "batches": {"aggregation-weight": "batches", "drop-last": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="fedetf-ablation-"))
    dirs = []
    for name, extra in VARIANTS.items():
        for seed in args.seeds:
            d = out / f"{name}-s{seed}"
            run_local(
                {
                    "strategy": "fedgela",
                    "num-server-rounds": args.rounds,
                    "local-epochs": 10,
                    "seed": seed,
                    "output-dir": str(d),
                    **extra,
                }
            )
            dirs.append(d)
    print("accuracy in %, mean ± std over seeds; 'last' = final round, 'best' = best round of the run\n")
    print(format_table(summary_table(load_runs(dirs), ["temperature", "adaptation", "aggregation-weight"])))


if __name__ == "__main__":
    main()
