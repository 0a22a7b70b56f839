"""``partition.png``: the label counts of every client's train split (the first ``MAX_CLIENTS`` of a larger
federation) as stacked bars, from the run's own partition (:func:`simulations.task.federation`)."""

from __future__ import annotations

import hashlib
import io
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from data_prep.federated import Federation
from fedetf.io import atomic_write_bytes

PARTITION_FILE = "partition.png"
#: The run-config keys that decide a run's partition (runs equal in these share one).
PARTITION_KEYS = (
    "dataset",
    "partition",
    "pcdd-assignment",
    "classes-per-client",
    "dirichlet-beta",
    "num-clients",
    "seed",
    "synthetic-alpha",
    "synthetic-beta",
    "synthetic-samples",
)
#: Clients drawn at most (a bar each).
MAX_CLIENTS = 100


def label_counts(fed: Federation) -> pd.DataFrame:
    """The train label counts of the first ``MAX_CLIENTS`` clients: one row per partition id, one column per class
    (its name, or its index where the names are not unique)."""
    n, k = min(fed.num_clients, MAX_CLIENTS), fed.info.num_classes
    names = list(fed.info.class_names)
    if len(names) != k or len(set(names)) != k:
        names = [str(c) for c in range(k)]
    counts = np.stack([np.asarray(fed.label_counts(c), dtype=np.int64) for c in range(n)])
    return pd.DataFrame(counts, index=pd.RangeIndex(n, name="Partition ID"), columns=names)


def plot_partition(fed: Federation, path: Path | BinaryIO, title: str = "") -> tuple[Figure, pd.DataFrame]:
    """Draw the clients' train label counts into ``path``; return the figure and the plotted counts (rows:
    partition id, columns: classes).

    The chart of flwr-datasets' ``plot_label_distributions`` (``plot_type="bar"``): pandas' stacked bars in the
    ``RdYlGn`` colormap, drawn from the counts directly. That function needs a ``Partitioner`` over a Hugging Face
    ``Dataset``, and importing it costs the ServerApp about 2.5 s of CPU and 190 MB (datasets, seaborn, scipy); a
    test checks that both count the same.
    """
    counts = label_counts(fed)
    n, k = len(counts), counts.shape[1]
    shown = f" (the first {n} of {fed.num_clients:,})" if n < fed.num_clients else ""
    fig = Figure(figsize=(min(4 + 0.35 * n, 40), 4.5), layout="constrained")
    ax = fig.add_subplot()
    counts.plot.bar(ax=ax, stacked=True, colormap="RdYlGn", rot=0, legend=False, xlabel="Partition ID", ylabel="Count")
    ax.set_title(title or f"{fed.info.name}: train label counts per client{shown}")
    if k <= 20:
        handles, labels = ax.get_legend_handles_labels()  # the top class first, as the bars stack
        fig.legend(handles[::-1], labels[::-1], title="class", loc="outside center right")
    if n > 20:  # every other partition id, so that they do not overlap
        for label in ax.get_xticklabels()[1::2]:
            label.set_visible(False)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")  # the legend is outside the axes
    return fig, counts


#: PNGs this process drew, by what they show (:func:`_shown`); the newest few.
_DRAWN: OrderedDict[str, bytes] = OrderedDict()


def write_partition_png(fed: Federation, path: Path, title: str = "") -> None:
    """:func:`plot_partition` into ``path``, written atomically. A process that drew the same label counts under the
    same title before (runs of one partition: methods, or seeds of a fixed split) writes that PNG again without
    drawing it (about 0.5-3 s of CPU each)."""
    key = _shown(fed, title)
    png = _DRAWN.get(key)
    if png is None:
        buf = io.BytesIO()
        plot_partition(fed, buf, title)
        png = _DRAWN[key] = buf.getvalue()
        while len(_DRAWN) > 8:
            _DRAWN.popitem(last=False)
    atomic_write_bytes(path, png)


def _shown(fed: Federation, title: str) -> str:
    """A digest of what :func:`plot_partition` draws for ``fed``: the :func:`label_counts` with their class names,
    the dataset's name and client count, and the title."""
    counts = label_counts(fed)
    digest = hashlib.sha256(repr((fed.info.name, fed.num_clients, list(counts.columns), title)).encode())
    digest.update(counts.to_numpy().tobytes())
    return digest.hexdigest()
