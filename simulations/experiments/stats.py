"""Statistics of finished runs: per group (method, grid values) mean and std over seeds, paired differences.

Runs are grouped by config keys; seeds (and any other key not grouped on) are averaged over. For
every view (a metrics.csv column present in all runs) :func:`summary_table` gives the last round,
the best round and the mean of the last k rounds, each as mean and std over the runs of a group
(ddof=0). Against a baseline method, runs are paired by seed and by every other grouping key: the
mean and std of the per-seed differences of the last-k mean, and the seeds won.

A dotted key ``ns.x`` (a method setting such as ``fedgela.temperature``) is shown only for runs
whose ``run.json`` lists it under ``method_settings``; other runs show ``-``. Old runs that name
the method ``strategy`` rather than ``method`` are read as if they used ``method``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simulations.experiments import runs as run_files

METHOD_KEYS = ("method", "strategy")
NOT_USED = "-"
STAT_NAMES = {"last": "last round", "best": "best round"}
#: metrics.csv columns compared for ``--metric m``, in table order; each is used only if present in all runs.
VIEW_TEMPLATES = ("generic_{m}", "personal_{m}", "personal_{m}_before", "personal_{m}_client_mean")
VIEWS = ("personal_acc", "generic_acc", "personal_bacc", "generic_bacc")
#: The all-client evaluation's views (``evaluate-every``), compared with ``--metric acc``: pooled, worst 10% of
#: clients, minimum, and the held-out clients' pooled accuracy.
FAIRNESS_VIEWS = ("all_personal_acc", "all_personal_acc_worst10", "all_personal_acc_min", "unseen_personal_acc")


def stats(last_k: int = 5) -> tuple[str, ...]:
    """Column suffixes of the per-run statistics: last round, best round, mean of the last ``last_k`` rounds."""
    return ("last", "best", f"last{last_k}")


def stat_name(stat: str) -> str:
    """Human-readable name of a statistic suffix, e.g. ``"mean of last 5 rounds"`` for ``"last5"``."""
    return STAT_NAMES.get(stat) or f"mean of last {stat.removeprefix('last')} rounds"


def views_for(metric: str, runs: pd.DataFrame, last_k: int = 5) -> tuple[str, ...]:
    """The views of ``metric`` (``"acc"`` or ``"bacc"``) that every run in ``runs`` has."""
    views = [t.format(m=metric) for t in VIEW_TEMPLATES] + (list(FAIRNESS_VIEWS) if metric == "acc" else [])
    return tuple(v for v in views if f"{v}_last{last_k}" in runs.columns and runs[f"{v}_last{last_k}"].notna().all())


def _read_run(d: Path) -> dict[str, Any]:
    info = run_files.run_info(d)
    if info is None or info.status != "finished":
        status = info.status if info else None
        raise ValueError(f"{d / 'run.json'}: run did not finish (status {status!r})")
    config = dict(info.config)
    if "method" not in config and "strategy" in config:  # old runs
        config["method"] = config["strategy"]
    if "strategy" not in config and "method" in config:  # keeps `--by strategy` working on new runs
        config["strategy"] = config["method"]
    settings = info.method_settings or {}
    # A dotted key is a method setting: shown only where the run's method uses it.
    for key in list(config):
        if "." in key and key not in settings:
            config[key] = NOT_USED
    config.update(settings)
    config["seed"] = info.seed if info.seed is not None else config.get("seed")
    return config


def load_runs(dirs: Sequence[Path], last_k: int = 5) -> pd.DataFrame:
    """One row per finished run.

    Parameters
    ----------
    dirs
        Run folders, each with ``run.json`` and ``metrics.csv``.
    last_k
        Number of final rounds averaged for the ``_last{k}`` statistic (all rounds if fewer).

    Returns
    -------
    DataFrame
        The run's config (dotted method settings the run does not use read ``"-"``), ``seed``,
        ``run_dir``, ``rounds``, and per metrics column ``c``: ``c_last``, ``c_best``, ``c_last{k}``.
    """
    if last_k < 1:
        raise ValueError(f"last_k must be >= 1, got {last_k}")
    rows = []
    for d in map(Path, dirs):
        row = {**_read_run(d), "run_dir": str(d)}
        metrics = pd.read_csv(d / "metrics.csv").sort_values("round")
        row["rounds"] = int(metrics["round"].max())
        for col in metrics.columns.drop("round"):
            values = pd.to_numeric(metrics[col], errors="coerce").dropna()
            if values.empty:
                continue
            row[f"{col}_last"] = float(values.iloc[-1])
            row[f"{col}_best"] = float(values.max())
            row[f"{col}_last{last_k}"] = float(values.iloc[-last_k:].mean())
        rows.append(row)
    runs = pd.DataFrame(rows)
    dotted = [c for c in runs.columns if "." in c]
    runs[dotted] = runs[dotted].astype(object).where(runs[dotted].notna(), NOT_USED)
    return runs


def method_key(by: Sequence[str]) -> str | None:
    """The ``--by`` key naming the method (``method``, or ``strategy`` for old tables), if any."""
    return next((k for k in by if k in METHOD_KEYS), None)


def _sort_key(value: Any) -> tuple[int, float, str]:
    if value == NOT_USED:
        return (0, 0.0, "")
    if isinstance(value, int | float | np.number) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def group_labels(runs: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """The ``by`` columns of ``runs``, missing values as ``"-"``; raises KeyError for a key no run has."""
    missing = [k for k in by if k not in runs.columns]
    if missing:
        known = sorted(c for c in runs.columns if not c.startswith(("generic_", "personal_")))
        raise KeyError(f"no run has config key(s) {missing}; known keys: {known}")
    labels = runs[list(by)].astype(object)
    return labels.where(labels.notna(), NOT_USED)


def groups(runs: pd.DataFrame, by: Sequence[str]) -> list[tuple[tuple[Any, ...], pd.DataFrame]]:
    labels = group_labels(runs, by)
    keys = [tuple(r) for r in labels.itertuples(index=False)]
    out: dict[tuple[Any, ...], list[int]] = {}
    for pos, key in enumerate(keys):
        out.setdefault(key, []).append(pos)
    order = sorted(out, key=lambda key: tuple(_sort_key(v) for v in key))
    return [(key, runs.iloc[out[key]]) for key in order]


def _index(keys: list[tuple[Any, ...]], by: Sequence[str]) -> pd.Index:
    if len(by) == 1:
        return pd.Index([k[0] for k in keys], name=by[0], dtype=object)
    return pd.MultiIndex.from_tuples(keys, names=list(by))


def paired_differences(
    runs: pd.DataFrame, by: Sequence[str], view: str, baseline: str = "fedavg", last_k: int = 5
) -> pd.DataFrame:
    """Per-seed differences of the last-k mean of ``view`` against the baseline method.

    Each non-baseline group is paired with baseline runs of the same seed and the same values of
    every ``by`` key other than the method key (``"-"``, a setting one side does not use, matches
    anything). Runs sharing a group and seed are averaged first.

    Parameters
    ----------
    runs
        Output of :func:`load_runs`.
    by
        Grouping keys; must include ``method`` (or ``strategy``).
    view
        A metrics column, e.g. ``"personal_acc"``.
    baseline
        Method the others are compared with.
    last_k
        Which ``_last{k}`` statistic to compare.

    Returns
    -------
    DataFrame
        Indexed like :func:`summary_table` over the non-baseline groups, with columns ``diff``
        (mean of the paired differences), ``diff_std`` (their std, ddof=0), ``wins`` (seeds where
        the method is higher) and ``paired`` (number of paired seeds). Empty if there is no
        baseline run.
    """
    mk = method_key(by)
    if mk is None:
        raise ValueError(f"--by {list(by)} names no method key (one of {METHOD_KEYS})")
    col = f"{view}_last{last_k}"
    others = [i for i, k in enumerate(by) if k != mk]
    m = list(by).index(mk)
    grouped = groups(runs, by)
    base = [(key, g) for key, g in grouped if key[m] == baseline]
    rows: list[dict[str, Any]] = []
    keys: list[tuple[Any, ...]] = []
    if not base:
        return pd.DataFrame(columns=["diff", "diff_std", "wins", "paired"], index=_index([], by))

    def per_seed(g: pd.DataFrame) -> pd.Series:
        g = g[g["seed"].notna()]
        return g.groupby("seed")[col].mean()

    for key, g in grouped:
        if key[m] == baseline:
            continue
        match = [
            (bkey, bg) for bkey, bg in base if all(key[i] == bkey[i] or NOT_USED in (key[i], bkey[i]) for i in others)
        ]
        if len(match) > 1:
            raise ValueError(
                f"group {dict(zip(by, key, strict=True))} matches {len(match)} baseline groups "
                f"{[dict(zip(by, b, strict=True)) for b, _ in match]}; give runs of one baseline setting"
            )
        mine = per_seed(g)
        theirs = per_seed(match[0][1]) if match else pd.Series(dtype=float)
        seeds = mine.index.intersection(theirs.index)
        diff = (mine[seeds] - theirs[seeds]).to_numpy(dtype=float)
        rows.append(
            {
                "diff": float(diff.mean()) if diff.size else math.nan,
                "diff_std": float(diff.std(ddof=0)) if diff.size else math.nan,
                "wins": int((diff > 0).sum()),
                "paired": int(diff.size),
            }
        )
        keys.append(key)
    return pd.DataFrame(rows, index=_index(keys, by), columns=["diff", "diff_std", "wins", "paired"])


def summary_table(
    runs: pd.DataFrame,
    by: Sequence[str],
    views: Sequence[str] = VIEWS[:2],
    last_k: int = 5,
    baseline: str | None = None,
) -> pd.DataFrame:
    """Mean and std (ddof=0) over the runs of each group, per view and statistic.

    Parameters
    ----------
    runs
        Output of :func:`load_runs` (with the same ``last_k``).
    by
        Config keys forming the groups.
    views
        Metrics columns to report.
    last_k
        Rounds averaged for the ``_last{k}`` statistic.
    baseline
        If given and present among the runs, add the :func:`paired_differences` columns
        ``{view}_diff``, ``{view}_diff_std``, ``{view}_wins``, ``{view}_paired`` (NaN for the baseline).

    Returns
    -------
    DataFrame
        Indexed by ``by``; columns ``{view}_{stat}`` and ``{view}_{stat}_std`` for stat in
        ``last``, ``best``, ``last{k}``; ``runs`` (runs per group); then the paired columns.
    """
    cols = [f"{v}_{s}" for v in views for s in stats(last_k)]
    absent = [c for c in cols if c not in runs.columns]
    if absent:
        raise KeyError(f"runs lack {absent}")
    grouped = groups(runs, by)
    rows = []
    for _, g in grouped:
        values = g[cols].astype(float)
        row = values.mean().to_dict() | values.std(ddof=0).add_suffix("_std").to_dict()
        row["runs"] = len(g)
        rows.append(row)
    order = [c for v in views for s in stats(last_k) for c in (f"{v}_{s}", f"{v}_{s}_std")]
    table = pd.DataFrame(rows, index=_index([k for k, _ in grouped], by), columns=[*order, "runs"])
    if baseline is not None and method_key(by) is not None:
        for v in views:
            diffs = paired_differences(runs, by, v, baseline, last_k)
            if diffs.empty:
                break
            table = table.join(diffs.astype({"wins": "Int64", "paired": "Int64"}).add_prefix(f"{v}_"))
    return table


def seeds_note(table: pd.DataFrame) -> str:
    """One line: ``mean ± std over N seeds`` (N per group where groups differ)."""
    counts = sorted(set(table["runs"].astype(int)))
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"mean ± std over {n} seeds (ddof=0; runs per group in column seeds), in %"


def curve_label(key: tuple[Any, ...], by: Sequence[str]) -> str:
    """Legend label of a group: the method's name, then ``key=value`` for the settings it uses."""
    mk = method_key(by)
    parts = [str(v) if k == mk else f"{k}={v}" for k, v in zip(by, key, strict=True) if v != NOT_USED]
    return " ".join(parts)


