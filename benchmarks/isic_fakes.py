"""A small fake raw ISIC 2019 dataset in exactly the real file formats (for benchmarks and tests).

    fake = make_fake_isic(tmp_path, per_centre=6)
    prepare(fake.images, fake.metadata_csv, fake.ground_truth_csv, fake.ham_metadata_csv, out, fake.split_csv)

Layout under ``root``: ``ISIC_2019_Training_Input/`` (or ``ISIC_2019_Training_Input.zip`` holding that
folder) with ``ISIC_XXXXXXX.jpg`` plus the LICENSE/ATTRIBUTION files, ``ISIC_2019_Training_Metadata.csv``,
``ISIC_2019_Training_GroundTruth.csv``, ``HAM10000_metadata.csv`` and FLamby's ``train_test_split``.
Image ``j`` of centre ``c`` has label ``(c + j) % 8`` (all 8 classes appear once ``per_centre >= 3``) and
is in the test fold when ``j % 3 == 2``. Two extra images have an empty lesion_id and must be dropped.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
HAM_DATASETS = {1: "vidir_molemax", 2: "vidir_modern", 3: "rosendahl", 5: "vienna_dias"}
HAM_DX = ("mel", "nv", "bcc", "akiec", "bkl", "df", "vasc", "akiec")
SITES = ("anterior torso", "head/neck", "lower extremity", "upper extremity", "posterior torso", "")
NUM_DROPPED = 2


@dataclass(frozen=True)
class FakeIsic:
    """Paths of a generated fake ISIC 2019 set and what a correct pipeline must derive from it."""

    root: Path
    images: Path  # the ISIC_2019_Training_Input folder, or ISIC_2019_Training_Input.zip
    metadata_csv: Path
    ground_truth_csv: Path
    ham_metadata_csv: Path
    split_csv: Path  # FLamby format
    table: pd.DataFrame  # image, center, label, fold of the images a pipeline must keep
    dropped: tuple[str, ...]  # images whose lesion_id is empty
    train_counts: tuple[tuple[int, ...], ...]  # [centre][class]
    test_counts: tuple[tuple[int, ...], ...]

    @property
    def counts(self) -> dict[str, list[list[int]]]:
        """Per-centre per-class counts, in the layout of the prep report's ``counts``."""
        return {"train": [list(r) for r in self.train_counts], "test": [list(r) for r in self.test_counts]}

    def image_path(self, image: str) -> Path:
        """Path of one image's JPEG (folder layout only)."""
        return self.images / f"{image}.jpg"


