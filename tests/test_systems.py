"""Systems heterogeneity: seeded dropouts and stragglers, counted per round; FedAvg drops a straggler's partial
work and FedProx sends it, as in the FedProx paper."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from simulations.config import parse_run_config
from simulations.inprocess import run_in_process
from simulations.local import default_run_config
from simulations.task import systems_draw

SETUP = {"dataset": "digits", "model": "cnn", "num-clients": 10, "num-server-rounds": 3, "local-epochs": 3}
RATES = {"straggler-rate": 0.4, "dropout-rate": 0.2}


def _cfg(**overrides: object):  # noqa: ANN202
    return parse_run_config({**default_run_config(), **SETUP, **overrides})


def test_the_draw_is_seeded_and_has_the_configured_rates() -> None:
    cfg = _cfg(**RATES)
    draws = [systems_draw(cfg, r, p) for r in range(1, 401) for p in range(10)]
    assert draws == [systems_draw(cfg, r, p) for r in range(1, 401) for p in range(10)]
    assert sum(gone for gone, _ in draws) / len(draws) == pytest.approx(0.2, abs=0.02)
    partial = [e for _, e in draws if e < 3]
    assert len(partial) / len(draws) == pytest.approx(0.4, abs=0.02) and set(partial) == {1, 2}
    assert {systems_draw(_cfg(), r, p) for r in range(1, 50) for p in range(10)} == {(False, 3)}
    assert {e for _, e in (systems_draw(_cfg(**RATES, **{"local-epochs": 1}), r, 0) for r in range(1, 99))} == {1}


@pytest.mark.parametrize("method", ["fedavg", "fedprox"])
def test_dropouts_and_stragglers_are_counted_and_handled_per_paper(tmp_path: Path, method: str) -> None:
    outcome = run_in_process({**SETUP, **RATES, "method": method, "evaluate-every": 0, "output-dir": str(tmp_path)})
    assert outcome.exit is None, outcome.errors
    cfg = _cfg(**RATES, method=method)
    metrics = pd.read_csv(tmp_path / "metrics.csv").set_index("round")
    clients = pd.read_csv(tmp_path / "clients.csv")
    for r in (1, 2, 3):
        draws = {p: systems_draw(cfg, r, p) for p in range(10)}  # every client is sampled (fraction-train 1)
        gone = {p for p, (g, _) in draws.items() if g}
        slow = {p: e for p, (g, e) in draws.items() if not g and e < 3}
        row, replied = metrics.loc[r], clients[clients["round"] == r].set_index("partition_id")
        assert row["dropouts"] == len(gone) and row["stragglers"] == len(slow) and row["failed_clients"] == 0
        if method == "fedavg":  # drops partial work
            assert set(replied.index) == set(range(10)) - gone - set(slow) and (replied["local_epochs"] == 3).all()
            assert row["stragglers_dropped"] == len(slow)
        else:  # FedProx sends it: each straggler did its drawn number of epochs
            assert set(replied.index) == set(range(10)) - gone and row["stragglers_dropped"] == 0
            assert {p: int(replied.loc[p, "local_epochs"]) for p in slow} == slow
        assert row["num_clients"] == len(replied)
    assert metrics[["dropouts", "stragglers"]].to_numpy().sum() > 0  # the rates drew some in 30 draws
