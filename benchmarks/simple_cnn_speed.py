"""Local-training throughput of the authors' protocol (simple-cnn) through Flower, in images per second.

The FedGELA authors' script trains about 5,000 images/s with this CNN on 2 cores.
This runs the same work through Flower's simulation engine (Ray backend, one
worker per core): mnist-5k (4,000 real MNIST train images) split PCDD over 10
clients, simple-cnn, batch 64, all clients every round. It prints the rounds'
wall time and images/s of local training (train images x local epochs / round
time, the round's evaluation included), against a plain single-process loop of
the same local training.

    python benchmarks/simple_cnn_speed.py [--epochs 10] [--rounds 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from comparison import AUTHORS  # benchmarks/ is on sys.path when run as a script

from data_prep.federated import load_federation
from fedetf.methods import ClientRound, TrainSettings
from fedetf.train import client_round, initial_state
from simulations.local import run_local
from strategies.registry import resolve_method

# The authors' protocol on 4,000 real MNIST images; training rounds only (no all-client evaluation).
RUN = {"dataset": "mnist-5k", **AUTHORS, "num-clients": 10, "evaluate-every": 0}


def plain_loop(epochs: int, rounds: int) -> float:
    """Seconds per round of the same local work (train + personal eval of every client) in one thread."""
    from fedetf.methods import ModelSpec

    torch.set_num_threads(1)
    fed = load_federation("mnist-5k", "pcdd", 10, 0, 3, 0.5, (), pcdd_assignment="sequential", normalize=False)
    cls = resolve_method("fedgela")
    spec = ModelSpec("simple-cnn", 1, 10, 84, 0, image_size=28)
    model = cls(spec).build_model()
    init = initial_state(model)
    shared = cls(spec).shared_state(init)
    times = []
    for r in range(rounds):
        t = time.perf_counter()
        for pid in range(10):
            tr, te = fed.client_loaders(pid, 64, r, drop_last=True)
            rnd = ClientRound(torch.from_numpy(fed.label_counts(pid)), server_round=r + 1)
            client_round(cls(spec), model, init, shared, rnd, tr, te, TrainSettings(epochs=epochs))
        times.append(time.perf_counter() - t)
    return float(pd.Series(times[1:] or times).median())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="fedetf-speed-")) / "run"
    t0 = time.time()
    run_local(
        {**RUN, "local-epochs": args.epochs, "num-server-rounds": args.rounds, "output-dir": str(out)},
        num_cpus=1,  # one Ray worker per core
    )
    total = time.time() - t0
    m = pd.read_csv(out / "metrics.csv")
    images = int(m["train_examples"].iloc[0]) * args.epochs
    per_round = float(m["round_seconds"].iloc[1:].median()) if len(m) > 1 else float(m["round_seconds"].iloc[0])
    plain = plain_loop(args.epochs, 2)
    print(f"mnist-5k, simple-cnn, 10 clients, {images // args.epochs} train images x {args.epochs} epochs per round")
    print(
        f"flwr (Ray, one worker per core): {per_round:.2f} s/round = {images / per_round:,.0f} images/s "
        f"(whole run incl. start-up {total:.1f} s for {args.rounds} rounds)"
    )
    print(f"plain loop, 1 thread:      {plain:.2f} s/round = {images / plain:,.0f} images/s")
    print(
        f"ratio flwr / plain = {per_round / plain:.2f}; "
        f"vs the authors' ~5,000 images/s: {images / per_round / 5000:.1f}x"
    )


if __name__ == "__main__":
    main()
