"""The sweep's progress bar, read from the results files of the current run (``metrics.csv`` rows)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from simulations.experiments import runs


@dataclass
class Progress:
    """A tqdm bar of runs done / total, with the current run's round, elapsed time and ETA in the postfix.

    :meth:`poll` reads the current run's last round from its ``metrics.csv``. The ETA adds, for the
    current and the remaining runs, the measured start-up (run start to its first new round),
    seconds per round, and wind-down (last round to the run's end); it reads ``?`` until one run has
    shown them.
    """

    total: int
    done: int
    disable: bool = False
    t0: float = field(default_factory=time.monotonic)
    setups: list[float] = field(default_factory=list)
    per_round: list[float] = field(default_factory=list)
    teardowns: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bar = tqdm(
            total=self.total,
            initial=self.done,
            unit="run",
            bar_format="{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} runs{postfix}",
            desc="sweep ",
            disable=self.disable,
            mininterval=0.5,
            dynamic_ncols=True,
        )
        self.name, self.run_dir, self.rounds, self.round, self.first_round = "", Path(), 0, 0, 0
        self.run_t0 = self.last_round_t = 0.0
        self.first_new_round_t: float | None = None
        self.queued: list[int] = []
        self.live = sys.stderr.isatty()  # in a log file, redraw on events only, not every second

    def start(self, name: str, run_dir: Path, rounds: int, queued: list[int]) -> None:
        """A run starts in ``run_dir`` (a resumed one already holds rounds); ``queued``: rounds of the runs after it."""
        self.name, self.run_dir, self.rounds, self.queued = name, run_dir, rounds, queued
        self.round = self.first_round = runs.rounds_done(run_dir)
        self.run_t0 = self.last_round_t = time.monotonic()
        self.first_new_round_t = None
        self.refresh()

    def poll(self) -> None:
        """Read the current run's last round from its results; called about once a second."""
        rnd = runs.rounds_done(self.run_dir) if self.name else 0
        if rnd > self.round:
            now = time.monotonic()
            if self.first_new_round_t is None:
                self.first_new_round_t = now
                self.setups.append(now - self.run_t0)
            else:
                self.per_round.append((now - self.last_round_t) / (rnd - self.round))
            self.round, self.last_round_t = rnd, now
            self.refresh()
        elif self.live:
            self.refresh()

    def end(self) -> None:
        """The current run ended (finished or not)."""
        self.poll()
        if self.first_new_round_t is not None and self.round >= self.rounds:
            self.teardowns.append(time.monotonic() - self.last_round_t)
        self.bar.update(1)
        self.name = ""
        self.refresh()

    def eta(self) -> float | None:
        """Seconds left, or None before one run has shown its start-up and round time."""
        if not (self.setups and self.per_round):
            return None
        setup = sum(self.setups) / len(self.setups)
        rnd = sum(self.per_round) / len(self.per_round)
        down = sum(self.teardowns) / len(self.teardowns) if self.teardowns else 0.0
        left = sum(setup + max(r - 1, 0) * rnd + down for r in self.queued)
        if self.name:
            if self.first_new_round_t is None:
                since = time.monotonic() - self.run_t0
                left += max(setup - since, 0.0) + max(self.rounds - self.round - 1, 0) * rnd
            else:
                left += (self.rounds - self.round) * rnd
            left += down
        return left

    def refresh(self) -> None:
        elapsed = tqdm.format_interval(time.monotonic() - self.t0)
        eta = self.eta()
        parts = [f"{self.name} round {self.round}/{self.rounds}"] if self.name else []
        parts += [f"elapsed {elapsed}", f"ETA {tqdm.format_interval(eta) if eta is not None else '?'}"]
        self.bar.set_postfix_str(" | ".join(parts), refresh=True)

    def write(self, text: str) -> None:
        if self.disable:
            print(text, flush=True)
        else:
            self.bar.write(text)

    def close(self) -> None:
        self.bar.close()
