"""Checkpoints: everything a killed run needs to continue bit for bit, in a file with no pickled code.

A checkpoint (``checkpoint.pt`` beside the results) holds the round, the global
arrays, the strategy's own state (its plain attributes: FedAvgM's momentum,
FedAdam's moments, SCAFFOLD's ``c``, a rotated ETF, ...), Python's and torch's
random states on the server (Flower samples clients with ``random``), and the
per-client states of stateful methods (or, when SuperNodes serve many clients
in turn, a note that they are in the run's state store up to this round:
``simulations.state_store``). It is written atomically and read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import Strategy

from fedetf.io import atomic_path

CHECKPOINT = "checkpoint.pt"
FORMAT = ("fedetf-checkpoint", 1)


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not fit the run; the message is one line."""


def _encode(value: Any) -> Any:
    """Strategy attributes as tensors and plain containers; ``_SKIP`` for what cannot be stored."""
    if isinstance(value, np.generic):  # before float/bool: keep the exact numpy scalar type
        return {"__npscalar__": torch.from_numpy(np.asarray(value).reshape(1))}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.array(value, copy=True, order="C"))}
    if isinstance(value, ArrayRecord):
        return {"__arrayrecord__": {k: torch.from_numpy(a.numpy().copy()) for k, a in value.items()}}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        items = {k: _encode(v) for k, v in value.items()}
        return _SKIP if any(v is _SKIP for v in items.values()) else {"__dict__": items}
    if isinstance(value, list | tuple):
        items = [_encode(v) for v in value]
        return _SKIP if any(v is _SKIP for v in items) else {"__list__": items}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return _SKIP


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "__npscalar__" in value:
            return value["__npscalar__"].numpy()[0]
        if "__ndarray__" in value:
            return value["__ndarray__"].numpy()
        if "__arrayrecord__" in value:
            return ArrayRecord({k: Array(t.numpy()) for k, t in value["__arrayrecord__"].items()})
        if "__dict__" in value:
            return {k: _decode(v) for k, v in value["__dict__"].items()}
        if "__list__" in value:
            return [_decode(v) for v in value["__list__"]]
    return value


class _Skip:
    pass


_SKIP = _Skip()


def strategy_state(strategy: Any) -> dict[str, Any]:
    """The strategy's storable attributes (arrays, records, numbers, strings, containers of them)."""
    out = {}
    for name, value in vars(strategy).items():
        if isinstance(value, Strategy):  # a wrapper's wrapped strategy (e.g. Flower's DP wrappers)
            out[name] = {"__strategy__": strategy_state(value)}
            continue
        encoded = _encode(value)
        if encoded is not _SKIP:
            out[name] = encoded
    return out


def restore_strategy(strategy: Any, state: dict[str, Any]) -> None:
    for name, value in state.items():
        if isinstance(value, dict) and "__strategy__" in value:
            restore_strategy(getattr(strategy, name), value["__strategy__"])
        else:
            setattr(strategy, name, _decode(value))


def due(server_round: int, every: int, last: int) -> bool:
    """Whether ``server_round`` ends with a checkpoint: every ``every`` rounds (0: never), and the last."""
    return every > 0 and (server_round % every == 0 or server_round == last)


def save(
    out_dir: Path,
    *,
    server_round: int,
    arrays: ArrayRecord,
    strategy: Any,
    client_states: dict[int, dict[str, torch.Tensor]],
    config: dict[str, Any],
    client_store: bool = False,
) -> Path:
    """Write ``out_dir/checkpoint.pt`` atomically."""
    version, internal, gauss = random.getstate()
    payload = {
        "format": list(FORMAT),
        "round": server_round,
        "config": config,
        "arrays": {k: torch.from_numpy(a.numpy().copy()) for k, a in arrays.items()},
        "strategy": strategy_state(strategy),
        "python_random": [version, list(internal), gauss],
        "torch_random": torch.get_rng_state(),
        "client_states": {str(pid): dict(s) for pid, s in client_states.items()},
        "client_store": client_store,
    }
    path = out_dir / CHECKPOINT
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load(out_dir: Path) -> dict[str, Any]:
    """Read a checkpoint (no code is unpickled); raise :class:`CheckpointError` with one line."""
    path = out_dir / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"cannot resume: {path} does not exist (the run wrote no checkpoint; start it afresh)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(
            f"cannot resume: {path} is unreadable ({type(exc).__name__}); start the run afresh"
        ) from None
    if not isinstance(payload, dict) or tuple(payload.get("format", ())) != FORMAT:
        raise CheckpointError(f"cannot resume: {path} is not a fedetf checkpoint of format {FORMAT}")
    return payload


def restore_random(payload: dict[str, Any]) -> None:
    version, internal, gauss = payload["python_random"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(payload["torch_random"])


def global_arrays(payload: dict[str, Any]) -> ArrayRecord:
    return ArrayRecord({k: Array(t.numpy()) for k, t in payload["arrays"].items()})


def client_states(payload: dict[str, Any], out_dir: Path, stored: bool) -> dict[int, dict[str, torch.Tensor]]:
    """The clients' states at the checkpoint for a run whose states are ``stored`` in the state store or not:
    the checkpoint's own; none when both keep them in the store (it rolls back to the checkpoint's round
    itself); else the store's, read up to the checkpoint's round."""
    if not payload.get("client_store"):
        return {int(pid): dict(s) for pid, s in payload["client_states"].items()}
    if stored:
        return {}
    from simulations.state_store import STORE_FILE, ClientStateStore

    if not (out_dir / STORE_FILE).is_file():
        raise CheckpointError(f"cannot resume: {out_dir / STORE_FILE} (the clients' states) is missing")
    store = ClientStateStore(out_dir / STORE_FILE)
    try:
        store.rollback(int(payload["round"]))
        return store.all()
    finally:
        store.close()
