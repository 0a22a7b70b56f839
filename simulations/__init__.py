"""Flower ServerApp/ClientApp, run-config parsing, results writing."""
