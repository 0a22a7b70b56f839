"""Fractional GPUs: ResNet-18 on 32x32 images, 8 clients at ``client-resources-num-gpus=0.25``.

Four clients share each GPU (Ray places 1 / 0.25 = 4 actors per GPU). The run uses
CIFAR-10 if its cache is under the data root (``$FEDETF_DATA_ROOT`` or
``~/.cache/fedetf/data``; see ``python -m data_prep.vision``), else synthetic
CIFAR-shaped images written as a memory-mapped ``cifar10`` cache in a temporary
data root. The method is FedAvg with the placement probe
(``benchmarks/placement_probe.py``), which logs every client round's process,
the GPU ids Ray assigned, the device the client picked and its time interval.

Prints: seconds per round (median after the first), clients per second and
training images per second, how many clients trained at once (most overlapping
intervals), the GPUs and devices the clients used, and GPU utilisation and memory
(``nvidia-smi`` sampled every 0.5 s over the rounds after the first).

    python benchmarks/gpu_fractional.py [--clients 8] [--gpus-per-client 0.25] [--images-per-client 2500]
        [--rounds 4] [--num-workers 0]

Without a GPU visible to torch it says so and exits 0. ``--dry-run`` exercises the
same pipeline on a CPU machine with logical GPUs (``init-args-num-gpus``), small
clients and no nvidia-smi; it checks the script, it measures nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

try:
    from benchmarks.round_cost import launch, run_config_string
except ImportError:  # the project root is not on sys.path (no editable install)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.round_cost import launch, run_config_string

PROBE = "benchmarks.placement_probe:PlacementProbe"


def _cifar_root() -> Path | None:
    """The data root holding a finished CIFAR-10 cache, if any."""
    from data_prep.vision import cache_dir, open_cache, resolve_data_root

    root = resolve_data_root("")
    try:
        return root if open_cache(cache_dir(root, "cifar10"), "cifar10") is not None else None
    except Exception:  # noqa: BLE001 - a damaged cache: use synthetic data
        return None


def write_synthetic(root: Path, train: int, test: int) -> None:
    """CIFAR-shaped random images (uint8 3x32x32, 10 classes) as the ``cifar10`` cache under ``root``."""
    import numpy as np

    from data_prep.vision import cache_dir, write_cache

    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (train, 3, 32, 32), dtype=np.uint8),
        "y_train": rng.integers(0, 10, train).astype(np.int64),
        "x_test": rng.integers(0, 256, (test, 3, 32, 32), dtype=np.uint8),
        "y_test": rng.integers(0, 10, test).astype(np.int64),
    }
    write_cache(cache_dir(root, "cifar10"), "cifar10", arrays)


class GpuSampler(threading.Thread):
    """``nvidia-smi`` every 0.5 s: per GPU, (time, utilisation %, memory used MiB)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int, float, float]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        query = ["nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
        while not self._halt.is_set():
            res = subprocess.run(query, capture_output=True, text=True)
            now = time.time()
            for line in res.stdout.splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 3 and parts[0].isdigit():
                    self.samples.append((now, int(parts[0]), float(parts[1]), float(parts[2])))
            self._halt.wait(0.5)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def _concurrency(lines: list[dict[str, Any]]) -> int:
    """The largest number of client intervals that contain one common instant."""
    events = sorted([(x["start"], 1) for x in lines] + [(x["end"], -1) for x in lines])
    best = cur = 0
    for _, step in events:
        cur += step
        best = max(best, cur)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--gpus-per-client", type=float, default=0.25)
    parser.add_argument("--cpus-per-client", type=int, default=0, help="default: cores / clients, at least 1")
    parser.add_argument("--images-per-client", type=int, default=2500)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers per client")
    parser.add_argument("--dry-run", action="store_true", help="CPU machine: logical GPUs, tiny clients")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        print(
            "gpu_fractional: torch sees no CUDA GPU on this machine "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); nothing measured. "
            "Run it on a GPU machine, or with --dry-run to check the pipeline on CPU."
        )
        return 0
    gpus = torch.cuda.device_count() if cuda else 2
    if args.dry_run:
        args.images_per_client = min(args.images_per_client, 32)
        args.rounds = min(args.rounds, 2)
    cpus = args.cpus_per_client or max(1, (os.cpu_count() or 1) // args.clients)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-fractional-"))
    work.mkdir(parents=True, exist_ok=True)
    root = None if args.dry_run else _cifar_root()
    source = "CIFAR-10"
    if root is None:
        root = work / "data"
        write_synthetic(root, args.clients * args.images_per_client, 1000 if not args.dry_run else 64)
        source = "synthetic CIFAR-shaped images"
    logs = work / "probe"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    cfg = {
        "method": PROBE,
        "method-args": json.dumps({"log-dir": str(logs)}),
        "dataset": "cifar10",
        "data-root": str(root),
        "model": "resnet18",
        "partition": "iid",
        "num-clients": args.clients,
        "num-server-rounds": args.rounds,
        "local-epochs": args.local_epochs,
        "batch-size": args.batch_size,
        "num-workers": args.num_workers,
        "device": "auto",
        "seed": 0,
        "evaluate-every": 0,  # training rounds only, as the plain loop it is compared with
    }
    extra = ""
    if args.dry_run:
        extra = f"init-args-num-gpus={gpus} init-args-num-cpus={args.clients * cpus}"
    print(f"# gpu_fractional: {args.clients} clients x {args.images_per_client} images of {source}, ResNet-18,")
    print(f"#   {args.gpus_per_client} GPU and {cpus} CPU per client on {gpus} GPU(s); {run_config_string(cfg)}")
    gpu = GpuSampler() if cuda else None
    if gpu:
        gpu.start()
    try:
        res = launch(
            "flwr",
            cfg,
            work,
            "gpu",
            cpus_per_client=cpus,
            gpus_per_client=args.gpus_per_client,
            federation_extra=extra,
            ray_niceness=None,  # Ray's default
        )
    finally:
        if gpu:
            gpu.stop()
    from benchmarks.placement_probe import read_log

    lines = read_log(logs)
    steady = res.steady
    print(f"rounds (s): {', '.join(f'{r:.2f}' for r in res.rounds)}; start-up to round 1 {res.startup:.1f} s")
    print(
        f"steady: {steady:.2f} s/round -> {args.clients / steady:.2f} clients/s, "
        f"{args.clients * args.images_per_client * args.local_epochs / steady:.0f} training images/s"
    )
    late = [x for x in lines if x["round"] > 1]
    print(f"clients training at once (max overlap after round 1): {_concurrency(late or lines)}")
    placements = sorted({(x["ray"].get("gpu_ids", [None])[0], x["auto_device"], x["used_device"]) for x in lines})
    print(f"(Ray GPU id, device 'auto' picks, device used) seen: {placements}")
    print(f"peak memory of the run: PSS {res.peak_pss_mib:.0f} MiB (RSS sum {res.peak_rss_mib:.0f} MiB)")
    if gpu and gpu.samples:
        t1 = min((x["start"] for x in late), default=0.0)
        for index in sorted({s[1] for s in gpu.samples}):
            mine = [s for s in gpu.samples if s[1] == index and s[0] >= t1]
            if mine:
                util = [s[2] for s in mine]
                mean, median, most = statistics.mean(util), statistics.median(util), max(util)
                memory = max(s[3] for s in mine)
                print(
                    f"GPU {index}: utilisation mean {mean:.0f}% (median {median:.0f}%, max {most:.0f}%), "
                    f"memory used max {memory:.0f} MiB over {len(mine)} samples"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
