"""Shared test setup: keep Flower and Ray state out of the user's home."""

from __future__ import annotations

import os
import tempfile

_TMP = tempfile.mkdtemp(prefix="fedetf-tests-")
os.environ.setdefault("FLWR_HOME", os.path.join(_TMP, "flwr"))
os.environ.setdefault("RAY_TMPDIR", os.path.join(_TMP, "ray"))
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per process (and per spawned Flower/Ray process)

import torch  # noqa: E402

# Two test processes on two cores: intra-op threads beyond one only contend (10x slower kernels under load).
torch.set_num_threads(1)
