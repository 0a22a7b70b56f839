"""The round loop: Flower's ``Strategy.start``, step by step, plus what fedetf records and checkpoints.

Per round: seed the client sampling, let the strategy configure training (held-out clients are never sampled),
add a resumed client's checkpointed state to its own message, send, take the clients' states and metrics out
of the replies, let the strategy aggregate, every ``evaluate-every`` rounds let every client evaluate its
personal model through the strategy's evaluate phase, evaluate the global model, record, checkpoint, log. The
strategy is called only through its public hooks (``configure_train``, ``aggregate_train``,
``configure_evaluate``, ``aggregate_evaluate``) and never altered; a resumed run starts at the checkpoint's
next round, so every hook sees the true round number.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from logging import INFO
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.common import log
from flwr.serverapp.strategy import Strategy

from fedetf.methods import LocalMethod
from fedetf.methods.base import Tensors
from fedetf.train import evaluate, generic_diagnostics
from simulations import checkpoint
from simulations.config import RunConfig
from simulations.contracts import (
    CLIENT_STATE,
    DROPOUT,
    METRICS,
    RESTORE_STATE,
    SEND_STATE,
    STRAGGLER_DROPPED,
    ClientEvaluation,
    ClientMetrics,
    error_reason,
    with_records,
)
from simulations.grid import MultiplexGrid, PartitionOrderedGrid
from simulations.results import RunRecorder
from simulations.state_store import STORE_FILE, ClientStateStore, NodeStates, StoredStates
from simulations.task import device, federation, holdout_partitions, model_buffer, round_seed
from strategies.privacy import innermost

#: Seconds to wait for a round's replies (``Strategy.start``'s default).
TIMEOUT = 3600.0


class RoundFailed(RuntimeError):
    """A round cannot go on (no sampled client succeeded, or the global model diverged); the message is one line."""


@dataclass
class Start:
    """Where the loop starts: after round ``done`` (0: the initial model), with the clients' checkpointed states."""

    done: int
    arrays: ArrayRecord
    client_states: dict[int, Tensors] = field(default_factory=dict)


def run_rounds(
    grid: PartitionOrderedGrid,
    cfg: RunConfig,
    strategy: Strategy,
    method: LocalMethod,
    recorder: RunRecorder,
    start: Start,
) -> ArrayRecord:
    """Run rounds ``start.done + 1 .. cfg.num_server_rounds``; return the final global arrays."""
    global_model = GlobalModel(cfg, method, strategy)
    arrays, states = start.arrays, client_states(grid, cfg, recorder.out_dir, start)
    train_config = ConfigRecord({"method": method.name, "local-epochs": cfg.local_epochs})
    if cfg.checkpoint_every or states.stored:
        train_config[SEND_STATE] = True
    evaluate_config = ConfigRecord({"method": method.name})
    train_grid = grid.without(holdout_partitions(cfg))  # held-out clients are never sampled for training
    log_start(start.done, global_model.evaluate(arrays, start.done))
    for rnd in range(start.done + 1, cfg.num_server_rounds + 1):
        began = time.time()
        random.seed(round_seed(cfg.seed, rnd, -1))  # Flower samples nodes with the global `random`
        messages = strategy.configure_train(rnd, arrays, train_config, train_grid)
        replies = exchange(grid, with_states(messages, grid.partition_of, states))
        clients, new_states, errors = take_client_results(replies, grid.partition_of)
        failures, counts = absences(errors, clients, cfg.local_epochs)
        if not clients and (failures or not errors):  # no update, and not because every client was away
            raise RoundFailed(all_failed(rnd, len(replies), failures))
        states.update(rnd, new_states, {c.partition_id for c in clients})
        aggregated, _ = strategy.aggregate_train(rnd, replies)
        arrays = arrays if aggregated is None else aggregated  # as Strategy.start: keep the model if none came
        evaluations: list[ClientEvaluation] = []
        if evaluation_due(rnd, cfg.evaluate_every, cfg.num_server_rounds):  # every client, held-out ones too
            evaluate_messages = strategy.configure_evaluate(rnd, arrays, evaluate_config, grid)
            evaluate_replies = exchange(grid, with_states(evaluate_messages, grid.partition_of, states))
            strategy.aggregate_evaluate(rnd, evaluate_replies)
            evaluations = [
                ClientEvaluation.from_record(r.content[METRICS]) for r in evaluate_replies if not r.has_error()
            ]
        generic = global_model.evaluate(arrays, rnd)
        row = recorder.add_round(rnd, generic, clients, counts, time.time() - began, evaluations)
        if checkpoint.due(rnd, cfg.checkpoint_every, cfg.num_server_rounds):
            checkpoint.save(
                recorder.out_dir,
                server_round=rnd,
                arrays=arrays,
                strategy=strategy,
                client_states=states.for_checkpoint(rnd),
                client_store=states.stored,
                config=recorder.config,
            )
        log_round(row)
    states.close()
    return arrays


def evaluation_due(rnd: int, every: int, num_rounds: int) -> bool:
    """Whether round ``rnd`` evaluates every client: every ``every`` rounds and the last (never for 0)."""
    return every > 0 and (rnd % every == 0 or rnd == num_rounds)


def exchange(grid: PartitionOrderedGrid, messages: Iterable[Message]) -> list[Message]:
    """Send ``messages`` and wait for their replies (none to send: none to wait for)."""
    messages = list(messages)
    return list(grid.send_and_receive(messages, timeout=TIMEOUT)) if messages else []


