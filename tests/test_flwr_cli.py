"""The README's path: `flwr run .` on a local SuperLink with the Ray simulation engine; and a run whose clients all
fail, through the same path."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from simulations.experiments import runner
from simulations.results import RunInfo
from tests.flwr_cli import FLWR, flwr_run, isolated_env, stop_local_superlink
from tests.inprocess import assert_same_results, run_in_process

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def flwr_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    env = isolated_env(tmp_path_factory.mktemp("flwr-home"))
    env.pop("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", None)  # the app sets it itself
    yield env
    stop_local_superlink(env)


@pytest.mark.skipif(FLWR is None, reason="flwr CLI not on PATH")
def test_flwr_run_writes_results_equal_to_the_in_process_run(flwr_env: dict[str, str], tmp_path: Path) -> None:
    """The README's command (10 supernodes, the default num-clients), shortened to 2 rounds of 1 epoch; its results
    files equal those of the same run config on in-process nodes (test_deployment compares the deployment engine with
    the in-process run too).

    A bad value through the real `flwr run` (no traceback, nothing written) is in test_bad_configs.
    """
    overrides = {"num-server-rounds": 2, "local-epochs": 1}
    out, ref = tmp_path / "run", tmp_path / "in-process"
    log = flwr_run(flwr_env, f"num-server-rounds=2 local-epochs=1 output-dir='{out}'", supernodes=10)
    assert (out / "run.json").exists(), log[-3000:]
    assert len(pd.read_csv(out / "metrics.csv")) == 2
    assert "last round (2)" in log and "best round" in log
    assert "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO" not in log  # Ray's accelerator FutureWarning is silenced
    assert not [line for line in log.splitlines() if line.lstrip().startswith("ERROR")], log[-3000:]
    assert os.environ.get("FLWR_HOME") != flwr_env["FLWR_HOME"]

    # As in a Ray actor of client-resources-num-cpus=1 and no GPU share: one torch thread (tests/conftest.py: the
    # same float sums) and the CPU (what device='auto' picks there, even on a machine with a GPU).
    outcome = run_in_process({**overrides, "device": "cpu", "output-dir": str(ref)})
    assert outcome.exit is None, outcome.lines[-20:]
    assert_same_results(out, ref)
    configs = [json.loads((d / "run.json").read_text())["config"] for d in (out, ref)]
    assert (configs[0]["device"], configs[1]["device"]) == ("auto", "cpu")
    for config in configs:
        for key in ("output-dir", "device"):
            config.pop(key)
    assert configs[0] == configs[1]


@pytest.mark.skipif(FLWR is None, reason="flwr CLI not on PATH")
def test_a_round_where_every_client_fails_ends_flwr_run_in_one_error_line(
    flwr_env: dict[str, str], tmp_path: Path
) -> None:
    """The clients reply with their one-line reason (no traceback from Ray), the ServerApp ends with one ERROR line
    and `status: failed`, and fedetf-sweep records that line's message."""
    out = tmp_path / "allfail"
    run = f"fault-rate=0.999 fraction-train=1.0 num-clients=2 num-server-rounds=2 local-epochs=1 output-dir='{out}'"
    log = flwr_run(flwr_env, run, supernodes=2)
    errors = [line for line in log.splitlines() if line.lstrip().startswith("ERROR")]
    assert "Traceback" not in log and len(errors) == 1, log[-3000:]
    expected = "the run stopped: all 2 sampled clients failed in round 1; first error: partition 0: injected fault"
    assert expected in errors[0], errors[0]
    info = RunInfo.load(out)
    assert info.status == "failed" and info.error in errors[0]
    assert runner.first_error(log.splitlines()) == errors[0].split(":", 1)[1].strip()
