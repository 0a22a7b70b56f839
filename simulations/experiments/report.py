"""Build a sweep's report from existing results: tables, curves, a per-client heat map, neural-collapse figures, HTML.

Usage: ``fedetf-report SWEEP_DIR`` or ``fedetf-report RUN_DIR [RUN_DIR ...] --out DIR``
[--by method KEY ...] [--baseline fedavg] [--last-k 5].

Nothing is rerun: the report reads ``run.json``, ``metrics.csv`` and ``clients.csv`` of finished
runs (and ``sweep.json`` of a sweep, for its failed runs and its grid keys) and writes into
``--out`` (default ``SWEEP_DIR/report``): ``table.csv``, ``table.md``, ``curves_acc.png``,
``curves_bacc.png``, ``heatmap.png``, ``nc_*.png`` (when the runs have neural-collapse columns)
and ``index.html``, one self-contained page showing all of them. The statistics and curves come
from :mod:`simulations.compare`.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fedetf.io import atomic_path, atomic_write_text
from simulations import compare
from simulations.sweep import read_state

#: What each view means, for table headings and figure captions.
VIEW_TEXT = {
    "personal_acc": "personal accuracy after local training (each client's model on its own test split)",
    "personal_acc_before": "personal accuracy before local training (the received model with the client's adaptation)",
    "personal_acc_client_mean": "personal accuracy after local training, plain mean over clients",
    "generic_acc": "generic accuracy (the aggregated model on the global test set)",
    "personal_bacc": "personal balanced accuracy after local training",
    "personal_bacc_before": "personal balanced accuracy before local training",
    "generic_bacc": "generic balanced accuracy",
}
#: Neural-collapse columns of metrics.csv: per-round, on the generic model; then per sampled client, averaged.
NC_TEXT = {
    "nc1": "NC1 = tr(S_W S_B^+)/K (0 = no within-class spread)",
    "nc_equiangularity": "equiangularity: std of the class means' pairwise cosines (0 = equiangular)",
    "nc_self_duality": "self-duality: ||W/||W|| - M/||M|| ||_F (0 = classifier aligned with the class means)",
    "nc_equinorm": "equinorm: std/mean of the class-mean norms (0 = equal norms)",
    "nc_cos_gap": "|mean cosine + 1/(K-1)| (0 = simplex angles)",
    "angle_missing": "mean pairwise angle of locally missing classes [degrees]",
    "angle_present": "mean pairwise angle of locally present classes [degrees]",
    "space_missing_share": "share of the class-mean energy spent on locally missing classes",
}
NC_GENERIC = ("nc1", "nc_equiangularity", "nc_self_duality", "nc_equinorm", "nc_cos_gap")
#: Panels of one figure (same unit, shared y axis).
NC_CLIENT = (("angle_missing", "angle_present"), ("space_missing_share",))
EXCLUDED_BY = {"seed", "output-dir", "strategy", "method", "run_dir", "rounds"}


class ReportError(ValueError):
    """Bad arguments or no usable runs; the message is one line."""


@dataclass
class Sources:
    """The runs a report covers."""

    dirs: list[Path]
    sweep: dict[str, Any] | None = None
    sweep_dir: Path | None = None
    skipped: list[str] = field(default_factory=list)


def _finished(d: Path) -> bool:
    try:
        return json.loads((d / "run.json").read_text()).get("status") == "finished"
    except (OSError, ValueError):
        return False


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
            if _finished(d):
                dirs.append(d)
            elif entry.get("status") != "failed":
                skipped.append(f"{entry['name']} ({entry.get('status', 'pending')})")
        return Sources(dirs, state, sweep_dir, skipped)
    dirs, skipped = [], []
    for p in paths:
        if (p / "run.json").exists():
            candidates = [p]
        else:
            inner = p / "runs" if (p / "runs").is_dir() else p
            candidates = sorted(d for d in inner.glob("*") if (d / "run.json").exists())
            if not candidates:
                raise ReportError(f"{p} is neither a sweep folder (sweep.json) nor a run folder (run.json)")
        for d in candidates:
            if _finished(d):
                dirs.append(d)
            else:
                skipped.append(f"{d} (not finished)")
    return Sources(dirs, skipped=skipped)


def infer_by(runs: pd.DataFrame) -> list[str]:
    """``method`` plus the config keys whose value differs between runs of one method (seeds aside)."""
    config_keys: set[str] = set()
    for d in runs["run_dir"]:
        config_keys |= set(json.loads((Path(d) / "run.json").read_text()).get("config", {}))
    by = ["method"]
    for key in sorted(config_keys - EXCLUDED_BY):
        if key not in runs.columns:
            continue
        values = runs[[key, "method"]].astype(str)
        values = values[values[key] != compare.NOT_USED]
        if (values.groupby("method")[key].nunique() > 1).any():
            by.append(key)
    return by


# ----------------------------------------------------------------------------- figures


def _save(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


def nc_figures(runs: pd.DataFrame, by: Sequence[str], out: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """Per-round neural-collapse curves (one line per group); the columns no run set are noted instead."""
    columns = {d: set(pd.read_csv(Path(d) / "metrics.csv", nrows=0).columns) for d in runs["run_dir"]}

    def everywhere(col: str) -> bool:
        return all(col in cols for cols in columns.values()) and _has_values(runs, col)

    figures, notes = [], []
    panels = [(c,) for c in NC_GENERIC] + list(NC_CLIENT)
    for group in panels:
        present = [c for c in group if everywhere(c)]
        if not present:
            continue
        fig = compare.plot_curves(runs, by, present)
        for ax, col in zip(fig.axes, present, strict=False):
            ax.set_ylabel(col)
        fig.suptitle("; ".join(NC_TEXT[c] for c in present), fontsize=8)
        fig.tight_layout()
        name = present[0] if len(present) == 1 else "angles"
        path = out / f"{name if name.startswith('nc') else 'nc_' + name}.png"
        _save(fig, path)
        figures.append((path, "; ".join(NC_TEXT[c] for c in present)))
    if not figures:
        notes.append(
            "neural-collapse figures skipped: metrics.csv has no nc1/angle columns in every run "
            "(run with diagnostics=true, e.g. --set diagnostics=true)"
        )
    return figures, notes


def _has_values(runs: pd.DataFrame, col: str) -> bool:
    for d in runs["run_dir"]:
        values = pd.to_numeric(pd.read_csv(Path(d) / "metrics.csv")[col], errors="coerce")
        if values.notna().any():
            return True
    return False


def client_table(runs: pd.DataFrame, by: Sequence[str], view: str = "personal_acc", last_k: int = 5) -> pd.DataFrame:
    """Per client (rows, ``partition_id``) and group (columns): ``view`` averaged over the client's last
    ``last_k`` evaluations of each run, then over the group's runs (seeds)."""
    columns = {}
    for key, g in compare._groups(runs, by):
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
            columns[compare.curve_label(key, by)] = pd.concat(per_run, axis=1).mean(axis=1)
    table = pd.DataFrame(columns)
    table.index.name = "partition_id"
    return table.sort_index()


