"""Fed-ISIC2019 training on a fake prepared cache: loader, natural clients, and 1 round through Flower."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from data_prep.federated import load_federation
from data_prep.isic2019 import prepare
from data_prep.isic_data import IsicImages, read_image
from data_prep.isic_transforms import isic_train_transform
from simulations.config import ConfigError, parse_run_config
from simulations.local import run_local
from tests.isic_fakes import make_fake_isic


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("isic")
    fake = make_fake_isic(tmp / "raw", per_centre=6, size=(96, 72))
    prepare(
        fake.images,
        fake.metadata_csv,
        fake.ground_truth_csv,
        fake.ham_metadata_csv,
        tmp / "data" / "fed-isic2019",
        split_csv=fake.split_csv,
        workers=1,
    )
    return tmp / "data"


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
    with pytest.raises(ValueError, match=f"{bad.name}.*re-run the prep"):
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


@pytest.mark.parametrize("method", ["fedgela", "fedavg"])
def test_one_round_through_flower(data_root: Path, tmp_path: Path, method: str) -> None:
    out = tmp_path / method
    run_local(
        {
            "dataset": "fed-isic2019",
            "data-root": str(data_root),
            "num-clients": 6,
            "method": method,
            "num-server-rounds": 1,
            "local-epochs": 1,
            "batch-size": 8,
            "output-dir": str(out),
        }
    )
    metrics = pd.read_csv(out / "metrics.csv")
    assert len(metrics) == 1 and metrics["generic_bacc"].between(0, 1).all()
    clients = pd.read_csv(out / "clients.csv")
    assert sorted(clients["partition_id"]) == list(range(6))
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["loss"] == "auto" and any("from scratch" in n for n in info["notes"])
    assert any("ignored" in n for n in info["notes"])
