"""What a fix changed: an older checkout's ServerApp and ClientApp on the comparison's digits setting, against this one.

The old checkout (e.g. ``git worktree add /tmp/old <commit>``) runs in-process on this checkout's
in-memory grid (``simulations.grid.InProcessGrid``: every message goes at once to the ClientApp of
the node's partition), one run per worker process, into ``OUT/<method>/runs/<method>_seed<s>``
with the digits setting of ``benchmarks/comparison.py`` (PCDD 10 x 3, cnn, 20 rounds, 10 local
epochs). The table puts each method's last-5-round means next to the finished runs of the
comparison (``--after``, default ``runs/comparison/digits``), seed by seed, with the difference.

    python benchmarks/before_after.py --old /tmp/old --out runs/before --methods fedavg scaffold --seeds 0-2 --jobs 2

FedAvg is the control: no fix touched it, so its two columns differ only by the machine the runs
ran on (floating-point order), which bounds what the other differences can be read to.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pandas as pd

CURRENT = Path(__file__).resolve().parent.parent
VIEWS = ("generic_acc", "personal_acc_before", "personal_acc")


def _load(name: str, path: Path, replace: dict[str, str] | None = None) -> Any:
    """Module ``name`` from ``path`` (its source with ``replace`` applied), without touching ``simulations``."""
    src = path.read_text()
    for old, new in (replace or {}).items():
        src = src.replace(old, new)
    module = type(sys)(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    exec(compile(src, str(path), "exec"), module.__dict__)  # noqa: S102 - this checkout's own grid module
    return module


def run_old(task: tuple[str, str, str, int]) -> tuple[str, int, str | None, float]:
    """One run of the old checkout's apps, in this worker process: (method, seed, error, seconds)."""
    old, out, method, seed = task
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, old)  # the old checkout's packages shadow this one's
    _load("current_contracts", CURRENT / "simulations" / "contracts.py")
    grid_module = _load(
        "current_grid",
        CURRENT / "simulations" / "grid.py",
        {"from simulations.contracts import NODE": "from current_contracts import NODE"},
    )
    from flwr.app import Context, RecordDict
    from flwr.common.config import flatten_dict
    from flwr.supercore.task_identity import TaskIdentity

    from simulations import client_app, server_app

    if not Path(server_app.__file__).resolve().is_relative_to(Path(old).resolve()):
        raise RuntimeError(f"imported {server_app.__file__}, not the old checkout's")
    with (Path(old) / "pyproject.toml").open("rb") as f:
        config = dict(flatten_dict(tomllib.load(f)["tool"]["flwr"]["app"]["config"]))
    folder = (Path(out) / method / "runs" / f"{method}_seed{seed}").resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    config.update(SETTING, method=method, seed=seed, **{"output-dir": str(folder)})
    grid = grid_module.InProcessGrid(client_app.app, config, int(config["num-clients"]))
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    t0 = time.perf_counter()
    try:
        server_app.main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config))
    except SystemExit as exc:
        return method, seed, f"exit {exc.code}", time.perf_counter() - t0
    return method, seed, None, time.perf_counter() - t0


def last5(run_dir: Path) -> dict[str, float]:
    metrics = pd.read_csv(run_dir / "metrics.csv").sort_values("round")
    return {v: 100 * float(metrics[v].tail(5).mean()) for v in VIEWS}


def table(before: Path, after: Path, methods: list[str], seeds: list[int]) -> pd.DataFrame:
    """Per method: the mean over seeds of the last-5 means before and after, and after - before."""
    rows = []
    for method in methods:
        runs = [
            (before / method / "runs" / f"{method}_seed{s}", after / method / "runs" / f"{method}_seed{s}")
            for s in seeds
        ]
        pairs = [(last5(b), last5(a)) for b, a in runs if (b / "metrics.csv").exists() and (a / "metrics.csv").exists()]
        if not pairs:
            continue
        row: dict[str, Any] = {"method": method, "seeds": len(pairs)}
        for v in VIEWS:
            b = sum(p[0][v] for p in pairs) / len(pairs)
            a = sum(p[1][v] for p in pairs) / len(pairs)
            row |= {f"{v} before": f"{b:.1f}", f"{v} after": f"{a:.1f}", f"{v} change": f"{a - b:+.1f}"}
        rows.append(row)
    return pd.DataFrame(rows)


SETTING = {
    "dataset": "digits",
    "model": "cnn",
    "partition": "pcdd",
    "classes-per-client": 3,
    "num-clients": 10,
    "num-server-rounds": 20,
    "local-epochs": 10,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="the older checkout")
    parser.add_argument("--out", type=Path, required=True, help="where its runs go")
    parser.add_argument("--after", type=Path, default=CURRENT / "runs" / "comparison" / "digits")
    parser.add_argument("--methods", nargs="+", required=True)
    parser.add_argument("--seeds", default="0-2", help="e.g. 0-2 or 0,1")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    from simulations.experiments.sweep import parse_seeds  # here: worker processes import the old checkout's

    seeds = parse_seeds(args.seeds.split(","))
    if not args.table_only:
        tasks = [
            (str(args.old.resolve()), str(args.out), m, s)
            for s in seeds
            for m in args.methods
            if not (args.out / m / "runs" / f"{m}_seed{s}" / "metrics.csv").exists()
        ]
        with mp.get_context("spawn").Pool(args.jobs, maxtasksperchild=1) as pool:
            for method, seed, error, seconds in pool.imap_unordered(run_old, tasks, chunksize=1):
                print(f"== {method} seed {seed}: {error or 'ok'} ({seconds:.0f} s)", flush=True)
    frame = table(args.out, args.after, args.methods, seeds)
    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns)
    print(head + "\n" + "\n".join("| " + " | ".join(map(str, r)) + " |" for r in frame.itertuples(index=False)))


if __name__ == "__main__":
    main()
