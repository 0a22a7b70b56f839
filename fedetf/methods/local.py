"""Local-only training: every client trains its own model alone and never communicates.

The bar any personal accuracy must beat under label skew (FL-bench, PFLlib,
FLamby, pFL-Bench and the FedNH authors all report it).
"""

from __future__ import annotations

from fedetf.methods.base import LocalMethod


class LocalOnly(LocalMethod):
    """Every weight is personal: each client's model lives in its own per-client state.

    A client starts from the run's seeded initial model at its first round and
    trains it further each round it is sampled. Nothing is sent (the shared
    arrays are empty) and nothing is averaged, so there is no global model
    (:attr:`generic_model` is False). The personal model is the client's own
    model: ``personal_acc_before`` is it before this round's training,
    ``personal_acc`` after.
    """

    name = "local"
    paper = "local training, no communication"
    shares = "nothing"
    keeps = "its whole model"
    personal_model = True
    generic_model = False
    local_prefixes = ("",)  # every state-dict key
    personal_prefixes = ("",)
