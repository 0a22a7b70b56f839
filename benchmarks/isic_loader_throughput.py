"""Fed-ISIC2019 loader throughput: the prepared .npy cache vs ImageFolder over resized JPEGs.

Both sides load the same preprocessed images (shorter edge 224, Shades-of-Gray)
and apply the same transform (FLamby's training augmentation, then the test
centre crop) in the same process; only the storage differs (uint8 .npy vs JPEG
decoded by PIL per sample); batches are uint8 on both sides (the model
normalises on its device). Prints images/s and the ratio (target with the
training augmentation: cache >= 2x).

    python benchmarks/isic_loader_throughput.py [--images 256] [--epochs 2] [--repeats 3] [--source-size 1024 768]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from benchmarks.isic_fakes import make_fake_isic
from data_prep.isic2019 import prepare
from data_prep.isic_data import IsicImages
from data_prep.isic_transforms import isic_test_transform, isic_train_transform


def to_tensor(out: dict[str, np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(out["image"]))


def images_per_second(loader: DataLoader, epochs: int) -> float:
    n, start = 0, time.perf_counter()
    for _ in range(epochs):
        for x, _ in loader:
            n += len(x)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--source-size", type=int, nargs=2, default=[1024, 768])
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fake = make_fake_isic(root / "raw", size=tuple(args.source_size), n_images=args.images)
        cache = root / "cache"
        prepare(
            fake.images,
            fake.metadata_csv,
            fake.ground_truth_csv,
            fake.ham_metadata_csv,
            cache,
            split_csv=fake.split_csv,
        )
        index = pd.read_csv(cache / "index.csv")
        files = [cache / "images" / f"{name}.npy" for name in index["image"]]
        # The same preprocessed pixels as JPEGs (quality 95) in ImageFolder layout.
        folder = root / "jpeg"
        for f, label in zip(files, index["label"], strict=True):
            (folder / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.load(f)).save(folder / str(label) / f"{f.stem}.jpg", quality=95)
        labels = index["label"].to_numpy(np.int64)
        shapes = [(h, w, 3) for h, w in zip(index["height"], index["width"], strict=True)]
        cv2.setNumThreads(1)
        for title, aug in (("train augmentation", isic_train_transform()), ("test transform", isic_test_transform())):
            cached = IsicImages(files, shapes, labels, aug)
            jpegs = ImageFolder(str(folder), transform=lambda img, aug=aug: to_tensor(aug(image=np.asarray(img))))
            loaders = {
                name: DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=0)
                for name, ds in (("cache (.npy)", cached), ("ImageFolder (JPEG)", jpegs))
            }
            for loader in loaders.values():
                images_per_second(loader, 1)  # warm the page cache and allocator
            # Interleaved repeats, median of each: drift on a shared machine hits both sides.
            runs: dict[str, list[float]] = {name: [] for name in loaders}
            for _ in range(args.repeats):
                for name, loader in loaders.items():
                    runs[name].append(images_per_second(loader, args.epochs))
            results = {name: statistics.median(r) for name, r in runs.items()}
            for name, r in runs.items():
                print(f"[{title}] {name:<20} {results[name]:8.1f} images/s (median; {min(r):.0f}-{max(r):.0f})")
            ratio = results["cache (.npy)"] / results["ImageFolder (JPEG)"]
            print(
                f"[{title}] ratio cache / ImageFolder: {ratio:.2f}x "
                f"({len(files)} images, {args.epochs} epochs x {args.repeats} repeats, 1 thread)"
            )


if __name__ == "__main__":
    main()
