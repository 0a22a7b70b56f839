"""Where a client runs: the Ray node and GPU Ray assigned to this process, and the torch device to use.

In Flower's simulation engine every ClientApp call runs inside a Ray actor that
holds ``client-resources-num-gpus`` of a GPU (0.25 = four actors per GPU). Ray
records the GPU ids it assigned and, for the actor's process, sets
``CUDA_VISIBLE_DEVICES`` to exactly those ids, so torch numbers the assigned GPU
``cuda:0``. Outside Ray (the deployment engine's ``flwr-clientapp`` processes,
a ServerApp, a plain script) nothing is assigned and torch's own view decides.

:func:`client_device` is the rule every client and the server's generic
evaluation follow for the run-config key ``device``:

* ``'cpu'``: the CPU;
* ``'auto'``: inside a Ray worker, the GPU Ray assigned, or the CPU when Ray
  assigned none (even if torch sees GPUs: they belong to other actors); outside
  Ray, ``cuda`` when torch sees a GPU; the CPU when torch sees none (logical GPUs
  declared with ``init-args-num-gpus`` on a CPU machine);
* ``'cuda'``: like ``'auto'`` but a machine where torch sees no GPU is an error.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch

#: The run-config values of ``device``.
DEVICE_SETTINGS = ("auto", "cpu", "cuda")


def _ray_worker() -> Any:
    """Ray's runtime context when this process is a connected Ray worker (actor or task), else None.

    Ray is never imported here: a process that has not imported it is not a Ray worker.
    """
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    ctx = ray.get_runtime_context()
    from ray._private.worker import WORKER_MODE

    return ctx if ctx.worker.mode == WORKER_MODE else None


def ray_assignment() -> dict[str, Any]:
    """What Ray assigned to this process; ``{}`` outside a Ray worker (a driver counts as outside).

    Returns
    -------
    dict
        ``node_id`` (hex), ``node_ip``, ``actor_id`` (None in a task), ``pid``, ``gpu_ids`` (Ray's GPU ids
        as strings, e.g. ``['1']``; ``[]`` when the actor holds no GPU), ``cuda_visible_devices``
        (the environment variable as this process sees it, None if unset) and ``resources``
        (the resources the worker holds, e.g. ``{'CPU': 1.0, 'GPU': 0.5}``).
    """
    ctx = _ray_worker()
    if ctx is None:
        return {}
    import ray

    try:
        ip = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - informative only
        ip = None
    return {
        "node_id": ctx.get_node_id(),
        "node_ip": ip,
        "actor_id": ctx.get_actor_id(),
        "pid": os.getpid(),
        "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "resources": {k: float(v) for k, v in ctx.get_assigned_resources().items()},
    }


def _assigned_cuda_index(gpu_ids: list[str]) -> int:
    """torch's index of the first GPU Ray assigned.

    Ray normally sets ``CUDA_VISIBLE_DEVICES`` to the assigned ids, so the GPU is
    ``cuda:<its position in that list>`` (0). If Ray was told not to set it
    (``RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES``) torch sees every GPU and Ray's id is the index.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    first = gpu_ids[0]
    if visible:
        ids = [v.strip() for v in visible.split(",")]
        if first in ids:
            return ids.index(first)
    return int(first) if first.isdigit() and int(first) < torch.cuda.device_count() else 0


def client_device(setting: str) -> torch.device:
    """The torch device for run-config ``device=setting`` in this process (see the module docstring).

    Parameters
    ----------
    setting
        ``'auto'``, ``'cpu'`` or ``'cuda'``.

    Raises
    ------
    ValueError
        ``setting`` is none of those (one line).
    RuntimeError
        ``setting == 'cuda'`` but torch sees no GPU (one line).
    """
    if setting not in DEVICE_SETTINGS:
        raise ValueError(f"invalid run config: device={setting!r}; allowed: 'auto', 'cpu' or 'cuda'")
    if setting == "cpu":
        return torch.device("cpu")
    has_cuda = torch.cuda.is_available()
    if setting == "cuda" and not has_cuda:
        raise RuntimeError("invalid run config: device='cuda' but torch sees no GPU; allowed: 'auto' or 'cpu'")
    if not has_cuda:
        return torch.device("cpu")
    assigned = ray_assignment()
    if not assigned:
        return torch.device("cuda")
    if not assigned["gpu_ids"]:
        # A Ray worker without a GPU share: the GPUs torch sees belong to other actors.
        return torch.device("cpu") if setting == "auto" else torch.device("cuda")
    return torch.device("cuda", _assigned_cuda_index(assigned["gpu_ids"]))


__all__ = ["DEVICE_SETTINGS", "client_device", "ray_assignment"]
