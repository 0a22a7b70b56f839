"""What the Fed-ISIC2019 prep (:mod:`data_prep.isic2019`) writes and the loader (:mod:`data_prep.isic_data`) reads.

A module of its own so that importing :mod:`data_prep` (which registers the loader) never imports the
prep module: ``python -m data_prep.isic2019`` would otherwise find it imported already and warn.
"""

from __future__ import annotations

#: Class order of FLamby's labels (the ground truth's UNK column is never positive in training).
CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
#: Centre ids 0..5 in FLamby's order.
CENTRES = ("BCN", "vidir_molemax", "vidir_modern", "rosendahl", "MSK", "vienna_dias")
#: ``format`` and ``version`` of ``manifest.json``, the file written last.
MANIFEST_FORMAT = "fedetf-isic2019"
MANIFEST_VERSION = 1
#: ImageNet statistics the ImageNet-pretrained EfficientNet expects.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
