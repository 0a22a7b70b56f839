"""Flower's differential-privacy wrappers around whatever server strategy a run uses (run config ``dp``).

* ``server-fixed``: :class:`~flwr.serverapp.strategy.DifferentialPrivacyServerSideFixedClipping`. The server clips
  each client's update to ``dp-clipping-norm`` (L2, against the round's global model) and adds Gaussian noise of
  standard deviation ``dp-noise-multiplier * dp-clipping-norm / clients per round`` to the average: central DP
  against the outside world, with a trusted server that sees the unclipped updates.
* ``client-fixed``: :class:`~flwr.serverapp.strategy.DifferentialPrivacyClientSideFixedClipping` plus Flower's
  ``fixedclipping_mod`` on the ClientApp: the clients clip their own updates, the server adds the same noise;
  the server then never sees an unclipped update.
* ``server-adaptive``: :class:`~flwr.serverapp.strategy.DifferentialPrivacyServerSideAdaptiveClipping`: as
  ``server-fixed``, with the clipping norm adapted each round towards the median update norm (Andrew et al.),
  starting at ``dp-clipping-norm``.

The guarantee is user-level (each client's whole update), per round, as Flower defines it; noise 0 gives
clipping without privacy. The wrappers clip every ArrayRecord a reply carries against the global model, so
methods that send other records (SCAFFOLD's control variates, FedNH's and FedGELA's class statistics) are
refused.
"""

from __future__ import annotations

from typing import Any

from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    Strategy,
)

#: The run config's ``dp`` choices.
DP_MODES = ("none", "server-fixed", "client-fixed", "server-adaptive")


def with_privacy(
    strategy: Strategy, mode: str, noise_multiplier: float, clipping_norm: float, sampled: int
) -> Strategy:
    """``strategy`` wrapped in Flower's DP wrapper for ``mode`` (``none``: itself); ``sampled`` clients per round."""
    if mode == "none":
        return strategy
    if mode == "server-fixed":
        return DifferentialPrivacyServerSideFixedClipping(strategy, noise_multiplier, clipping_norm, sampled)
    if mode == "client-fixed":
        return DifferentialPrivacyClientSideFixedClipping(strategy, noise_multiplier, clipping_norm, sampled)
    if mode == "server-adaptive":
        return DifferentialPrivacyServerSideAdaptiveClipping(
            strategy, noise_multiplier, sampled, initial_clipping_norm=clipping_norm
        )
    raise ValueError(f"dp={mode!r}; allowed: {', '.join(map(repr, DP_MODES))}")


def innermost(strategy: Any) -> Any:
    """The strategy a DP wrapper (or a chain of them) wraps; the strategy itself when unwrapped."""
    while isinstance(getattr(strategy, "strategy", None), Strategy):
        strategy = strategy.strategy
    return strategy
