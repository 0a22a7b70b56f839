"""``partition.png``: the stacked bars of flwr-datasets' ``plot_label_distributions``, drawn from exactly the run's
partition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulations import partition_plot
from simulations.config import parse_run_config
from simulations.experiments import report
from simulations.local import default_run_config
from simulations.partition_plot import PARTITION_FILE, plot_partition, write_partition_png
from simulations.results import RunInfo
from simulations.task import federation


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"partition": "dirichlet", "num-clients": 7, "seed": 3},
        {"classes-per-client": 2, "pcdd-assignment": "sequential"},
    ],
)
def test_plotted_counts_are_the_partitions(tmp_path: Path, overrides: dict[str, object]) -> None:
    fed = federation(parse_run_config({**default_run_config(), **overrides}))
    fig, counts = plot_partition(fed, tmp_path / PARTITION_FILE)
    assert (tmp_path / PARTITION_FILE).stat().st_size > 0
    expected = np.stack([fed.label_counts(cid) for cid in range(fed.num_clients)])
    np.testing.assert_array_equal(counts.to_numpy(), expected)
    # The bars drawn: one container per class (stacked), one bar per client.
    (ax,) = fig.axes
    heights = np.array([[bar.get_height() for bar in container] for container in ax.containers]).T
    np.testing.assert_array_equal(heights, expected)


def test_counts_equal_flwr_datasets_plot_label_distributions(tmp_path: Path) -> None:
    """The counts drawn are those flwr-datasets' own plot counts over a ``Partitioner`` of the same labels."""
    from datasets import ClassLabel, Dataset, Features
    from flwr_datasets.partitioner import Partitioner
    from flwr_datasets.visualization import plot_label_distributions

    fed = federation(parse_run_config({**default_run_config(), "partition": "dirichlet", "num-clients": 6}))
    per_client = [fed.labels(c) for c in range(fed.num_clients)]
    ends = np.cumsum([len(y) for y in per_client])

    class Given(Partitioner):
        def load_partition(self, partition_id: int) -> Dataset:
            return self.dataset.select(range(ends[partition_id] - len(per_client[partition_id]), ends[partition_id]))

        @property
        def num_partitions(self) -> int:
            return len(per_client)

    given = Given()
    names = list(fed.info.class_names)
    features = Features({"label": ClassLabel(names=names)})
    given.dataset = Dataset.from_dict({"label": np.concatenate(per_client)}, features=features)
    _, _, theirs = plot_label_distributions(given, label_name="label", verbose_labels=True, legend=False)
    _, ours = plot_partition(fed, tmp_path / PARTITION_FILE)
    assert list(ours.columns) == list(theirs.columns) == names
    np.testing.assert_array_equal(ours.to_numpy(), theirs.to_numpy())


def test_a_partition_drawn_before_is_written_again_without_drawing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs of one partition get the same PNG; the process draws it once (another partition is drawn anew)."""
    drawn = []
    draw = partition_plot.plot_partition
    monkeypatch.setattr(partition_plot, "plot_partition", lambda *a: drawn.append(a[0]) or draw(*a))
    first, other = ({**default_run_config(), "num-clients": 3, "seed": s} for s in (11, 12))
    write_partition_png(federation(parse_run_config(first)), tmp_path / "a.png")
    write_partition_png(federation(parse_run_config(first)), tmp_path / "again.png")
    write_partition_png(federation(parse_run_config(other)), tmp_path / "b.png")
    assert len(drawn) == 2 and drawn[0] is not drawn[1]
    png = (tmp_path / "a.png").read_bytes()
    assert png.startswith(b"\x89PNG") and (tmp_path / "again.png").read_bytes() == png
    assert (tmp_path / "b.png").read_bytes() != png


def test_report_partition_from_overrides_and_from_a_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report.main(["--partition", "partition=dirichlet", "num-clients=5", "--out", str(tmp_path / "a")])
    assert (tmp_path / "a" / PARTITION_FILE).is_file()
    assert capsys.readouterr().out.strip() == f"partition: {tmp_path / 'a' / PARTITION_FILE}"
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(RunInfo(config={"num-clients": 4, "seed": 2}, status="finished").to_json())
    report.main(["--partition", str(run), "--out", str(tmp_path / "b")])
    assert (tmp_path / "b" / PARTITION_FILE).is_file()
    with pytest.raises(SystemExit) as exc:
        report.main(["--partition", "lr=-1", "--out", str(tmp_path / "c")])
    assert exc.value.code == 2 and "lr=-1" in capsys.readouterr().err


def test_report_shows_each_partition_once(tmp_path: Path) -> None:
    dirs = []
    for name, seed in (("fedavg-s0", 0), ("fedgela-s0", 0), ("fedavg-s1", 1)):
        d = tmp_path / name
        d.mkdir()
        (d / "run.json").write_text(RunInfo(config={**default_run_config(), "seed": seed}).to_json())
        (d / PARTITION_FILE).write_bytes(b"png")
        dirs.append(d)
    shown = report.partition_figures(dirs)
    assert [p.parent.name for p, _ in shown] == ["fedavg-s0", "fedavg-s1"]
    assert "seed=0; runs: fedavg-s0, fedgela-s0" in shown[0][1]
