"""Compare finished runs: mean +- std of last-round and best-round metrics.

Usage: ``fedetf-compare RUN_DIR [RUN_DIR ...] [--by strategy local-epochs]
[--csv table.csv] [--plot curves.png]``. Runs are grouped by the given config
keys; seeds (and any other key not grouped on) are averaged over.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

VIEWS = ("personal_acc", "generic_acc", "personal_bacc", "generic_bacc")


def load_runs(dirs: Sequence[Path]) -> pd.DataFrame:
    """One row per run: its config plus last-round and best-round values per view."""
    rows = []
    for d in dirs:
        info = json.loads((d / "run.json").read_text())
        if info.get("status") != "finished":
            raise ValueError(f"{d / 'run.json'}: run did not finish (status {info.get('status')!r})")
        metrics = pd.read_csv(d / "metrics.csv")
        row = {**info["config"], "run_dir": str(d), "rounds": int(metrics["round"].max())}
        for view in VIEWS:
            row[f"{view}_last"] = float(metrics[view].iloc[-1])
            row[f"{view}_best"] = float(metrics[view].max())
        rows.append(row)
    return pd.DataFrame(rows)


def summary_table(runs: pd.DataFrame, by: Sequence[str], views: Sequence[str] = VIEWS[:2]) -> pd.DataFrame:
    """Mean and std over runs within each group, for last and best rounds."""
    cols = [f"{v}_{w}" for v in views for w in ("last", "best")]
    grouped = runs.groupby(list(by), sort=True)[cols]
    table = grouped.mean().join(grouped.std(ddof=0).add_suffix("_std"))
    table["runs"] = grouped.size()
    return table


def format_table(table: pd.DataFrame, views: Sequence[str] = VIEWS[:2]) -> str:
    """Markdown table of ``mean +- std`` (in %)."""
    names = list(table.index.names)
    header = names + [f"{v} ({w} round)" for v in views for w in ("last", "best")] + ["runs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, row in table.iterrows():
        key = key if isinstance(key, tuple) else (key,)
        cells = [str(k) for k in key]
        for v in views:
            for w in ("last", "best"):
                c = f"{v}_{w}"
                cells.append(f"{100 * row[c]:.1f} ± {100 * row[c + '_std']:.1f}")
        cells.append(str(int(row["runs"])))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(dirs: Sequence[Path], by: Sequence[str], path: Path, views: Sequence[str] = VIEWS[:2]) -> None:
    """Per-round personal and generic ``views`` (two metrics.csv columns), mean over runs in each group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = []
    for d in dirs:
        cfg = json.loads((d / "run.json").read_text())["config"]
        m = pd.read_csv(d / "metrics.csv")
        m["group"] = " ".join(f"{k}={cfg[k]}" for k in by)
        frames.append(m)
    data = pd.concat(frames)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, view in zip(axes, views, strict=True):
        for group, g in data.groupby("group"):
            mean = g.groupby("round")[view].mean()
            ax.plot(mean.index, mean.values, label=group)
        ax.set_title(view)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("balanced accuracy" if views[0].endswith("bacc") else "accuracy")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (each with run.json and metrics.csv)")
    parser.add_argument("--by", nargs="+", default=["strategy", "dataset", "partition"], help="config keys to group")
    parser.add_argument("--csv", type=Path, help="write the table as CSV")
    parser.add_argument("--plot", type=Path, help="write per-round curves as PNG")
    parser.add_argument(
        "--metric",
        choices=["acc", "bacc"],
        default="acc",
        help="accuracy or balanced accuracy (Fed-ISIC2019's headline)",
    )
    args = parser.parse_args(argv)
    views = (f"personal_{args.metric}", f"generic_{args.metric}")
    dirs = [d for d in args.runs if (d / "run.json").exists()]
    if not dirs:
        parser.error("no run folder with run.json given")
    table = summary_table(load_runs(dirs), args.by, views)
    print(format_table(table, views))
    if args.csv:
        table.to_csv(args.csv)
    if args.plot:
        plot_curves(dirs, args.by, args.plot, views)


if __name__ == "__main__":
    main()
