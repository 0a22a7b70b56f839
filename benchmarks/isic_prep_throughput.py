"""Fed-ISIC2019 prep throughput (images/s) on full-size fake JPEGs, with 1 and with 2 worker processes.

Generates N fake 1024x1024 ISIC JPEGs (benchmarks/isic_fakes.py), then times ``data_prep.isic2019.prepare``
(decode, resize to shorter edge 224, Shades-of-Gray, atomic .npy write) into a fresh cache per worker
count. ``workers=1`` runs in-process; more workers use a process pool.

    python benchmarks/isic_prep_throughput.py [--n 64] [--size 1024] [--workers 1 2] [--zip]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script without an editable install
    sys.path.insert(0, str(ROOT))

from benchmarks.isic_fakes import make_fake_isic  # noqa: E402
from data_prep.isic2019 import prepare  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="number of images")
    parser.add_argument("--size", type=int, default=1024, help="side of the square fake JPEGs")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--zip", action="store_true", help="read the images from the zip instead of a folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedetf-isic-bench-") as tmp:
        t0 = time.perf_counter()
        fake = make_fake_isic(Path(tmp) / "raw", size=(args.size, args.size), zip_images=args.zip, n_images=args.n)
        print(
            f"generated {args.n} {args.size}x{args.size} JPEGs ({'zip' if args.zip else 'folder'}) in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        rates: dict[int, float] = {}
        for workers in args.workers:
            t0 = time.perf_counter()
            report = prepare(
                fake.images,
                fake.metadata_csv,
                fake.ground_truth_csv,
                fake.ham_metadata_csv,
                Path(tmp) / f"out-w{workers}",
                split_csv=fake.split_csv,
                workers=workers,
            )
            seconds = time.perf_counter() - t0
            if report["processed"] != args.n:
                raise SystemExit(f"expected {args.n} processed images, got {report['processed']}")
            rates[workers] = args.n / seconds
            print(f"workers={workers}: {args.n} images in {seconds:.2f} s = {rates[workers]:.1f} images/s")
    if len(rates) > 1:
        base = args.workers[0]
        for workers in args.workers[1:]:
            print(f"speed-up {workers} vs {base} worker(s): {rates[workers] / rates[base]:.2f}x")


if __name__ == "__main__":
    main()
