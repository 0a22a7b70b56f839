"""``fedetf-report``: the comparison table, curves, a per-client heat map and neural-collapse figures of finished runs.

Usage: ``fedetf-report SWEEP_DIR`` or ``fedetf-report RUN_DIR [RUN_DIR ...] --out DIR``
[--by method KEY ...] [--baseline fedavg] [--last-k 5] [--metric acc|bacc]; ``fedetf-report --partition
[RUN_DIR | KEY=VALUE ...] [--out DIR]`` draws a run's ``partition.png`` without training.

Nothing is rerun: the report reads ``run.json``, ``metrics.csv`` and ``clients.csv`` of finished
runs (and ``sweep.json`` of a sweep, for its failed runs and its grid keys). It prints the comparison
(per group, the mean over seeds of each run's mean of the last k rounds, the difference to the
baseline paired by seed with its spread, the seeds won) and, apart, the best-round numbers, and
writes into ``--out`` (default ``SWEEP_DIR/report``): ``table.md``, ``table.csv`` (every statistic
of every view), ``curves_acc.png``, ``curves_bacc.png``, ``heatmap.png``/``.csv``, ``clients.png``/``.csv``
(the distribution of every client's personal accuracy, from ``evaluations.csv``), ``nc_*.png``
(when the runs have neural-collapse columns) and ``index.html``, one self-contained page (with each distinct
partition's ``partition.png`` of the runs).
"""

from __future__ import annotations

import argparse
import base64
import html
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from fedetf.io import atomic_write_text
from simulations.experiments import figures, runs, stats, tables
from simulations.experiments.plan import SweepError, parse_value, split_assignment
from simulations.experiments.state import read_state
from simulations.partition_plot import PARTITION_FILE, PARTITION_KEYS

