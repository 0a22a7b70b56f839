"""fedetf ServerApp: validate, hand-shake, run the strategy, evaluate, write results."""

from __future__ import annotations

import random
import time
from logging import ERROR, INFO
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from fedetf.methods import LocalMethod
from fedetf.train import evaluate
from simulations.config import ConfigError, RunConfig, parse_run_config
from simulations.grid import PartitionOrderedGrid
from simulations.results import RunRecorder, format_summary, fresh_output_dir
from simulations.task import device, federation, make_method, model_buffer
from strategies.registry import StrategyError, build_strategy, server_class

app = ServerApp()


class SetupError(RuntimeError):
    """The run cannot start; the message is one line."""


def _prepare(context: Context) -> tuple[RunConfig, Any]:
    """Validate everything that can be checked before any node is contacted."""
    cfg = parse_run_config(context.run_config)
    device(cfg)
    federation(cfg)  # partition errors surface here, before training
    method = make_method(cfg)
    strategy = build_strategy(
        server_class(type(method), cfg.server),
        num_clients=cfg.num_clients,
        fraction_train=cfg.fraction_train,
        weighted_by_key="num-batches" if cfg.aggregation_weight == "batches" else "num-examples",
        extra=cfg.server_kwargs,
        method_kwargs=method.server_kwargs(),
    )
    return cfg, strategy


def _check_nodes(grid: PartitionOrderedGrid, cfg: RunConfig) -> None:
    mapping = grid.handshake(expected=cfg.num_clients)
    if len(mapping) != cfg.num_clients or grid.num_partitions != {cfg.num_clients}:
        raise SetupError(
            f"invalid run config: num-clients={cfg.num_clients} but the federation has {len(mapping)} supernodes; "
            f"set both alike, e.g. flwr run . --run-config 'num-clients={len(mapping)}' or "
            f"--federation-config 'num-supernodes={cfg.num_clients}'"
        )


def _notes(cfg: RunConfig) -> list[str]:
    """What the run does differently from what its settings might suggest."""
    notes = []
    if cfg.natural:
        notes.append(
            f"dataset={cfg.dataset!r} has natural clients: partition, classes-per-client and dirichlet-beta are ignored"
        )
    if cfg.model_name == "efficientnet_b0" and not cfg.pretrained_weights:
        notes.append("efficientnet_b0 starts from scratch (no pretrained-weights file given)")
    return notes


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run one federated experiment end to end."""
    try:
        cfg, strategy = _prepare(context)
    except (ConfigError, StrategyError, ValueError, RuntimeError) as exc:
        log(ERROR, "%s", str(exc).splitlines()[0])
        raise SystemExit(2) from None
    run(grid, cfg, strategy)


def _client_rows(replies: list[Message]) -> list[dict[str, Any]]:
    """Per-client rows of a round's successful train replies."""
    rows = []
    for r in replies:
        if r.has_error():
            continue
        m = r.content["metrics"]
        rows.append(
            {
                "partition_id": int(m["partition-id"]),
                "personal_acc": m["personal-acc"],
                "personal_bacc": m["personal-bacc"],
                "personal_acc_before": m["personal-acc-before"],
                "personal_bacc_before": m["personal-bacc-before"],
                "train_loss": m["train-loss"],
                "train_examples": int(m["num-examples"]),
                "test_examples": int(m["test-examples"]),
                "num_batches": int(m["num-batches"]),
                "correct": int(m["personal-correct"]),
                "correct_before": int(m["personal-correct-before"]),
            }
        )
    return rows


def _round_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The round's personal view, pooled over its clients (and the plain client mean)."""
    n_test = sum(r["test_examples"] for r in rows)
    n_train = sum(r["train_examples"] for r in rows)
    nan = float("nan")

    def weighted(col: str, by: str, n: int) -> float:
        return sum(r[col] * r[by] for r in rows) / n if n else nan

    return {
        "personal_acc": sum(r["correct"] for r in rows) / n_test if n_test else nan,
        "personal_bacc": weighted("personal_bacc", "test_examples", n_test),
        "personal_acc_before": sum(r["correct_before"] for r in rows) / n_test if n_test else nan,
        "personal_bacc_before": weighted("personal_bacc_before", "test_examples", n_test),
        "personal_acc_client_mean": sum(r["personal_acc"] for r in rows) / len(rows) if rows else nan,
        "train_loss": weighted("train_loss", "train_examples", n_train),
        "num_clients": len(rows),
        "train_examples": n_train,
        "test_examples": n_test,
    }


def _received(strategy: Any) -> dict[str, dict[str, torch.Tensor]]:
    """The strategy's broadcast records (e.g. a rotated ETF), as the clients receive them."""
    return {k: r.to_torch_state_dict() for k, r in getattr(strategy, "broadcast", {}).items()}


