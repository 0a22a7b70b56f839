"""Fed-ISIC2019 training on a fake prepared cache: loader, natural clients, and 1 round of the Flower app (its
ServerApp on in-process ClientApp nodes: nothing ISIC-specific depends on the engine)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from benchmarks.isic_fakes import FakeIsic, make_fake_isic
from data_prep.datasets import CorruptCacheError, DatasetMissingError
from data_prep.federated import load_federation
from data_prep.isic2019 import prepare
from data_prep.isic_data import IsicImages, read_image
from data_prep.isic_transforms import isic_train_transform
from simulations.config import ConfigError, parse_run_config
from tests.inprocess import run_in_process

PREP_ARGS = (
    "--images ISIC_2019_Training_Input.zip --metadata ISIC_2019_Training_Metadata.csv "
    "--ground-truth ISIC_2019_Training_GroundTruth.csv --ham-metadata HAM10000_metadata.csv"
)


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> FakeIsic:
    return make_fake_isic(tmp_path_factory.mktemp("isic-raw"), per_centre=6, size=(96, 72))


def _prepare(fake: FakeIsic, out: Path) -> None:
    prepare(
        fake.images, fake.metadata_csv, fake.ground_truth_csv, fake.ham_metadata_csv, out, fake.split_csv, workers=1
    )


@pytest.fixture(scope="module")
def data_root(fake: FakeIsic, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("isic") / "data"
    _prepare(fake, root / "fed-isic2019")
    return root


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache of 3 images per centre (2 train, 1 test): efficientnet_b0 at 200x200 on the CPU costs per image."""
    fake = make_fake_isic(tmp_path_factory.mktemp("isic-raw-small"), per_centre=3, size=(96, 72))
    root = tmp_path_factory.mktemp("isic-small") / "data"
    _prepare(fake, root / "fed-isic2019")
    return root


@pytest.fixture
def copy_root(data_root: Path, tmp_path: Path) -> Path:
    """A data root holding a copy of the prepared cache, for a test to damage."""
    shutil.copytree(data_root / "fed-isic2019", tmp_path / "data" / "fed-isic2019")
    return tmp_path / "data"


def _load(data_root: Path):
    options = (("data-root", str(data_root)), ("download", False))
    return load_federation("fed-isic2019", "natural", 6, 0, options=options)


def test_natural_federation_from_the_cache(data_root: Path) -> None:
    fed = load_federation("fed-isic2019", "natural", 6, 0, options=(("data-root", str(data_root)), ("download", False)))
    index = pd.read_csv(data_root / "fed-isic2019" / "index.csv")
    assert fed.num_clients == 6
    for c in range(6):
        rows = index[(index["center"] == c) & (index["fold"] == "train")]
        assert fed.label_counts(c).tolist() == np.bincount(rows["label"], minlength=8).tolist()
    assert len(fed.global_test) == int((index["fold"] == "test").sum())  # pooled test set
    train, test = fed.client_loaders(0, batch_size=4, seed=0)
    x, y = next(iter(train))
    assert x.shape[1:] == (200, 200, 3) and x.dtype == torch.uint8  # the model normalises on its device
    assert next(iter(test))[0].shape[1:] == (200, 200, 3)


def test_augmentation_is_reproducible_from_the_seed(data_root: Path) -> None:
    fed = load_federation("fed-isic2019", "natural", 6, 0, options=(("data-root", str(data_root)), ("download", False)))

    def first_image(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)  # as the ClientApp does each round, before building its loaders
        return fed.data.dataset("train", fed.parts[0][0], True, fed.info)[0][0]

    # Same image each time, so only the augmentation can differ.
    assert torch.equal(first_image(5), first_image(5))
    assert not torch.equal(first_image(5), first_image(6))


def test_loader_workers_draw_reproducible_distinct_streams(data_root: Path) -> None:
    fed = load_federation("fed-isic2019", "natural", 6, 0, options=(("data-root", str(data_root)), ("download", False)))
    i = int(fed.parts[0][0][0])
    one = IsicImages(
        [fed.data.files_train[i]] * 4, [fed.data.shapes_train[i]] * 4, np.zeros(4, np.int64), isic_train_transform()
    )

    def images() -> list[torch.Tensor]:
        loader = DataLoader(one, batch_size=1, num_workers=2, generator=torch.Generator().manual_seed(3))
        return [x[0] for x, _ in loader]  # items 0, 2 from worker 0; 1, 3 from worker 1

    first, again = images(), images()
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], first[1])  # the two workers do not repeat each other


def test_truncated_cache_image_names_the_file(data_root: Path, tmp_path: Path) -> None:
    src = next((data_root / "fed-isic2019" / "images").glob("*.npy"))
    bad = tmp_path / src.name
    bad.write_bytes(src.read_bytes()[:-10])
    with pytest.raises(CorruptCacheError, match=f"{bad.name}.*re-run the prep with --out {tmp_path.parent} "):
        read_image(bad, np.load(src).shape)


