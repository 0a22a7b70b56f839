"""Experiment tools kept apart from the Flower apps: ``fedetf-sweep`` and ``fedetf-report``.

The ServerApp and ClientApp (``simulations.server_app``, ``simulations.client_app``) never import
this package. ``sweep`` runs methods x grid x seeds through ``flwr run``; ``report`` rebuilds tables
and figures from the results files. Both read run folders through :mod:`.runs` only.
"""
