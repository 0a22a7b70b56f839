"""A test method whose per-client state records who wrote it and when; every round logs what it sees."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from fedetf.methods import ClientRound, LocalMethod, setting
from fedetf.models import FedModel


class StateProbe(LocalMethod):
    """FedAvg that keeps (its label counts, the round) as per-client state and logs what it finds there."""

    name = "probe"

    @dataclass(frozen=True)
    class Settings:
        log_dir: str = setting("", "folder for one JSON line per client round")

    def begin(self, model: FedModel, rnd: ClientRound) -> None:
        seen = rnd.state.get("probe.counts")
        line = {
            "round": rnd.server_round,
            "counts": rnd.label_counts.tolist(),
            "seen_counts": None if seen is None else seen.long().tolist(),
            "seen_round": int(rnd.state["probe.round"]) if "probe.round" in rnd.state else -1,
            "keys": sorted(rnd.state),
            "worker": os.getpid(),
        }
        with (Path(self.settings.log_dir) / f"{os.getpid()}.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")

    def end(self, model: FedModel, rnd: ClientRound, steps: int) -> dict:
        rnd.state["probe.counts"] = rnd.label_counts.to(torch.float32)
        rnd.state["probe.round"] = torch.tensor(rnd.server_round)
        return {}
