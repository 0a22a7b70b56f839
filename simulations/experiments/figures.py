"""The report's figures, drawn with matplotlib: per-round curves, the per-client heat map, neural collapse."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import rcParams
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from fedetf.io import atomic_path
from simulations.experiments.stats import curve_label, groups

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


def _save(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


def plot_curves(
    runs: pd.DataFrame,
    by: Sequence[str],
    views: Sequence[str] = ("generic_acc", "personal_acc"),
    path: Path | None = None,
    band: str = "std",
) -> Figure:
    """Per-round curves: mean over each group's runs, shaded ``band`` (``"std"`` or ``"minmax"``).

    Parameters
    ----------
    runs
        Output of :func:`load_runs` (its ``run_dir`` column locates each metrics.csv).
    by
        Config keys forming the groups, one line per group.
    views
        Metrics columns, one panel each.
    path
        If given, save the figure there (format from its suffix, PNG without one), atomically.
    band
        ``"std"`` for mean ± std (ddof=0) over runs, ``"minmax"`` for the range.

    Returns
    -------
    Figure
    """
    if band not in ("std", "minmax"):
        raise ValueError(f"band must be 'std' or 'minmax', got {band!r}")
    fig = Figure(figsize=(5.5 * len(views), 4))
    axes = fig.subplots(1, len(views), sharey=True, squeeze=False)[0]
    for ax, view in zip(axes, views, strict=True):
        for key, g in groups(runs, by):
            curves = pd.concat(
                [pd.read_csv(Path(d) / "metrics.csv").set_index("round")[view] for d in g["run_dir"]], axis=1
            ).sort_index()
            mean = curves.mean(axis=1)
            if band == "std":
                sd = curves.std(axis=1, ddof=0)
                lo, hi = mean - sd, mean + sd
            else:
                lo, hi = curves.min(axis=1), curves.max(axis=1)
            (line,) = ax.plot(mean.index, mean.to_numpy(), label=curve_label(key, by))
            ax.fill_between(mean.index, lo.to_numpy(), hi.to_numpy(), color=line.get_color(), alpha=0.2, lw=0)
        ax.set_title(view)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("balanced accuracy" if views[0].endswith("bacc") else "accuracy")
    axes[-1].legend(fontsize=8, title=f"mean {'± std' if band == 'std' else 'and min–max'} over seeds")
    fig.tight_layout()
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, format=Path(path).suffix[1:] or rcParams["savefig.format"])
    return fig


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
        fig = plot_curves(runs, by, present)
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


def plot_client_distribution(evaluations: pd.DataFrame, path: Path, title: str) -> None:
    """Per group, a violin of the clients' personal accuracies (seen clients; held-out ones beside, hatched)."""
    labels = list(dict.fromkeys(evaluations["group"]))
    fig = Figure(figsize=(max(5.0, 0.9 * len(labels) + 2.5), 4.0))
    ax = fig.subplots()
    handles: list[Patch] = []
    for unseen, offset, hatch in ((0, 0.0, None), (1, 0.3, "//")):
        part = evaluations[evaluations["unseen"] == unseen]
        data = [100 * part.loc[part["group"] == g, "personal_acc"].dropna().to_numpy() for g in labels]
        where = [i + offset for i, d in enumerate(data) if len(d)]
        data = [d for d in data if len(d)]
        if not data:
            continue
        body = ax.violinplot(data, positions=where, widths=0.5 if not unseen else 0.25, showmedians=True)
        for b in body["bodies"]:
            b.set_alpha(0.6)
            b.set_hatch(hatch)
        color = body["bodies"][0].get_facecolor()[0]
        handles.append(Patch(facecolor=color, hatch=hatch, label="held-out clients" if unseen else "clients"))
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("personal accuracy (%)")
    ax.set_ylim(0, 100)
    if len(handles) > 1:
        ax.legend(handles=handles, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)
