"""Every method, FedGELA's variants and local-only training on one setting, over seeds: the comparison table.

Each row of the table is one ``fedetf-sweep`` (real ``flwr run`` simulations, resumable: rerun the same
command to continue a cut run from its checkpoint or to add seeds). Every row runs the same data,
split, seeds, initialisation, rounds and shared optimiser settings; no method is tuned. The table
gives, per row, the mean over seeds of each run's mean of its last 5 rounds (mean ± std over seeds)
for the generic and personal views, the difference to FedAvg paired by seed (mean ± std, seeds
won / seeds paired), and the best round (mean over seeds of each run's best round) apart.

    python benchmarks/comparison.py --setting digits --seeds 0-4 --out runs/comparison
    python benchmarks/comparison.py --setting mnist5k-authors --seeds 0-2 --out runs/comparison  # .[bench]
    python benchmarks/comparison.py --setting digits --out runs/comparison --table-only --markdown table.md

``--rows`` picks rows by name; ``--app DIR`` runs another checkout of the app (e.g. an older
commit, to measure what a fix changed). ``--jobs N`` runs the runs in N processes side by side,
each on the same ServerApp and ClientApp in-process (``simulations.inprocess``: no Ray, one client
at a time, one torch thread), into the same folders with the same resume; ``--gpu-jobs G`` puts G
of them on CUDA (``device=cuda``), the others on the CPU.

    python benchmarks/comparison.py --setting mnist5k-authors --seeds 0-2 --out runs/comparison --jobs 16 --gpu-jobs 4
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from fedetf.metrics import fairness
from simulations.experiments.plan import toml_value
from simulations.experiments.runs import finished
from simulations.experiments.state import move_aside, resumable
from simulations.experiments.stats import load_runs, summary_table
from simulations.experiments.sweep import parse_seeds
from strategies.registry import METHODS

#: FedGELA's principled variants, each one setting away from the authors' release.
VARIANTS: dict[str, dict[str, object]] = {
    "fedgela-T1e-5": {"fedgela.temperature": 1e-5},  # the authors' README example
    "v1-normalized": {"fedgela.features": "normalized"},
    "v2-additive": {"fedgela.prior": "additive"},
    "v3-softmask": {"fedgela.missing-alpha": 0.5},
    "v4-distill": {"fedgela.distill": 0.1},
    "v5-nearest-etf": {"fedgela.nearest-etf": True},
    "v6-d=K": {"feature-dim": 10},
}
#: Table rows: name -> (method, its overrides). FedAvg first (the baseline), local-only last.
ROWS: dict[str, tuple[str, dict[str, object]]] = {
    **{m: (m, {}) for m in METHODS if m != "local"},
    **{name: ("fedgela", overrides) for name, overrides in VARIANTS.items()},
    "local": ("local", {}),
}
AUTHORS = {
    "model": "simple-cnn",
    "feature-dim": 84,
    "normalize": False,
    "pcdd-assignment": "sequential",
    "drop-last": True,
    "aggregation-weight": "batches",
}
#: Settings: the shared run config of every row.
SETTINGS: dict[str, dict[str, object]] = {
    "digits": {"dataset": "digits", "model": "cnn", "partition": "pcdd", "classes-per-client": 3},
    "mnist5k-authors": {"dataset": "mnist-5k", "partition": "pcdd", "classes-per-client": 3, **AUTHORS},
}
COMMON = {"num-clients": 10, "num-server-rounds": 20, "local-epochs": 10}
VIEWS = ("generic_acc", "personal_acc_before", "personal_acc")
#: The worst 10% of clients' personal accuracy after local training (from clients.csv; every client trains
#: every round in these settings).
WORST = "personal_acc_worst10"


def worst_clients(run_dir: Path, last_k: int = 5) -> dict[str, float]:
    """Per round, the mean personal accuracy (after local training) of the worst 10% of the round's clients
    (at least one); its last round, best round and mean of the last ``last_k`` rounds."""
    clients = pd.read_csv(run_dir / "clients.csv")
    per_round = clients.groupby("round")["personal_acc"].apply(lambda a: fairness(a.to_numpy())["worst10"])
    per_round = per_round.sort_index()
    return {"last": per_round.iloc[-1], "best": per_round.max(), f"last{last_k}": per_round.iloc[-last_k:].mean()}


def seed_list(text: str) -> list[int]:
    """``0-4`` or ``0,2,3`` (the sweep's parser, comma-separated)."""
    return parse_seeds(text.split(","))


def run_row(name: str, setting: str, seed_list: list[int], out: Path, app: Path | None) -> int:
    """One row's sweep (it skips finished runs and continues cut ones); its exit status."""
    method, overrides = ROWS[name]
    config = {**SETTINGS[setting], **COMMON, **overrides}
    cmd = [sys.executable, "-m", "simulations.experiments.sweep", "--methods", method, "--no-progress"]
    cmd += ["--seeds", *map(str, seed_list), "--out", str(out / setting / name)]
    for key, value in config.items():
        cmd += ["--set", f"{key}={toml_value(value)}"]
    if app is not None:
        cmd += ["--app", str(app)]
    print(f"== {setting} / {name}", flush=True)
    return subprocess.run(cmd, env=os.environ.copy(), check=False).returncode


def run_config(name: str, setting: str, seed: int) -> dict[str, object]:
    """The run config of one row's run at ``seed`` (what its sweep passes as ``--set`` plus method and seed)."""
    method, overrides = ROWS[name]
    return {**SETTINGS[setting], **COMMON, **overrides, "method": method, "seed": seed}


def run_dir(name: str, setting: str, seed: int, out: Path) -> Path:
    """Where a row's run at ``seed`` writes: the folder its ``fedetf-sweep`` would use."""
    return out / setting / name / "runs" / f"{ROWS[name][0]}_seed{seed}"


_DEVICE = "cpu"


def _init_worker(slots: mp.Queue) -> None:  # type: ignore[type-arg]
    """One torch thread, this worker's device, and Flower's console log silenced (each run's log is kept)."""
    global _DEVICE
    import torch

    torch.set_num_threads(1)
    _DEVICE = slots.get()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)


