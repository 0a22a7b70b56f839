"""The README's path: `flwr run .` on a local SuperLink with the Ray simulation engine."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.flwr_cli import FLWR, flwr_run, isolated_env, stop_local_superlink

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def flwr_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    env = isolated_env(tmp_path_factory.mktemp("flwr-home"))
    env.pop("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", None)  # the app sets it itself
    yield env
    stop_local_superlink(env)


@pytest.mark.skipif(FLWR is None, reason="flwr CLI not on PATH")
def test_flwr_run_writes_results_and_rejects_bad_config(flwr_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    log = flwr_run(flwr_env, f"num-server-rounds=2 local-epochs=1 output-dir='{out}'", supernodes=10)
    assert (out / "run.json").exists(), log[-3000:]
    assert len(pd.read_csv(out / "metrics.csv")) == 2
    assert "last round (2)" in log and "best round" in log
    assert "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO" not in log  # Ray's accelerator FutureWarning is silenced

    bad = tmp_path / "bad"
    log = flwr_run(flwr_env, f"lr=-1.0 output-dir='{bad}'", supernodes=10)
    lines = [line for line in log.splitlines() if "invalid run config" in line]
    assert lines and "lr=-1.0; allowed: a number > 0" in lines[0], log[-3000:]
    assert not bad.exists()
    assert os.environ.get("FLWR_HOME") != flwr_env["FLWR_HOME"]