def _describe(recorder: RunRecorder, cfg: RunConfig, method: LocalMethod, strategy: Any) -> None:
    recorder.extra["notes"] = _notes(cfg)
    recorder.extra["method"] = method.name
    recorder.extra["method_settings"] = cfg.method_settings_dict()
    recorder.extra["strategy_class"] = f"{type(strategy).__module__}:{type(strategy).__qualname__}"
    recorder.extra["personal_view"] = (
        "each client's personal model on its own test split"
        if method.personal_model
        else "the global model on each client's own test split (the method has no personal model)"
    )


def run(grid: Grid, cfg: RunConfig, strategy: Any) -> RunRecorder:
    """Run ``strategy`` for ``cfg`` on ``grid``; return the recorder with all results."""
    random.seed(cfg.seed)  # Flower's node sampling uses the global `random`
    torch.manual_seed(cfg.seed)
    fed = federation(cfg)
    method = make_method(cfg)
    dev = device(cfg)
    model, initial = model_buffer(method)
    test_loader = fed.global_test_loader(cfg.num_workers)
    pending: dict[str, Any] = {}

    def on_train_replies(replies: list[Message]) -> None:
        failed = [r for r in replies if r.has_error()]
        if replies and len(failed) == len(replies):
            reason = failed[0].error.reason.strip().splitlines()[-1]
            raise RuntimeError(f"all {len(replies)} sampled clients failed this round; first error: {reason}")
        pending["clients"] = _client_rows(replies)
        pending["failed"] = len(failed)

    ordered = PartitionOrderedGrid(grid, on_train_replies)
    try:
        _check_nodes(ordered, cfg)
        out_dir = fresh_output_dir(cfg.output_dir, cfg.method, cfg.dataset)
    except (SetupError, FileExistsError) as exc:
        log(ERROR, "%s", exc)
        raise SystemExit(2) from None
    for note in _notes(cfg):
        log(INFO, "note: %s", note)
    recorder = RunRecorder(out_dir, cfg.to_dict())
    _describe(recorder, cfg, method, strategy)
    log(
        INFO,
        "fedetf: method %s, server %s, on %s/%s, %d clients; results -> %s",
        method.name,
        type(strategy).__name__,
        cfg.dataset,
        cfg.partition,
        cfg.num_clients,
        out_dir,
    )
    round_start = [time.time()]

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        method.load(model, arrays.to_torch_state_dict(), initial, {}, _received(strategy))
        gen = evaluate(model, test_loader, personal=False, device=dev)
        if not np.isfinite(gen.loss) and gen.num_examples:
            raise RuntimeError(
                f"the global model became non-finite after round {server_round}; lower lr "
                f"(now {cfg.lr}) or, for ETF methods, raise the temperature"
            )
        if server_round == 0:
            log(INFO, "round 0 (initial model): generic acc %.4f", gen.acc)
            round_start[0] = time.time()
            return MetricRecord({"generic-acc": gen.acc, "generic-bacc": gen.bacc})
        rows = pending.pop("clients", [])
        for row in rows:
            row["round"] = server_round
        recorder.add_clients([{k: v for k, v in row.items() if not k.startswith("correct")} for row in rows])
        now = time.time()
        row = {
            "round": server_round,
            "generic_acc": gen.acc,
            "generic_bacc": gen.bacc,
            "generic_loss": gen.loss,
            **_round_row(rows),
            "failed_clients": pending.pop("failed", 0),
            "round_seconds": now - round_start[0],
        }
        recorder.add_round(row)
        round_start[0] = now
        log(
            INFO,
            "round %d: personal acc %.4f (before training %.4f) | generic acc %.4f bacc %.4f | train loss %.4f",
            server_round,
            row["personal_acc"],
            row["personal_acc_before"],
            gen.acc,
            gen.bacc,
            row["train_loss"],
        )
        return MetricRecord({"generic-acc": gen.acc, "generic-bacc": gen.bacc, "personal-acc": row["personal_acc"]})

    t0 = time.time()
    strategy.start(
        grid=ordered,
        initial_arrays=ArrayRecord(method.shared_state(model)),
        num_rounds=cfg.num_server_rounds,
        train_config=ConfigRecord({"method": method.name, "local-epochs": cfg.local_epochs}),
        evaluate_config=ConfigRecord({"method": method.name}),
        evaluate_fn=evaluate_fn,
    )
    recorder.timings["train_seconds"] = time.time() - t0
    recorder.write(finished=True)
    log(INFO, "fedetf results in %s\n%s", out_dir, format_summary(recorder.metrics))
    return recorder


__all__ = ["app", "main", "run"]