#: What each view means, for headings and captions.
VIEW_TEXT = {
    "personal_acc": "personal accuracy after local training (each client's model on its own test split)",
    "personal_acc_before": "personal accuracy before local training (the received model with the client's adaptation)",
    "personal_acc_client_mean": "personal accuracy after local training, plain mean over clients",
    "generic_acc": "generic accuracy (the aggregated model on the global test set)",
    "personal_bacc": "personal balanced accuracy after local training",
    "personal_bacc_before": "personal balanced accuracy before local training",
    "generic_bacc": "generic balanced accuracy",
    "all_personal_acc": "every client's personal accuracy, pooled (the all-client evaluation)",
    "all_personal_acc_worst10": "mean personal accuracy of the worst 10% of clients",
    "all_personal_acc_min": "the worst client's personal accuracy",
    "unseen_personal_acc": "held-out clients' personal accuracy, pooled (clients that never trained)",
}
EXCLUDED_BY = {"seed", "output-dir", "strategy", "method", "run_dir", "rounds"}
CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}img{max-width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#555;max-width:700px}.failed{color:#a00}code{background:#f5f5f5}
"""


class ReportError(ValueError):
    """Bad arguments or no usable runs; the message is one line."""


@dataclass
class Sources:
    """The runs a report covers."""

    dirs: list[Path]
    sweep: dict[str, Any] | None = None
    sweep_dir: Path | None = None
    skipped: list[str] = field(default_factory=list)


def find_runs(paths: Sequence[Path]) -> Sources:
    """The finished runs of a sweep folder (one path with ``sweep.json``) or of run folders.

    A folder without ``run.json`` is searched one level down (its ``runs/``, or itself as a folder of runs).
    ``skipped`` lists the runs left out that did not fail (pending, running, unfinished).
    """
    if len(paths) == 1 and (state := read_state(paths[0])) is not None:
        sweep_dir = paths[0]
        dirs, skipped = [], []
        for entry in state.get("runs", []):
            d = sweep_dir / "runs" / entry["name"]
            if runs.finished(d):
                dirs.append(d)
            elif entry.get("status") != "failed":
                skipped.append(f"{entry['name']} ({entry.get('status', 'pending')})")
        return Sources(dirs, state, sweep_dir, skipped)
    dirs, skipped = [], []
    for p in paths:
        if runs.run_info(p) is not None:
            candidates = [p]
        else:
            inner = p / "runs" if (p / "runs").is_dir() else p
            candidates = sorted(d for d in inner.glob("*") if runs.run_info(d) is not None)
            if not candidates:
                raise ReportError(f"{p} is neither a sweep folder (sweep.json) nor a run folder (run.json)")
        for d in candidates:
            if runs.finished(d):
                dirs.append(d)
            else:
                skipped.append(f"{d} (not finished)")
    return Sources(dirs, skipped=skipped)


def infer_by(frame: pd.DataFrame) -> list[str]:
    """``method`` plus the config keys whose value differs between runs of one method (seeds aside)."""
    config_keys: set[str] = set()
    for d in frame["run_dir"]:
        config_keys |= set(runs.config(Path(d)))
    by = ["method"]
    for key in sorted(config_keys - EXCLUDED_BY):
        if key not in frame.columns:
            continue
        values = frame[[key, "method"]].astype(str)
        values = values[values[key] != stats.NOT_USED]
        if (values.groupby("method")[key].nunique() > 1).any():
            by.append(key)
    return by


@dataclass
class Report:
    """What :func:`build_report` wrote, and the comparison it printed."""

    out: Path
    files: list[Path]
    notes: list[str]
    failed: list[dict[str, Any]]
    text: str = ""


def _headline_views(metric: str, views: Sequence[str]) -> list[str]:
    return [v for v in (f"generic_{metric}", f"personal_{metric}") if v in views]


def _table_parts(
    table: pd.DataFrame, views: dict[str, list[str]], baseline: str, last_k: int
) -> list[tuple[str, pd.DataFrame]]:
    """(heading, table) of the comparison, the best round (apart) and the other views."""
    head, other = views["headline"], views["other"]
    last = f"mean of the last {last_k} rounds"
    parts = [
        (f"Comparison: {last}", tables.comparison(table, head, baseline, last_k)),
        (
            "Best round, reported apart (each run's highest round: a choice made after seeing the results)",
            tables.best_round(table, head),
        ),
    ]
    if other:
        parts.append((f"Other views: {last}", tables.comparison(table, other, baseline, last_k)))
    return parts


def _markdown(parts: Sequence[tuple[str, pd.DataFrame]]) -> str:
    return "\n\n".join(f"## {h}\n\n{tables.markdown(t)}" for h, t in parts)


def build_report(
    paths: Sequence[Path],
    out: Path | None = None,
    by: Sequence[str] | None = None,
    baseline: str = "fedavg",
    last_k: int = 5,
    metric: str = "acc",
) -> Report:
    """Write the report of the finished runs under ``paths`` into ``out``.

    Parameters
    ----------
    paths
        One sweep folder (with ``sweep.json``), or run folders (or folders of runs).
    out
        Output folder; default ``SWEEP_DIR/report`` (required for run folders).
    by
        Grouping keys; default: ``method`` and the sweep's grid keys (for run folders: the config keys
        that differ between runs of one method).
    baseline
        Method the others are paired with, by seed.
    last_k
        Rounds averaged at the end of each run (and of each client, for the heat map).
    metric
        ``acc`` or ``bacc`` (balanced accuracy): the generic and personal views of the comparison table.
    """
    if last_k < 1:
        raise ReportError(f"--last-k {last_k}: allowed: an integer >= 1")
    src = find_runs([Path(p) for p in paths])
    if out is None:
        if src.sweep_dir is None:
            raise ReportError("give --out DIR when reporting run folders (the default is SWEEP_DIR/report)")
        out = src.sweep_dir / "report"
    failed = [r for r in (src.sweep or {}).get("runs", []) if r.get("status") == "failed"]
    if not src.dirs:
        raise ReportError(f"no finished run under {', '.join(map(str, paths))}" + _failed_hint(failed))
    out.mkdir(parents=True, exist_ok=True)
    frame = stats.load_runs(src.dirs, last_k)
    if by is None:
        sweep_by = (src.sweep or {}).get("report_by")
        by = [k for k in sweep_by if k in frame.columns] if sweep_by else infer_by(frame)
    by = list(by)
    try:
        stats.group_labels(frame, by)
    except KeyError as e:
        raise ReportError(str(e.args[0])) from None
    per_metric = {m: list(stats.views_for(m, frame, last_k)) for m in ("acc", "bacc")}
    all_views = [*per_metric["acc"], *per_metric["bacc"]]
    head = _headline_views(metric, per_metric[metric])
    if not head:
        raise ReportError(f"no generic_{metric} or personal_{metric} column is present in every run's metrics.csv")
    views = {"headline": head, "other": [v for v in all_views if v not in head]}
    notes: list[str] = []
    use_baseline: str | None = baseline
    if stats.method_key(by) is None:
        notes.append("no paired differences: the grouping keys name no method")
        use_baseline = None
    elif baseline not in set(frame["method"].astype(str)):
        notes.append(f"no paired differences: no {baseline!r} run among the runs")
    try:
        table = stats.summary_table(frame, by, all_views, last_k, use_baseline)
    except ValueError as e:
        notes.append(f"no paired differences: {e}")
        table = stats.summary_table(frame, by, all_views, last_k, None)
    notes.insert(0, stats.seeds_note(table))
    if (frame["rounds"] < last_k).any():
        notes.append(f"some runs have fewer than {last_k} rounds; their last-{last_k} mean uses all rounds")
    atomic_write_text(out / "table.csv", table.to_csv())
    files = [out / "table.csv"]

    shown: list[tuple[Path, str]] = []
    for m, metric_views in per_metric.items():
        curves = [v for v in metric_views if not v.endswith("client_mean") and v not in stats.FAIRNESS_VIEWS]
        if curves:
            path = out / f"curves_{m}.png"
            figures.plot_curves(frame, by, curves, path)
            shown.append((path, "per-round " + "; ".join(f"{v}: {VIEW_TEXT.get(v, v)}" for v in curves)))
    heat = stats.client_table(frame, by, "personal_acc", last_k)
    heat_shown: list[tuple[Path, str]] = []
    if heat.empty:
        notes.append("heat map skipped: no clients.csv with personal_acc")
    else:
        figures.plot_heatmap(
            heat, out / "heatmap.png", f"personal_acc per client, mean of the last {last_k} rounds and seeds"
        )
        atomic_write_text(out / "heatmap.csv", heat.to_csv())
        heat_shown.append(
            (
                out / "heatmap.png",
                f"personal accuracy per client (after local training), mean of each client's last {last_k} "
                "evaluations and of the seeds",
            )
        )
        files.append(out / "heatmap.csv")
    spread = stats.client_evaluations(frame, by, last_k)
    if not spread.empty:
        figures.plot_client_distribution(
            spread, out / "clients.png", f"personal accuracy per client, mean of its last {last_k} evaluations"
        )
        atomic_write_text(out / "clients.csv", spread.to_csv(index=False))
        heat_shown.append(
            (
                out / "clients.png",
                f"the distribution of the clients' personal accuracy (every client, each the mean of its last "
                f"{last_k} evaluations; one point per client and seed); held-out clients beside, hatched",
            )
        )
        files.append(out / "clients.csv")
    nc, nc_notes = figures.nc_figures(frame, by, out)
    notes += nc_notes
    files += [p for p, _ in shown + heat_shown + nc]

    not_in = [f"failed: {f['name']}: {f.get('error') or 'no error recorded'}" for f in failed]
    not_in += [f"unfinished: {s}" for s in src.skipped]
    header = (
        f"{len(frame)} finished runs, grouped by {', '.join(by)}; accuracies in %, mean ± std over seeds; "
        f"the mean of the last {last_k} rounds is taken per run, then over seeds"
    )
    parts = _table_parts(table, views, baseline, last_k)
    md = [header, _markdown(parts), "\n".join(f"- {n}" for n in notes)]
    if not_in:
        md.append("## Runs not in the tables\n\n" + "\n".join(f"- {line}" for line in not_in))
    atomic_write_text(out / "table.md", "\n\n".join(md) + "\n")
    files.append(out / "table.md")

    name = src.sweep_dir.name if src.sweep_dir else ", ".join(Path(p).name for p in paths)
    command = " ".join((src.sweep or {}).get("command", []))
    sections = [
        (
            "Overview",
            f"<p>{html.escape(header)}. Built {datetime.now():%Y-%m-%d %H:%M} from existing results "
            f"({html.escape(str(src.sweep_dir or ', '.join(map(str, paths))))}).</p>"
            + (f"<p>Sweep command: <code>{html.escape(command)}</code></p>" if command else "")
            + _ul(notes),
        )
    ]
    if not_in:
        sections.append(("Runs not in the tables", f'<div class="failed">{_ul(not_in)}</div>'))
    sections += [(h, tables.html(t)) for h, t in parts]
    sections.append(("Curves", "".join(_img(p, c) for p, c in shown)))
    if heat_shown:
        sections.append(("Personal accuracy per client", "".join(_img(p, c) for p, c in heat_shown)))
    sections.append(("Neural collapse", "".join(_img(p, c) for p, c in nc) or _ul(nc_notes)))
    if partitions := partition_figures(src.dirs):
        sections.append(("Partitions", "".join(_img(p, c) for p, c in partitions)))
    _write_html(out / "index.html", f"fedetf report: {name}", sections)
    files.append(out / "index.html")
    printed = "\n\n".join([header, _markdown(parts[:2]), "\n".join(notes)])
    return Report(out, files, notes, failed, printed)


def partition_figures(dirs: Sequence[Path]) -> list[tuple[Path, str]]:
    """Each distinct partition's ``partition.png`` once (runs equal in ``PARTITION_KEYS`` share one), with a
    caption naming its setting and runs."""
    found: dict[tuple[Any, ...], tuple[Path, list[str]]] = {}
    for d in dirs:
        if (d / PARTITION_FILE).is_file():
            config = runs.config(d)
            found.setdefault(tuple(config.get(k) for k in PARTITION_KEYS), (d / PARTITION_FILE, []))[1].append(d.name)
    out = []
    for key, (path, names) in found.items():
        setting = " ".join(
            f"{k}={v}"
            for k, v in zip(PARTITION_KEYS, key, strict=True)
            if v is not None and (not k.startswith("synthetic-") or key[0] == "synthetic")
        )
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        out.append((path, f"train label counts per client, {setting}; runs: {shown}"))
    return out


def draw_partition(args: Sequence[str], out: Path) -> Path:
    """``out/partition.png`` of the run config given by a run folder or ``KEY=VALUE`` overrides (TOML values,
    quotes optional) over the app's defaults, without training."""
    from simulations.config import ConfigError, parse_run_config
    from simulations.local import default_run_config
    from simulations.partition_plot import write_partition_png
    from simulations.task import federation

    raw = default_run_config()
    try:
        for arg in args:
            if Path(arg).is_dir():
                if runs.run_info(Path(arg)) is None:
                    raise ReportError(f"--partition {arg}: a folder without run.json; allowed: a run folder")
                raw.update(runs.config(Path(arg)))
            else:
                key, value = split_assignment(arg, "--partition")
                raw[key] = parse_value(value)
        raw.pop("output-dir", None)
        cfg = parse_run_config(raw)
    except (SweepError, ConfigError) as e:
        raise ReportError(str(e)) from None
    out.mkdir(parents=True, exist_ok=True)
    write_partition_png(federation(cfg), out / PARTITION_FILE)
    return out / PARTITION_FILE


