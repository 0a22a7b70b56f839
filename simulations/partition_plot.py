"""``partition.png``: the label counts of every client's train split (the first ``MAX_CLIENTS`` of a larger
federation), drawn by flwr-datasets' ``plot_label_distributions`` from the run's own partition
(:func:`simulations.task.federation`)."""

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


def partitioner(fed: Federation):  # noqa: ANN201 - flwr_datasets is imported here only (heavy)
    """A flwr-datasets ``Partitioner`` over a ``datasets.Dataset`` of the train labels, whose partition ``i`` is
    client ``i``'s train labels (the first ``MAX_CLIENTS`` clients)."""
    from datasets import ClassLabel, Dataset, Features
    from flwr_datasets.partitioner import Partitioner

    class IndexPartitioner(Partitioner):
        """The partitions given by their row indices."""

        def __init__(self, indices: list[np.ndarray]) -> None:
            super().__init__()
            self.indices = indices

        def load_partition(self, partition_id: int) -> Dataset:
            return self.dataset.select(self.indices[partition_id])

        @property
        def num_partitions(self) -> int:
            return len(self.indices)

    k = fed.info.num_classes
    names = list(fed.info.class_names)
    if len(names) != k or len(set(names)) != k:
        names = [str(c) for c in range(k)]
    per_client = [np.asarray(fed.labels(c), dtype=np.int64) for c in range(min(fed.num_clients, MAX_CLIENTS))]
    ends = np.cumsum([len(y) for y in per_client])
    p = IndexPartitioner([np.arange(end - len(y), end) for y, end in zip(per_client, ends, strict=True)])
    labels = np.concatenate(per_client)
    p.dataset = Dataset.from_dict({"label": labels}, features=Features({"label": ClassLabel(names=names)}))
    return p


def plot_partition(fed: Federation, path: Path | BinaryIO, title: str = "") -> tuple[Figure, pd.DataFrame]:
    """Draw the clients' train label counts into ``path``; return the figure and the plotted counts (rows:
    partition id, columns: classes)."""
    from flwr_datasets.visualization import plot_label_distributions

    n, k = min(fed.num_clients, MAX_CLIENTS), fed.info.num_classes
    shown = f" (the first {n} of {fed.num_clients:,})" if n < fed.num_clients else ""
    fig = Figure(figsize=(min(4 + 0.35 * n, 40), 4.5), layout="constrained")
    ax = fig.add_subplot()
    _, _, counts = plot_label_distributions(
        partitioner(fed),
        label_name="label",
        axis=ax,
        title=title or f"{fed.info.name}: train label counts per client{shown}",
        legend=k <= 20,
        legend_title="class",
        verbose_labels=True,
    )
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
    """A digest of what :func:`plot_partition` draws for ``fed``: the drawn clients' label counts, the class names,
    the dataset's name and client count, and the title."""
    digest = hashlib.sha256(repr((fed.info.name, fed.num_clients, fed.info.class_names, title)).encode())
    for c in range(min(fed.num_clients, MAX_CLIENTS)):
        digest.update(np.asarray(fed.label_counts(c), dtype=np.int64).tobytes())
    return digest.hexdigest()