def client_states(grid: PartitionOrderedGrid, cfg: RunConfig, out_dir: Path, start: Start) -> NodeStates | StoredStates:
    """Where the clients' states live: in their nodes, or (clients multiplexed over fewer nodes) in the store."""
    if isinstance(grid, MultiplexGrid):
        store = ClientStateStore(out_dir / STORE_FILE)
        return StoredStates(store, start.done, start.client_states, keep_versions=bool(cfg.checkpoint_every))
    return NodeStates(start.client_states)


def with_states(
    messages: Iterable[Message], partition_of: dict[int, int], states: NodeStates | StoredStates
) -> list[Message]:
    """``messages``, where each one to a client with a state to send gets a content of its own with that state
    added (a strategy's messages share one content)."""
    out = []
    for msg in messages:
        state = states.to_send(partition_of.get(msg.metadata.dst_node_id, -1))
        out.append(msg if state is None else with_records(msg, {RESTORE_STATE: ArrayRecord(state)}))
    return out


def take_client_results(
    replies: list[Message], partition_of: dict[int, int]
) -> tuple[list[ClientMetrics], dict[int, Tensors], list[str]]:
    """The successful replies' metrics and client states (each state is removed from its reply: strategies get
    what Flower's expect), and the failed replies' one-line reasons."""
    clients: list[ClientMetrics] = []
    states: dict[int, Tensors] = {}
    errors: list[str] = []
    for reply in replies:
        if reply.has_error():
            errors.append(f"partition {partition_of.get(reply.metadata.src_node_id, '?')}: {error_reason(reply)}")
            continue
        metrics = ClientMetrics.from_record(reply.content[METRICS])
        clients.append(metrics)
        if CLIENT_STATE in reply.content:
            states[metrics.partition_id] = dict(reply.content[CLIENT_STATE].to_torch_state_dict())
            del reply.content[CLIENT_STATE]
    return clients, states, errors


def absences(errors: list[str], clients: list[ClientMetrics], local_epochs: int) -> tuple[list[str], dict[str, int]]:
    """The errors that are failures (not a dropout or a dropped straggler), and the round's counts of failed
    clients, dropouts, stragglers (partial work sent or dropped) and dropped stragglers."""
    away = (f": {DROPOUT}", f": {STRAGGLER_DROPPED}")
    failures = [e for e in errors if not e.endswith(away)]
    dropped = sum(e.endswith(away[1]) for e in errors)
    counts = {
        "failed_clients": len(failures),
        "dropouts": sum(e.endswith(away[0]) for e in errors),
        "stragglers": dropped + sum(c.local_epochs < local_epochs for c in clients),
        "stragglers_dropped": dropped,
    }
    return failures, counts


def all_failed(rnd: int, sampled: int, errors: list[str]) -> str:
    if not errors:
        return f"no sampled client replied in round {rnd}"
    return f"all {sampled} sampled clients failed in round {rnd}; first error: {errors[0]}"


class GlobalModel:
    """The global model as the server sees it: the arrays (and the strategy's broadcast records, e.g. a rotated
    ETF) loaded into the method's model, evaluated on the global test set."""

    def __init__(self, cfg: RunConfig, method: LocalMethod, strategy: Strategy) -> None:
        self.cfg, self.method, self.strategy = cfg, method, strategy
        #: False for methods without a global model (local-only training): generic metrics are NaN.
        self.exists = bool(getattr(method, "generic_model", True))
        self.fed = federation(cfg)
        self.dev = device(cfg)
        self.model, self.initial = model_buffer(method)
        self.test_loader = self.fed.global_test_loader(cfg.num_workers) if self.exists else None

    def evaluate(self, arrays: ArrayRecord, after_round: int) -> dict[str, float]:
        """``generic_acc``, ``generic_bacc``, ``generic_loss`` (and the diagnostics); raise :class:`RoundFailed`
        if the model is no longer finite."""
        if not self.exists:
            return {"generic_acc": math.nan, "generic_bacc": math.nan, "generic_loss": math.nan}
        broadcast = getattr(innermost(self.strategy), "broadcast", {})  # under a DP wrapper, the wrapped one's
        received = {k: r.to_torch_state_dict() for k, r in broadcast.items()}
        self.method.load(self.model, arrays.to_torch_state_dict(), self.initial, {}, received)
        res = evaluate(self.model, self.test_loader, personal=False, device=self.dev)
        if not np.isfinite(res.loss) and res.num_examples:
            raise RoundFailed(
                f"the global model became non-finite after round {after_round}; lower lr (now {self.cfg.lr}) "
                "or, for ETF methods, raise the temperature"
            )
        out = {"generic_acc": res.acc, "generic_bacc": res.bacc, "generic_loss": res.loss}
        if self.cfg.diagnostics:
            out |= generic_diagnostics(self.model, self.test_loader, self.fed.info.num_classes, self.dev)
        return out


def log_start(done: int, generic: dict[str, float]) -> None:
    log(INFO, "round %d (%s model): generic acc %.4f", done, "resumed" if done else "initial", generic["generic_acc"])


def log_round(row: dict[str, Any]) -> None:
    log(
        INFO,
        "round %d: personal acc %.4f (before training %.4f) | generic acc %.4f bacc %.4f | train loss %.4f",
        row["round"],
        row["personal_acc"],
        row["personal_acc_before"],
        row["generic_acc"],
        row["generic_bacc"],
        row["train_loss"],
    )
