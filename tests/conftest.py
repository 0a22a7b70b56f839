"""Shared test setup: keep Flower and Ray state out of the user's home; the engine-starting test files first."""

from __future__ import annotations

import os
import sys
import tempfile

_TMP = tempfile.mkdtemp(prefix="fedetf-tests-")
os.environ.setdefault("FLWR_HOME", os.path.join(_TMP, "flwr"))
os.environ.setdefault("RAY_TMPDIR", os.path.join(_TMP, "ray"))
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per process (and per spawned Flower/Ray process)
# Ray's raylet prestarts one plain worker per CPU; Flower's actors (a runtime env of their own) never use them.
os.environ.setdefault("RAY_enable_worker_prestart", "0")
os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no usage reports from test runs (nor waits for them)
# Datasets' caches (e.g. the digits split) in the session's folder, not the user's ~/.cache; every process of a
# test's runs (Ray actors, deployment ClientApps) inherits it.
os.environ.setdefault("FEDETF_DATA_ROOT", os.path.join(_TMP, "data"))
# Every Flower and Ray process of a run imports the app afresh (from the app copy, or the FAB installed in FLWR_HOME):
# with PYTHONDONTWRITEBYTECODE set, each would compile the same modules again.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

import pytest  # noqa: E402
import torch  # noqa: E402

# Two test processes on two cores: intra-op threads beyond one only contend (10x slower kernels under load).
torch.set_num_threads(1)


#: Files that start real Flower engines (each one a minute or more on 2 cores), longest first. ``--dist loadfile``
#: sends each file to one worker in collection order: these go first, so that the short files fill the gaps and both
#: workers end together (by default xdist orders files by their number of tests, which puts these last).
ENGINE_FILES = ("test_sweep.py", "test_deployment.py", "test_scale.py", "test_flwr_cli.py")


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the collection order below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return ENGINE_FILES.index(name) if name in ENGINE_FILES else len(ENGINE_FILES)

    items.sort(key=rank)  # stable: the order within a file and among the other files stays
