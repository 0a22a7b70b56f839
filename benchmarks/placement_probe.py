"""A probe method that logs where and when each client round ran: FedAvg plus one JSON line per round.

For the GPU benchmark and the scale tests. Run with ``method='benchmarks.placement_probe:PlacementProbe'`` and
``method-args='{"log-dir": "/abs/folder"}'``; each worker process appends to
``<log-dir>/<pid>.jsonl`` lines with the round, the partition's label counts,
the wall-clock start (:meth:`begin`) and end (:meth:`end`) of local training,
the process id and its torch threads, :func:`simulations.placement.ray_assignment` and the device
:func:`simulations.placement.client_device` picks for ``'auto'``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedetf.methods import ClientRound, LocalMethod, setting
from fedetf.models import FedModel
from simulations.placement import client_device, ray_assignment


class PlacementProbe(LocalMethod):
    """FedAvg that records each client round's interval, process, Ray assignment and chosen device."""

    name = "placement-probe"

    @dataclass(frozen=True)
    class Settings:
        log_dir: str = setting("", "folder for one JSON line per client round")

    def begin(self, model: FedModel, rnd: ClientRound) -> None:
        self._start = time.time()

    def end(self, model: FedModel, rnd: ClientRound, steps: int) -> dict[str, Any]:
        line = {
            "round": rnd.server_round,
            "counts": rnd.label_counts.tolist(),
            "start": self._start,
            "end": time.time(),
            "steps": steps,
            "pid": os.getpid(),
            "torch_threads": torch.get_num_threads(),
            "ray": ray_assignment(),
            "auto_device": str(client_device("auto")),
            "used_device": str(rnd.device),
        }
        if self.settings.log_dir:
            with (Path(self.settings.log_dir) / f"{os.getpid()}.jsonl").open("a") as f:
                f.write(json.dumps(line) + "\n")
        return {}


def read_log(log_dir: str | Path) -> list[dict[str, Any]]:
    """Every line the probe wrote under ``log_dir``, ordered by start time."""
    lines = [json.loads(s) for p in Path(log_dir).glob("*.jsonl") for s in p.read_text().splitlines() if s.strip()]
    return sorted(lines, key=lambda r: r["start"])