def test_isic_config_rules(data_root: Path) -> None:
    cfg = parse_run_config({"dataset": "fed-isic2019", "num-clients": 6, "partition": "dirichlet"})
    assert cfg.effective_partition == "natural" and cfg.loss_name == "focal" and cfg.model_name == "efficientnet_b0"
    with pytest.raises(ConfigError, match="num-clients=10; allowed: 6"):
        parse_run_config({"dataset": "fed-isic2019"})


def test_missing_cache_names_folder_and_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="python -m data_prep.isic2019 prepare") as info:
        load_federation("fed-isic2019", "natural", 6, 0, options=(("data-root", str(tmp_path)), ("download", False)))
    assert str(tmp_path / "fed-isic2019") in str(info.value) and "\n" not in str(info.value)


def _one_line_with_the_fix(err: pytest.ExceptionInfo[BaseException], file: Path, cache: Path) -> str:
    msg = str(err.value)
    assert msg.startswith(f"dataset 'fed-isic2019': {file} ") and "\n" not in msg
    assert msg.endswith(f"; rebuild it with: python -m data_prep.isic2019 prepare {PREP_ARGS} --out {cache}")
    assert isinstance(err.value, ValueError)  # the ServerApp reports ValueErrors as one line, no traceback
    return msg


def test_missing_manifest_names_the_file(copy_root: Path) -> None:
    manifest = copy_root / "fed-isic2019" / "manifest.json"
    manifest.unlink()
    with pytest.raises(DatasetMissingError) as err:
        _load(copy_root)
    msg = str(err.value)
    assert f"(no {manifest})" in msg and msg.endswith(f"{PREP_ARGS} --out {manifest.parent}") and "\n" not in msg
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ValueError)


def test_absent_images_are_named_and_the_prep_rebuilds_them(copy_root: Path, fake: FakeIsic) -> None:
    cache = copy_root / "fed-isic2019"
    index = pd.read_csv(cache / "index.csv")
    gone = [cache / "images" / f"{name}.npy" for name in index["image"][[4, 9]]]
    gone[0].unlink()
    with pytest.raises(CorruptCacheError) as err:
        _load(copy_root)
    assert _one_line_with_the_fix(err, gone[0], cache).startswith(
        f"dataset 'fed-isic2019': {gone[0]} is listed in index.csv but absent; "
    )
    gone[1].unlink()
    with pytest.raises(CorruptCacheError, match=rf"absent \(and 1 more of the {len(index)} listed\); rebuild"):
        _load(copy_root)
    _prepare(fake, cache)  # the fix the message names: reprocesses just the absent images
    assert all(p.is_file() for p in gone) and len(_load(copy_root).global_test) == int((index["fold"] == "test").sum())


def test_damaged_manifest_and_index_are_named(copy_root: Path) -> None:
    cache = copy_root / "fed-isic2019"
    index_csv, manifest = cache / "index.csv", cache / "manifest.json"
    text = index_csv.read_text()
    index_csv.write_text("\n".join(text.splitlines()[:-3]) + "\n")  # rows lost
    with pytest.raises(CorruptCacheError, match=r"has \d+ rows, manifest.json says \d+ images") as err:
        _load(copy_root)
    _one_line_with_the_fix(err, index_csv, cache)
    index_csv.write_text(text.replace(",train,", ",training,", 1))
    with pytest.raises(CorruptCacheError, match=r"has fold value\(s\) \['training'\] outside \['train', 'test'\]"):
        _load(copy_root)
    index_csv.write_text(text.split("\n", 1)[1])  # header lost
    with pytest.raises(CorruptCacheError, match="lacks column"):
        _load(copy_root)
    index_csv.unlink()
    with pytest.raises(CorruptCacheError, match=r"index\.csv is unreadable \(.*No such file"):
        _load(copy_root)
    manifest.write_text('{"format": "fedetf-is')
    with pytest.raises(CorruptCacheError) as err:
        _load(copy_root)
    assert "manifest.json is unreadable (" in _one_line_with_the_fix(err, manifest, cache)


@pytest.mark.parametrize("method", ["fedgela", "fedavg"])
def test_one_round_through_flower(small_root: Path, tmp_path: Path, method: str) -> None:
    out = tmp_path / method
    outcome = run_in_process(
        {
            "dataset": "fed-isic2019",
            "data-root": str(small_root),
            "num-clients": 6,
            "method": method,
            "num-server-rounds": 1,
            "local-epochs": 1,
            "batch-size": 8,
            "output-dir": str(out),
        }
    )
    assert outcome.exit is None and not outcome.errors, outcome.lines[-20:]
    metrics = pd.read_csv(out / "metrics.csv")
    assert len(metrics) == 1 and metrics["generic_bacc"].between(0, 1).all()
    clients = pd.read_csv(out / "clients.csv")
    assert sorted(clients["partition_id"]) == list(range(6))
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["loss"] == "auto" and any("from scratch" in n for n in info["notes"])
    assert any("ignored" in n for n in info["notes"])
