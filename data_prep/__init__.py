"""Datasets, partitioners and federated views of them."""

import os

# albumentations asks PyPI for a newer version on import (up to 2 s per process:
# server, every Ray actor, every DataLoader worker); offline nodes only get a warning.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# Importing these modules registers the torchvision datasets and Fed-ISIC2019.
from data_prep import isic_data, vision  # noqa: E402, F401
from data_prep.datasets import DATASETS, ArraySplits, DatasetInfo, get_dataset_info, register_dataset
from data_prep.federated import Federation, load_federation
from data_prep.partition import PARTITIONS, partition_indices

__all__ = [
    "DATASETS",
    "PARTITIONS",
    "ArraySplits",
    "DatasetInfo",
    "Federation",
    "get_dataset_info",
    "load_federation",
    "partition_indices",
    "register_dataset",
]
