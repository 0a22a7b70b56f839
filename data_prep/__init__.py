"""Datasets, partitioners and federated views of them."""

# Importing these modules registers the torchvision datasets, Fed-ISIC2019, FEMNIST and Synthetic. None imports a
# module that has a command line (vision, isic2019), so `python -m data_prep.<module>` runs it without a warning.
from data_prep import femnist, isic_data, synthetic, vision_info  # noqa: F401
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
