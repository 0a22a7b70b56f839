"""Fed-ISIC2019 preparation: tables, split, preprocessing, cache, resumability, bad inputs, download, CLI."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmarks.isic_fakes import FakeIsic, make_fake_isic
from data_prep import isic2019 as isic
from data_prep.isic2019 import (
    CENTRES,
    CLASSES,
    SPEC_TEST_TOTALS,
    SPEC_TRAIN_COUNTS,
    SPEC_TRAIN_TOTALS,
    IsicError,
    compare_with_spec,
    derive_table,
    download,
    format_report,
    prepare,
    resize_shorter_edge,
    shades_of_gray,
    split_table,
)

ROOT = Path(__file__).resolve().parent.parent
SIZE = (300, 250)  # width, height: larger than 224, not square
EXPECTED_SHAPE = (224, 300 * 224 // 250)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> FakeIsic:
    return make_fake_isic(tmp_path_factory.mktemp("isic") / "raw", per_centre=6, size=SIZE)


@pytest.fixture
def fake(pristine: FakeIsic, tmp_path: Path) -> FakeIsic:
    """A copy of the fake set for one test to change (copying is 50x cheaper than encoding the JPEGs again)."""
    root = shutil.copytree(pristine.root, tmp_path / "raw")
    paths = {f.name: getattr(pristine, f.name) for f in dataclasses.fields(FakeIsic)}
    moved = {k: root / v.relative_to(pristine.root) for k, v in paths.items() if isinstance(v, Path)}
    return dataclasses.replace(pristine, **moved, table=pristine.table.copy())


def _prep(fake: FakeIsic, out: Path, **kw) -> dict:
    kw.setdefault("split_csv", fake.split_csv)
    kw.setdefault("workers", 1)
    return prepare(fake.images, fake.metadata_csv, fake.ground_truth_csv, fake.ham_metadata_csv, out, **kw)


def _table(fake: FakeIsic) -> pd.DataFrame:
    return derive_table(fake.metadata_csv, fake.ground_truth_csv, fake.ham_metadata_csv)


def _edit_csv(path: Path, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    edit(pd.read_csv(path, dtype=str, keep_default_na=False)).to_csv(path, index=False)


def _set_cell(path: Path, key: str, value: str, column: str, new: str) -> None:
    """Set ``column`` to ``new`` in the row where ``key == value``."""

    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[df[key] == value, column] = new
        return df

    _edit_csv(path, edit)


def _line(path: Path, image: str, column: str = "image") -> int:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return int(np.flatnonzero(df[column] == image)[0]) + 2


def _direct(jpg: Path) -> np.ndarray:
    with Image.open(jpg) as im:
        return shades_of_gray(np.asarray(resize_shorter_edge(im.convert("RGB"), 224)))


# --------------------------------------------------------------------------------------------- tables


def test_spec_constants_are_consistent() -> None:
    assert [sum(r) for r in SPEC_TRAIN_COUNTS] == list(SPEC_TRAIN_TOTALS)
    assert sum(SPEC_TRAIN_TOTALS) == 18597 and sum(SPEC_TEST_TOTALS) == 4650
    assert CLASSES == ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
    assert CENTRES[0] == "BCN" and CENTRES[4] == "MSK" and CENTRES[5] == "vienna_dias"


def test_derive_table_centres_labels_and_dropped_rows(fake: FakeIsic) -> None:
    meta = pd.read_csv(fake.metadata_csv, dtype=str, keep_default_na=False)
    assert (meta["lesion_id"] == "").sum() == len(fake.dropped) == 2
    table = _table(fake)
    pd.testing.assert_frame_equal(table, fake.table[["image", "center", "label"]])
    assert table["center"].dtype == np.int64 and table["label"].dtype == np.int64
    assert not set(fake.dropped) & set(table["image"])
    assert set(table["center"]) == set(range(6)) and set(table["label"]) == set(range(8))
    # Label = position of the 1.0 in the ground truth, in CLASSES order.
    gt = pd.read_csv(fake.ground_truth_csv).set_index("image")
    row = table.iloc[3]
    assert gt.loc[row["image"], CLASSES[row["label"]]] == 1.0
    # Centre from the lesion id prefix (BCN_ / MSK4) or the HAM10000 dataset column.
    lesion = meta.set_index("image")["lesion_id"]
    assert all(lesion[i].startswith("BCN_") for i in table.loc[table["center"] == 0, "image"])
    assert all(lesion[i].startswith("MSK4_") for i in table.loc[table["center"] == 4, "image"])
    assert all(lesion[i].startswith("HAM_") for i in table.loc[table["center"].isin([1, 2, 3, 5]), "image"])


def test_ham_dataset_column_decides_the_ham_centre(fake: FakeIsic) -> None:
    image = fake.table.loc[fake.table["center"] == 1, "image"].iloc[0]
    _set_cell(fake.ham_metadata_csv, "image_id", image, "dataset", "vienna_dias")
    table = _table(fake).set_index("image")
    assert table.loc[image, "center"] == 5


def _set_gt(values: dict[str, str]):
    def edit(df: pd.DataFrame, image: str) -> pd.DataFrame:
        df.loc[df["image"] == image, [*CLASSES, "UNK"]] = "0.0"
        for col, v in values.items():
            df.loc[df["image"] == image, col] = v
        return df

    return edit


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("unk", "UNK = 1"),
        ("none", "no positive class"),
        ("two", "more than one positive class"),
        ("text", "must be 0 or 1"),
        ("source", "unknown lesion_id source 'XYZ_'"),
        ("ham", "no row for HAM image"),
        ("ham-dataset", "unknown dataset 'vidir_elsewhere'"),
    ],
)
def test_derive_table_bad_rows_name_file_row_and_line(fake: FakeIsic, kind: str, message: str) -> None:
    ham_image = fake.table.loc[fake.table["center"] == 2, "image"].iloc[1]
    image = fake.table["image"].iloc[4] if kind not in ("ham", "ham-dataset") else ham_image
    gt_edits = {"unk": {"UNK": "1.0"}, "none": {}, "two": {"MEL": "1.0", "SCC": "1.0"}, "text": {"MEL": "yes"}}
    if kind in gt_edits:
        path, line = fake.ground_truth_csv, _line(fake.ground_truth_csv, image)
        _edit_csv(path, functools.partial(_set_gt(gt_edits[kind]), image=image))
    elif kind == "source":
        path, line = fake.metadata_csv, _line(fake.metadata_csv, image)
        _set_cell(path, "image", image, "lesion_id", "XYZ_0000001")
    elif kind == "ham":
        path, line = fake.ham_metadata_csv, _line(fake.metadata_csv, image)
        _edit_csv(path, lambda df: df[df["image_id"] != image])
    else:
        path, line = fake.ham_metadata_csv, _line(fake.ham_metadata_csv, image, "image_id")
        _set_cell(path, "image_id", image, "dataset", "vidir_elsewhere")
    with pytest.raises(IsicError) as err:
        _table(fake)
    msg = str(err.value)
    assert str(path) in msg and image in msg and f"line {line}" in msg and message in msg
    assert "\n" not in msg


def test_missing_csv_is_named(fake: FakeIsic, tmp_path: Path) -> None:
    fake.ground_truth_csv.unlink()
    with pytest.raises(IsicError, match=r"ground_truth_csv: no such file: .*ISIC_2019_Training_GroundTruth\.csv"):
        _table(fake)
    with pytest.raises(IsicError, match=r"ground_truth_csv: no such file: .*GroundTruth\.csv"):
        _prep(fake, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_column_is_named(fake: FakeIsic) -> None:
    _edit_csv(fake.metadata_csv, lambda df: df.drop(columns="lesion_id"))
    with pytest.raises(IsicError, match=r"ISIC_2019_Training_Metadata\.csv lacks column\(s\) lesion_id"):
        _table(fake)


# --------------------------------------------------------------------------------------------- split


def test_flamby_split_file_is_honoured(fake: FakeIsic) -> None:
    split = split_table(_table(fake), fake.split_csv)
    assert list(split["fold"]) == list(fake.table["fold"])
    assert list(split.columns) == ["image", "center", "label", "fold"]


@pytest.mark.parametrize("kind", ["unknown", "dropped", "centre", "target", "absent", "fold"])
def test_flamby_split_file_errors(fake: FakeIsic, kind: str) -> None:
    image = fake.table["image"].iloc[7]
    df = pd.read_csv(fake.split_csv, dtype=str, keep_default_na=False)
    if kind in ("unknown", "dropped"):
        name = "ISIC_9999999" if kind == "unknown" else fake.dropped[0]
        df = pd.concat([df, df.iloc[[0]].assign(image=name)], ignore_index=True)
        image, message = name, "is not in the derived table"
    elif kind == "centre":
        df.loc[df["image"] == image, "center"] = str((fake.table["center"].iloc[7] + 1) % 6)
        message = "disagrees with the derived centre"
    elif kind == "target":
        df.loc[df["image"] == image, "target"] = str((fake.table["label"].iloc[7] + 1) % 8)
        message = "disagrees with the ground-truth label"
    elif kind == "fold":
        df.loc[df["image"] == image, "fold"] = "val"
        message = "is not train or test"
    else:
        df = df[df["image"] != image]
        message = "missing from it"
    df.to_csv(fake.split_csv, index=False)
    with pytest.raises(IsicError) as err:
        split_table(_table(fake), fake.split_csv)
    msg = str(err.value)
    assert str(fake.split_csv) in msg and image in msg and message in msg


def _synthetic_table(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for c, (n, probs) in enumerate(
        [(600, [0.4, 0.3, 0.1, 0.1, 0.05, 0.03, 0.02, 0.0]), (200, [0.0, 0.9, 0.05, 0.0, 0.05, 0.0, 0.0, 0.0])]
    ):
        parts.append(pd.DataFrame({"center": c, "label": rng.choice(8, n, p=probs)}))
    parts.append(pd.DataFrame({"center": 1, "label": [6]}))  # a class with a single image
    parts.append(pd.DataFrame({"center": 2, "label": [0, 1, 2]}))  # too small to stratify at all
    table = pd.concat(parts, ignore_index=True)
    table.insert(0, "image", [f"ISIC_{i:07d}" for i in range(len(table))])
    return table


def test_seeded_split_is_reproducible_and_stratified_per_centre() -> None:
    table = _synthetic_table()
    a, b, c = split_table(table, seed=3), split_table(table, seed=3), split_table(table, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert (a["fold"] != c["fold"]).any()
    assert set(a["fold"]) == {"train", "test"}
    counts = a.groupby(["center", "label"])["fold"].agg(n="size", test=lambda f: int((f == "test").sum()))
    for (centre, label), row in counts.iterrows():
        if row.n >= 10:  # stratified: each class's test share is 20 % up to rounding
            assert abs(row.test - 0.2 * row.n) <= 1, (centre, label, row.n, row.test)
    assert counts.loc[(1, 6), "test"] == 0  # single-image class stays in train
    per_centre = a.groupby("center")["fold"].apply(lambda f: (f == "test").mean())
    assert abs(per_centre[0] - 0.2) < 0.01 and abs(per_centre[1] - 0.2) < 0.01
    assert (a.loc[a["center"] == 2, "fold"] == "train").all()


# --------------------------------------------------------------------------------------------- images


def test_resize_shorter_edge_keeps_aspect_and_uses_bilinear() -> None:
    rng = np.random.default_rng(0)
    land = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    port = Image.fromarray(rng.integers(0, 255, (900, 300, 3), dtype=np.uint8))
    small = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    assert resize_shorter_edge(land).size == (298, 224)
    assert resize_shorter_edge(port).size == (224, 672)
    assert resize_shorter_edge(small).size == (298, 224)
    assert resize_shorter_edge(land, 100).size == (133, 100)
    expected = land.resize((298, 224), resample=Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(np.asarray(resize_shorter_edge(land)), np.asarray(expected))


def test_shades_of_gray_matches_formula_and_removes_a_cast() -> None:
    rng = np.random.default_rng(1)
    base = rng.integers(20, 140, (50, 70, 3)).astype(np.float64)
    arr = (base * np.array([1.0, 0.8, 0.6])).astype(np.uint8)
    out = shades_of_gray(arr)
    assert out.dtype == np.uint8 and out.shape == arr.shape
    x = arr.astype(np.float64)
    e = np.array([np.mean(x[..., ch] ** 6) ** (1 / 6) for ch in range(3)])
    e = e / np.sqrt((e**2).sum())
    np.testing.assert_array_equal(out, np.clip(x / (e * np.sqrt(3)), 0, 255).astype(np.uint8))
    # The corrected image's illuminant estimate is (close to) gray.
    y = out.astype(np.float64)
    illum = np.array([np.mean(y[..., ch] ** 6) ** (1 / 6) for ch in range(3)])
    assert np.ptp(illum) / illum.mean() < 0.02 and np.ptp(e) > 0.1
    # Clipped, not wrapped around, when a channel is pushed past 255.
    bright = np.full((4, 4, 3), (200, 200, 30), np.uint8)
    bright[0, 0, 2] = 250  # blue gain ~1.19 pushes this pixel to ~296
    assert shades_of_gray(bright)[0, 0, 2] == 255 and shades_of_gray(bright)[1, 1, 2] == 35
    assert (shades_of_gray(np.zeros((5, 5, 3), np.uint8)) == 0).all()
    with pytest.raises(ValueError, match="uint8"):
        shades_of_gray(arr.astype(np.float32))


# --------------------------------------------------------------------------------------------- prepare


def test_prepare_writes_the_cache(fake: FakeIsic, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = _prep(fake, out, workers=2)
    assert report["counts"] == fake.counts
    assert report["split_source"] == "flamby" and report["skipped"] == []
    assert report["processed"] == len(fake.table) == report["num_images"] and report["reused"] == 0
    assert report["totals"]["train"] == [sum(r) for r in fake.train_counts]
    assert json.loads((out / "report.json").read_text()) == report
    assert json.loads((out / "manifest.json").read_text()) == {
        "format": "fedetf-isic2019",
        "version": 1,
        "num_images": len(fake.table),
        "size": 224,
    }
    index = pd.read_csv(out / "index.csv")
    assert list(index.columns) == ["image", "center", "label", "fold", "height", "width"]
    pd.testing.assert_frame_equal(index[["image", "center", "label", "fold"]], fake.table)
    assert (index["height"] == EXPECTED_SHAPE[0]).all() and (index["width"] == EXPECTED_SHAPE[1]).all()
    assert sorted(p.stem for p in (out / "images").iterdir()) == sorted(fake.table["image"])
    assert not list(out.rglob(".*"))  # no temp files left
    for image in fake.table["image"].iloc[:4]:
        arr = np.load(out / "images" / f"{image}.npy")
        assert arr.dtype == np.uint8 and arr.shape == (*EXPECTED_SHAPE, 3)
        np.testing.assert_array_equal(arr, _direct(fake.image_path(image)))
        with Image.open(fake.image_path(image)) as im:
            plain = np.asarray(resize_shorter_edge(im.convert("RGB")))
        assert np.abs(arr.astype(int) - plain).mean() > 3  # Shades-of-Gray changed the colours


def test_prepare_seeded_split_and_small_images(tmp_path: Path) -> None:
    fake = make_fake_isic(tmp_path / "raw", per_centre=10, size=(64, 48))
    report = _prep(fake, tmp_path / "out", split_csv=None, seed=5)
    index = pd.read_csv(tmp_path / "out" / "index.csv")
    assert report["split_source"] == "seeded-80-20 seed=5"
    pd.testing.assert_frame_equal(index[["image", "center", "label", "fold"]], split_table(_table(fake), seed=5))
    assert (index["height"] == 224).all() and (index["width"] == 298).all()  # small images are scaled up
    assert np.asarray(report["counts"]["test"]).sum() > 0


def test_zip_input_equals_folder_input(tmp_path: Path) -> None:
    folder = make_fake_isic(tmp_path / "folder", per_centre=3, size=SIZE, seed=7)
    zipped = make_fake_isic(tmp_path / "zip", per_centre=3, size=SIZE, seed=7, zip_images=True)
    assert zipped.images.name == "ISIC_2019_Training_Input.zip" and zipped.images.is_file()
    ra, rb = _prep(folder, tmp_path / "a"), _prep(zipped, tmp_path / "b", workers=2)
    assert ra["counts"] == rb["counts"] == folder.counts and rb["skipped"] == []
    assert (tmp_path / "a" / "index.csv").read_text() == (tmp_path / "b" / "index.csv").read_text()
    for image in folder.table["image"]:
        a = np.load(tmp_path / "a" / "images" / f"{image}.npy")
        np.testing.assert_array_equal(a, np.load(tmp_path / "b" / "images" / f"{image}.npy"))


def test_prepare_is_resumable(fake: FakeIsic, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _prep(fake, out)
    assert first["processed"] == len(fake.table)
    again = _prep(fake, out)
    assert again["processed"] == 0 and again["reused"] == len(fake.table) and again["counts"] == fake.counts
    victim = out / "images" / f"{fake.table['image'].iloc[5]}.npy"
    kept = np.load(victim)
    victim.unlink()
    (out / "images" / f"{fake.table['image'].iloc[6]}.npy").write_bytes(b"not an npy")  # unusable: redone
    third = _prep(fake, out)
    assert third["processed"] == 2 and third["reused"] == len(fake.table) - 2
    np.testing.assert_array_equal(np.load(victim), kept)
    assert (out / "manifest.json").exists()


def test_missing_image_is_reported_or_fails_in_strict_mode(fake: FakeIsic, tmp_path: Path) -> None:
    row = fake.table.iloc[2]
    fake.image_path(row["image"]).unlink()
    with pytest.raises(IsicError, match=rf"image {row['image']}: listed in .* but not found in .*"):
        _prep(fake, tmp_path / "strict", strict=True)
    assert not (tmp_path / "strict" / "manifest.json").exists()
    report = _prep(fake, tmp_path / "out")
    assert report["skipped"] == [{"image": row["image"], "reason": f"not found in {fake.images}"}]
    expected = fake.counts
    expected[row["fold"]][row["center"]][row["label"]] -= 1
    assert report["counts"] == expected and report["num_images"] == len(fake.table) - 1
    assert row["image"] not in set(pd.read_csv(tmp_path / "out" / "index.csv")["image"])
    assert f"skipped {row['image']}: not found" in format_report(report)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_jpeg_is_skipped_or_fails_in_strict_mode(fake: FakeIsic, tmp_path: Path, damage: str) -> None:
    image = fake.table["image"].iloc[9]
    jpg = fake.image_path(image)
    data = jpg.read_bytes()
    jpg.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"this is not a JPEG")
    report = _prep(fake, tmp_path / "out", workers=2)
    assert [s["image"] for s in report["skipped"]] == [image]
    assert report["skipped"][0]["reason"].startswith("cannot decode: ")
    assert not (tmp_path / "out" / "images" / f"{image}.npy").exists()
    assert report["num_images"] == len(fake.table) - 1
    with pytest.raises(IsicError, match=rf"image {image} in .*ISIC_2019_Training_Input: cannot decode"):
        _prep(fake, tmp_path / "strict", strict=True, workers=2)
    assert not (tmp_path / "strict" / "manifest.json").exists()


def test_crash_midway_leaves_nothing_trusted(fake: FakeIsic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    _prep(fake, out)
    lost = list(fake.table["image"].iloc[:3])
    for image in lost:
        (out / "images" / f"{image}.npy").unlink()
    calls = []
    real = isic.preprocess

    def crash_on_second(data, size=224):
        calls.append(data)
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return real(data, size)

    monkeypatch.setattr(isic, "preprocess", crash_on_second)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _prep(fake, out)
    assert not (out / "manifest.json").exists()  # the stale manifest of the first run was removed
    assert (out / "images" / f"{lost[0]}.npy").exists() and not (out / "images" / f"{lost[1]}.npy").exists()
    monkeypatch.undo()
    stale = [out / "images" / f".{lost[1]}.npy.abc123.tmp", out / ".manifest.json.xyz.tmp"]
    for path in stale:
        path.write_bytes(b"half-written")
    report = _prep(fake, out)
    assert report["processed"] == 2 and (out / "manifest.json").exists()
    assert not any(p.exists() for p in stale)


def test_bad_images_argument(fake: FakeIsic, tmp_path: Path) -> None:
    with pytest.raises(IsicError, match="images: no such file: .*nowhere"):
        prepare(tmp_path / "nowhere", fake.metadata_csv, fake.ground_truth_csv, fake.ham_metadata_csv, tmp_path / "o")
    notzip = tmp_path / "images.zip"
    notzip.write_text("plain text")
    with pytest.raises(IsicError, match="neither a folder nor a readable zip"):
        prepare(notzip, fake.metadata_csv, fake.ground_truth_csv, fake.ham_metadata_csv, tmp_path / "o")


# --------------------------------------------------------------------------------------------- report


def _spec_report() -> dict:
    test = [[0] * len(CLASSES) for _ in CENTRES]
    for c, n in enumerate(SPEC_TEST_TOTALS):
        test[c][1] = n
    return {"counts": {"train": [list(r) for r in SPEC_TRAIN_COUNTS], "test": test}}


def test_compare_with_spec() -> None:
    report = _spec_report()
    assert compare_with_spec(report) == []
    report["counts"]["train"][2][7] -= 1
    report["counts"]["test"][5][0] += 1
    assert compare_with_spec(report) == [
        "centre 2 vidir_modern, SCC train: 10 (FLamby: 11)",
        "centre 2 vidir_modern, train total: 2690 (FLamby: 2691)",
        "centre 5 vienna_dias, test total: 89 (FLamby: 88)",
    ]


def test_format_report_table() -> None:
    report = _spec_report() | {
        "num_images": 23247,
        "split_source": "flamby",
        "size": 224,
        "processed": 23247,
        "reused": 0,
        "skipped": [],
        "totals": {"train": list(SPEC_TRAIN_TOTALS), "test": list(SPEC_TEST_TOTALS)},
    }
    text = format_report(report)
    lines = text.splitlines()
    assert "23247 images (18597 train / 4650 test)" in lines[0]
    assert lines[1].split() == ["centre", "fold", *CLASSES, "total"]
    assert lines[2].split() == ["0", "BCN", "train", "2279", "3363", "2245", "606", "923", "97", "87", "330", "9930"]
    assert lines[3].split() == ["test", "0", "2483", "0", "0", "0", "0", "0", "0", "2483"]
    assert lines[-2].split()[:3] == ["all", "train", str(sum(r[0] for r in SPEC_TRAIN_COUNTS))]
    assert lines[-1].split()[-1] == "4650" and len(lines) == 2 + 2 * 7


# --------------------------------------------------------------------------------------------- download


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files; records requests; answers ``Range`` requests with 206 when ``ranges`` is set."""

    ranges = False
    seen: list[tuple[str, str | None]] = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Range")))
        rng = self.headers.get("Range")
        if not (self.ranges and rng):
            return super().do_GET()
        data = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
        start = int(rng.removeprefix("bytes=").split("-")[0])
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, type[_Handler]]]:
    fake = make_fake_isic(tmp_path / "srv", per_centre=2, zip_images=True)
    handler = type("Handler", (_Handler,), {"seen": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(fake.root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", fake.root, handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_refuses_without_licence(tmp_path: Path) -> None:
    with pytest.raises(IsicError, match=r"CC-BY-NC 4\.0.*accept_license=True"):
        download(tmp_path / "dl", accept_license=False)
    assert not (tmp_path / "dl").exists()


def test_download_from_loopback_server(server, tmp_path: Path) -> None:
    url, root, handler = server
    dest = tmp_path / "dl"
    paths = download(dest, accept_license=True, base_url=url)
    assert [p.name for p in paths] == list(isic.DOWNLOAD_FILES)
    for p in paths:
        assert p.read_bytes() == (root / p.name).read_bytes()
    assert not list(dest.glob("*.part"))
    table = derive_table(dest / isic.METADATA_CSV, dest / isic.GROUND_TRUTH_CSV, dest / isic.HAM_METADATA_CSV)
    assert len(table) == 12
    # Already complete: skipped without a request.
    handler.seen.clear()
    (dest / isic.METADATA_CSV).write_text("kept")
    download(dest, accept_license=True, base_url=url, files=[isic.METADATA_CSV, isic.GROUND_TRUTH_CSV])
    assert (dest / isic.METADATA_CSV).read_text() == "kept"
    assert handler.seen == []


def test_download_resumes_a_partial_file(server, tmp_path: Path) -> None:
    url, root, handler = server
    dest = tmp_path / "dl"
    dest.mkdir()
    data = (root / isic.IMAGES_ZIP).read_bytes()
    part = dest / f"{isic.IMAGES_ZIP}.part"
    part.write_bytes(data[:100])
    handler.ranges = True
    download(dest, accept_license=True, base_url=url, files=[isic.IMAGES_ZIP])
    assert handler.seen == [(f"/{isic.IMAGES_ZIP}", "bytes=100-")]
    assert (dest / isic.IMAGES_ZIP).read_bytes() == data and not part.exists()
    # A server without range support answers 200: the partial file is replaced, not appended to.
    (dest / isic.IMAGES_ZIP).unlink()
    part.write_bytes(b"x" * 100)
    handler.ranges = False
    download(dest, accept_license=True, base_url=url, files=[isic.IMAGES_ZIP])
    assert (dest / isic.IMAGES_ZIP).read_bytes() == data


def test_download_http_error_is_one_line(server, tmp_path: Path) -> None:
    url, root, _ = server
    (root / isic.GROUND_TRUTH_CSV).unlink()
    with pytest.raises(IsicError, match=rf"{isic.GROUND_TRUTH_CSV}: HTTP 404"):
        download(tmp_path / "dl", accept_license=True, base_url=url, files=[isic.GROUND_TRUTH_CSV])
    assert not (tmp_path / "dl" / isic.GROUND_TRUTH_CSV).exists()


# --------------------------------------------------------------------------------------------- CLI


def test_cli_prepare_subprocess_without_runtime_warning(fake: FakeIsic, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--images", fake.images, "--metadata", fake.metadata_csv, "--ground-truth", fake.ground_truth_csv]
    args += ["--ham-metadata", fake.ham_metadata_csv, "--out", out, "--split", fake.split_csv, "--workers", "1"]
    # runpy warns when `python -m data_prep.isic2019` finds the module imported already (by data_prep/__init__).
    res = subprocess.run(
        [sys.executable, "-W", "default", "-m", "data_prep.isic2019", "prepare", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "RuntimeWarning" not in res.stderr, res.stderr
    assert "0 BCN" in res.stdout and "5 vienna_dias" in res.stdout
    assert "differs from the FLamby table" in res.stdout
    assert json.loads((out / "manifest.json").read_text())["num_images"] == len(fake.table)


def test_cli_help_names_the_module_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        isic.main(["--help"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("usage: python -m data_prep.isic2019")


def test_cli_errors_are_one_line(fake: FakeIsic, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.csv"
    argv = ["prepare", "--images", str(fake.images), "--metadata", str(missing), "--ground-truth"]
    argv += [str(fake.ground_truth_csv), "--ham-metadata", str(fake.ham_metadata_csv), "--out", str(tmp_path / "o")]
    assert isic.main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"error: metadata_csv: no such file: {missing}\n"
    assert isic.main(["download", "--dest", str(tmp_path / "dl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "CC-BY-NC 4.0" in err and err.count("\n") == 1
