"""Fed-ISIC2019: download the raw ISIC 2019 files and prepare a preprocessed image cache.

Raw inputs (ISIC 2019 challenge, CC-BY-NC 4.0): ``ISIC_2019_Training_Input.zip`` (or its extracted
folder), ``ISIC_2019_Training_Metadata.csv``, ``ISIC_2019_Training_GroundTruth.csv`` and the HAM10000
metadata. FLamby's ``train_test_split`` file is optional; without it a seeded stratified 80/20 split per
centre is made. Preprocessing follows FLamby (Terrail et al., NeurIPS 2022) with two deliberate fixes:
the shorter edge is exactly ``size`` (FLamby's float ``int(x * ratio)`` gives 223 for some sizes) and
Shades-of-Gray output is clipped to 0..255 (FLamby casts to uint8 without clipping, so overflow wraps).

Cache layout written by :func:`prepare` under ``out``::

    images/<image>.npy   uint8 H x W x 3: shorter edge ``size`` (224), Shades-of-Gray (p = 6) applied
    index.csv            image, center, label, fold, height, width (successfully processed images)
    report.json          per-centre per-class train/test counts, skipped images, split source, inputs
    manifest.json        {"format": "fedetf-isic2019", "version": 1, "num_images", "size"}; written last

A loader must trust the cache only when ``manifest.json`` exists. Every file is written atomically
(temporary name in the same folder, then ``os.replace``), so an interrupted run leaves nothing a
loader would trust, and a rerun reuses the ``.npy`` files already written.

    python -m data_prep.isic2019 download --dest DIR --accept-license
    python -m data_prep.isic2019 prepare --images ZIP_OR_DIR --metadata CSV --ground-truth CSV \\
        --ham-metadata CSV --out DIR [--split train_test_split] [--seed 0] [--workers N] [--strict]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import math
import os
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from data_prep.isic_format import CENTRES, CLASSES, MANIFEST_FORMAT, MANIFEST_VERSION
from fedetf.io import TEMP_GLOB, atomic_path, atomic_write_text

PathLike = str | os.PathLike[str]

GT_COLUMNS = (*CLASSES, "UNK")
#: HAM10000 ``dataset`` value -> centre id.
HAM_CENTRES = {"vidir_molemax": 1, "vidir_modern": 2, "rosendahl": 3, "vienna_dias": 5}

#: FLamby's per-centre train counts, rows = centres 0..5, columns = CLASSES.
SPEC_TRAIN_COUNTS: tuple[tuple[int, ...], ...] = (
    (2279, 3363, 2245, 606, 923, 97, 87, 330),
    (20, 2977, 2, 0, 96, 23, 45, 0),
    (533, 1470, 174, 20, 379, 40, 64, 11),
    (276, 649, 223, 86, 406, 20, 3, 144),
    (166, 349, 0, 0, 140, 0, 0, 0),
    (58, 276, 5, 0, 6, 4, 2, 0),
)
#: FLamby's per-centre image totals of the train and test folds.
SPEC_TRAIN_TOTALS = (9930, 3163, 2691, 1807, 655, 351)
SPEC_TEST_TOTALS = (2483, 791, 672, 452, 164, 88)

IMAGES_ZIP = "ISIC_2019_Training_Input.zip"
IMAGES_FOLDER = "ISIC_2019_Training_Input"
METADATA_CSV = "ISIC_2019_Training_Metadata.csv"
GROUND_TRUTH_CSV = "ISIC_2019_Training_GroundTruth.csv"
HAM_METADATA_CSV = "HAM10000_metadata.csv"
ISIC_BASE_URL = "https://isic-challenge-data.s3.amazonaws.com/2019/"
SPLIT_FILE = "train_test_split"
#: FLamby's own copies of the HAM10000 metadata (the ``dataset`` column that splits HAM into
#: centres) and of its train/test split, at pinned commits so every download is the same file.
#: (The HAM10000 metadata is also on Harvard Dataverse, doi:10.7910/DVN/DBW86T.)
FLAMBY_RAW = "https://raw.githubusercontent.com/owkin/FLamby/{commit}/flamby/datasets/fed_isic2019/"
HAM_METADATA_URL = FLAMBY_RAW.format(commit="ed2f7a04678e3bf94c649c495d14aeaad8f88039") + "HAM10000_metadata"
SPLIT_URL = (
    FLAMBY_RAW.format(commit="ed9c943f19236ec4dedb4a3bee30d9316d08e395") + "dataset_creation_scripts/train_test_split"
)
DOWNLOADS: dict[str, str] = {
    IMAGES_ZIP: ISIC_BASE_URL + IMAGES_ZIP,
    METADATA_CSV: ISIC_BASE_URL + METADATA_CSV,
    GROUND_TRUTH_CSV: ISIC_BASE_URL + GROUND_TRUTH_CSV,
    HAM_METADATA_CSV: HAM_METADATA_URL,
    SPLIT_FILE: SPLIT_URL,
}
DOWNLOAD_FILES = tuple(DOWNLOADS)
LICENCE_MESSAGE = (
    "the ISIC 2019 data are licensed CC-BY-NC 4.0 (non-commercial use, attribution required); "
    "accept the licence with accept_license=True (CLI: --accept-license)"
)

#: Errors that mean "this image cannot be decoded", as opposed to a bug.
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, zipfile.BadZipFile, Image.DecompressionBombError)


class IsicError(ValueError):
    """A problem with the ISIC inputs or outputs; the message is one line naming the file and row."""


def _one_line(err: BaseException | str) -> str:
    return " ".join(str(err).split())


# --------------------------------------------------------------------------------------------- tables


def _read_csv(path: PathLike, columns: Sequence[str], what: str) -> pd.DataFrame:
    """Read a CSV (or Dataverse ``.tab``) as strings, with a ``line`` column (1-based, header = 1)."""
    path = Path(path)
    if not path.is_file():
        raise IsicError(f"{what}: no such file: {path}")
    try:
        with open(path, encoding="utf-8-sig") as f:
            header = f.readline()
        df = pd.read_csv(
            path, sep="\t" if "\t" in header else ",", dtype=str, keep_default_na=False, encoding="utf-8-sig"
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise IsicError(f"{what}: cannot read {path} as CSV: {_one_line(e)}") from None
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise IsicError(f"{what}: {path} lacks column(s) {', '.join(missing)} (has {', '.join(df.columns)})")
    df = df.apply(lambda s: s.str.strip())
    df["line"] = np.arange(len(df)) + 2
    return df


def _unique(df: pd.DataFrame, key: str, path: PathLike) -> None:
    dup = df[df[key].duplicated()]
    if len(dup):
        row = dup.iloc[0]
        raise IsicError(f"{path} line {row.line}: duplicate {key} {row[key]}")


def _first_row_error(df: pd.DataFrame, mask: pd.Series, path: PathLike, what: str) -> None:
    """Raise naming the first row where ``mask`` holds (and how many others)."""
    if mask.any():
        bad = df[mask]
        row = bad.iloc[0]
        more = f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else ""
        raise IsicError(f"{path} line {row.line}: image {row.image}: {what}{more}")


def _labels(gt: pd.DataFrame, path: PathLike) -> pd.Series:
    """Validate the one-hot ground truth; return the label index per image."""
    values = gt[list(GT_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    _first_row_error(gt, ~values.isin([0.0, 1.0]).all(axis=1), path, f"values of {','.join(GT_COLUMNS)} must be 0 or 1")
    _first_row_error(gt, values["UNK"] == 1.0, path, "UNK = 1 is not one of the 8 training classes")
    positives = (values[list(CLASSES)] == 1.0).sum(axis=1)
    _first_row_error(gt, positives == 0, path, "no positive class")
    _first_row_error(gt, positives > 1, path, "more than one positive class")
    return pd.Series(values[list(CLASSES)].to_numpy().argmax(axis=1), index=gt["image"].to_numpy())


def derive_table(metadata_csv: PathLike, ground_truth_csv: PathLike, ham_metadata_csv: PathLike) -> pd.DataFrame:
    """Images with a lesion id, their centre (0..5) and label (index in :data:`CLASSES`).

    Returns columns ``image, center, label`` in the metadata file's order.
    """
    meta = _read_csv(metadata_csv, ("image", "lesion_id"), "metadata_csv")
    gt = _read_csv(ground_truth_csv, ("image", *GT_COLUMNS), "ground_truth_csv")
    ham = _read_csv(ham_metadata_csv, ("image_id", "dataset"), "ham_metadata_csv")
    _unique(meta, "image", metadata_csv)
    _unique(gt, "image", ground_truth_csv)
    _unique(ham, "image_id", ham_metadata_csv)
    labels = _labels(gt, ground_truth_csv)

    kept = meta[meta["lesion_id"] != ""].copy()
    source = kept["lesion_id"].str[:4]
    centre = source.map({"BCN_": 0}).where(~source.str.startswith("MSK"), 4)
    unknown = centre.isna() & (source != "HAM_")
    if unknown.any():
        row = kept[unknown].iloc[0]
        raise IsicError(
            f"{metadata_csv} line {row.line}: image {row.image}: unknown lesion_id source {row.lesion_id[:4]!r} "
            f"in {row.lesion_id!r} (expected BCN_, HAM_ or MSK)"
        )
    is_ham = source == "HAM_"
    ham_of = kept[is_ham].merge(ham, how="left", left_on="image", right_on="image_id", suffixes=("", "_ham"))
    absent = ham_of["image_id"].isna()
    if absent.any():
        row = ham_of[absent].iloc[0]
        raise IsicError(
            f"{ham_metadata_csv}: no row for HAM image {row.image} (lesion_id {row.lesion_id}, "
            f"{metadata_csv} line {row.line}){f' and {absent.sum() - 1} more' if absent.sum() > 1 else ''}"
        )
    ham_centre = ham_of["dataset"].map(HAM_CENTRES)
    if ham_centre.isna().any():
        row = ham_of[ham_centre.isna()].iloc[0]
        raise IsicError(
            f"{ham_metadata_csv} line {int(row.line_ham)}: image {row.image}: unknown dataset {row.dataset!r} "
            f"(expected one of {', '.join(HAM_CENTRES)})"
        )
    centre[is_ham] = ham_centre.to_numpy()

    no_gt = ~kept["image"].isin(labels.index)
    if no_gt.any():
        row = kept[no_gt].iloc[0]
        raise IsicError(f"{metadata_csv} line {row.line}: image {row.image} has no row in {ground_truth_csv}")
    return pd.DataFrame(
        {
            "image": kept["image"].to_numpy(),
            "center": centre.astype(np.int64).to_numpy(),
            "label": labels.loc[kept["image"]].astype(np.int64).to_numpy(),
        }
    )


def _stratified_test(labels: pd.Series, test_fraction: float, seed: int) -> pd.Index:
    """Test indices of a stratified split; classes too small to stratify stay in train."""
    counts = labels.value_counts(ascending=True)
    eligible = counts[counts >= 2]
    while len(eligible):
        sub = labels[labels.isin(eligible.index)]
        try:
            _, test = train_test_split(sub.index, test_size=test_fraction, stratify=sub, random_state=seed)
            return pd.Index(test)
        except ValueError:  # fewer test (or train) slots than classes: move the rarest class to train
            eligible = eligible.iloc[1:]
    return pd.Index([])


def split_table(
    table: pd.DataFrame, split_csv: PathLike | None = None, seed: int = 0, test_fraction: float = 0.2
) -> pd.DataFrame:
    """Add a ``fold`` column (train|test): FLamby's split file if given, else a seeded stratified split per centre."""
    out = table.copy()
    if split_csv is None:
        fold = pd.Series("train", index=out.index)
        for _, grp in out.groupby("center"):
            fold[_stratified_test(grp["label"], test_fraction, seed)] = "test"
        out["fold"] = fold
        return out

    split = _read_csv(split_csv, ("image", "center", "fold"), "split_csv")
    _unique(split, "image", split_csv)
    bad_fold = ~split["fold"].isin(["train", "test"])
    if bad_fold.any():
        row = split[bad_fold].iloc[0]
        raise IsicError(f"{split_csv} line {row.line}: image {row.image}: fold {row.fold!r} is not train or test")
    merged = split.merge(out, how="left", on="image", suffixes=("_split", ""), indicator=True)
    unknown = merged["_merge"] == "left_only"
    if unknown.any():
        row = merged[unknown].iloc[0]
        raise IsicError(
            f"{split_csv} line {row.line}: image {row.image} is not in the derived table "
            f"(absent from the metadata, or dropped for an empty lesion_id)"
        )
    checks = [("center_split", "center", "center", "derived centre", CENTRES)]
    if "target" in merged:
        checks.append(("target", "label", "target", "ground-truth label", CLASSES))
    for given, derived, name, what, names in checks:
        wrong = pd.to_numeric(merged[given], errors="coerce") != merged[derived]
        if wrong.any():
            row = merged[wrong].iloc[0]
            raise IsicError(
                f"{split_csv} line {row.line}: image {row.image}: {name} {row[given]!r} disagrees with the "
                f"{what} {int(row[derived])} ({names[int(row[derived])]})"
            )
    absent = ~out["image"].isin(split["image"])
    if absent.any():
        raise IsicError(
            f"{split_csv}: {absent.sum()} image(s) of the derived table are missing from it, "
            f"e.g. {out['image'][absent].iloc[0]}"
        )
    out["fold"] = out["image"].map(split.set_index("image")["fold"])
    return out