def plot_heatmap(table: pd.DataFrame, path: Path, title: str) -> None:
    """Clients x groups heat map of accuracies in %, with the values written in the cells."""
    n_rows, n_cols = table.shape
    fig = Figure(figsize=(max(5.0, 1.3 * n_cols + 2.5), max(2.5, 0.32 * n_rows + 1.8)))
    ax = fig.subplots()
    image = ax.imshow(100 * table.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(n_cols), [str(c) for c in table.columns], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(n_rows), [str(i) for i in table.index], fontsize=7 if n_rows > 20 else 8)
    ax.set_ylabel("client (partition_id)")
    if n_rows * n_cols <= 600:
        for (i, j), v in np.ndenumerate(table.to_numpy(dtype=float)):
            if not np.isnan(v):
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
    fig.colorbar(image, ax=ax, label="%")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


# ----------------------------------------------------------------------------- tables and HTML


def markdown_tables(table: pd.DataFrame, views: Sequence[str], baseline: str) -> str:
    """One Markdown table per view (:func:`simulations.compare.format_table`), each under a heading."""
    parts = []
    for v in views:
        parts.append(f"### {v}: {VIEW_TEXT.get(v, v)}\n\n{compare.format_table(table, [v], baseline)}")
    return "\n\n".join(parts)


