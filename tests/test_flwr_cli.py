"""The README's path: `flwr run .` on a local SuperLink with the Ray simulation engine; and a run whose clients all
fail, through the same path.

Both runs go to one local SuperLink (the README run's `flwr run` starts it) and run side by side, while this process
runs the README run's config in-process for comparison: each run is a chain of process starts that keeps less than
one core busy."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pandas as pd
import pytest

from simulations.experiments import runner
from simulations.results import RunInfo
from tests.flwr_cli import FLWR, app_copy, flwr_run, isolated_env, stop_local_superlink
from tests.inprocess import assert_same_results, run_in_process

pytestmark = pytest.mark.slow


#: The README run, shortened to 2 rounds of 1 epoch (10 supernodes, the default num-clients).
README_OVERRIDES = {"num-server-rounds": 2, "local-epochs": 1}


def _wait_for_superlink(env: dict[str, str], starter: Future[str], timeout: float = 300) -> None:
    """Until the local SuperLink that ``starter`` (a `flwr run` for ``env``) starts answers on its health endpoint."""
    url = f"http://127.0.0.1:{env['FLWR_LOCAL_SUPERLINK_HTTP_API_PORT']}/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if 200 <= r.status < 300:
                    return
        except OSError:
            pass
        assert not starter.done(), f"`flwr run` ended before its local SuperLink answered: {starter.result()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"no local SuperLink on {url} after {timeout} s")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The README run and the all-fail run through `flwr run` on one local SuperLink (the second starts once the
    first's `flwr run` has started it), and meanwhile the README run's config in-process."""
    if FLWR is None:
        pytest.skip("flwr CLI not on PATH")
    tmp = tmp_path_factory.mktemp("flwr-cli")
    env = isolated_env(tmp / "flwr-home")
    env.pop("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", None)  # the app sets it itself
    out, ref, allfail = tmp / "run", tmp / "in-process", tmp / "allfail"
    fail_run = "fault-rate=0.999 fraction-train=1.0 num-clients=2 num-server-rounds=2 local-epochs=1"
    fail_run += f" output-dir='{allfail}'"
    try:
        with ThreadPoolExecutor(2) as pool:
            readme = pool.submit(flwr_run, env, f"num-server-rounds=2 local-epochs=1 output-dir='{out}'", 10)
            _wait_for_superlink(env, readme)
            # One Ray actor (one CPU for Ray) serves both clients; the app from a copy without .venv (tests/flwr_cli).
            failing = pool.submit(flwr_run, env, fail_run, 2, federation="init-args-num-cpus=1", app=app_copy())
            # As in a Ray actor of client-resources-num-cpus=1 and no GPU share: one torch thread (tests/conftest.py:
            # the same float sums) and the CPU (what device='auto' picks there, even on a machine with a GPU).
            outcome = run_in_process({**README_OVERRIDES, "device": "cpu", "output-dir": str(ref)})
            yield {
                "env": env,
                "out": out,
                "log": readme.result(),
                "ref": ref,
                "ref_outcome": outcome,
                "allfail": allfail,
                "allfail_log": failing.result(),
            }
    finally:
        stop_local_superlink(env)


def test_flwr_run_writes_results_equal_to_the_in_process_run(runs: dict[str, Any]) -> None:
    """The README's command (10 supernodes, the default num-clients), shortened to 2 rounds of 1 epoch; its results
    files equal those of the same run config on in-process nodes (test_deployment compares the deployment engine with
    the in-process run too).

    A bad value through the real `flwr run` (no traceback, nothing written) is in test_bad_configs.
    """
    out, ref, log, env = runs["out"], runs["ref"], runs["log"], runs["env"]
    assert (out / "run.json").exists(), log[-3000:]
    assert len(pd.read_csv(out / "metrics.csv")) == 2
    assert "last round (2)" in log and "best round" in log
    assert "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO" not in log  # Ray's accelerator FutureWarning is silenced
    assert not [line for line in log.splitlines() if line.lstrip().startswith("ERROR")], log[-3000:]
    assert os.environ.get("FLWR_HOME") != env["FLWR_HOME"]

    outcome = runs["ref_outcome"]
    assert outcome.exit is None, outcome.lines[-20:]
    assert_same_results(out, ref)
    configs = [json.loads((d / "run.json").read_text())["config"] for d in (out, ref)]
    assert (configs[0]["device"], configs[1]["device"]) == ("auto", "cpu")
    for config in configs:
        for key in ("output-dir", "device"):
            config.pop(key)
    assert configs[0] == configs[1]


def test_a_round_where_every_client_fails_ends_flwr_run_in_one_error_line(runs: dict[str, Any]) -> None:
    """The clients reply with their one-line reason (no traceback from Ray), the ServerApp ends with one ERROR line
    and `status: failed`, and fedetf-sweep records that line's message."""
    out, log = runs["allfail"], runs["allfail_log"]
    errors = [line for line in log.splitlines() if line.lstrip().startswith("ERROR")]
    assert "Traceback" not in log and len(errors) == 1, log[-3000:]
    expected = "the run stopped: all 2 sampled clients failed in round 1; first error: partition 0: injected fault"
    assert expected in errors[0], errors[0]
    info = RunInfo.load(out)
    assert info.status == "failed" and info.error in errors[0]
    assert runner.first_error(log.splitlines()) == errors[0].split(":", 1)[1].strip()
