"""Flower ServerApp/ClientApp, run-config parsing, results writing."""

import os as _os

# Ray (2.5x) warns on every start that it will stop overriding CUDA_VISIBLE_DEVICES for actors that hold no
# GPU, and documents this variable to opt in now. It is safe here: a client uses the GPU Ray assigned to it,
# or the CPU when it holds none, whatever devices torch sees (simulations.placement.client_device).
_os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
