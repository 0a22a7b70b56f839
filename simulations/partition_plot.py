"""``partition.png``: the label counts of every client's train split (the first ``MAX_CLIENTS`` of a larger
federation), drawn by flwr-datasets' ``plot_label_distributions`` from the run's own partition
(:func:`simulations.task.federation`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from data_prep.federated import Federation

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


def plot_partition(fed: Federation, path: Path, title: str = "") -> tuple[Figure, pd.DataFrame]:
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
    fig.savefig(path, dpi=100, bbox_inches="tight")  # the legend is outside the axes
    return fig, counts
