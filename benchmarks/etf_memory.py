"""Does a fixed ETF with d = K save memory (Zhu et al., NeurIPS 2021)? ResNet-18 on 32x32 inputs.

For K = 10 and 100, compares a learned linear classifier (d = 512, FedAvg's
head on our feature head), and a fixed simplex ETF with d = 512 and d = K
(FedGELA's head), by parameters and by the peak memory of one training step
(forward, backward, SGD step with momentum; batch 64). On a GPU the peak is
``torch.cuda.max_memory_allocated``; on a CPU it is the rise of the process's
peak RSS over the step (each configuration in a fresh process, after a
warm-up step, so allocator caches do not carry over).

    python benchmarks/etf_memory.py [--batch 64] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch

from fedetf.methods import LocalMethod, ModelSpec
from fedetf.methods.fedgela import FedGELA

CONFIGS = [("learned linear, d=512", "linear", 512), ("fixed ETF, d=512", "etf", 512), ("fixed ETF, d=K", "etf", 0)]


def _rss_peak_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))


def _reset_rss_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure(head: str, k: int, d: int, batch: int, device: str) -> dict[str, float]:
    """Parameters (trainable, and fixed buffers) and the peak memory of one training step."""
    spec = ModelSpec("resnet18", 3, k, d or k, seed=0, image_size=32)
    method = (FedGELA if head == "etf" else LocalMethod)(spec)
    model = method.build_model().to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, k, (batch,), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()  # warm-up: optimizer state and allocator caches exist from here on
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        _reset_rss_peak()
        base = _rss_peak_kib()
        step()
        peak = (_rss_peak_kib() - base) / 1024
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "classifier_params": sum(p.numel() for p in model.classifier.parameters()),
        "fixed_buffer": sum(b.numel() for n, b in model.classifier.named_buffers() if n == "etf"),
        "step_peak_mib": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--child", nargs=3, metavar=("HEAD", "K", "D"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if args.child:
        head, k, d = args.child
        print(json.dumps(measure(head, int(k), int(d), args.batch, device)))
        return
    kind = "torch.cuda.max_memory_allocated" if device == "cuda" else "peak RSS rise of one step (fresh process)"
    print(f"ResNet-18 (CIFAR variant), 32x32, batch {args.batch}, device {device}; memory: {kind}\n")
    print("| K | classifier | parameters | classifier parameters | fixed ETF entries | step peak (MiB) |")
    print("|---|---|---|---|---|---|")
    for k in (10, 100):
        for label, head, d in CONFIGS:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                head,
                str(k),
                str(d),
                "--batch",
                str(args.batch),
                "--device",
                device,
            ]
            r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
            print(
                f"| {k} | {label.replace('K', str(k))} | {r['params']:,} | {r['classifier_params']:,} | "
                f"{r['fixed_buffer']:,} | {r['step_peak_mib']:.1f} |"
            )


if __name__ == "__main__":
    main()