def _jpeg(rng: np.random.Generator, size: tuple[int, int]) -> bytes:
    """A smooth random colour image with a random colour cast and mild noise, JPEG-encoded."""
    w, h = size
    coarse = Image.fromarray(rng.integers(40, 230, (6, 6, 3), dtype=np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    cast = rng.uniform(0.55, 1.0, 3)
    arr = np.asarray(coarse, dtype=np.float32) * cast + rng.normal(0, 6, (h, w, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_fake_isic(
    root: Path,
    per_centre: int = 6,
    size: tuple[int, int] = (64, 48),
    zip_images: bool = False,
    seed: int = 0,
    n_images: int | None = None,
) -> FakeIsic:
    """Write a fake ISIC 2019 set under ``root``; ``size`` is (width, height) of every JPEG.

    ``n_images`` (optional) replaces ``per_centre``: that many kept images, dealt round-robin to the centres.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if n_images is None:
        recs = pd.DataFrame({"center": np.repeat(np.arange(6), per_centre), "j": np.tile(np.arange(per_centre), 6)})
    else:
        recs = pd.DataFrame({"center": np.arange(n_images) % 6, "j": np.arange(n_images) // 6})
    recs["label"] = (recs["center"] + recs["j"]) % 8
    recs["fold"] = np.where(recs["j"] % 3 == 2, "test", "train")
    # Centres interleave in the real files; image ids are sorted there.
    recs = recs.iloc[rng.permutation(len(recs))].reset_index(drop=True)
    dropped = pd.DataFrame({"center": -1, "j": -1, "label": [1, 4], "fold": ""})
    recs = pd.concat([recs, dropped], ignore_index=True).iloc[rng.permutation(len(recs) + NUM_DROPPED)]
    recs = recs.reset_index(drop=True)
    recs["image"] = [f"ISIC_{n:07d}" for n in range(len(recs))]
    first_msk = recs.index[recs["center"] == 4]
    if len(first_msk):  # real MSK images are named ISIC_XXXXXXX_downsampled
        recs.loc[first_msk[0], "image"] += "_downsampled"
    prefix = {0: "BCN_{:08d}", 4: "MSK4_{:07d}", -1: ""}
    recs["lesion_id"] = [
        prefix.get(c, "HAM_{:07d}").format(1000 + n) if c >= 0 else "" for n, c in enumerate(recs["center"])
    ]

    meta = pd.DataFrame(
        {
            "image": recs["image"],
            "age_approx": [f"{a}.0" if a else "" for a in rng.choice([0, 35, 50, 65, 80], len(recs))],
            "anatom_site_general": rng.choice(SITES, len(recs)),
            "lesion_id": recs["lesion_id"],
            "sex": rng.choice(["male", "female", ""], len(recs)),
        }
    )
    onehot = np.eye(9)[recs["label"]]
    gt = pd.concat([recs[["image"]], pd.DataFrame(onehot, columns=[*CLASSES, "UNK"])], axis=1)
    ham_rows = recs[recs["center"].isin(list(HAM_DATASETS))]
    ham = pd.DataFrame(
        {
            "lesion_id": ham_rows["lesion_id"],
            "image_id": ham_rows["image"],
            "dx": [HAM_DX[k] for k in ham_rows["label"]],
            "dx_type": rng.choice(["histo", "follow_up", "consensus", "confocal"], len(ham_rows)),
            "age": rng.choice(["45.0", "60.0", "80.0"], len(ham_rows)),
            "sex": rng.choice(["male", "female"], len(ham_rows)),
            "localization": rng.choice(["back", "face", "scalp", "trunk"], len(ham_rows)),
            "dataset": ham_rows["center"].map(HAM_DATASETS),
        }
    ).iloc[rng.permutation(len(ham_rows))]
    kept = recs[recs["center"] >= 0]
    split = pd.concat(
        [kept[["image"]], pd.DataFrame(np.eye(9)[kept["label"]], columns=[*CLASSES, "UNK"], index=kept.index)], axis=1
    ).assign(
        target=kept["label"],
        center=kept["center"],
        fold=kept["fold"],
        fold2=kept["fold"] + "_" + kept["center"].astype(str),
    )
    paths = {
        "metadata_csv": root / "ISIC_2019_Training_Metadata.csv",
        "ground_truth_csv": root / "ISIC_2019_Training_GroundTruth.csv",
        "ham_metadata_csv": root / "HAM10000_metadata.csv",
        "split_csv": root / "train_test_split",
    }
    meta.to_csv(paths["metadata_csv"], index=False)
    gt.to_csv(paths["ground_truth_csv"], index=False, float_format="%.1f")
    ham.to_csv(paths["ham_metadata_csv"], index=False)
    split.iloc[rng.permutation(len(split))].to_csv(paths["split_csv"], index=False, float_format="%.1f")

    files = {f"{image}.jpg": _jpeg(rng, size) for image in recs["image"]}
    files["LICENSE.txt"] = b"CC-BY-NC 4.0\n"
    files["ATTRIBUTION.txt"] = b"ISIC 2019: BCN_20000, HAM10000, MSK\n"
    if zip_images:
        images = root / "ISIC_2019_Training_Input.zip"
        with zipfile.ZipFile(images, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in files.items():
                zf.writestr(f"ISIC_2019_Training_Input/{name}", data)
    else:
        images = root / "ISIC_2019_Training_Input"
        images.mkdir(exist_ok=True)
        for name, data in files.items():
            (images / name).write_bytes(data)

    def count(fold: str) -> tuple[tuple[int, ...], ...]:
        sub = kept[kept["fold"] == fold]
        tab = pd.crosstab(sub["center"], sub["label"]).reindex(index=range(6), columns=range(8), fill_value=0)
        return tuple(tuple(int(v) for v in row) for row in tab.fillna(0).to_numpy())

    return FakeIsic(
        root=root,
        images=images,
        table=kept[["image", "center", "label", "fold"]].reset_index(drop=True),
        dropped=tuple(recs.loc[recs["center"] < 0, "image"]),
        train_counts=count("train"),
        test_counts=count("test"),
        **paths,
    )
