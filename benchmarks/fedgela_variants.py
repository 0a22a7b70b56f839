"""FedGELA as released, its variants (shared/spec/etf-variants.md) and FedAvg, over seeds, as they fall.

Every run is a real Flower simulation (Ray backend) with identical data, split,
seed, initialisation, rounds and optimiser for every method; no method is
tuned. Prints, per setting, the mean over the last 5 rounds (mean +- std over
seeds) of generic accuracy, generic balanced accuracy and personal accuracy
before and after local training, and each method's paired difference from
FedAvg (mean +- std over seeds, seeds won).

    python benchmarks/fedgela_variants.py --out DIR [--settings digits-cnn mnist5k-authors]
        [--splits pcdd dir0.1] [--epochs 1 10] [--seeds 0 1 2 3 4] [--rounds 20] [--methods ...]

Rerunning with the same --out skips finished runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from simulations.experiments.stats import load_runs, paired_differences, summary_table
from simulations.local import run_local

METHODS: dict[str, dict[str, object]] = {
    "fedavg": {"method": "fedavg"},
    "fedgela": {"method": "fedgela"},  # T = 0.2, the authors' code
    "fedgela-T1e-5": {"method": "fedgela", "fedgela.temperature": 1e-5},  # their README example
    "v1-normalized": {"method": "fedgela", "fedgela.features": "normalized"},
    "v2-additive": {"method": "fedgela", "fedgela.prior": "additive"},
    "v3-softmask": {"method": "fedgela", "fedgela.missing-alpha": 0.5},
    "v4-distill": {"method": "fedgela", "fedgela.distill": 0.1},
    "v5-nearest-etf": {"method": "fedgela", "fedgela.nearest-etf": True},
    "v6-d=K": {"method": "fedgela", "feature-dim": 10},
}
AUTHORS = {
    "model": "simple-cnn",
    "feature-dim": 84,
    "normalize": False,
    "pcdd-assignment": "sequential",
    "drop-last": True,
    "aggregation-weight": "batches",
}
SETTINGS: dict[str, dict[str, object]] = {
    "digits-cnn": {"dataset": "digits", "model": "cnn"},
    "mnist5k-authors": {"dataset": "mnist-5k", **AUTHORS},  # the authors' protocol on real MNIST images
    "mnist5k-cnn": {"dataset": "mnist-5k", "model": "cnn"},  # same data, our BatchNorm CNN
}
SPLITS: dict[str, dict[str, object]] = {
    "pcdd": {"partition": "pcdd", "classes-per-client": 3},
    "dir0.1": {"partition": "dirichlet", "dirichlet-beta": 0.1},
}
VIEWS = ["generic_acc", "generic_bacc", "personal_acc_before", "personal_acc"]


def run_all(args: argparse.Namespace) -> list[Path]:
    dirs = []
    for setting in args.settings:
        for split in args.splits:
            for epochs in args.epochs:
                for name in args.methods:
                    for seed in args.seeds:
                        d = args.out / f"{setting}_{split}_e{epochs}_{name}_s{seed}"
                        dirs.append(d)
                        if (d / "run.json").exists() and json.loads((d / "run.json").read_text())[
                            "status"
                        ] == "finished":
                            continue
                        if d.exists():
                            d.rename(d.with_name(d.name + ".incomplete"))
                        overrides = {**SETTINGS[setting], **SPLITS[split], **METHODS[name]}
                        if name == "v6-d=K" and setting.startswith("mnist5k-authors"):
                            overrides["feature-dim"] = 10
                        run_local(
                            {
                                **overrides,
                                "num-clients": 10,
                                "num-server-rounds": args.rounds,
                                "local-epochs": epochs,
                                "seed": seed,
                                "output-dir": str(d),
                            }
                        )
    return dirs


def table(dirs: list[Path], last_k: int = 5) -> pd.DataFrame:
    """One row per (setting, split, epochs, method): last-k means over seeds and paired differences."""
    runs = load_runs(dirs, last_k=last_k)
    names = [Path(r).name.split("_") for r in runs["run_dir"]]
    runs["setting"], runs["split"], runs["variant"] = (
        [n[0] for n in names],
        [n[1] for n in names],
        [n[3] for n in names],
    )
    runs["method"] = runs["variant"]  # compare's paired differences pair by this key against 'fedavg'
    by = ["setting", "split", "local-epochs", "method"]
    summary = summary_table(runs, by, VIEWS, last_k=last_k)
    rows = []
    for key, row in summary.iterrows():
        out = dict(zip(by, key, strict=True))
        for v in VIEWS:
            out[v] = f"{100 * row[f'{v}_last{last_k}']:.1f} ± {100 * row[f'{v}_last{last_k}_std']:.1f}"
        rows.append(out)
    frame = pd.DataFrame(rows).set_index(by)
    for v in ("generic_acc", "personal_acc_before", "personal_acc"):
        diffs = paired_differences(runs, by, v, baseline="fedavg", last_k=last_k)
        col = f"{v} - fedavg"
        frame[col] = ""
        for key, d in diffs.iterrows():
            frame.loc[key, col] = (
                f"{100 * d['diff']:+.1f} ± {100 * d['diff_std']:.1f} ({int(d['wins'])}/{int(d['paired'])})"
            )
    order = {m: i for i, m in enumerate(METHODS)}
    return frame.sort_index(key=lambda idx: idx.map(order) if idx.name == "method" else idx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--settings", nargs="+", default=["digits-cnn"], choices=list(SETTINGS))
    parser.add_argument("--splits", nargs="+", default=["pcdd", "dir0.1"], choices=list(SPLITS))
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dirs = run_all(args)
    frame = table(dirs)
    flat = frame.reset_index()
    md = "\n".join(
        ["| " + " | ".join(flat.columns) + " |", "|" + "---|" * len(flat.columns)]
        + ["| " + " | ".join(str(v) for v in row) + " |" for row in flat.itertuples(index=False)]
    )
    print(
        f"\nmean over the last 5 of {args.rounds} rounds, in %, mean ± std over seeds {args.seeds}; "
        "paired difference from FedAvg over the same seeds (seeds won / seeds)\n"
    )
    print(md)
    if args.markdown:
        args.markdown.write_text(md + "\n")


if __name__ == "__main__":
    main()