# --------------------------------------------------------------------------------------------- images


def resize_shorter_edge(img: Image.Image, size: int = 224) -> Image.Image:
    """Resize (bilinear) so the shorter edge is ``size``; the longer edge is floored like FLamby's."""
    w, h = img.size
    short = min(w, h)
    new = (size, max(1, h * size // w)) if w == short else (max(1, w * size // h), size)
    return img.resize(new, resample=Image.Resampling.BILINEAR)


def shades_of_gray(arr: np.ndarray, p: int = 6) -> np.ndarray:
    """Shades-of-Gray colour constancy (Minkowski ``p``-norm), as in FLamby, clipped to 0..255.

    ``illum_c = mean(img_c ** p) ** (1/p)``, ``illum /= ||illum||``, ``img_c *= 1 / (illum_c * sqrt(3))``.
    """
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected a uint8 H x W x 3 array, got {arr.dtype} {arr.shape}")
    img = arr.astype(np.float64)
    illum = np.power(np.mean(np.power(img, p), axis=(0, 1)), 1.0 / p)
    norm = np.linalg.norm(illum)
    if norm == 0:  # black image: nothing to correct
        return arr.copy()
    illum = illum / norm
    gain = np.divide(1.0, illum * np.sqrt(3), out=np.zeros_like(illum), where=illum > 0)
    return np.clip(img * gain, 0, 255).astype(np.uint8)


def preprocess(data: bytes | Path, size: int = 224) -> np.ndarray:
    """Decode a JPEG (bytes or path), resize the shorter edge to ``size`` and apply Shades-of-Gray."""
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
        im.load()  # raises on truncated files
        rgb = im.convert("RGB")
    return shades_of_gray(np.asarray(resize_shorter_edge(rgb, size)))


def _image_refs(images: Path) -> dict[str, str]:
    """Image id -> file path or zip member name, for every ``*.jpg`` of a folder or zip."""
    if images.is_dir():
        if (images / IMAGES_FOLDER).is_dir():
            images = images / IMAGES_FOLDER
        return {e.name[:-4]: e.path for e in os.scandir(images) if e.name.lower().endswith(".jpg") and e.is_file()}
    try:
        with zipfile.ZipFile(images) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise IsicError(f"images: {images} is neither a folder nor a readable zip file: {_one_line(e)}") from None
    refs: dict[str, str] = {}
    for name in names:
        base = name.rsplit("/", 1)[-1]
        if base.lower().endswith(".jpg") and not name.startswith("__MACOSX/"):
            refs.setdefault(base[:-4], name)
    return refs


def _process_chunk(
    source: str, items: list[tuple[str, str]], out_dir: str, size: int
) -> list[tuple[str, int, int, str]]:
    """Worker: preprocess ``(image, ref)`` pairs into ``out_dir/<image>.npy``; return (image, h, w, error)."""
    results = []
    zf = zipfile.ZipFile(source) if not os.path.isdir(source) else None
    try:
        for image, ref in items:
            try:
                arr = preprocess(zf.read(ref) if zf is not None else Path(ref), size)
            except _IMAGE_ERRORS as e:
                results.append((image, 0, 0, f"cannot decode: {type(e).__name__}: {_one_line(e)}"))
                continue
            with atomic_path(Path(out_dir) / f"{image}.npy") as tmp:
                np.save(tmp, arr, allow_pickle=False)
            results.append((image, arr.shape[0], arr.shape[1], ""))
    finally:
        if zf is not None:
            zf.close()
    return results


def _cached_shape(path: Path, size: int) -> tuple[int, int] | None:
    """(height, width) of a valid cached image, None if absent or unusable."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) != size:
        return None
    if path.stat().st_size != arr.offset + arr.nbytes:  # trailing bytes: not what np.save wrote
        return None
    return int(arr.shape[0]), int(arr.shape[1])


def _counts(index: pd.DataFrame, fold: str) -> list[list[int]]:
    sub = index[index["fold"] == fold]
    tab = pd.crosstab(sub["center"], sub["label"]).reindex(
        index=range(len(CENTRES)), columns=range(len(CLASSES)), fill_value=0
    )
    return tab.fillna(0).astype(int).to_numpy().tolist()


def prepare(
    images: PathLike,
    metadata_csv: PathLike,
    ground_truth_csv: PathLike,
    ham_metadata_csv: PathLike,
    out: PathLike,
    split_csv: PathLike | None = None,
    seed: int = 0,
    workers: int | None = None,
    strict: bool = False,
    size: int = 224,
) -> dict[str, Any]:
    """Build the cache under ``out`` (see the module docstring) and return the report.

    ``images`` is the ISIC zip or a folder of ``ISIC_*.jpg``. Missing or undecodable images are skipped
    and reported, or with ``strict`` fail the run. Images already cached are reused (resumable).
    """
    inputs = {
        "images": images,
        "metadata_csv": metadata_csv,
        "ground_truth_csv": ground_truth_csv,
        "ham_metadata_csv": ham_metadata_csv,
        "split_csv": split_csv,
    }
    for name, p in inputs.items():
        if p is not None and not Path(p).exists():
            raise IsicError(f"{name}: no such file: {p}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1 or size < 1:
        raise IsicError(f"workers and size must be >= 1, got workers={workers}, size={size}")
    out = Path(out)
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # nothing is trusted until this run completes
    for stale in [*out.glob(TEMP_GLOB), *img_dir.glob(TEMP_GLOB)]:
        stale.unlink(missing_ok=True)

    table = split_table(derive_table(metadata_csv, ground_truth_csv, ham_metadata_csv), split_csv, seed)
    images = Path(images)
    refs = _image_refs(images)
    shapes: dict[str, tuple[int, int]] = {}
    skipped: list[dict[str, str]] = []
    todo: list[tuple[str, str]] = []
    for image in table["image"]:
        cached = _cached_shape(img_dir / f"{image}.npy", size)
        if cached is not None:
            shapes[image] = cached
        elif image in refs:
            todo.append((image, refs[image]))
        elif strict:
            raise IsicError(f"image {image}: listed in {metadata_csv} but not found in {images}")
        else:
            skipped.append({"image": image, "reason": f"not found in {images}"})
    reused = len(shapes)

    chunk = max(1, min(64, math.ceil(len(todo) / (workers * 4))))
    chunks = [todo[i : i + chunk] for i in range(0, len(todo), chunk)]

    def collect(results: list[tuple[str, int, int, str]], bar: tqdm) -> None:
        for image, h, w, err in results:
            if not err:
                shapes[image] = (h, w)
            elif strict:
                raise IsicError(f"image {image} in {images}: {err}")
            else:
                skipped.append({"image": image, "reason": err})
        bar.update(len(results))

    with tqdm(total=len(todo), unit="img", desc="ISIC 2019 prep", dynamic_ncols=True) as bar:
        if workers == 1 or len(chunks) <= 1:
            for items in chunks:
                collect(_process_chunk(str(images), items, str(img_dir), size), bar)
        else:
            pool = ProcessPoolExecutor(max_workers=min(workers, len(chunks)))
            try:
                futures: list[Future] = [
                    pool.submit(_process_chunk, str(images), items, str(img_dir), size) for items in chunks
                ]
                for fut in as_completed(futures):
                    collect(fut.result(), bar)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)

    index = table[table["image"].isin(shapes)].copy()
    index["height"] = [shapes[i][0] for i in index["image"]]
    index["width"] = [shapes[i][1] for i in index["image"]]
    order = {name: i for i, name in enumerate(table["image"])}
    skipped.sort(key=lambda s: order[s["image"]])
    train, test = _counts(index, "train"), _counts(index, "test")
    report: dict[str, Any] = {
        "format": f"{MANIFEST_FORMAT}-report",
        "split_source": "flamby" if split_csv is not None else f"seeded-80-20 seed={seed}",
        "size": size,
        "inputs": {k: str(Path(v).resolve()) for k, v in inputs.items() if v is not None},
        "centres": list(CENTRES),
        "classes": list(CLASSES),
        "num_listed": len(table),
        "num_images": len(index),
        "processed": len(shapes) - reused,
        "reused": reused,
        "skipped": skipped,
        "counts": {"train": train, "test": test},
        "totals": {"train": [sum(r) for r in train], "test": [sum(r) for r in test]},
    }
    atomic_write_text(out / "index.csv", index.to_csv(index=False))
    atomic_write_text(out / "report.json", json.dumps(report, indent=1) + "\n")
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "num_images": len(index), "size": size}
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return report


# --------------------------------------------------------------------------------------------- report


def format_report(report: dict[str, Any]) -> str:
    """Per-centre table (rows: centre x fold, columns: the 8 classes and the total) plus a summary."""
    counts = {fold: np.asarray(report["counts"][fold]) for fold in ("train", "test")}
    rows = [
        (f"{c} {name}" if fold == "train" else "", fold, *counts[fold][c])
        for c, name in enumerate(CENTRES)
        for fold in ("train", "test")
    ]
    rows += [("all" if fold == "train" else "", fold, *counts[fold].sum(axis=0)) for fold in ("train", "test")]
    df = pd.DataFrame(rows, columns=["centre", "fold", *CLASSES])
    df["total"] = df[list(CLASSES)].sum(axis=1)
    width = int(df["centre"].str.len().max())
    df = df.rename(columns={"centre": "centre".ljust(width), "fold": "fold "})
    table = df.to_string(index=False, formatters={df.columns[0]: lambda v: v.ljust(width), "fold ": "{:<5}".format})
    totals = report["totals"]
    head = (
        f"Fed-ISIC2019 cache: {report['num_images']} images ({sum(totals['train'])} train / "
        f"{sum(totals['test'])} test), split {report['split_source']}, size {report['size']}; "
        f"{report['processed']} processed now, {report['reused']} reused, {len(report['skipped'])} skipped"
    )
    lines = [head, table]
    for s in report["skipped"][:10]:
        lines.append(f"skipped {s['image']}: {s['reason']}")
    if len(report["skipped"]) > 10:
        lines.append(f"... and {len(report['skipped']) - 10} more skipped (see report.json)")
    return "\n".join(lines)


def compare_with_spec(report: dict[str, Any]) -> list[str]:
    """Differences between the report's counts and FLamby's table (empty list: it matches).

    Compares every per-centre per-class train count and the per-centre train and test totals.
    """
    diffs = []
    got = np.asarray(report["counts"]["train"])
    for c, k in np.argwhere(got != np.asarray(SPEC_TRAIN_COUNTS)):
        diffs.append(f"centre {c} {CENTRES[c]}, {CLASSES[k]} train: {got[c, k]} (FLamby: {SPEC_TRAIN_COUNTS[c][k]})")
    for fold, spec in (("train", SPEC_TRAIN_TOTALS), ("test", SPEC_TEST_TOTALS)):
        totals = np.asarray(report["counts"][fold]).sum(axis=1)
        for c in np.flatnonzero(totals != np.asarray(spec)):
            diffs.append(f"centre {c} {CENTRES[c]}, {fold} total: {totals[c]} (FLamby: {spec[c]})")
    return diffs


# --------------------------------------------------------------------------------------------- download


def _fetch(url: str, target: Path, chunk_size: int = 1 << 20, retry: bool = True) -> None:
    """Stream ``url`` to ``<target>.part`` (resuming it with a Range request), then rename to ``target``."""
    part = target.with_name(target.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "fedetf-isic2019"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as resp:
            if resp.status != 206:
                offset = 0  # server ignored the range: start over
            length = resp.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            with (
                open(part, "ab" if offset else "wb") as f,
                tqdm(
                    total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=target.name
                ) as bar,
            ):
                while block := resp.read(chunk_size):
                    f.write(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset and retry:  # range not satisfiable: restart from scratch once
            part.unlink()
            return _fetch(url, target, chunk_size, retry=False)
        raise IsicError(f"{url}: HTTP {e.code} {_one_line(e.reason)}") from None
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        raise IsicError(f"{url}: {_one_line(reason)}; rerun to resume") from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise IsicError(f"{url}: incomplete download ({size} of {total} bytes in {part}); rerun to resume")
    if target.suffix == ".zip" and not zipfile.is_zipfile(part):
        raise IsicError(f"{url}: downloaded file {part} is not a zip archive")
    os.replace(part, target)


def download(
    dest: PathLike, accept_license: bool, base_url: str | None = None, files: Sequence[str] = DOWNLOAD_FILES
) -> list[Path]:
    """Download the raw ISIC 2019 files, the HAM10000 metadata and FLamby's split into ``dest``; return their paths.

    Sources: :data:`ISIC_BASE_URL` for the ISIC files, FLamby's repository (pinned commits) for the
    HAM10000 metadata and FLamby's ``train_test_split``. ``base_url`` replaces the host of every
    file (``<base_url>/<name>``). Files already complete are skipped; a ``.part`` file is resumed.
    The HAM10000 metadata has its own terms (CC BY-NC 4.0: non-commercial, attribution).
    """
    if not accept_license:
        raise IsicError(LICENCE_MESSAGE)
    unknown = [f for f in files if f not in DOWNLOADS]
    if unknown:
        raise IsicError(f"unknown file(s) {', '.join(unknown)}; known: {', '.join(DOWNLOADS)}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in files:
        target = dest / name
        if target.exists():
            tqdm.write(f"{name}: already downloaded, skipped")
        else:
            _fetch(DOWNLOADS[name] if base_url is None else f"{base_url.rstrip('/')}/{name}", target)
        paths.append(target)
    return paths


# --------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 on an input error)."""
    parser = argparse.ArgumentParser(prog="python -m data_prep.isic2019", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    dl = sub.add_parser("download", help="download the raw ISIC 2019 files and the HAM10000 metadata")
    dl.add_argument("--dest", type=Path, required=True)
    dl.add_argument("--accept-license", action="store_true", help="accept the CC-BY-NC 4.0 licence of the data")
    dl.add_argument("--base-url", default=None, help="fetch every file from <URL>/<name> instead")
    pr = sub.add_parser("prepare", help="build the preprocessed cache")
    pr.add_argument("--images", type=Path, required=True, help="ISIC_2019_Training_Input.zip or its folder")
    pr.add_argument("--metadata", type=Path, required=True, help=METADATA_CSV)
    pr.add_argument("--ground-truth", type=Path, required=True, help=GROUND_TRUTH_CSV)
    pr.add_argument("--ham-metadata", type=Path, required=True, help="HAM10000 metadata (csv)")
    pr.add_argument("--out", type=Path, required=True)
    pr.add_argument("--split", type=Path, default=None, help="FLamby's train_test_split file")
    pr.add_argument("--seed", type=int, default=0, help="seed of the 80/20 split without --split")
    pr.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    pr.add_argument("--strict", action="store_true", help="fail on a missing or corrupt image")
    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            for path in download(args.dest, args.accept_license, args.base_url):
                print(path)
            return 0
        report = prepare(
            args.images,
            args.metadata,
            args.ground_truth,
            args.ham_metadata,
            args.out,
            split_csv=args.split,
            seed=args.seed,
            workers=args.workers,
            strict=args.strict,
        )
    except (IsicError, OSError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except BrokenProcessPool as e:
        print(f"error: a worker process died ({_one_line(e)}; out of memory?); rerun to resume", file=sys.stderr)
        return 2
    print(format_report(report))
    diffs = compare_with_spec(report)
    if not diffs:
        print("matches the FLamby table")
    else:
        print(f"differs from the FLamby table in {len(diffs)} place(s) (expected unless these are the real files):")
        for d in diffs[:10]:
            print(f"  {d}")
        if len(diffs) > 10:
            print(f"  ... and {len(diffs) - 10} more")
    print(f"cache: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
