"""Shared test setup: keep Flower and Ray state out of the user's home; the real-engine scenarios run in the
background from the start (tests/background.py) and their test files come last."""

from __future__ import annotations

import os
import tempfile
import threading

_TMP = tempfile.mkdtemp(prefix="fedetf-tests-")
os.environ.setdefault("FLWR_HOME", os.path.join(_TMP, "flwr"))
os.environ.setdefault("RAY_TMPDIR", os.path.join(_TMP, "ray"))
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per process (and per spawned Flower/Ray process)
# Ray's raylet prestarts one plain worker per CPU; Flower's actors (a runtime env of their own) never use them.
os.environ.setdefault("RAY_enable_worker_prestart", "0")
os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no usage reports from test runs (nor waits for them)

import pytest  # noqa: E402
import torch  # noqa: E402

from tests import background  # noqa: E402

# Two test processes on two cores: intra-op threads beyond one only contend (10x slower kernels under load).
torch.set_num_threads(1)


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the collection order below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The engine files last (stable: the order within a file and among the other files stays): by the time a
    # worker reaches them, their scenarios have run beside the other tests.
    items.sort(key=lambda item: item.path.name in background.FILES)


_SCENARIOS: list[threading.Thread] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the collected engine files' scenarios: with pytest-xdist, scenario i beside worker i mod n, all in one
    folder of the test run that every worker reads (under pytest's temporary root, which pytest prunes)."""
    wanted = {background.FILES[item.path.name] for item in session.items if item.path.name in background.FILES}
    worker = getattr(session.config, "workerinput", None)
    index, count = (int(worker["workerid"].removeprefix("gw")), int(worker["workercount"])) if worker else (0, 1)
    base = session.config._tmp_path_factory.getbasetemp()  # a worker's is popen-gwN inside the run's root
    folder = (base.parent if worker else base) / "engine-scenarios"
    os.environ[background.DIR_VAR] = str(folder)
    mine = [name for i, name in enumerate(background.SCENARIOS) if name in wanted and i % count == index]
    if mine:
        _SCENARIOS.append(background.start(mine, folder))


def pytest_sessionfinish(session: pytest.Session) -> None:
    for thread in _SCENARIOS:  # a deselected or failed test does not leave its scenario's processes behind
        thread.join(timeout=background.TIMEOUT)
