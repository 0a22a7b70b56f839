"""Static facts of MNIST, Fashion-MNIST, CIFAR-10/100 and SVHN, registered with a lazy loader.

Importing :mod:`data_prep` registers these datasets through this module alone; the loader
(:mod:`data_prep.vision`) is imported on the first load, so ``python -m data_prep.vision`` runs a
module that nothing has imported yet (otherwise runpy warns about ``sys.modules``).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from data_prep.datasets import ArraySplits, DatasetInfo, register_dataset

#: Training augmentation per dataset (crop = RandomCrop(32, padding=4); flip = horizontal flip).
TRAIN_AUGMENT: dict[str, str] = {
    "cifar10": "crop-flip",
    "cifar100": "crop-flip",
    "svhn": "crop",
    "mnist": "none",
    "fmnist": "none",
}

_DIGITS = tuple(str(i) for i in range(10))
_FMNIST = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR100 = tuple(
    """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can
    castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin
    elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster
    man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck
    pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk
    skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger
    tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
)


def _info(
    name: str,
    num_classes: int,
    channels: int,
    size: int,
    model: str,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    classes: tuple[str, ...],
) -> DatasetInfo:
    return DatasetInfo(
        name=name,
        num_classes=num_classes,
        in_channels=channels,
        image_size=size,
        default_model=model,
        mean=mean,
        std=std,
        class_names=classes,
        train_augment=TRAIN_AUGMENT[name],
    )


#: Static facts (published per-channel mean/std on 0..1; FedGELA's default models).
VISION_INFOS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        _info("mnist", 10, 1, 28, "cnn", (0.1307,), (0.3081,), _DIGITS),
        _info("fmnist", 10, 1, 28, "cnn", (0.2860,), (0.3530,), _FMNIST),
        _info("cifar10", 10, 3, 32, "resnet18", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), _CIFAR10),
        _info("cifar100", 100, 3, 32, "resnet18", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), _CIFAR100),
        _info("svhn", 10, 3, 32, "cnn", (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), _DIGITS),
    )
}


def _load(name: str, seed: int, options: dict[str, Any]) -> ArraySplits:
    from data_prep.vision import load_vision

    return load_vision(name, seed, options)


for _name, _vinfo in VISION_INFOS.items():
    register_dataset(_vinfo, partial(_load, _name))
