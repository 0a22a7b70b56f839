"""Test helpers around :mod:`simulations.inprocess` (the real ServerApp and ClientApp in this process)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from simulations.inprocess import Outcome, run_in_process

__all__ = ["Outcome", "assert_same_results", "results", "run_in_process"]


def results(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A run's ``metrics.csv`` (without the wall-clock ``round_seconds``) and ``clients.csv``."""
    return pd.read_csv(out / "metrics.csv").drop(columns="round_seconds"), pd.read_csv(out / "clients.csv")


def assert_same_results(a: Path, b: Path) -> None:
    """Two runs wrote exactly the same ``metrics.csv`` (but ``round_seconds``) and ``clients.csv``."""
    for x, y in zip(results(a), results(b), strict=True):
        pd.testing.assert_frame_equal(x, y, check_exact=True)
