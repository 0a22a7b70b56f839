"""FedBN (Li et al., ICLR 2021): BatchNorm layers stay on the client, everything else is averaged."""

from __future__ import annotations

from torch import nn

from fedetf.methods.base import LocalMethod

_PREFIXES: dict[tuple, tuple[str, ...]] = {}


def batchnorm_prefixes(model: nn.Module) -> tuple[str, ...]:
    """State-dict key prefixes (``"<module>."``) of every BatchNorm module of ``model``, found by type."""
    return tuple(f"{name}." for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


class FedBN(LocalMethod):
    """FedBN's client: FedAvg's local update; every BatchNorm layer's weight, bias and running
    statistics are kept in the client's state and never sent.

    BatchNorm layers are found by module type (``BatchNorm1d/2d/3d``), whatever
    their names. What stays local therefore depends on the backbone:

    * ``simple-cnn`` (the default): no BatchNorm, so nothing stays local and FedBN
      is FedAvg;
    * ``cnn``: its two ``BatchNorm2d`` (``backbone.features.1``, ``backbone.features.5``);
    * ``resnet18``: every BatchNorm of the ResNet (stem, blocks, downsample paths);
    * ``efficientnet_b0``: every BatchNorm of the trunk.

    The feature head has no BatchNorm here (``feature_norm="none"``). A client
    that has not trained yet uses the seeded initial BatchNorm; the server's
    generic model always has it (the authors' server model keeps its initial
    BatchNorm too), so generic accuracy measures the shared weights under
    untrained normalisation.
    """

    name = "fedbn"
    paper = "Li et al., ICLR 2021"
    shares = "all weights but BatchNorm layers"
    keeps = "its BatchNorm weights, biases and running statistics"
    personal_model = True

    @property
    def bn_prefixes(self) -> tuple[str, ...]:
        """Prefixes of the model's BatchNorm layers (the model is built once per process and setting)."""
        key = self.cache_key()
        if key not in _PREFIXES:
            _PREFIXES[key] = batchnorm_prefixes(self.build_model())
        return _PREFIXES[key]

    def is_local(self, key: str) -> bool:
        prefixes = self.bn_prefixes
        return bool(prefixes) and key.startswith(prefixes)

    is_personal = is_local