def client_table(runs: pd.DataFrame, by: Sequence[str], view: str = "personal_acc", last_k: int = 5) -> pd.DataFrame:
    """Per client (rows, ``partition_id``) and group (columns): ``view`` averaged over the client's last
    ``last_k`` evaluations of each run, then over the group's runs (seeds)."""
    columns = {}
    for key, g in groups(runs, by):
        per_run = []
        for d in g["run_dir"]:
            path = Path(d) / "clients.csv"
            if not path.exists():
                continue
            clients = pd.read_csv(path)
            if clients.empty or view not in clients.columns:
                continue
            clients = clients.sort_values("round")
            per_run.append(clients.groupby("partition_id")[view].apply(lambda s: s.iloc[-last_k:].mean()))
        if per_run:
            columns[curve_label(key, by)] = pd.concat(per_run, axis=1).mean(axis=1)
    table = pd.DataFrame(columns)
    table.index.name = "partition_id"
    return table.sort_index()


def client_evaluations(runs: pd.DataFrame, by: Sequence[str], last_k: int = 5) -> pd.DataFrame:
    """One row per (run, client) of the all-client evaluation (``evaluations.csv``): the group's label
    (``group``), ``seed``, ``partition_id``, ``unseen`` and ``personal_acc``, the mean of the client's last
    ``last_k`` evaluations. Empty when no run has evaluations."""
    rows = []
    for key, g in groups(runs, by):
        label = curve_label(key, by)
        for _, run in g.iterrows():
            path = Path(run["run_dir"]) / "evaluations.csv"
            if not path.exists():
                continue
            ev = pd.read_csv(path).sort_values("round")
            if ev.empty:
                continue
            last = ev.groupby(["partition_id", "unseen"])["personal_acc"].apply(lambda s: s.iloc[-last_k:].mean())
            for (pid, unseen), acc in last.items():
                rows.append(
                    {"group": label, "seed": run["seed"], "partition_id": pid, "unseen": unseen, "personal_acc": acc}
                )
    return pd.DataFrame(rows, columns=["group", "seed", "partition_id", "unseen", "personal_acc"])