def _ul(items: Sequence[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>" if items else ""


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'
        f"<figcaption>{html.escape(path.name)}: {html.escape(caption)}</figcaption></figure>"
    )


def _write_html(path: Path, title: str, sections: list[tuple[str, str]]) -> None:
    """One self-contained page: ``sections`` are (heading, HTML body)."""
    body = "\n".join(f"<h2>{html.escape(h)}</h2>\n{b}" for h, b in sections)
    atomic_write_text(
        path,
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head>\n<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n",
    )


def _failed_hint(failed: list[dict[str, Any]]) -> str:
    if not failed:
        return ""
    return f"; {len(failed)} failed, first: {failed[0]['name']}: {failed[0].get('error')}"


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point ``fedetf-report``."""
    parser = argparse.ArgumentParser(prog="fedetf-report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="a sweep folder, or run folders (with --partition: see there)")
    parser.add_argument("--out", type=Path, help="report folder (default: SWEEP_DIR/report; --partition: .)")
    parser.add_argument(
        "--partition",
        action="store_true",
        help="only draw partition.png of a run folder or of KEY=VALUE run-config overrides, without training",
    )
    parser.add_argument("--by", nargs="+", help="grouping keys (default: method and the sweep's grid keys)")
    parser.add_argument("--baseline", default="fedavg", help="method the others are paired with (default: fedavg)")
    parser.add_argument("--last-k", type=int, default=5, help="final rounds averaged (default: 5)")
    parser.add_argument(
        "--metric", choices=["acc", "bacc"], default="acc", help="the comparison's metric: accuracy or balanced"
    )
    args = parser.parse_args(argv)
    if args.partition:
        try:
            print(f"partition: {draw_partition(args.paths, args.out or Path('.'))}")
        except ReportError as e:
            print(f"fedetf-report: error: {e}", file=sys.stderr)
            sys.exit(2)
        return
    if not args.paths:
        parser.error("give a sweep folder or run folders")
    try:
        report = build_report([Path(p) for p in args.paths], args.out, args.by, args.baseline, args.last_k, args.metric)
    except ReportError as e:
        print(f"fedetf-report: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(report.text)
    for f in report.failed:
        print(f"failed run: {f['name']}: {f.get('error')}")
    print(f"report: {report.out / 'index.html'} ({len(report.files)} files in {report.out})")


if __name__ == "__main__":
    main()
