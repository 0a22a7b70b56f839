"""A user's method without a global model: FedAvg's client that declares ``generic_model = False``."""

from fedetf.methods import LocalMethod


class NoGlobalModel(LocalMethod):
    """FedAvg whose averaged weights are not meant as a model of their own (generic metrics are NaN)."""

    name = "noglobal"
    generic_model = False