def md_to_html(text: str) -> str:
    """The Markdown this report writes (headings, pipe tables, bullet lines, paragraphs) as HTML."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([html.escape(c.strip()) for c in lines[i].strip().strip("|").split("|")])
                i += 1
            head, body = rows[0], [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]
            out.append("<table><thead><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body]
            out.append("</tbody></table>")
            continue
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 6)
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{html.escape(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
        i += 1
    return "\n".join(out)


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'
        f"<figcaption>{html.escape(path.name)}: {html.escape(caption)}</figcaption></figure>"
    )


CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}img{max-width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#555;max-width:700px}.failed{color:#a00}code{background:#f5f5f5}
"""


def write_html(path: Path, title: str, sections: list[tuple[str, str]]) -> None:
    """One self-contained page: ``sections`` are (heading, HTML body)."""
    body = "\n".join(f"<h2>{html.escape(h)}</h2>\n{b}" for h, b in sections)
    atomic_write_text(
        path,
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head>\n<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n",
    )


# ----------------------------------------------------------------------------- the report


@dataclass
class Report:
    """What :func:`build_report` wrote."""

    out: Path
    files: list[Path]
    notes: list[str]
    failed: list[dict[str, Any]]


def build_report(
    paths: Sequence[Path],
    out: Path | None = None,
    by: Sequence[str] | None = None,
    baseline: str = "fedavg",
    last_k: int = 5,
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
    runs = compare.load_runs(src.dirs, last_k)
    if by is None:
        sweep_by = (src.sweep or {}).get("report_by")
        by = [k for k in sweep_by if k in runs.columns] if sweep_by else infer_by(runs)
    by = list(by)
    try:
        compare.group_labels(runs, by)
    except KeyError as e:
        raise ReportError(str(e.args[0])) from None
    notes: list[str] = []
    per_metric = {m: compare.views_for(m, runs, last_k) for m in ("acc", "bacc")}
    views = [*per_metric["acc"], *per_metric["bacc"]]
    if not views:
        raise ReportError("no accuracy column is present in every run's metrics.csv")
    use_baseline: str | None = baseline
    if compare.method_key(by) is None:
        notes.append("no paired differences: the grouping keys name no method")
        use_baseline = None
    elif baseline not in set(runs["method"].astype(str)):
        notes.append(f"no paired differences: no {baseline!r} run among the runs")
    try:
        table = compare.summary_table(runs, by, views, last_k, use_baseline)
    except ValueError as e:
        notes.append(f"no paired differences: {e}")
        table = compare.summary_table(runs, by, views, last_k, None)
    notes.insert(0, compare.seeds_note(table))
    if (runs["rounds"] < last_k).any():
        notes.append(f"some runs have fewer than {last_k} rounds; their last-{last_k} mean uses all rounds")
    files: list[Path] = []

    atomic_write_text(out / "table.csv", table.to_csv())
    files.append(out / "table.csv")

    figures: list[tuple[Path, str]] = []
    for metric, metric_views in per_metric.items():
        shown = [v for v in metric_views if not v.endswith("client_mean")]
        if shown:
            path = out / f"curves_{metric}.png"
            compare.plot_curves(runs, by, shown, path)
            figures.append((path, "per-round " + "; ".join(f"{v}: {VIEW_TEXT.get(v, v)}" for v in shown)))

    heat = client_table(runs, by, "personal_acc", last_k)
    heat_figure: list[tuple[Path, str]] = []
    if heat.empty:
        notes.append("heat map skipped: no clients.csv with personal_acc")
    else:
        caption = (
            f"personal accuracy per client (after local training), mean of each client's last {last_k} "
            "evaluations and of the seeds"
        )
        plot_heatmap(heat, out / "heatmap.png", f"personal_acc per client, mean of the last {last_k} rounds and seeds")
        heat_figure.append((out / "heatmap.png", caption))
        atomic_write_text(out / "heatmap.csv", heat.to_csv())
        files += [out / "heatmap.png", out / "heatmap.csv"]

    nc, nc_notes = nc_figures(runs, by, out)
    notes += nc_notes
    files += [p for p, _ in figures + nc]

    skipped = src.skipped
    failed_md = ""
    if failed or skipped:
        lines = ["## Runs not in the tables", ""]
        lines += [f"- failed: {f['name']}: {f.get('error') or 'no error recorded'}" for f in failed]
        lines += [f"- unfinished: {s}" for s in skipped]
        failed_md = "\n".join(lines)
    header = (
        f"{len(runs)} finished runs, grouped by {', '.join(by)}; "
        f"accuracies in %, mean ± std over seeds; last {last_k} = mean of the last {last_k} rounds"
    )
    md = "\n\n".join(
        x for x in [header, markdown_tables(table, views, baseline), "\n".join(f"- {n}" for n in notes), failed_md] if x
    )
    atomic_write_text(out / "table.md", md + "\n")
    files.append(out / "table.md")

    title = f"fedetf report: {src.sweep_dir.name if src.sweep_dir else ', '.join(p.name for p in map(Path, paths))}"
    info = [
        f"<p>{html.escape(header)}. Built {datetime.now():%Y-%m-%d %H:%M} from existing results "
        f"({html.escape(str(src.sweep_dir or ', '.join(map(str, paths))))}).</p>"
    ]
    if src.sweep:
        info.append(f"<p>Sweep command: <code>{html.escape(' '.join(src.sweep.get('command', [])))}</code></p>")
    sections = [("Overview", "\n".join(info) + md_to_html("\n".join(f"- {n}" for n in notes)))]
    if failed_md:
        sections.append(("Failed and unfinished runs", f'<div class="failed">{md_to_html(failed_md)}</div>'))
    sections.append(("Tables", md_to_html(markdown_tables(table, views, baseline))))
    sections.append(("Curves", "\n".join(_img(p, c) for p, c in figures)))
    if heat_figure:
        sections.append(("Personal accuracy per client", "\n".join(_img(p, c) for p, c in heat_figure)))
    sections.append(
        ("Neural collapse", "\n".join(_img(p, c) for p, c in nc) or md_to_html("\n".join(f"- {n}" for n in nc_notes)))
    )
    write_html(out / "index.html", title, sections)
    files.append(out / "index.html")
    return Report(out, files, notes, failed)


def _failed_hint(failed: list[dict[str, Any]]) -> str:
    if not failed:
        return ""
    return f"; {len(failed)} failed, first: {failed[0]['name']}: {failed[0].get('error')}"


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point ``fedetf-report``."""
    parser = argparse.ArgumentParser(prog="fedetf-report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="a sweep folder, or run folders")
    parser.add_argument("--out", type=Path, help="report folder (default: SWEEP_DIR/report)")
    parser.add_argument("--by", nargs="+", help="grouping keys (default: method and the sweep's grid keys)")
    parser.add_argument("--baseline", default="fedavg", help="method the others are paired with (default: fedavg)")
    parser.add_argument("--last-k", type=int, default=5, help="final rounds averaged (default: 5)")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.paths, args.out, args.by, args.baseline, args.last_k)
    except ReportError as e:
        print(f"fedetf-report: error: {e}", file=sys.stderr)
        sys.exit(2)
    for note in report.notes:
        print(note)
    for f in report.failed:
        print(f"failed run: {f['name']}: {f.get('error')}")
    print(f"report: {report.out / 'index.html'} ({len(report.files)} files in {report.out})")


if __name__ == "__main__":
    main()