def run_in_process_job(task: tuple[str, str, int, Path]) -> tuple[str, int, str | None, float]:
    """One run in this worker process (finished runs skipped, cut runs continued); (row, seed, error, seconds)."""
    from simulations.inprocess import run_in_process

    name, setting, seed, out = task
    folder = run_dir(name, setting, seed, out).resolve()
    config = run_config(name, setting, seed)
    if finished(folder):
        return name, seed, None, 0.0
    overrides = {**config, "output-dir": str(folder), "device": _DEVICE}
    if resumable(folder, config):
        overrides["resume"] = True
    elif folder.exists() and any(folder.iterdir()):
        move_aside(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    outcome = run_in_process(overrides)
    log = folder.parent.parent / "logs" / f"{folder.name}.inprocess.log"
    log.parent.mkdir(exist_ok=True)
    with log.open("a") as f:
        f.write("\n".join(outcome.lines) + "\n")
    error = None if outcome.exit is None else (outcome.errors or [f"exit {outcome.exit}"])[0]
    return name, seed, error, time.perf_counter() - t0


def run_parallel(
    names: list[str], setting: str, seed_list: list[int], out: Path, jobs: int, gpu_jobs: int
) -> list[str]:
    """Every (row, seed) in ``jobs`` in-process workers, seed by seed; the failed ones."""
    ctx = mp.get_context("spawn")
    slots = ctx.Queue()
    for i in range(jobs):
        slots.put("cuda" if i < gpu_jobs else "cpu")
    main = [n for n in names if n not in VARIANTS]  # the table's main rows first, seed by seed
    tasks = [
        (n, setting, seed, out)
        for group in (main, [n for n in names if n in VARIANTS])
        for seed in seed_list
        for n in group
    ]
    failed = []
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with ctx.Pool(jobs, initializer=_init_worker, initargs=(slots,), maxtasksperchild=None) as pool:
        for name, seed, error, seconds in pool.imap_unordered(run_in_process_job, tasks, chunksize=1):
            status = "ok" if error is None else error
            print(f"== {setting} / {name} seed {seed}: {status} ({seconds:.0f} s)", flush=True)
            if error is not None:
                failed.append(f"{name} seed {seed}")
    return failed


def table(out: Path, setting: str, last_k: int = 5) -> pd.DataFrame:
    """The comparison table of every finished run under ``out/setting``."""
    dirs = [d for d in sorted((out / setting).glob("*/runs/*")) if finished(d)]
    runs = load_runs(dirs, last_k=last_k)
    runs["method"] = [Path(d).parent.parent.name for d in runs["run_dir"]]  # the row name
    worst = pd.DataFrame([worst_clients(Path(d), last_k) for d in runs["run_dir"]], index=runs.index)
    runs[[f"{WORST}_{c}" for c in worst.columns]] = worst.to_numpy()
    summary = summary_table(runs, ["method"], (*VIEWS, WORST), last_k=last_k, baseline="fedavg")
    order = [r for r in ROWS if r in summary.index] + [r for r in summary.index if r not in ROWS]
    summary = summary.reindex(order)
    cols: dict[str, list[str]] = {"row": [], "seeds": []}
    for row, r in summary.iterrows():
        cols["row"].append(str(row))
        cols["seeds"].append(str(int(r["runs"])))
        for v in (*VIEWS, WORST):
            mean, std = r[f"{v}_last{last_k}"], r[f"{v}_last{last_k}_std"]
            cols.setdefault(f"{v} (last {last_k})", []).append("n/a" if pd.isna(mean) else _pct(mean, std))
        for v in VIEWS:
            d = r.get(f"{v}_diff")
            cell = ""
            if d is not None and not pd.isna(d):
                cell = f"{100 * d:+.1f} ± {100 * r[f'{v}_diff_std']:.1f} ({r[f'{v}_wins']}/{r[f'{v}_paired']})"
            elif row != "fedavg":
                cell = "n/a"
            cols.setdefault(f"{v} - fedavg", []).append(cell)
        for v in ("generic_acc", "personal_acc"):
            mean = r[f"{v}_best"]
            cols.setdefault(f"{v} (best round)", []).append("n/a" if pd.isna(mean) else _pct(mean, r[f"{v}_best_std"]))
    return pd.DataFrame(cols)


def _pct(mean: float, std: float) -> str:
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def markdown(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    return head + "\n".join("| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=list(SETTINGS), required=True)
    parser.add_argument("--seeds", type=seed_list, default=seed_list("0-4"), help="e.g. 0-4 or 0,1,2")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--app", type=Path, help="the Flower app folder to run (default: this project)")
    parser.add_argument("--jobs", type=int, default=0, help="run in-process in this many processes (default: sweeps)")
    parser.add_argument("--gpu-jobs", type=int, default=0, help="of --jobs, how many run on CUDA")
    parser.add_argument("--table-only", action="store_true", help="build the table from finished runs only")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()
    failed: list[str] = []
    if args.jobs and not args.table_only:
        failed = run_parallel(args.rows, args.setting, args.seeds, args.out, args.jobs, args.gpu_jobs)
    elif not args.table_only:
        for seed in args.seeds:  # seed by seed: a cut comparison already holds paired results
            for name in args.rows:
                if run_row(name, args.setting, [seed], args.out, args.app):
                    failed.append(f"{name} seed {seed}")
    md = markdown(table(args.out, args.setting))
    print(f"\n{args.setting}: mean of the last 5 rounds, in %, mean ± std over seeds; paired with FedAvg by seed\n")
    print(md)
    if args.markdown:
        args.markdown.write_text(md + "\n")
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
